"""What makes the daemon's calls reach its own data plane child and no one else, and what the
child trusts in turn (see `jobs/local.py`):

- the listening socket, bound once by the daemon and handed down to each child, so that no
  other process can take the port while the daemon lives;
- the URL the daemon calls, the bound address itself rather than a name that could resolve
  to an address someone else bound;
- with TLS, the SHA-256 of the certificate the child serves, which the jobs client pins;
- the data plane's tokens file: the companies' token digests and the digest of the service
  token of the child about to start, written with mode 0600 and replaced whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workflowd.domain.errors import InvalidRequest, WorkflowdError

_BACKLOG = 1024


class DataPlaneFailed(WorkflowdError):
    """The local data plane could not be started."""


@dataclass(frozen=True, slots=True)
class PlaneTls:
    """PEM files: the data plane's certificate chain and key, and the CA client certificates
    must chain to (None: callers need none)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class CompanyToken:
    """A company's token, by its digest, as the data plane's tokens file lists it."""

    company: str
    name: str
    sha256: str


def listen(host: str, port: int) -> socket.socket:
    """The data plane's listening socket, bound once for the daemon's life."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=_BACKLOG)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "the port is taken by another process"
        else:
            why = exc.strerror or str(exc)
        raise DataPlaneFailed(
            f"the data plane cannot listen on {_joined(host, port)}: {why}; choose another"
            " --dataplane-listen"
        ) from None


def listen_address(sock: socket.socket) -> str:
    """`HOST:PORT` of the bound socket, as the child's `--listen` takes it."""
    host, port = sock.getsockname()[:2]
    return _joined(host, port)


def url(sock: socket.socket, tls: bool) -> str:
    """Where the daemon calls its child: the bound address, loopback for a wildcard."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"{'https' if tls else 'http'}://{_joined(host, port)}"


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fingerprint(cert: Path) -> bytes:
    """The SHA-256 of the first certificate of a PEM chain: the one the server presents."""
    try:
        pem = cert.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest("dataplane_tls_cert", f"cannot read {cert}: {exc}") from exc
    found = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if found is None:
        raise InvalidRequest("dataplane_tls_cert", f"{cert} holds no PEM certificate")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(found.group())).digest()


def write_tokens(path: Path, companies: Sequence[CompanyToken], service_sha256: str) -> str:
    """Write the data plane's tokens file: the companies' token digests and the digest of the
    child's service token (never a token itself), readable by this user only. Returns the
    SHA-256 of what was written, by which the child's answer to a reload names it."""
    entries = [
        f'[[tokens]]\ncompany = "{t.company}"\nname = "{t.name}"\nsha256 = "{t.sha256}"\n'
        for t in companies
    ]
    taken = {t.name for t in companies}
    name = next(n for n in (f"workflowd-{i}" for i in range(len(taken) + 1)) if n not in taken)
    entries.append(f'[[service_tokens]]\nname = "{name}"\nsha256 = "{service_sha256}"\n')
    text = "\n".join(entries).encode()
    staged = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(text)
    staged.replace(path)  # the data plane never reads half a file
    return hashlib.sha256(text).hexdigest()
