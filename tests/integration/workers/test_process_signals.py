"""Process isolation and the signals a worker's processes get: a SIGTERM sent to every one of them (a service
manager stopping the worker) drains the worker while its handler processes take no notice, and a worker
killed with SIGKILL takes its handler processes with it, even one whose handler holds the interpreter lock."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import pytest

from taskwire.client import AttemptOutcome, Client, State
from taskwire.worker import TaskContext, handler
from tests.harness import Cluster, ServerProcess, handler_processes, process_gone, wait_for
from tests.integration.workers.support import FINISH, json_output, only_run, outcomes, wait_until_handler_reports


@handler("holds_the_interpreter_lock")
def holds_the_interpreter_lock(ctx: TaskContext) -> None:
    """Reports progress, then runs C code that keeps the interpreter lock for a minute: no other thread of its
    process runs meanwhile, so only the system can end it early."""
    ctx.progress(0.0, "holding the interpreter lock")
    ctypes.PyDLL(None).sleep(60)


def test_a_sigterm_to_every_process_of_a_worker_drains_it_and_its_running_handler_finishes(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    worker = procs.worker(server, "--isolation", "process", slots=1, name="stopped-unit")
    execution = client.submit("sleep", {"seconds": 2})
    wait_until_handler_reports(client, execution.id)
    children = handler_processes(worker.popen.pid)
    assert children, worker.output

    # As systemd stops a unit (KillMode=control-group): each process of it gets the signal, its children first.
    for pid in [*children, worker.popen.pid]:
        os.kill(pid, signal.SIGTERM)
    worker.wait_for_line("draining: no new work")
    assert worker.wait() == 0, worker.output

    done = client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert outcomes(run) == [AttemptOutcome.SUCCEEDED], run.attempts
    assert run.attempts[0].worker_id == "stopped-unit"
    assert json_output(run.attempts[0]) == {"slept_s": 2.0}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the system kills a child with its parent on Linux")
def test_a_worker_killed_with_sigkill_takes_its_handler_processes_with_it(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    worker = procs.worker(server, "--isolation", "process", handlers=__name__, slots=1)
    execution = client.submit("holds_the_interpreter_lock")
    wait_until_handler_reports(client, execution.id)
    children = handler_processes(worker.popen.pid)
    assert children, worker.output

    worker.kill()
    wait_for(lambda: all(map(process_gone, children)), timeout_s=5, what=f"the handler processes {children} to die")
