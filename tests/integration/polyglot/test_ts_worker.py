"""A mixed fleet: one server, a Python worker and the TypeScript worker (sdks/typescript) serving the same
handlers, through results, upstream references, cancel, retry, a drain, a graceful server restart and a kill -9
of the TypeScript worker; and the TypeScript worker passes the conformance kit."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from taskwire.conformance import CHECKS
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.faults.checker import Fault, HandlerRun
from tests.faults.journal import HANDLERS, journal_env, read_journal
from tests.faults.scenario import Load, final_report
from tests.harness import BIN, Cluster, Process, ServerProcess, spawn, wait_for
from tests.integration.polyglot.conftest import ROOT
from tests.integration.server.support import Client, spec, task

TS_HANDLERS = Path(__file__).with_name("fleet_handlers.mjs")
PY_HANDLERS = f"{HANDLERS},tests.integration.polyglot.fleet_handlers"
SLOTS = 2
SERVER_ARGS = ("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")
TS_NAME = "ts-worker"
PY_NAME = "py-worker"


def start_ts_worker(procs: Cluster, node: Path, cli: Path, server: ServerProcess, journal: Path) -> Process:
    args = [str(node), str(cli), "--server", server.address, "--handlers", str(TS_HANDLERS)]
    process = spawn([*args, "--slots", str(SLOTS), "--name", TS_NAME], env=journal_env(journal), cwd=ROOT)
    procs.processes.append(process)
    process.wait_for_line("connected")
    return process


@pytest.fixture
def fleet(procs: Cluster, node: Path, ts_worker_cli: Path, tmp_path: Path) -> tuple[ServerProcess, Process, Path]:
    """The server with both workers, two slots each: the server, the TypeScript worker and the journal."""
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*SERVER_ARGS)
    ts_worker = start_ts_worker(procs, node, ts_worker_cli, server, journal)
    procs.worker(server, handlers=PY_HANDLERS, slots=SLOTS, name=PY_NAME, env=journal_env(journal), cwd=ROOT)
    server.wait_for_workers(2)
    return server, ts_worker, journal


def output(attempt: pb.Attempt) -> object:
    return json.loads(attempt.output.data)


def workers_of(executions: list[pb.Execution]) -> Counter[str]:
    return Counter(attempt.worker_id for e in executions for run in e.task_runs for attempt in run.attempts)


def submit_all(client: Client, *specs: tpb.ExecutionSpec) -> list[str]:
    return [client.submit(s).execution.id for s in specs]


def test_mixed_fleet_results_cancel_and_retry(fleet: tuple[ServerProcess, Process, Path], tmp_path: Path) -> None:
    server, ts_worker, journal = fleet
    ts_pid = str(ts_worker.popen.pid)
    client = Client(server.address)
    try:
        # Results: four slots in all, four tasks at once, so both workers run two each.
        ids = submit_all(client, *(spec(task("journal.work", input={"seconds": 0.5})) for _ in range(4)))
        done = [client.wait_until_terminal(execution_id) for execution_id in ids]
        assert [e.state for e in done] == [pb.EXECUTION_STATE_SUCCESS] * 4
        assert workers_of(done) == {TS_NAME: 2, PY_NAME: 2}
        for execution in done:
            (run,) = execution.task_runs
            assert output(run.attempts[0]) == {"task_run": run.id, "attempt": 1}

        # Upstream outputs: {"$from": ...} references are replaced on whichever worker runs the task.
        chained = client.submit(
            spec(
                task("fleet.echo", "a", input={"x": [10, {"y": "deep"}]}),
                task("fleet.echo", "b", input={"v": {"$from": "a", "path": "input.x.1.y"}, "n": 1.5}, depends_on=["a"]),
                task("fleet.echo", "c", input={"whole": {"$from": "b"}}, depends_on=["b"]),
            )
        ).execution.id
        finished = client.wait_until_terminal(chained)
        assert finished.state == pb.EXECUTION_STATE_SUCCESS
        runs = {run.task_id: output(run.attempts[-1]) for run in finished.task_runs}
        assert runs["b"]["input"] == {"v": "deep", "n": 1.5}  # type: ignore[index]
        assert runs["c"]["input"] == {"whole": runs["b"]}  # type: ignore[index]

        # Cancel: four waiting tasks fill every slot, two of them on the TypeScript worker; its handlers see
        # the abort through their AbortSignal, and every execution ends CANCELLED.
        waits = submit_all(client, *(spec(task("journal.work", input={"seconds": 60})) for _ in range(4)))
        wait_for(lambda: sum(run.execution_id in waits for run in read_journal(journal)) == 4, what="the four waits")
        for execution_id in waits:
            client.cancel(execution_id, "stop the fleet")
        cancelled = [client.wait_until_terminal(execution_id) for execution_id in waits]
        assert [e.state for e in cancelled] == [pb.EXECUTION_STATE_CANCELLED] * 4
        assert workers_of(cancelled) == {TS_NAME: 2, PY_NAME: 2}
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        ts_ends = [e for e in entries if e["ev"] == "end" and e["e"] in waits and e["w"] == ts_pid]
        assert [(e["result"], e["reason"]) for e in ts_ends] == [("aborted", "CANCELLED")] * 2

        # Retry: every first run fails; the JS error's name is its type; the retry succeeds. The four go in one
        # batch, so that one dispatch pass spreads them over the four free slots, two on each worker (submitted
        # one by one, a first run may fail before the next submit arrives, and the same worker take them all).
        retry = tpb_retry(max_attempts=2)
        batch = client.submit_batch(
            spec(task_with_retry("fleet.flaky", {"marker": str(tmp_path / f"m{i}")}, retry)) for i in range(4)
        )
        assert not [r.error_message for r in batch.results if r.error_code]
        flaky = [r.execution_id for r in batch.results]
        retried = [client.wait_until_terminal(execution_id) for execution_id in flaky]
        assert [e.state for e in retried] == [pb.EXECUTION_STATE_SUCCESS] * 4
        first_runs: dict[str, str] = {}
        for execution in retried:
            (run,) = execution.task_runs
            first, second = run.attempts
            assert first.outcome == pb.ATTEMPT_OUTCOME_FAILED
            assert first.error.type == "FlakyError"
            first_runs[first.worker_id] = first.error.message
            assert output(second)["attempt"] == 2  # type: ignore[index]
        assert first_runs.get(TS_NAME) == "the first run fails (typescript)", first_runs

        # SIGTERM drains: the TypeScript worker finishes the two it runs, hangs up and exits 0.
        last = submit_all(client, *(spec(task("journal.work", input={"seconds": 1})) for _ in range(4)))
        wait_for(lambda: sum(run.execution_id in last for run in read_journal(journal)) == 4, what="four runs")
        ts_worker.signal(signal.SIGTERM)
        assert ts_worker.wait() == 0, ts_worker.output
        assert [client.wait_until_terminal(i).state for i in last] == [pb.EXECUTION_STATE_SUCCESS] * 4
        drained = [run for run in read_journal(journal) if run.execution_id in last and run.worker == ts_pid]
        assert [run.result for run in drained] == ["ok", "ok"]
        assert "draining: SIGTERM" in ts_worker.output
    finally:
        client.close()


def test_killed_ts_worker_attempts_are_retried_on_the_python_worker(
    fleet: tuple[ServerProcess, Process, Path],
) -> None:
    server, ts_worker, journal = fleet
    ts_pid = str(ts_worker.popen.pid)
    load = Load(server.address, threads=1, per_thread=4, seconds=3).start()
    load.join()
    wait_for(lambda: sum(run.worker == ts_pid for run in read_journal(journal)) >= 2, what="two runs on the TS worker")
    ts_worker.kill()

    report = final_report(server.address, load, journal, {Fault.WORKER_CRASH})
    assert report.ok, str(report)
    assert report.counts["lost"] == 0
    assert report.counts["duplicated"] == 0
    runs = read_journal(journal)
    killed = [run for run in runs if run.worker == ts_pid]
    assert len(killed) == 2
    assert all(run.ended is None for run in killed)
    retried = {run.task_run_id for run in runs if run.worker != ts_pid and run.attempt > 1 and run.result == "ok"}
    assert retried == {run.task_run_id for run in killed}
    # Neither worker ever ran more attempts at once than its slots.
    for worker in {run.worker for run in runs}:
        assert most_at_once([run for run in runs if run.worker == worker]) <= SLOTS, worker


def test_a_graceful_server_restart_keeps_the_attempts_on_both_workers(
    procs: Cluster, fleet: tuple[ServerProcess, Process, Path]
) -> None:
    server, ts_worker, journal = fleet
    load = Load(server.address, threads=1, per_thread=4, seconds=2).start()
    load.join()
    wait_for(lambda: len(read_journal(journal)) == 4, what="four runs")
    server.process.signal(signal.SIGTERM)
    assert server.process.wait() == 0, server.process.output
    ts_worker.wait_for_line(r"the server is going away .*; 2 attempt")
    server = procs.server_at(server.address, *SERVER_ARGS)
    server.wait_for_workers(2)

    # A graceful restart is no crash: each task ends with its one attempt, nothing runs twice.
    report = final_report(server.address, load, journal, set())
    assert report.ok, str(report)
    assert len(read_journal(journal)) == 4
    assert sum("connected (session" in line for line in ts_worker.output.splitlines()) == 2


def most_at_once(runs: list[HandlerRun]) -> int:
    """The most runs in progress at one moment (a run that never ended counts until the end)."""
    events = sorted([(run.started, 1) for run in runs] + [(run.ended, -1) for run in runs if run.ended is not None])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def tpb_retry(*, max_attempts: int) -> pb.RetryPolicy:
    policy = pb.RetryPolicy(max_attempts=max_attempts)
    policy.initial_interval.FromMilliseconds(50)
    return policy


def task_with_retry(handler: str, value: object, retry: pb.RetryPolicy) -> tpb.TaskSpec:
    spec_ = task(handler, input=value)
    spec_.retry_policy.CopyFrom(retry)
    return spec_


def test_the_typescript_worker_passes_every_conformance_check(node: Path, ts_worker_cli: Path) -> None:
    handlers = ts_worker_cli.with_name("conformance.js")
    command = f"{node} {ts_worker_cli} --server {{address}} --slots {{slots}} --handlers {handlers}"
    result = subprocess.run(
        [str(BIN / "taskwire-conformance"), "--worker-cmd", command],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CHECKS)} of {len(CHECKS)} checks passed" in result.stdout
    for check in CHECKS:
        assert f"pass {check.name}" in result.stdout
