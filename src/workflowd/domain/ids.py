"""The shape of every identifier a caller sends, checked before it is looked up.

An id that cannot exist is refused here with a sentence, so that no lookup, error message or
metadata ever carries unbounded caller text (a megabyte "run id" echoed into a NOT_FOUND would
exceed gRPC's metadata limit and reach the caller as RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import re
import uuid

from workflowd.domain.errors import InvalidRequest

NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
"""A workflow's namespace or name (the DSL's own pattern)."""

MAX_VERSION_CHARS = 64
MAX_KEY_CHARS = 256
MAX_TAG_CHARS = 256
MAX_TAGS = 32
_SHOWN_CHARS = 60
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_UUID_TEMPLATE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_HEX = frozenset("0123456789abcdef")


def shown(value: str) -> str:
    """`value` quoted for a message, shortened so a message never grows with the input."""
    if len(value) > _SHOWN_CHARS:
        value = value[:_SHOWN_CHARS] + "…"
    return repr(value)


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (`\\x1b`), for a message that is
    stored or shown but may quote a caller's text (a task name in a pointer)."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def check_uuid(field: str, value: str, what: str) -> None:
    """`value` must be a UUID in its canonical form, as the daemon issues them."""
    try:
        canonical = str(uuid.UUID(value)) == value.lower()
    except ValueError:
        canonical = False
    if not canonical:
        raise InvalidRequest(field, f"{shown(value)} is not a {what} id (a UUID)")


def check_uuid_prefix(field: str, value: str, what: str) -> None:
    """`value` must be the start of a canonical UUID (lowercase hex, hyphens in their places)."""
    fits = 0 < len(value) <= len(_UUID_TEMPLATE) and all(
        c == "-" if t == "-" else c in _HEX for c, t in zip(value, _UUID_TEMPLATE, strict=False)
    )
    if not fits:
        raise InvalidRequest(
            field,
            f"{shown(value)} is not the start of a {what} id: lowercase hexadecimal digits, "
            "with hyphens where a UUID has them",
        )


def check_name(field: str, value: str) -> None:
    if not NAME.match(value):
        raise InvalidRequest(
            field,
            f"{shown(value)} is not a valid {field}: 1-63 letters, digits or hyphens, "
            "starting and ending with a letter or digit",
        )


def check_version(field: str, value: str) -> None:
    if len(value) > MAX_VERSION_CHARS or not value.isprintable():
        raise InvalidRequest(
            field, f"{shown(value)} is not a version: at most {MAX_VERSION_CHARS} characters"
        )


def check_key(field: str, value: str) -> None:
    """A key the daemon stores and indexes (an idempotency key): printable and bounded."""
    if len(value) > MAX_KEY_CHARS:
        raise InvalidRequest(field, f"must be at most {MAX_KEY_CHARS} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidRequest(field, "must be printable text: it holds a control character")


def check_text(field: str, value: str, max_chars: int) -> None:
    """Free text the daemon stores (a cancel reason): bounded, and no NUL, which PostgreSQL
    cannot store and C code reads as the end of the string."""
    if len(value) > max_chars:
        raise InvalidRequest(field, f"must be at most {max_chars} characters, got {len(value)}")
    if "\0" in value:
        raise InvalidRequest(
            field, f"holds a NUL character (U+0000) at character {value.index(chr(0))}"
        )


def check_tags(field: str, tags: tuple[str, ...]) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(field, f"has {len(tags)} tags; at most {MAX_TAGS} are allowed")
    for i, tag in enumerate(tags):
        check_tag(f"{field}[{i}]", tag)


def check_tag(field: str, tag: str) -> None:
    if not tag.strip() or len(tag) > MAX_TAG_CHARS or not tag.isprintable():
        raise InvalidRequest(
            field, f"must be a non-empty printable string of at most {MAX_TAG_CHARS} characters"
        )
