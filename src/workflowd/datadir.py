"""One data directory, one daemon: an exclusive advisory lock held for the process's lifetime.

Two daemons on one directory would both write the store and both submit jobs for the same runs;
the store's single-writer group commit and the crash-recovery rules assume one owner. `flock`
is released by the kernel when the process dies, kill -9 included, so a crash never leaves a
stale lock behind; the PID written into the file is only there to name the owner in the error.

The directory holds every company's runs and data: it is its user's alone (`make_private`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
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


def make_private(data_dir: Path) -> None:
    """The data directory and every directory in it 0700, every file in it 0600: what an
    earlier version, or another umask, left readable by others is closed at start. Symbolic
    links are left alone (their targets are not ours to change)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(path, 0o700)
            elif stat.S_ISREG(mode):
                os.chmod(path, 0o600)


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists. SQLite gives a database's -wal and
    -shm files the database file's own mode, so creating it first keeps them private too,
    whatever the process's umask."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
