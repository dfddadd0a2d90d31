"""One data directory, one daemon: an exclusive advisory lock held for the process's lifetime.

Two daemons on one directory would both write the store and both submit jobs for the same runs;
the store's single-writer group commit and the crash-recovery rules assume one owner. The lock
is `store/lock.py`'s (the SQLite store takes one of its own, beside its file, the same way).

The directory holds every company's runs and data: it is its user's alone (`make_private`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from workflowd.store.lock import ExclusiveFile, Locked

LOCK_NAME = "workflowd.lock"


class DataDirInUse(Exception):
    """Another live process holds the directory."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self._lock = ExclusiveFile(data_dir / LOCK_NAME)

    def acquire(self) -> None:
        """Take the lock or raise `DataDirInUse` naming the holder's PID. Not re-entrant."""
        try:
            self._lock.acquire()
        except Locked as exc:
            raise DataDirInUse(
                f"data directory {self._lock.path.parent} is in use by another workflowd "
                f"({exc.who}); stop it or choose another --data-dir"
            ) from None

    def release(self) -> None:
        """Idempotent."""
        self._lock.release()


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
