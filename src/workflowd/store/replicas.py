"""Replicas and run ownership (synchronous; on the store's writer inside its transaction).

A replica joins with a lease and renews it while it lives. Every run belongs to the replica
executing it (its `owner`); an active run whose owner holds no live lease is free, and the
first replica to claim it adopts it. Claims lock the rows they take and skip those another
replica is taking (`FOR UPDATE SKIP LOCKED` where the dialect has it), so two replicas never
adopt the same run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast

from workflowd.domain.run import ACTIVE_RUN_STATUSES
from workflowd.store.codec import ts
from workflowd.store.sql import Conn, marks

# A replica that ended long ago owns nothing worth keeping its row for.
_FORGET_AFTER = timedelta(days=1)


def _clock(conn: Conn, now: datetime) -> datetime:
    """The database's clock where replicas share it, so that leases never depend on how far
    apart the replicas' own clocks are; `now` (the caller's) for a store of one process."""
    if not conn.dialect.clock:
        return now
    return cast(datetime, conn.execute(conn.dialect.clock).fetchone()["now"])


def join(conn: Conn, replica: str, now: datetime, lease: timedelta) -> None:
    now = _clock(conn, now)
    conn.execute("DELETE FROM replicas WHERE lease_until < ?", (ts(now - _FORGET_AFTER),))
    conn.execute(
        "INSERT INTO replicas (id, lease_until, started_at) VALUES (?, ?, ?)",
        (replica, ts(now + lease), ts(now)),
    )


def renew(conn: Conn, replica: str, now: datetime, lease: timedelta) -> bool:
    """Extend the lease; False when it had already run out by the time of this write (its
    runs may have been adopted)."""
    now = _clock(conn, now)
    row = conn.execute(
        "UPDATE replicas SET lease_until = ? WHERE id = ? AND lease_until > ? RETURNING id",
        (ts(now + lease), replica, ts(now)),
    ).fetchone()
    return row is not None


def leave(conn: Conn, replica: str, now: datetime) -> None:
    """End the lease now: another replica adopts the runs at once, without waiting for it."""
    now = _clock(conn, now)
    conn.execute("UPDATE replicas SET lease_until = ? WHERE id = ?", (ts(now), replica))


def own(conn: Conn, run_ids: Sequence[str], replica: str) -> None:
    """Runs this replica has just created are its own."""
    if replica and run_ids:
        conn.execute(
            f"UPDATE runs SET owner = ? WHERE id IN ({marks(len(run_ids))})",
            (replica, *run_ids),
        )


def claim(conn: Conn, replica: str, now: datetime, *, takeover: bool, limit: int) -> list[str]:
    """Up to `limit` active runs this replica now owns, oldest first: with `takeover` (the only
    daemon on its store, at start) every active run it does not own yet, else the runs whose
    owner holds no live lease."""
    active = [s.value for s in ACTIVE_RUN_STATUSES]
    now = _clock(conn, now)
    free = "" if takeover else " AND owner NOT IN (SELECT id FROM replicas WHERE lease_until > ?)"
    args: list[object] = [replica, *active, replica]
    if not takeover:
        args.append(ts(now))
    found = conn.execute(
        "UPDATE runs SET owner = ? WHERE id IN ("
        f"SELECT id FROM runs WHERE status IN ({marks(len(active))}) AND owner != ?{free}"
        f" ORDER BY seq LIMIT ?{conn.dialect.lock_rows}) RETURNING id, seq",
        (*args, limit),
    ).fetchall()
    return [str(row["id"]) for row in sorted(found, key=lambda row: int(row["seq"]))]
