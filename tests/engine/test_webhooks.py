"""Webhooks against a real receiver on loopback: every notice delivered once even when the
receiver was down for a while, a receiver that hangs never holds up a run, signatures verify,
the allow-list and SIGHUP reloads, schedule decisions, and ListDeliveries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import (
    T0,
    activate,
    create,
    decision_at,
    get_schedule,
    scheduled,
    slow,
)
from tests.engine.support import AUDIT_CSV, Plane, apply, finished, trigger
from tests.engine.test_schedules import cancel_all
from tests.postgres import fresh_schema
from tests.procs import serve_embedded
from tests.scheduler.manual_clock import ManualClock
from tests.tls import make_pki
from tests.webhooks import COMPLETES, FAILS, RETRIES, SECRET, WAITS, Receiver, write_config
from workflowd.domain.notify import Destination, NotifyEvent
from workflowd.notify.sender import body_of, signature
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

Start = Callable[..., Awaitable[Daemon]]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    """`--store` for each backend: the default SQLite file, then a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield ""
        return
    with fresh_schema() as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.up()
    yield hook
    await hook.down()


async def deliveries(daemon: Daemon, **fields: object) -> list[pb.Delivery]:
    reply = await daemon.stub.ListDeliveries(pb.ListDeliveriesRequest(page_size=1000, **fields))
    return list(reply.deliveries)


async def run_of(daemon: Daemon, spec: str, name: str) -> pb.Run:
    workflow = await apply(daemon, spec.format(name=name))
    return await finished(daemon, (await trigger(daemon, workflow.id)).id)


# `store` first: its schema is dropped after the daemon has drained, not before.
async def test_a_receiver_down_for_a_while_gets_every_notice_once(
    store: str, start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "workflowd.toml", receiver.url, ["run_failed", "run_completed"]
    )
    await receiver.down()
    daemon = await start_daemon(config_file=config, store=store)
    ended = [
        await run_of(daemon, COMPLETES, "nightly"),
        await run_of(daemon, FAILS, "broken"),
        await run_of(daemon, COMPLETES, "hourly"),
    ]

    async def retried() -> bool:
        found = await deliveries(daemon)
        return len(found) == 3 and all(d.attempts >= 2 for d in found)

    await eventually(retried)
    pending = await deliveries(daemon, statuses=[pb.DELIVERY_STATUS_PENDING])
    assert len(pending) == 3
    assert all("ClientConnectorError" in d.last_error for d in pending), pending
    await receiver.up()

    async def delivered() -> list[pb.Delivery]:
        found = await deliveries(daemon, statuses=[pb.DELIVERY_STATUS_DELIVERED])
        return found if len(found) == 3 else []

    done = await eventually(delivered)
    assert sorted(receiver.counts().values()) == [1, 1, 1]  # no notice twice
    registry = daemon.app.metrics.registry
    for outcome, at_least in (("delivered", 3), ("retried", 6)):
        labels = {"destination": "ops", "outcome": outcome, "company": "local"}
        counted = sum(
            registry.get_sample_value(
                "workflowd_webhook_deliveries_total", {**labels, "workflow": w}
            )
            or 0
            for w in ("etl/nightly", "etl/broken", "etl/hourly")
        )
        assert counted >= at_least if outcome == "retried" else counted == at_least
    assert {d.delivery_id for d in done} == set(receiver.counts())
    assert all(r.signed for r in receiver.received)
    by_run = {r.body["run"]: r for r in receiver.received}
    assert set(by_run) == {run.id for run in ended}
    failed = by_run[ended[1].id]
    assert failed.event == "run_failed"
    assert failed.body["status"] == "failed"
    assert failed.body["workflow"]["namespace"] == "etl"
    assert failed.body["workflow"]["name"] == "broken"
    assert failed.body["problem"]["title"] == "the nightly load broke"
    assert failed.body["problem"]["instance"] == "/do/0/boom"
    assert failed.body["link"] == f"https://workflowd.example.com/runs/{ended[1].id}"
    assert failed.body["scheduledAt"] is None
    assert by_run[ended[0].id].body["problem"] is None


async def test_a_receiver_that_hangs_never_holds_up_a_run(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "workflowd.toml",
        receiver.url,
        ["run_completed"],
        extra="max_concurrent = 1",
        destination="timeout_s = 60",
    )
    receiver.hang = True
    daemon = await start_daemon(config_file=config)
    first = await run_of(daemon, COMPLETES, "first")
    await receiver.arrived.wait()
    # The receiver holds the only delivery slot and answers nothing: runs go on regardless.
    later = [await run_of(daemon, COMPLETES, f"later-{i}") for i in range(5)]
    assert receiver.hanging == 1
    assert [run.status for run in [first, *later]] == [pb.RUN_STATUS_COMPLETED] * 6
    assert len(await deliveries(daemon, statuses=[pb.DELIVERY_STATUS_PENDING])) == 6
    receiver.hang = False
    receiver.release.set()

    async def all_delivered() -> bool:
        done = await deliveries(daemon, statuses=[pb.DELIVERY_STATUS_DELIVERED])
        return len(done) == 6

    await eventually(all_delivered)
    assert len(receiver.counts()) == 6


