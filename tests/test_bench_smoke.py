"""The benches still run: each with `--quick`, as a subprocess, ending with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.postgres import require_server

BENCH = REPO / "scripts" / "bench"
# Each bench starts daemons and measures for a few seconds: a busy machine makes that slower,
# never wrong, so the deadline is generous. They run in a CI step of their own (`-m bench`).
pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]


def last_json_line(script: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def test_overhead_bench_reports_its_figures() -> None:
    result = last_json_line("overhead.py")
    for key in ("per_task_overhead_ms_p50", "per_task_overhead_ms_p99", "ratio_vs_direct"):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key


def test_dataplane_jobs_bench_reports_its_figures() -> None:
    result = last_json_line("dataplane_jobs.py")
    for workers in ("workers_1", "workers_2"):
        figures = result[workers]
        assert isinstance(figures, dict)
        assert figures["jobs"] == 100
        for key in ("jobs_per_s", "latency_ms_p50", "end_to_client_ms_p50", "end_to_client_ms_p99"):
            value = figures[key]
            assert isinstance(value, float), key
            assert value > 0, key


def test_tracing_overhead_bench_reports_its_figures() -> None:
    result = last_json_line("tracing_overhead.py")
    for key in ("per_task_overhead_ms_p50_off", "per_task_overhead_ms_p50_on"):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key
    spans = result["spans_exported"]
    assert isinstance(spans, int)
    assert spans > 0  # tracing was on for one daemon


def test_concurrency_bench_reports_its_figures() -> None:
    result = last_json_line("concurrency.py")
    phase = result["runs_200"]
    assert isinstance(phase, dict)
    assert phase["ended_by_status"] == {"completed": 200}
    for key in ("peak_rss_mb", "loop_lag_ms_p99", "event_latency_ms_p99"):
        assert isinstance(phase[key], float), key
    assert phase["watch_seq_faults"] == 0
    split = phase["loop_thread_cpu_ms_per_task"] + phase["other_threads_cpu_ms_per_task"]
    assert abs(split - phase["daemon_cpu_ms_per_task"]) < 0.5  # the CPU split by thread
    assert phase["latency_samples"] == 2 * phase["watchers"]  # two tasks per watched run


def test_scheduler_bench_reports_its_figures() -> None:
    result = last_json_line("scheduler.py")
    assert isinstance(result["fires_measured"], int)
    assert result["fires_measured"] > 0
    for key in ("fire_lateness_ms_p99", "idle_cpu_percent", "rss_mb", "schedule_backlog_max"):
        value = result[key]
        assert isinstance(value, float), key
        assert value >= 0, key
    assert isinstance(result["other_runs"], int)
    assert result["other_runs"] > 0  # another workflow's runs went through meanwhile


def test_recovery_bench_reports_its_figures() -> None:
    result = last_json_line("recovery.py")
    assert result["runs"] == result["in_flight_at_kill"] == 300
    assert result["duplicate_jobs"] == 0
    assert result["stuck_runs"] == 0
    for key in ("serving_s", "reattached_s"):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key


def test_store_writes_bench_reports_its_figures() -> None:
    result = last_json_line("store_writes.py")
    for way in ("aiosqlite_per_change", "aiosqlite_grouped", "group_writer"):
        figures = result[f"{way}_c1000"]
        assert isinstance(figures, dict)
        assert figures["changes_per_s"] > 0, way
    batched = result["group_writer_c1000"]
    assert isinstance(batched, dict)
    assert batched["changes_per_commit"] > 1


def test_replicas_bench_reports_its_figures() -> None:
    require_server()
    result = last_json_line("replicas.py")
    rates = result["runs_per_s"]
    assert isinstance(rates, dict)
    assert set(rates) == {"1", "2"}
    assert all(isinstance(rate, float) and rate > 0 for rate in rates.values())
    assert result["duplicate_jobs"] == 0
    assert isinstance(result["adoption_s"], float)
    assert result["adoption_s"] > 0


def test_fairness_bench_reports_its_figures() -> None:
    result = last_json_line("fairness.py")
    for case in ("default", "lifted", "flood"):
        figures = result[case]
        assert isinstance(figures, dict), case
        assert isinstance(figures["loaded_trigger_ms_p99"], float), case
    lifted, default, flood = result["lifted"], result["default"], result["flood"]
    assert isinstance(lifted, dict)
    assert isinstance(default, dict)
    assert isinstance(flood, dict)
    assert lifted["schedules_active"] == 30
    assert lifted["runs_created_after_unschedule"] == 0
    assert lifted["quiet_refused_by_own_quota"] == 0
    assert default["activations_refused"] == {"RESOURCE_EXHAUSTED: quota_min_every_s": 30}
    assert isinstance(flood["noisy_triggers"], dict)
    assert flood["noisy_triggers"]["RESOURCE_EXHAUSTED"] > 0


def test_large_input_bench_reports_its_figures() -> None:
    result = last_json_line("large_input.py")
    assert result["runs_completed"] == result["runs"] == 2
    for key in ("baseline_get_workflow_ms_p50", "loaded_get_workflow_ms_p50"):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key


@pytest.mark.slow
@pytest.mark.browser
def test_web_bench_reports_its_figures() -> None:
    from tests.web.test_browser import require_chromium

    require_chromium()
    result = last_json_line("web.py")
    assert result["runs_stored"] == 20_000
    for key in ("first_render_server_ms", "runs_page_server_ms_p50", "event_latency_ms_p99"):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key
    assert result["latency_samples"] == result["events_published"]


def test_retention_bench_reports_its_figures() -> None:
    result = last_json_line("retention.py")
    runs = result["runs"]
    assert isinstance(runs, int)
    # 90 % of the stored runs are past the 7 days kept, and go; the others stay.
    assert result["deleted_runs"] == runs * 9 // 10
    assert result["runs_left"] == runs - runs * 9 // 10
    for key in ("deletion_s", "writer_stall_ms_p99", "store_mb_before", "store_mb_after"):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key
    assert result["store_mb_after"] < result["store_mb_before"]  # the file gave pages back
    during = result["during_retention"]
    assert isinstance(during, dict)
    assert during["runs_triggered"] > 0
