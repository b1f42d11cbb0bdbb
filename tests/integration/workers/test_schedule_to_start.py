"""No silent waits: a submit for a handler no connected worker serves says so (in the reply, on the
CLI, in the history a watch shows), and a schedule-to-start timeout ends a task that waited too long.
"""

from __future__ import annotations

from datetime import timedelta

from taskwire.client import Client, ReasonCode, State, TaskNote
from tests.harness import Cluster, ServerProcess
from tests.integration.client.conftest import Cli
from tests.integration.workers.support import FINISH, only_run, reason_code, wait_until_running

UNSERVED = "nobody.serves.this"


def notes(client: Client, execution_id: str) -> list[str]:
    """The server's notes in a finished execution's history."""
    return [event.text for event in client.watch(execution_id, timeout=FINISH) if isinstance(event, TaskNote)]


def test_the_cli_warns_and_the_watch_notes_an_unserved_handler_then_the_timeout_ends_it(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=2)  # serves the demo handlers, not UNSERVED
    server.wait_for_workers(1)
    result = Cli(server.address)("submit", UNSERVED, "--schedule-to-start-timeout", "1", "--watch")

    assert result.returncode != 0, result
    assert f"warning: no connected worker serves {UNSERVED!r}" in result.stderr, result.stderr
    assert f"note: no connected worker serves handler {UNSERVED!r}; the task waits for one for at most 1s" in (
        result.stdout
    ), result.stdout
    assert "SCHEDULE_TO_START_TIMEOUT" in result.stdout, result.stdout
    execution_id = result.stderr.split("submitted ", 1)[1].split()[0]
    done = client.get(execution_id)
    assert done.state is State.FAILED, done
    assert reason_code(done) is ReasonCode.SCHEDULE_TO_START_TIMEOUT, done.reason
    run = only_run(done)
    assert run.attempts == (), run.attempts  # it never ran
    assert run.ended_at is not None
    assert run.ended_at - run.created_at >= timedelta(seconds=1)


def test_a_served_handler_gets_no_warning_and_no_note(procs: Cluster, server: ServerProcess, client: Client) -> None:
    procs.worker(server, slots=1)
    server.wait_for_workers(1)
    submitted = client.submit("echo", {"hi": 1}, schedule_to_start_timeout=timedelta(seconds=30))
    assert submitted.unserved_handlers == ()
    done = client.wait_finished(submitted.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert notes(client, submitted.id) == []


def test_a_worker_that_connects_in_time_runs_the_waiting_task(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    submitted = client.submit("echo", {"late": True}, schedule_to_start_timeout=timedelta(seconds=60))
    assert submitted.unserved_handlers == ("echo",)
    procs.worker(server, slots=1)
    done = client.wait_finished(submitted.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert notes(client, submitted.id) == [
        "no connected worker serves handler 'echo'; the task waits for one for at most 60s"
    ]


def test_a_busy_handler_fails_a_task_that_waits_past_its_schedule_to_start_timeout(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=1)
    server.wait_for_workers(1)
    busy = client.submit("sleep", {"seconds": 30})
    wait_until_running(client, busy.id)
    queued = client.submit("echo", {}, schedule_to_start_timeout=timedelta(seconds=0.5))
    assert queued.unserved_handlers == ()  # served, only busy: the timeout is what ends it

    done = client.wait_finished(queued.id, FINISH)
    assert done.state is State.FAILED, done
    assert reason_code(only_run(done)) is ReasonCode.SCHEDULE_TO_START_TIMEOUT
    assert "schedule-to-start timeout of 0.5s (handler 'echo')" in only_run(done).reason.message  # type: ignore[union-attr]
    assert client.get(busy.id).state is State.RUNNING  # the running task is not touched
    client.cancel(busy.id)


def test_the_wait_counts_from_queueing_across_a_server_restart(procs: Cluster) -> None:
    first = procs.server()
    with Client(first.address) as before:
        submitted = before.submit(UNSERVED, None, schedule_to_start_timeout=timedelta(seconds=3))
        assert submitted.unserved_handlers == (UNSERVED,)
    assert first.process.stop() == 0
    second = procs.server_at(first.address)
    with Client(second.address) as after:
        done = after.wait_finished(submitted.id, FINISH)
    assert done.state is State.FAILED, done
    assert reason_code(done) is ReasonCode.SCHEDULE_TO_START_TIMEOUT
    run = only_run(done)
    assert run.ended_at is not None
    waited = run.ended_at - run.created_at
    assert timedelta(seconds=3) <= waited < timedelta(seconds=3) + FINISH, waited
