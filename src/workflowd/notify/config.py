"""The `[webhooks]` section of the settings file, read at start and again on SIGHUP.

    [webhooks]
    allow = ["https://hooks.example.com/workflowd/"]   # URL prefixes or bare host names
    deadline_s = 86400
    page_base_url = "https://workflowd.example.com"

    [[webhooks.destinations]]
    name = "ops"
    url = "https://hooks.example.com/workflowd/ops"
    secret_file = "/etc/workflowd/ops.secret"           # or secret = "…"
    events = ["run_failed", "schedule_missed"]
    workflows = ["analytics/*"]                          # namespace/name globs (default "*")
    company = "*"                                        # one company, or every one

A destination must be `https`, or plain `http` to a loopback address (a relay on this host),
and must match an entry of `allow`: a file that breaks either rule is refused whole, with a
sentence naming the destination (docs/operations.md, "Webhooks").
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from workflowd.domain.errors import InvalidRequest
from workflowd.domain.notify import Destination, NotifyEvent, NotifyPolicy, PayloadFormat

SECTION = "webhooks"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MIN_SECRET_CHARS = 16
_MAX_DEADLINE_S = 30 * 86400.0
_MAX_TIMEOUT_S = 60.0
_SECTION_KEYS = {
    "allow", "deadline_s", "page_base_url", "max_concurrent", "ca_file", "retry_initial_s",
    "retry_max_s", "destinations",
}  # fmt: skip
_DESTINATION_KEYS = {
    "name", "url", "secret", "secret_file", "events", "workflows", "company", "format",
    "timeout_s",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    policy: NotifyPolicy = field(default_factory=NotifyPolicy)
    max_concurrent: int = 8
    """Deliveries in flight at once: a receiver that hangs holds at most this many."""
    ca_file: str = ""
    """A CA the destinations' certificates may chain to, besides the system's."""
    retry_initial_s: float = 1.0
    retry_max_s: float = 600.0
    """The backoff between attempts: exponential from `retry_initial_s`, capped."""


def load_webhooks(path: Path | None) -> WebhookSettings:
    """The webhooks `path` configures (none without a file or a section)."""
    if path is None:
        return WebhookSettings()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest("config", f"cannot read {path}: {exc}") from exc
    nested = data.get("workflowd")
    section = data.get(SECTION, nested.get(SECTION) if isinstance(nested, dict) else None)
    if section is None:
        return WebhookSettings()
    return parse_webhooks(_table(section, SECTION))


def parse_webhooks(section: Mapping[str, Any]) -> WebhookSettings:
    _known(section, _SECTION_KEYS, SECTION)
    allow = [_allowed(entry, i) for i, entry in enumerate(_strings(section, "allow", []))]
    raw = section.get("destinations", [])
    if not isinstance(raw, list):
        raise InvalidRequest(f"{SECTION}.destinations", "must be an array of tables")
    destinations = [_destination(_table(d, _where(i)), i, allow) for i, d in enumerate(raw)]
    names = [d.name for d in destinations]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"{_where(i)}.name", f"{name!r} names two destinations")
    deadline_s = _number(section, "deadline_s", 86400.0, SECTION, 1.0, _MAX_DEADLINE_S)
    page_base_url = section.get("page_base_url", "")
    if not isinstance(page_base_url, str) or (
        page_base_url and urlsplit(page_base_url).scheme not in ("http", "https")
    ):
        raise InvalidRequest(f"{SECTION}.page_base_url", "must be an http(s) URL")
    ca_file = section.get("ca_file", "")
    if not isinstance(ca_file, str) or (ca_file and not Path(ca_file).is_file()):
        raise InvalidRequest(f"{SECTION}.ca_file", f"{ca_file!r} is not a readable file")
    concurrent = int(_number(section, "max_concurrent", 8, SECTION, 1, 64))
    initial_s = _number(section, "retry_initial_s", 1.0, SECTION, 0.01, 3600.0)
    max_s = _number(section, "retry_max_s", 600.0, SECTION, initial_s, 86400.0)
    policy = NotifyPolicy(tuple(destinations), deadline_s, page_base_url)
    return WebhookSettings(policy, concurrent, ca_file, initial_s, max_s)


@dataclass(frozen=True, slots=True)
class _Allowed:
    scheme: str
    host: str
    port: int | None
    path: str

    def admits(self, url: SplitResult) -> bool:
        if (url.scheme, (url.hostname or "").lower()) != (self.scheme, self.host):
            return False
        if _port(url) != (self.port or _default_port(self.scheme)):
            return False
        prefix = self.path.rstrip("/")
        path = url.path or "/"
        return not prefix or path == prefix or path.startswith(prefix + "/")


def _allowed(entry: str, index: int) -> _Allowed:
    text = entry if "://" in entry else f"https://{entry}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or _bad_port(parts):
        raise InvalidRequest(
            f"{SECTION}.allow[{index}]", f"{entry!r} is neither an http(s) URL nor a host name"
        )
    return _Allowed(parts.scheme, parts.hostname.lower(), parts.port, parts.path)


def _destination(raw: Mapping[str, Any], index: int, allow: Sequence[_Allowed]) -> Destination:
    where = _where(index)
    _known(raw, _DESTINATION_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(f"{where}.name", "is required: 1 to 64 of A-Z a-z 0-9 _ . -")
    where = f"{where} ({name!r})"
    url = _url(raw.get("url"), where, allow)
    events = frozenset(_event(e, where) for e in _strings(raw, "events", None, where))
    if not events:
        raise InvalidRequest(f"{where}.events", f"name at least one of {_known_events()}")
    workflows = tuple(_strings(raw, "workflows", ["*"], where))
    if not workflows or not all(workflows):
        raise InvalidRequest(f"{where}.workflows", "give namespace/name globs, e.g. 'etl/*'")
    company = raw.get("company", "*")
    if not isinstance(company, str) or not company:
        raise InvalidRequest(f"{where}.company", "must be a company name, or '*' for every one")
    try:
        form = PayloadFormat(raw.get("format", "json"))
    except ValueError:
        raise InvalidRequest(f"{where}.format", "must be json or slack") from None
    timeout_s = _number(raw, "timeout_s", 10.0, where, 0.1, _MAX_TIMEOUT_S)
    secret = _secret(raw, where)
    return Destination(name, url, secret, events, workflows, company, form, timeout_s)


def _url(value: object, where: str, allow: Sequence[_Allowed]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}.url", "is required")
    parts = urlsplit(value)
    # Named by scheme, host and port only: a webhook URL's path often is a secret itself.
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if parts.scheme not in ("http", "https") or not parts.hostname or _bad_port(parts):
        raise InvalidRequest(f"{where}.url", "must be an https URL")
    if parts.username or parts.password:
        raise InvalidRequest(f"{where}.url", "must not carry credentials: give a secret instead")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise InvalidRequest(
            f"{where}.url",
            f"{origin} is plain http to another host: webhooks leave the host over https only"
            " (plain http is for a relay on a loopback address)",
        )
    if not any(entry.admits(parts) for entry in allow):
        listed = ", ".join(f"{a.scheme}://{a.host}{a.path}" for a in allow) or "empty"
        raise InvalidRequest(
            f"{where}.url",
            f"{origin} is not on the operator's allow-list ({SECTION}.allow: {listed}): add"
            " its prefix there, or correct the URL",
        )
    return value


def _secret(raw: Mapping[str, Any], where: str) -> str:
    secret, path = raw.get("secret"), raw.get("secret_file")
    if path is not None:
        if secret is not None or not isinstance(path, str):
            raise InvalidRequest(f"{where}.secret_file", "give secret or secret_file, not both")
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise InvalidRequest(f"{where}.secret_file", f"cannot read {path}: {exc}") from exc
    if not isinstance(secret, str) or len(secret) < _MIN_SECRET_CHARS:
        raise InvalidRequest(
            f"{where}.secret",
            f"is required, at least {_MIN_SECRET_CHARS} characters: receivers check each"
            " delivery's signature with it",
        )
    return secret


def _event(value: str, where: str) -> NotifyEvent:
    try:
        return NotifyEvent(value)
    except ValueError:
        raise InvalidRequest(
            f"{where}.events", f"{value!r} is not an event; known: {_known_events()}"
        ) from None


def _known_events() -> str:
    return ", ".join(e.value for e in NotifyEvent)


def _strings(
    raw: Mapping[str, Any], key: str, default: list[str] | None, where: str = SECTION
) -> list[str]:
    value = raw.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{where}.{key}", "must be an array of strings")
    return value


def _number(
    raw: Mapping[str, Any], key: str, default: float, where: str, low: float, high: float
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{where}.{key}", f"must be a number from {low:g} to {high:g}")
    return float(value)


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(where, "must be a table")
    return value


def _known(raw: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise InvalidRequest(where, f"unknown keys {unknown}; known: {sorted(keys)}")


def _where(index: int) -> str:
    return f"{SECTION}.destinations[{index}]"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bad_port(url: SplitResult) -> bool:
    try:
        url.port  # noqa: B018 (urlsplit checks the port only when asked for it)
    except ValueError:
        return True
    return False


def _port(url: SplitResult) -> int:
    return url.port or _default_port(url.scheme)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
