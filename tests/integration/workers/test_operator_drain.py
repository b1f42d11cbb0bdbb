"""Draining a worker is an operator's act: `taskwire workers drain NAME` (TaskService.DrainWorker).

The worker finishes what it runs, takes nothing new and exits 0; the other workers keep serving.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from taskwire.client import AttemptOutcome, Client, NotFound, State
from tests.harness import BIN, Cluster, ServerProcess, wait_for
from tests.integration.workers.support import FINISH, only_run, outcomes, wait_until_running, worker_named


def taskwire(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `taskwire` CLI against `server`."""
    env = {**os.environ, "TASKWIRE_SERVER": server.address}
    return subprocess.run(
        [str(BIN / "taskwire"), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_workers_drain_lets_the_worker_finish_its_task_take_nothing_new_and_exit(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    leaver = procs.worker(server, slots=2, name="leaver")  # a free slot while it drains
    running = client.submit("sleep", {"seconds": 1.5})
    assert wait_until_running(client, running.id).attempts[0].worker_id == "leaver"
    procs.worker(server, slots=1, name="keeper")

    drained = taskwire(server, "workers", "drain", "leaver", "--grace", "20", "--reason", "kernel upgrade")
    assert drained.returncode == 0, drained.stderr
    assert "leaver" in drained.stdout
    assert "draining" in drained.stdout
    leaver.wait_for_line("draining: no new work")
    assert "kernel upgrade" in leaver.output
    info = worker_named(client, "leaver")
    assert info is None or info.draining  # it may be gone already, its task done

    # The next task goes to the other worker, although the drained one has a free slot.
    after = client.submit("echo", {"after": "drain"})
    done_after = client.wait_finished(after.id, FINISH)
    assert done_after.state is State.SUCCESS, done_after
    assert [attempt.worker_id for attempt in only_run(done_after).attempts] == ["keeper"]

    # The drained worker finished its running task (one attempt, its own) and exited 0.
    done = client.wait_finished(running.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert outcomes(only_run(done)) == [AttemptOutcome.SUCCEEDED]
    assert only_run(done).attempts[0].worker_id == "leaver"
    assert leaver.wait() == 0, leaver.output
    assert "rejected attempt" not in leaver.output

    # The other worker keeps serving, and both ways of listing show it alone.
    wait_for(lambda: worker_named(client, "leaver") is None, what="the drained worker to disconnect")
    for listing in (("workers", "--json"), ("workers", "list", "--json")):
        listed = taskwire(server, *listing)
        assert listed.returncode == 0, listed.stderr
        assert [worker["name"] for worker in json.loads(listed.stdout)["workers"]] == ["keeper"]
    assert client.wait(client.submit("echo", {"still": "served"}).id, FINISH) == {"still": "served"}


def test_draining_an_unknown_worker_is_not_found(server: ServerProcess, client: Client) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        client.drain_worker("ghost")
    refused = taskwire(server, "workers", "drain", "ghost")
    assert refused.returncode == 4
    assert "workers drain ghost" in refused.stderr
    assert "'ghost'" in refused.stderr
    assert "taskwire workers" in refused.stderr  # the hint names the listing of workers
