"""What each company takes of the store, counted in the transactions that store it
(`store/usage.py`), on each backend: run inputs when runs are created, and the values a run's
changes store through `RunTx.charge_values`, refused past the company's quota with the change
rolled back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.store.test_store import NOW, new_run, open_store
from workflowd.domain.errors import QuotaExceeded
from workflowd.domain.quotas import Quotas
from workflowd.store import usage
from workflowd.store.runtx import RunTx
from workflowd.store.sql import Conn


async def stored(store_url: str) -> int:
    store = await open_store(store_url)
    try:
        return await store.db.writer.submit(lambda conn: usage.stored_bytes(conn, "local"))
    finally:
        await store.aclose()


async def test_a_runs_changes_count_their_values_and_a_refusal_rolls_back(store_url: str) -> None:
    store = await open_store(store_url)
    await new_run(store, "r1")  # its input, `{}`: 2 bytes
    quotas = Quotas(stored_bytes=1000)

    def charge(added: int) -> Callable[[Conn], None]:
        def op(conn: Conn) -> None:
            tx = RunTx(conn, "r1", NOW)
            tx.set_context({"grown": "x" * added})
            tx.charge_values(added, quotas)
            tx.close()

        return op

    await store.db.writer.submit(charge(600))
    with pytest.raises(QuotaExceeded) as info:
        await store.db.writer.submit(charge(500))
    assert info.value.setting == "quota_stored_bytes"
    assert "would bring the company's to 1102, over its quota of 1000 bytes" in info.value.message
    run = await store.get_run("local", "r1")
    assert run.context == {"grown": "x" * 600}  # the refused change left nothing
    await store.db.writer.submit(  # freeing is never refused
        lambda conn: RunTx(conn, "r1", NOW).charge_values(-300, quotas)
    )
    await store.aclose()
    assert await stored(store_url) == 2 + 600 - 300  # exact, and it survived the restart
