"""One data directory, one daemon: an exclusive advisory lock held for the process's lifetime.

Two daemons on one directory would both write the store and both submit jobs for the same runs;
the store's single-writer group commit and the crash-recovery rules assume one owner. `flock`
is released by the kernel when the process dies, kill -9 included, so a crash never leaves a
stale lock behind; the PID written into the file is only there to name the owner in the error.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "workflowd.lock"


class DataDirInUse(Exception):
    """Another live process holds the directory."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `DataDirInUse` naming the holder's PID. Not re-entrant."""
        if self._fd is not None:
            raise RuntimeError("the data directory lock is already held")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise DataDirInUse(
                f"data directory {self._path.parent} is in use by another workflowd "
                f"({who}); stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Idempotent. The file stays: removing it would race a daemon that just opened it."""
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
