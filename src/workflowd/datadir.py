"""One data directory, one daemon: an exclusive advisory lock held for the process's lifetime.

Two daemons on one directory would both write the store and both submit jobs for the same runs;
the store's single-writer group commit and the crash-recovery rules assume one owner. The lock
is `store/lock.py`'s (the SQLite store takes one of its own, beside its file, the same way).
"""

from __future__ import annotations

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
