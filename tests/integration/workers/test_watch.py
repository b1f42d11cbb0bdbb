"""Log lines and progress of two tasks running on two workers reach one watcher, complete and in order."""

from __future__ import annotations

from taskwire.client import Client, ExecutionSpec, State, TaskLog, TaskProgress, TaskSpec, to_payload
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import Collector, logs_of, progress_of

STEPS = 8


def test_one_watcher_sees_every_log_line_and_progress_event_of_two_workers_in_order(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=1, name="left")
    procs.worker(server, slots=1, name="right")
    task_input = to_payload({"steps": STEPS, "interval": 0.05})
    spec = ExecutionSpec(
        tasks=(
            TaskSpec(handler="progress", task_id="one", input=task_input),
            TaskSpec(handler="progress", task_id="two", input=task_input),
        )
    )
    execution = client.submit_execution(spec)
    events = Collector(server, execution.id).join()
    done = client.get(execution.id)

    assert done.state is State.SUCCESS, done
    workers = {run.task_id: run.attempts[0].worker_id for run in done.task_runs}
    assert sorted(workers.values()) == ["left", "right"], workers

    sequences = [event.sequence for event in events]
    assert sequences == list(range(1, len(events) + 1)), sequences
    expected = list(range(1, STEPS + 1))
    for task_id in ("one", "two"):
        run = done.task_run(task_id)
        logs: list[TaskLog] = logs_of(events, task_id)
        assert [line.text for line in logs] == [f"step {step} of {STEPS}" for step in expected], logs
        assert {(line.task_run_id, line.attempt) for line in logs} == {(run.id, 1)}
        progress: list[TaskProgress] = progress_of(events, task_id)
        assert [p.details for p in progress] == [{"step": step} for step in expected], progress
        assert [p.message for p in progress] == [f"step {step} of {STEPS}" for step in expected]
        assert [p.fraction for p in progress] == [step / STEPS for step in expected]
        assert {(p.task_run_id, p.attempt) for p in progress} == {(run.id, 1)}
        # The handler logs each step, then reports it: the history keeps that order.
        positions = {id(event): index for index, event in enumerate(events)}
        for line, report in zip(logs, progress, strict=True):
            assert positions[id(line)] < positions[id(report)], (line, report)

    # A late watcher replays the same history from the store.
    assert Collector(server, execution.id).join() == events