async def test_a_url_outside_the_allow_list_is_refused_at_start(tmp_path: Path) -> None:
    from tests.conftest import serve_refused

    config = write_config(
        tmp_path / "workflowd.toml",
        "https://hooks.elsewhere.example/T0SECRET/B0SECRET",
        ["run_failed"],
        allow=["https://hooks.example.com/workflowd/"],
    )
    said = await serve_refused(tmp_path / "data", "--config", str(config))
    assert said.startswith("workflowd: cannot start: webhooks.destinations[0] ('ops').url:")
    assert "https://hooks.elsewhere.example is not on the operator's allow-list" in said
    assert "webhooks.allow: https://hooks.example.com/workflowd/" in said
    assert "SECRET" not in said  # a webhook URL's path is often a secret itself


async def test_a_reload_takes_new_destinations_and_refuses_a_bad_file_whole(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    path = tmp_path / "workflowd.toml"
    write_config(path, receiver.url, ["run_failed"])
    daemon = await start_daemon(config_file=path)
    quiet = await run_of(daemon, COMPLETES, "quiet")
    assert await deliveries(daemon, run_id=quiet.id) == []
    write_config(path, receiver.url, ["run_failed", "run_completed"])
    assert daemon.app.reload_webhooks()
    heard = await run_of(daemon, COMPLETES, "heard")
    await eventually(lambda: _delivered_for(daemon, heard.id))
    allow = [f"http://127.0.0.1:{receiver.port}/"]
    write_config(path, "https://not-allowed.example/x", ["run_completed"], allow=allow)
    assert not daemon.app.reload_webhooks()  # refused: the previous destinations stay
    kept = await run_of(daemon, COMPLETES, "kept")
    await eventually(lambda: _delivered_for(daemon, kept.id))
    assert {r.body["run"] for r in receiver.received} == {heard.id, kept.id}


@pytest.mark.slow
async def test_sighup_to_workflowd_serve_reloads_the_webhooks(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "workflowd.toml", receiver.url, ["run_failed"])
    process, address, _ = await serve_embedded(tmp_path / "d", "--config", str(config))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.WorkflowServiceStub(channel)
            created = await stub.CreateWorkflow(
                pb.CreateWorkflowRequest(specification=COMPLETES.format(name="heard"))
            )

            async def completed_run() -> str:
                reply = await stub.TriggerWorkflow(
                    pb.TriggerWorkflowRequest(workflow_id=created.workflow.id)
                )
                async for _ in stub.WatchRun(pb.WatchRunRequest(run_id=reply.run.id)):
                    pass
                return reply.run.id

            unheard = await completed_run()  # completions are not asked for yet
            write_config(config, receiver.url, ["run_failed", "run_completed"])
            process.proc.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                return any("webhooks reloaded" in line for line in process.last_lines)

            await eventually(reloaded, timeout_s=60)
            heard = await completed_run()
            await asyncio.wait_for(receiver.arrived.wait(), 60)
            assert [r.body["run"] for r in receiver.received] == [heard]
            assert unheard != heard
    finally:
        await process.stop()
    assert process.proc.returncode == 0


async def _delivered_for(daemon: Daemon, run_id: str) -> bool:
    found = await deliveries(daemon, run_id=run_id)
    return [d.status for d in found] == [pb.DELIVERY_STATUS_DELIVERED]


async def test_retries_and_globs_choose_the_notices(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "workflowd.toml",
        receiver.url,
        ["task_retrying", "run_failed"],
        workflows=["etl/flaky-*"],
    )
    daemon = await start_daemon(config_file=config)
    flaky = await run_of(daemon, RETRIES, "flaky-load")
    other = await run_of(daemon, FAILS, "other")
    assert flaky.status == other.status == pb.RUN_STATUS_FAILED

    async def both() -> bool:
        return len(receiver.unique()) == 2

    await eventually(both)
    events = {r.event: r.body for r in receiver.received}
    assert set(events) == {"task_retrying", "run_failed"}
    assert events["task_retrying"]["task"]["reference"] == "/do/0/guard"
    assert events["task_retrying"]["task"]["attempt"] == 2
    assert events["task_retrying"]["problem"]["title"] == "flaky"
    assert {body["run"] for body in events.values()} == {flaky.id}
    assert await deliveries(daemon, run_id=other.id) == []  # not one of the globs


async def test_a_missed_schedule_is_told(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    first = await start_daemon(clock=ManualClock(T0))
    plane = Plane.of(first)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    wf = await create(first, scheduled("nightly", "{cron: '*/5 * * * *'}"))
    await activate(first, wf.id, catchup_policy=pb.CATCHUP_POLICY_NONE)
    await first.app.drain()
    config = write_config(tmp_path / "workflowd.toml", receiver.url, ["schedule_missed"])
    daemon = await start_daemon(
        first.data_dir, clock=ManualClock(T0 + timedelta(hours=3)), config_file=config
    )

    async def told() -> bool:
        return len(receiver.unique()) == 1

    await eventually(told)
    body = receiver.received[0].body
    assert body["event"] == "schedule_missed"
    assert body["status"] == "missed"
    assert body["workflow"]["name"] == "nightly"
    assert body["scheduledAt"] == "2026-01-05T12:05:00Z"
    assert "the catch-up policy is NONE" in body["reason"]
    assert body["run"] is None
    decisions = (await get_schedule(daemon, wf.id)).recent_decisions
    assert [d.outcome for d in decisions] == [pb.FIRE_OUTCOME_MISSED]


async def test_a_slack_destination_gets_text(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "workflowd.toml", receiver.url, ["run_failed"], destination='format = "slack"'
    )
    daemon = await start_daemon(config_file=config)
    run = await run_of(daemon, FAILS, "broken")
    await eventually(lambda: _delivered_for(daemon, run.id))
    text = receiver.received[0].body["text"]
    assert text.splitlines()[:2] == [
        f"workflowd: etl/broken run failed (run {run.id})",
        "the nightly load broke at /do/0/boom",
    ]
    assert receiver.received[0].signed


def test_the_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    destination = Destination(
        "d", "https://x.example/", SECRET, frozenset({NotifyEvent.RUN_FAILED})
    )
    body = body_of(destination, {"event": "run_failed", "run": "r"})
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1_700_000_000, body) == f"sha256={expected}"
    assert signature(SECRET, 1_700_000_001, body) != f"sha256={expected}"
    assert signature("another-secret-of-length", 1_700_000_000, body) != f"sha256={expected}"


async def test_one_company_sees_only_its_deliveries(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file

    config = write_config(tmp_path / "workflowd.toml", receiver.url, ["run_completed"])
    tokens = tokens_file(tmp_path / "tokens.toml", TOKENS)
    daemon = await start_daemon(config_file=config, tokens_file=str(tokens))
    for metadata, name in ((ACME, "acme-job"), (GLOBEX, "globex-job")):
        reply = await daemon.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=COMPLETES.format(name=name)), metadata=metadata
        )
        run = await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=reply.workflow.id), metadata=metadata
        )
        assert run.run.id
    await eventually(lambda: _count(receiver, 2))
    mine = await daemon.stub.ListDeliveries(pb.ListDeliveriesRequest(), metadata=ACME)
    assert [d.name for d in mine.deliveries] == ["acme-job"]
    assert receiver.unique().keys() >= {d.delivery_id for d in mine.deliveries}


