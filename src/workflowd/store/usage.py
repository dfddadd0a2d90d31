"""What each company takes of the store, for its quotas (`domain/quotas.py`); synchronous, inside
the writer's transactions.

`company_usage.stored_bytes` is a running total of the bytes of run values the company stores
(UTF-8 of the JSON text the store writes), changed in the same transaction as the values it
counts: exact, and as durable as they are. Active runs are counted from `runs` (a partial index
by company), so no count can drift from the truth.
"""

from __future__ import annotations

from workflowd.domain.json import Json
from workflowd.domain.quotas import Quotas
from workflowd.domain.run import ACTIVE_RUN_STATUSES
from workflowd.store.codec import dump
from workflowd.store.sql import Conn

# Spelled into the SQL (our own constants), so the planner can use the partial index, whose
# condition a bound parameter could not be proved to imply.
_ACTIVE = ", ".join(f"'{status.value}'" for status in ACTIVE_RUN_STATUSES)


def value_bytes(value: Json) -> int:
    """How many bytes `value` takes as the store writes it."""
    return len(dump(value).encode())


def active_runs(conn: Conn, company: str, at_most: int = 0) -> int:
    """The company's active runs, counted no further than `at_most` (0: all of them)."""
    found = f"SELECT 1 FROM runs WHERE company = ? AND status IN ({_ACTIVE})"
    if at_most:
        row = conn.execute(
            f"SELECT COUNT(*) AS n FROM ({found} LIMIT ?) AS found", (company, at_most)
        ).fetchone()
    else:
        row = conn.execute(f"SELECT COUNT(*) AS n FROM ({found}) AS found", (company,)).fetchone()
    return int(row["n"])


def active_schedules(conn: Conn, company: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) AS n FROM schedules WHERE company = ? AND active = 1", (company,)
    ).fetchone()
    return int(row["n"])


def stored_bytes(conn: Conn, company: str) -> int:
    row = conn.execute(
        "SELECT stored_bytes FROM company_usage WHERE company = ?", (company,)
    ).fetchone()
    return 0 if row is None else int(row["stored_bytes"])


def add_stored(conn: Conn, company: str, added: int) -> None:
    """Count `added` bytes (negative: freed) in the company's total."""
    if added:
        conn.execute(
            "INSERT INTO company_usage (company, stored_bytes) VALUES (?, ?)"
            " ON CONFLICT (company) DO UPDATE"
            " SET stored_bytes = company_usage.stored_bytes + excluded.stored_bytes",
            (company, added),
        )


def charge(conn: Conn, company: str, added: int, quotas: Quotas | None) -> None:
    """`add_stored`; with `quotas`, refusing (QuotaExceeded, nothing counted) a positive
    `added` that would take the total past the stored-bytes quota."""
    if quotas is not None and quotas.stored_bytes and added > 0:
        quotas.check_stored(stored_bytes(conn, company), added)
    add_stored(conn, company, added)


def admit_runs(
    conn: Conn, quotas: Quotas, company: str, inputs: list[Json], *, inserted: bool
) -> None:
    """Admit new runs with these inputs within the company's quotas of active runs and stored
    bytes (raises QuotaExceeded), and count their inputs and their first context (`{}`, which
    the run's changes replace). `inserted`: the runs are already written in this transaction (a
    refusal rolls them back with it)."""
    if quotas.active_runs:
        # Each trigger counts, so the count stops where the quota is decided: past it, a
        # company with tens of thousands of active runs would be counted run by run each time
        # (without the quota, not at all). Only a refusal counts them all, for its words.
        new = len(inputs) if inserted else 0
        active = active_runs(conn, company, at_most=quotas.active_runs + new + 1) - new
        if active + len(inputs) > quotas.active_runs:
            active = active_runs(conn, company) - new
        quotas.check_active_runs(active, len(inputs))
    added = sum(value_bytes(value) + value_bytes({}) for value in inputs)
    quotas.check_stored(stored_bytes(conn, company), added)
    add_stored(conn, company, added)
