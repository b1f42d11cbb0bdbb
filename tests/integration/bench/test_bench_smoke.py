"""The benchmarks keep working: a quick run of every scenario that needs no Celery.

It checks that each scenario prints its table, that the comparison is printed, and that the JSON
results are written. It asserts nothing about speed: the figures of a quick run mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import backpressure, cancel, flow, latency, many_workers, memory, recovery, stores, throughput

REPO = Path(__file__).resolve().parents[3]
SCENARIOS = (throughput, latency, cancel, backpressure, memory, recovery, many_workers, flow)
# One row of each scenario's table, as the quick sizes label it.
ROWS = (
    "bare grpc.aio unary echo, 16 callers",
    "bare grpc.aio, 16 callers multiplexed on one stream",
    "taskwire, one submit per task: end to end",
    "taskwire, one submit per task: server CPU per task, store writer included",
    "taskwire, one SubmitExecution call per task (generated stub, unary): end to end",
    "bare grpc.aio bidi stream, 2 streams × window 50",
    "taskwire, batches of 100: end to end",
    "taskwire, batches of 100, every result collected (WaitExecutions): end to end",
    "results collected (WaitExecutions) vs batched end to end, tasks/s",
    "bare grpc.aio unary round trip at 100/s p50",
    "bare stream round trip at 100/s p50",
    "at 100/s: submit → handler start p99",
    "at 100/s: durable acknowledgement (SDK submit returns) p50",
    "at 1000/s: submit → completion seen p50",
    "idle: cancel → abort signal p50",
    "under 200/s load: cancel → CANCELLED seen p99",
    "fail-fast: refused (RESOURCE_EXHAUSTED)",
    "wait-for-room: admitted in arrival order",
    "server RSS per pending task",
    "3,000 pending: start → first GetStats",
    "batched end to end, just before the drain",
    "200 streams vs 4: throughput ratio",
    "4 worker processes vs 2: throughput ratio",
    "plain FIFO (default priority): dispatch pass per task",
    "priorities 1..9, aging on: dispatch pass per task",
    "100 concurrency keys, limit 10 each: engine time per task",
    "100 fairness keys in turns: dispatch pass per task",
    "a rate limit (never empty): dispatch pass per task",
)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_run_prints_every_table_and_writes_json(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--results-dir", str(tmp_path)]
        + [module.NAME for module in SCENARIOS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    report = f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert completed.returncode == 0, report
    for module in SCENARIOS:
        assert module.TITLE in completed.stdout, report
    for row in ROWS:
        assert row in completed.stdout, report
    assert "Side by side (same invocation)" in completed.stdout
    assert "Targets" in completed.stdout
    written = list(tmp_path.glob("bench-*.json"))
    assert len(written) == 1, written
    results = json.loads(written[0].read_text())
    assert results["mode"] == "quick"
    assert results["failures"] == {}
    assert set(results["scenarios"]) == {module.NAME for module in SCENARIOS}
    for name, scenario in results["scenarios"].items():
        assert scenario["metrics"], f"{name} recorded no figure"
    assert {target["status"] for target in results["targets"]} <= {"MET", "MISSED", "n/a"}
    judged = {target["target"]: target for target in results["targets"] if not target["stretch"]}
    for name in (
        "one submit per task: server CPU per task, store writer included",
        "dispatch at 100/s: submit → handler start p50 vs the bare unary round trip",
    ):
        assert judged[name]["status"] in {"MET", "MISSED"}, judged[name]
        assert judged[name]["value"] > 0, judged[name]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_stores_scenario_measures_both_stores_with_the_database_cpu(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--results-dir", str(tmp_path), stores.NAME],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    report = f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert completed.returncode == 0, report
    assert stores.TITLE in completed.stdout, report
    [written] = tmp_path.glob("bench-*.json")
    metrics = json.loads(written.read_text())["scenarios"][stores.NAME]["metrics"]
    for kind in ("sqlite", "postgresql"):
        for figure in ("tasks_per_s", "database_cpu", "server_cpu", "start_p50", "start_p99"):
            assert metrics[f"{kind}.{figure}"]["median"] > 0, (kind, figure, report)