async def _count(receiver: Receiver, wanted: int) -> bool:
    return len(receiver.unique()) == wanted


async def test_tls_is_verified_and_a_ca_file_trusts_a_private_ca(
    start_daemon: Start, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    receiver = Receiver(tls=context)
    await receiver.up()
    try:
        config = write_config(tmp_path / "untrusted.toml", receiver.url, ["run_completed"])
        first = await start_daemon(config_file=config)
        run = await run_of(first, COMPLETES, "secure")

        async def refused() -> list[pb.Delivery]:
            found = await deliveries(first, run_id=run.id)
            return found if found and found[0].attempts >= 2 else []

        said = (await eventually(refused))[0].last_error
        assert said.startswith("TLS:"), said
        assert "CERTIFICATE_VERIFY_FAILED" in said
        assert receiver.received == []
        await first.app.drain()
        trusted = write_config(
            tmp_path / "trusted.toml",
            receiver.url,
            ["run_completed"],
            extra=f'ca_file = "{pki.ca}"',
        )
        second = await start_daemon(first.data_dir, config_file=trusted)
        await eventually(lambda: _delivered_for(second, run.id))
        assert [r.body["run"] for r in receiver.received] == [run.id]
    finally:
        await receiver.down()


async def test_the_cli_lists_deliveries(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    from tests.test_cli import cli

    config = write_config(tmp_path / "workflowd.toml", receiver.url, ["run_failed"])
    daemon = await start_daemon(config_file=config)
    run = await run_of(daemon, FAILS, "broken")
    await eventually(lambda: _delivered_for(daemon, run.id))
    code, out, err = await cli("deliveries", address=daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["CREATED", "EVENT", "WORKFLOW", "DESTINATION", "OUTCOME", "TRIES"]
    assert lines[1].split()[2:] == ["run_failed", "etl/broken", "ops", "delivered", "1"]
    assert lines[2].strip() == f"run {run.id}"
    code, out, err = await cli(
        "deliveries", "--status", "failed", "-o", "json", address=daemon.address
    )
    assert code == 0, err
    assert json.loads(out) == {}


async def test_deliveries_show_a_receivers_answer_without_obeying_its_escapes(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    from tests.test_cli import cli

    receiver.refuse = (503, "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07busy")
    config = write_config(tmp_path / "workflowd.toml", receiver.url, ["run_failed"])
    daemon = await start_daemon(config_file=config)
    run = await run_of(daemon, FAILS, "broken")

    async def refused_once() -> bool:
        found = await deliveries(daemon, run_id=run.id)
        return bool(found) and found[0].attempts >= 1 and bool(found[0].last_error)

    await eventually(refused_once)
    code, out, err = await cli("deliveries", "--run", run.id, address=daemon.address)
    assert code == 0, err
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "last error: HTTP 503: \\x1b[2J\\x1b]52;c;cm0gLXJmIH4=\\x07busy" in out


async def test_a_cancelled_run_is_told_to_its_company_only(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file

    config = write_config(
        tmp_path / "workflowd.toml",
        receiver.url,
        ["run_cancelled", "run_completed"],
        destination='company = "acme"',
    )
    tokens = tokens_file(tmp_path / "tokens.toml", TOKENS)
    daemon = await start_daemon(config_file=config, tokens_file=str(tokens))
    waits = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=WAITS.format(name="paused")), metadata=ACME
    )
    run = (
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=waits.workflow.id), metadata=ACME
        )
    ).run
    await daemon.stub.CancelRun(
        pb.CancelRunRequest(run_id=run.id, reason="not tonight"), metadata=ACME
    )
    theirs = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=COMPLETES.format(name="theirs")), metadata=GLOBEX
    )
    other = (
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=theirs.workflow.id), metadata=GLOBEX
        )
    ).run

    async def ended(run_id: str, metadata: tuple[tuple[str, str], ...]) -> bool:
        got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=metadata)
        return got.run.status in (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_CANCELLED)

    await eventually(lambda: ended(other.id, GLOBEX))
    await eventually(lambda: _count(receiver, 1))
    body = receiver.received[0].body
    assert body["event"] == "run_cancelled"
    assert body["status"] == "cancelled"
    assert body["workflow"]["name"] == "paused"
    assert receiver.received[0].signed
    # The outbox row is committed with the event: globex's ended run would have one by now.
    assert (
        await daemon.stub.ListDeliveries(pb.ListDeliveriesRequest(), metadata=GLOBEX)
    ).deliveries == []


