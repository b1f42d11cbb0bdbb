"""Prometheus metrics scraped from a real server and worker during a real workload: the documented names,
and values that follow what happened (the backlog rises then falls, waits and cancels are observed).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from taskwire.client import Client, ExecutionSpec, State, TaskSpec, ValidationError
from taskwire.common import json_payload
from tests.harness import Cluster, Process, ServerProcess, wait_for
from tests.integration.workers.support import FINISH, wait_until_running

DOCS = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def scrape(url: str) -> list[Sample]:
    return [sample for family in _families(url) for sample in family.samples]


def _families(url: str) -> list[Metric]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def families(url: str) -> set[str]:
    """The names of the metric families served, counters without their `_total`."""
    return {family.name for family in _families(url)}


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def documented(section: str) -> set[str]:
    text = DOCS.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return {name.removesuffix("_total") for name in re.findall(r"^\| `([a-z_]+)` \|", text, re.M)}


def metrics_url(process: Process) -> str:
    return process.wait_for_line(r"metrics on (http://\S+/metrics)").group(1)


def test_a_workload_shows_in_the_documented_metrics(procs: Cluster) -> None:
    server = procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--metrics-listen", "127.0.0.1:0")
    url = metrics_url(server.process)
    with Client(server.address) as client:
        # A backlog first, with no worker: it shows, and its age grows.
        ids = [client.submit("sleep", {"seconds": 0.05}).id for _ in range(30)]
        queued = scrape(url)
        assert value(queued, "taskwire_queue_backlog", handler="sleep") == 30
        assert value(queued, "taskwire_queue_oldest_age_seconds", handler="sleep") >= 0
        assert value(queued, "taskwire_handler_workers", handler="sleep") == 0

        worker = procs.worker(server, "--metrics-listen", "127.0.0.1:0", slots=3, name="metered")
        for execution_id in ids:
            assert client.wait_finished(execution_id, FINISH).state is State.SUCCESS
        # A cancel that reaches a running handler, and a call that is the caller's mistake.
        running = client.submit("sleep", {"seconds": 60})
        wait_until_running(client, running.id)
        client.cancel(running.id)
        assert client.wait_finished(running.id, FINISH).state is State.CANCELLED
        unserved = client.submit("nobody.serves", None, schedule_to_start_timeout=timedelta(seconds=0.2))
        assert client.wait_finished(unserved.id, FINISH).state is State.FAILED

    def settled() -> list[Sample] | None:
        samples = scrape(url)
        done = value(samples, "taskwire_task_runs_finished_total", handler="sleep") == 31
        # The SDK's submits went over its one submit stream, which its client ended when it closed.
        streamed = value(samples, "grpc_server_handled_total", grpc_method="StreamSubmits", grpc_type="bidi_stream")
        return (
            samples
            if done and streamed == 1 and value(samples, "taskwire_queue_backlog", handler="sleep") == 0
            else None
        )

    samples = wait_for(settled, what="the workload in the metrics")
    assert (
        value(samples, "taskwire_task_runs_finished_total", handler="sleep", state="SUCCESS", reason="COMPLETED") == 30
    )
    assert value(samples, "taskwire_task_runs_finished_total", state="CANCELLED", reason="EXECUTION_CANCELLED") == 1
    timed_out = value(
        samples, "taskwire_task_runs_finished_total", handler="nobody.serves", reason="SCHEDULE_TO_START_TIMEOUT"
    )
    assert timed_out == 1
    assert value(samples, "taskwire_schedule_to_start_seconds_count", handler="sleep") == 31
    # The first 30 waited for the worker to start: their waits are in the histogram's upper buckets.
    assert value(samples, "taskwire_schedule_to_start_seconds_sum", handler="sleep") > 0
    assert value(samples, "taskwire_cancel_delivery_seconds_count", handler="sleep") == 1
    assert value(samples, "taskwire_worker_slots", worker="metered") == 3
    assert value(samples, "taskwire_worker_slots_in_use", worker="metered") == 0
    assert value(samples, "taskwire_connected_workers") == 1
    assert value(samples, "taskwire_store_commit_seconds_count") > 0
    assert value(samples, "taskwire_store_commit_records_sum") >= 31 * 3  # each run: created, started, ended
    assert value(samples, "grpc_server_handled_total", grpc_method="SubmitExecution") == 0
    assert value(samples, "grpc_server_handled_total", grpc_service="taskwire.v1.WorkerService") == 0  # still open
    assert value(samples, "grpc_server_handling_seconds_count", grpc_method="GetExecution") > 0
    assert families(url) == documented("Server") | documented("The process"), "docs/metrics.md and the server differ"

    agent_url = metrics_url(worker)
    agent = scrape(agent_url)
    assert value(agent, "taskwire_worker_agent_slots") == 3
    assert value(agent, "taskwire_worker_agent_connected") == 1
    assert value(agent, "taskwire_worker_agent_attempts_total", handler="sleep", outcome="succeeded") == 30
    assert value(agent, "taskwire_worker_agent_attempts_total", handler="sleep", outcome="cancelled") == 1
    assert value(agent, "taskwire_worker_agent_handler_seconds_count", handler="sleep") == 31
    served = families(agent_url)
    assert served == documented("Worker agent") | documented("The process"), "docs/metrics.md and the worker differ"

    # The worker's stream, once it ends, is counted as the bidirectional stream it is.
    worker.stop()
    wait_for(
        lambda: value(scrape(url), "grpc_server_handled_total", grpc_method="Connect", grpc_type="bidi_stream") == 1,
        what="the ended worker stream in the metrics",
    )


def test_tasks_in_flight_are_left_to_die_young(procs: Cluster) -> None:
    """The server's collector passes over its youngest generation when the live objects grow by `YOUNG_OBJECTS`,
    not every 700 of them: 2,000 tasks through a worker cost it a few passes at most, where CPython's default
    made about one every 15 tasks (each finding the tasks in flight alive and moving them on to be walked again)."""
    server = procs.server("--metrics-listen", "127.0.0.1:0", db_name="collector.db")
    url = metrics_url(server.process)
    procs.worker(server, slots=50, name="collected")
    server.wait_for_workers(1)
    spec = ExecutionSpec(tasks=(TaskSpec("echo", input=json_payload({"n": 1})),))
    with Client(server.address) as client:
        before = value(scrape(url), "python_gc_collections_total", generation="0")
        ids = [result.execution_id for _ in range(20) for result in client.submit_many([spec] * 100)]
        assert all(snapshot.state is State.SUCCESS for snapshot in client.wait_many(ids, FINISH))
        passes = value(scrape(url), "python_gc_collections_total", generation="0") - before
    assert passes <= 10, f"{passes:g} passes of the youngest generation for 2,000 tasks"


def test_a_refused_call_is_counted_by_its_status(procs: Cluster) -> None:
    metered = procs.server("--metrics-listen", "127.0.0.1:0", db_name="metered.db")
    url = metrics_url(metered.process)
    with Client(metered.address) as other, pytest.raises(ValidationError, match="execution_id"):
        other.get("")

    def refused() -> float | None:
        # The status reaches the caller a moment before the server's interceptor counts it.
        samples = scrape(url)
        count = value(samples, "grpc_server_handled_total", grpc_method="GetExecution", grpc_code="INVALID_ARGUMENT")
        return count or None

    assert wait_for(refused, what="the refused call in the metrics") == 1


def test_without_the_option_there_is_no_http_port(server: ServerProcess) -> None:
    assert "metrics on" not in server.process.output
