"""An exclusive advisory lock on a file, held for as long as its owner lives.

`flock` is released by the kernel when the process dies, kill -9 included, so a crash never
leaves a stale lock behind; the PID written into the file is only there to name the owner in
the refusal. The file stays when the lock is released: removing it would race a process that
has just opened it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Locked(Exception):
    """Another live process holds the lock; `holder` is its PID ("" if it cannot be read)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.holder = holder

    @property
    def who(self) -> str:
        return f"process {self.holder}" if self.holder else "another process"


class ExclusiveFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `Locked`. Not re-entrant."""
        if self._fd is not None:
            raise RuntimeError(f"the lock on {self.path} is already held")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise Locked(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