async def test_a_delivery_past_its_deadline_is_given_up_and_says_why(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "workflowd.toml", receiver.url, ["run_failed"], extra="deadline_s = 1"
    )
    await receiver.down()
    daemon = await start_daemon(config_file=config)
    run = await run_of(daemon, FAILS, "broken")

    async def given_up() -> list[pb.Delivery]:
        found = await deliveries(daemon, run_id=run.id)
        return found if [d.status for d in found] == [pb.DELIVERY_STATUS_FAILED] else []

    (delivery,) = await eventually(given_up, timeout_s=30)
    assert delivery.attempts >= 2
    assert delivery.last_error
    assert receiver.received == []


async def test_a_skipped_fire_is_told(
    start_daemon: Start, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "workflowd.toml", receiver.url, ["schedule_skipped"])
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock, config_file=config)
    wf = await create(daemon, slow("skipper", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    clock.set(T0.replace(minute=5))
    first = await decision_at(daemon, wf.id, T0.replace(minute=5))
    assert first.outcome == pb.FIRE_OUTCOME_FIRED
    clock.set(T0.replace(minute=10))
    skipped = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert skipped.outcome == pb.FIRE_OUTCOME_SKIPPED
    await eventually(lambda: _count(receiver, 1))
    body = receiver.received[0].body
    assert body["event"] == "schedule_skipped"
    assert body["status"] == "skipped"
    assert body["scheduledAt"] == "2026-01-05T12:10:00Z"
    assert body["reason"] == f"run {first.run_id} is still active (SKIP)"
    await cancel_all(daemon, wf.id)
