"""What each company takes of the store, counted in the transactions that store it
(`store/usage.py`), on each backend: run inputs when runs are created, and every value a run's
changes store (a task's input, job request and output, the context as it is replaced, the run's
output), exactly, across restarts."""

from __future__ import annotations

from collections.abc import Callable

from tests.store.test_store import NOW, new_run, open_store
from workflowd.domain.errors import QuotaExceeded
from workflowd.domain.quotas import Quotas
from workflowd.domain.run import NewInstance, RunStatus, TaskStatus
from workflowd.store import deletion, usage
from workflowd.store.runtx import RunTx
from workflowd.store.sql import Conn


async def stored(store_url: str) -> int:
    store = await open_store(store_url)
    try:
        return await store.db.writer.submit(lambda conn: usage.stored_bytes(conn, "local"))
    finally:
        await store.aclose()


def instance(key: str) -> NewInstance:
    return NewInstance(key, 1, "a", "call", "ExecuteDml", key, 0, (), 1, "", NOW)


async def test_a_runs_changes_count_the_values_they_store(store_url: str) -> None:
    store = await open_store(store_url)
    await new_run(store, "r1")  # its input and its context, `{}` each: 2 + 2 bytes

    def work(conn: Conn) -> None:
        tx = RunTx(conn, "r1", NOW)
        tx.start_run(NOW)
        tx.start_instance(instance("/do/0/a"))
        tx.set_input("/do/0/a", {"in": 1})  # {"in":1}: 8 bytes
        tx.record_intent("/do/0/a", {"type": "x"})  # 12 bytes
        tx.end_instance("/do/0/a", TaskStatus.COMPLETED, NOW, output=[1, 2], store_output=True)
        tx.set_context({"grown": "x" * 600})  # replaces `{}`: 614 - 2 bytes
        tx.set_context({"k": 1})  # 7 - 614 bytes
        tx.end_run(RunStatus.COMPLETED, NOW, output="done")  # 6 bytes
        tx.close()

    await store.db.writer.submit(work)
    await store.aclose()
    assert await stored(store_url) == 2 + 2 + 8 + 12 + 5 + (7 - 2) + 6  # exact, after a restart


async def test_a_replaced_context_of_other_scripts_is_counted_in_bytes(store_url: str) -> None:
    store = await open_store(store_url)
    await new_run(store, "r1")  # its input and its context, `{}` each: 2 + 2 bytes

    def work(conn: Conn) -> None:
        tx = RunTx(conn, "r1", NOW)
        tx.start_run(NOW)
        tx.set_context({"k": "é" * 100})  # {"k":"éé…"}: 8 + 200 bytes, 108 characters
        tx.set_context({"k": 1})  # {"k":1}: 7 bytes, taking back all 208
        tx.close()

    await store.db.writer.submit(work)
    await store.aclose()
    assert await stored(store_url) == 2 + 7


async def test_a_deleted_run_takes_back_its_values_in_bytes(store_url: str) -> None:
    store = await open_store(store_url)
    await new_run(store, "r1")  # its input and its context, `{}` each: 2 + 2 bytes
    await new_run(store, "r2")

    def work(conn: Conn) -> None:
        tx = RunTx(conn, "r1", NOW)
        tx.start_run(NOW)
        tx.start_instance(instance("/do/0/a"))
        tx.set_input("/do/0/a", {"k": "é" * 100})  # 208 bytes, 108 characters
        tx.end_instance("/do/0/a", TaskStatus.COMPLETED, NOW, output="ü" * 50, store_output=True)
        tx.set_context({"k": "日" * 10})  # 38 bytes, 18 characters
        tx.end_run(RunStatus.COMPLETED, NOW, output="ß")  # 4 bytes, 3 characters
        tx.close()

    await store.db.writer.submit(work)
    gone = await store.db.writer.submit(lambda conn: deletion.delete_runs(conn, "local", ["r1"]))
    await store.aclose()
    assert gone == 1
    assert await stored(store_url) == 2 + 2  # r2's input and context, exactly


async def test_active_runs_are_counted_as_far_as_the_quota_and_exactly_in_a_refusal(
    store_url: str,
) -> None:
    store = await open_store(store_url)
    for i in range(5):
        await new_run(store, f"r{i}")  # pending: active

    def admit(quotas: Quotas, *, inserted: bool = False) -> Callable[[Conn], str]:
        def op(conn: Conn) -> str:
            try:
                usage.admit_runs(conn, quotas, "local", [{}], inserted=inserted)
            except QuotaExceeded as exc:
                return exc.message
            return "admitted"

        return op

    try:
        assert await store.db.writer.submit(lambda conn: usage.active_runs(conn, "local", 3)) == 3
        assert await store.db.writer.submit(admit(Quotas(active_runs=6))) == "admitted"
        # A quota lowered below what runs already: the refusal counts them all.
        refused = await store.db.writer.submit(admit(Quotas(active_runs=2)))
        assert refused.startswith("the company has 5 active runs, and another would pass")
        # Runs written in the same transaction are the ones being admitted.
        assert await store.db.writer.submit(admit(Quotas(active_runs=5), inserted=True)) == (
            "admitted"
        )
        assert await store.db.writer.submit(admit(Quotas(active_runs=0))) == "admitted"
    finally:
        await store.aclose()
