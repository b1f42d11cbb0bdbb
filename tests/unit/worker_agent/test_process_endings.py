"""How a handler process ends under process isolation: with what its handler started, deaf to signals meant
for every process, always reported (whoever still holds its pipes), never after its worker, and without
holding up the worker's loop while it starts; and what its handler may start (a multiprocessing pool)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from taskwire.common import json_payload
from taskwire.worker import (
    AbortReason,
    AttemptInfo,
    Cancelled,
    ChildLimits,
    Completed,
    Failed,
    HandlerHarness,
    Isolation,
    LogLine,
    ProgressUpdate,
    TaskContext,
    demo,
)
from taskwire.worker._child import _live, _Waiter, _whole_messages
from taskwire.worker._in_child import _Job
from taskwire.worker._outcome import HandlerResult, Raised
from taskwire.worker._process import ChildProcesses, get_mp_context
from tests.harness import handler_processes, process_gone, wait_for


def starts_a_sleeper(ctx: TaskContext) -> None:
    """Starts a process that sleeps for a minute, and waits for it, deaf to its abort signal. Input: how —
    ``"system"`` (``os.system``), ``"fork"`` (a copy of this process), or ``"deaf"`` (a shell that takes no
    SIGTERM, and its sleep neither)."""
    if ctx.input == "fork":
        sleeper = os.fork()
        if sleeper == 0:
            time.sleep(60)
            os._exit(0)
        os.waitpid(sleeper, 0)
    elif ctx.input == "deaf":
        os.system("trap '' TERM; sleep 60; true")
    else:
        os.system("exec sleep 60")


def its_pid(ctx: TaskContext) -> int:
    return os.getpid()


def _square(n: int) -> int:
    return n * n


def uses_a_pool(ctx: TaskContext) -> list[int]:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return pool.map(_square, range(5))


def terminates_a_program(ctx: TaskContext) -> int:
    """Runs a shell that sends itself SIGTERM; returns its exit status (-15: the signal ended it)."""
    return subprocess.run(["sh", "-c", "kill -TERM $$; sleep 5"], check=False).returncode


def terminates_a_forked_copy(ctx: TaskContext) -> int:
    """Forks a copy of itself (no program run) that sleeps, sends it SIGTERM; returns the signal that ended it."""
    ready, told = os.pipe()
    sleeper = os.fork()
    if sleeper == 0:
        os.write(told, b"!")  # up, its fork handlers run
        time.sleep(60)
        os._exit(0)
    os.read(ready, 1)
    os.kill(sleeper, signal.SIGTERM)
    _, status = os.waitpid(sleeper, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1


def _new_children(before: set[int], count: int = 1) -> set[int]:
    """Wait until `count` handler processes of this process exist beyond `before`, and return them."""
    return wait_for(
        lambda: found if len(found := handler_processes(os.getpid()) - before) == count else None,
        timeout_s=30,
        what=f"{count} handler process(es) besides {sorted(before)}",
    )


def _started_by(child: int, count: int = 1) -> list[int]:
    """Wait until the processes `child` started (at any depth) are `count`, and return them."""

    def found() -> list[int] | None:
        started = [p.pid for p in psutil.Process(child).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
        return started if len(started) == count else None

    return wait_for(found, timeout_s=10, what=f"{count} process(es) started by the handler in {child}")


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


# A copy the handler forks holds the child's pipes whatever is marked close-on-exec: only a pidfd tells of the child.
_NEEDS_PIDFD = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd on this system")


@pytest.mark.parametrize("how", ["system", pytest.param("fork", marks=_NEEDS_PIDFD)])
async def test_a_child_killed_from_outside_is_reported_though_what_it_started_still_holds_its_pipes(how: str) -> None:
    before = handler_processes(os.getpid())
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        run = harness.start(starts_a_sleeper, how)
        await run.wait_started(timeout_s=30)
        (child,) = handler_processes(os.getpid()) - before
        started = await asyncio.to_thread(_started_by, child)
        try:
            os.kill(child, signal.SIGKILL)  # as the kernel's OOM killer would
            outcome = await run.outcome(timeout_s=5)
            assert isinstance(outcome, Failed), outcome
            assert (outcome.error.type, outcome.error.retryable) == ("HandlerProcessDied", True)
            assert "code -9" in outcome.error.message
            assert not process_gone(started[0])  # it outlived the child: the report did not wait for it
        finally:
            _kill(started)


# What the handler started gets a SIGTERM when its child is stopped, and a SIGKILL the kill grace later.
@pytest.mark.parametrize(("how", "kill_grace_s"), [("system", 60.0), ("deaf", 0.3)], ids=["sigterm", "sigkill"])
async def test_a_child_stopped_by_force_takes_what_its_handler_started_with_it(how: str, kill_grace_s: float) -> None:
    before = handler_processes(os.getpid())
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=0.2, kill_grace_s=kill_grace_s) as harness:
        run = harness.start(starts_a_sleeper, how)
        await run.wait_started(timeout_s=30)
        (child,) = handler_processes(os.getpid()) - before
        assert os.getpgid(child) == child  # the leader of a group of its own
        started = await asyncio.to_thread(_started_by, child, 1 if how == "system" else 2)
        try:
            run.abort(AbortReason.CANCELLED)
            assert await run.outcome(timeout_s=5) == Cancelled(reason=AbortReason.CANCELLED)
            await asyncio.to_thread(
                wait_for, lambda: all(map(process_gone, started)), timeout_s=5, what="what the handler started to end"
            )
        finally:
            _kill(started)


async def test_closing_kills_what_a_stopped_handler_started_though_it_takes_no_sigterm() -> None:
    before = handler_processes(os.getpid())
    # The kill grace outlasts the test: only the close can end what ignores the SIGTERM of the stop.
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=0.1, kill_grace_s=60) as harness:
        run = harness.start(starts_a_sleeper, "deaf")
        await run.wait_started(timeout_s=30)
        (child,) = handler_processes(os.getpid()) - before
        started = await asyncio.to_thread(_started_by, child, 2)  # the shell and its sleep
    try:
        assert isinstance(await run.outcome(timeout_s=0), Failed)  # stopped by the close (WorkerShutdown)
        await asyncio.to_thread(
            wait_for, lambda: all(map(process_gone, started)), timeout_s=5, what="the shell and its sleep to end"
        )
    finally:
        _kill(started)


async def test_a_sigterm_sent_to_every_process_leaves_a_running_handler_alone() -> None:
    """As a service manager stopping the worker sends it: the worker drains; its children keep running."""
    before = handler_processes(os.getpid())
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        run = harness.start(demo.sync_sleep, {"seconds": 1})
        await run.wait_started(timeout_s=30)
        (child,) = handler_processes(os.getpid()) - before
        os.kill(child, signal.SIGTERM)
        outcome = await run.outcome(timeout_s=10)
    assert isinstance(outcome, Completed), outcome
    assert outcome.value == {"slept_s": 1.0}


async def test_the_programs_a_handler_runs_still_end_on_sigterm() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(terminates_a_program, outcome_timeout_s=30)
    assert isinstance(outcome, Completed), outcome
    assert outcome.value == -signal.SIGTERM


async def test_a_copy_a_handler_forks_still_ends_on_sigterm() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(terminates_a_forked_copy, outcome_timeout_s=30)
    assert isinstance(outcome, Completed), outcome
    assert outcome.value == signal.SIGTERM


async def test_no_child_is_started_to_be_kept_ready_once_the_worker_drains() -> None:
    before = handler_processes(os.getpid())
    limits = ChildLimits(min_children=1)
    async with HandlerHarness(isolation=Isolation.PROCESS, slots=1, child_limits=limits) as harness:
        (kept,) = await asyncio.to_thread(_new_children, before)
        harness.executor.stop_accepting()
        os.kill(kept, signal.SIGKILL)
        # Reaped by the loop, which would start its replacement in the same callback.
        await asyncio.to_thread(wait_for, lambda: not Path(f"/proc/{kept}").exists(), what="the child reaped")
        assert not [child for child in _live if not child.exited], "none started in its place"
        assert handler_processes(os.getpid()) - before == set()


async def test_a_large_job_for_a_child_that_reads_nothing_yet_leaves_the_loop_free() -> None:
    before = handler_processes(os.getpid())
    limits = ChildLimits(min_children=1)
    async with HandlerHarness(isolation=Isolation.PROCESS, slots=1, child_limits=limits) as harness:
        (kept,) = await asyncio.to_thread(_new_children, before)
        os.kill(kept, signal.SIGSTOP)  # as busy as a child still starting up: it reads nothing
        resume = threading.Timer(3.0, os.kill, (kept, signal.SIGCONT))  # for a loop held by the write
        resume.start()
        try:
            blob = "x" * (1 << 20)  # far more than a pipe holds
            run = harness.start(demo.echo, {"blob": blob})
            asked = time.monotonic()
            # The attempt sends its job in its first step; a thread writes it (were it written on the loop, this
            # wait could only end once the child reads, and would find no such thread).
            await asyncio.to_thread(
                wait_for,
                lambda: any(t.name.startswith("taskwire-job-writer") for t in threading.enumerate()),
                timeout_s=10,
                what="the job's writer thread",
            )
            await asyncio.sleep(0)  # and the loop turns meanwhile
            held_s = time.monotonic() - asked
        finally:
            resume.cancel()
            os.kill(kept, signal.SIGCONT)
        assert held_s < 1.0, f"the loop was held for {held_s:.1f} s"
        outcome = await run.outcome(timeout_s=30)
    assert isinstance(outcome, Completed), outcome
    assert outcome.value == {"blob": blob}


class _Events:
    def __init__(self) -> None:
        self.taken = asyncio.Event()

    def started(self) -> None:
        self.taken.set()

    def progress(self, update: ProgressUpdate) -> None:
        pass

    def log(self, line: LogLine) -> None:
        pass


async def test_a_busy_child_whose_worker_has_gone_exits_though_its_handler_ignores_the_abort() -> None:
    """Where the system cannot kill a child with its worker, the end of its pipes tells it, and it exits once
    its handler has had a while to stop."""
    children = ChildProcesses(get_mp_context("spawn"), orphan_exit_s=0.5)
    info = AttemptInfo(
        task_run_id="run-1", attempt=1, handler="spin", input=json_payload({"seconds": 60}), execution_id="exec-1"
    )
    job = pickle.dumps(_Job(fn=demo.spin, is_async=False, info=info, log_level=logging.DEBUG))
    events = _Events()
    done: asyncio.Future[HandlerResult | None] = asyncio.get_running_loop().create_future()
    child = children.acquire()
    try:
        child.run(job, _Waiter(events=events, done=done))
        await asyncio.wait_for(events.taken.wait(), 30)
        child.retire()  # the worker's ends of its pipes close, as they do when the worker dies
        result = await asyncio.wait_for(done, 10)
        assert isinstance(result, Raised), result
        assert result.error.type == "HandlerProcessDied"
        assert "code 1" in result.error.message
    finally:
        children.close()
        await asyncio.to_thread(children.wait_closed, 5)


# A program that runs an attempt in a child, then exits without closing: the child is still there, idle.
LEAVES_A_CHILD = """
import asyncio
from taskwire.worker import HandlerHarness, Isolation
from tests.unit.worker_agent.test_process_endings import its_pid

async def main() -> None:
    outcome = await HandlerHarness(isolation=Isolation.PROCESS).run(its_pid, outcome_timeout_s=30)
    print(outcome.value, flush=True)

asyncio.run(main())
"""


def test_an_interpreter_that_exits_without_closing_kills_its_children_rather_than_wait_for_them() -> None:
    """multiprocessing ends a daemonic child with SIGTERM at exit, then waits for it; a child takes none."""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", LEAVES_A_CHILD], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split()[-1])
    wait_for(lambda: process_gone(child), timeout_s=5, what="the child to be gone")


async def test_a_handler_may_start_a_multiprocessing_pool_of_its_own() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(uses_a_pool, outcome_timeout_s=60)
    assert isinstance(outcome, Completed), outcome
    assert outcome.value == [0, 1, 4, 9, 16]


def test_a_childs_messages_are_taken_whole_however_they_arrive() -> None:
    # The loop reads what the pipe has (`_Child._read_events`): a message may arrive in pieces, or not at all.
    framed = b""
    messages: list[object] = [("started",), ("log", 1, "x" * 70_000), ("result", None, 12)]
    for message in messages:
        body = pickle.dumps(message)
        framed += len(body).to_bytes(4, "big") + body
    unread = bytearray()
    taken: list[object] = []
    for start in range(0, len(framed), 4_096):
        unread += framed[start : start + 4_096]
        taken += _whole_messages(unread)
    assert taken == messages
    assert unread == bytearray()
    unread += framed[:10]  # a message cut off in its middle stays unread
    assert _whole_messages(unread) == []
    assert len(unread) == 10
    huge = pickle.dumps("y")  # the 8-byte size of a message over 2 GiB, as multiprocessing frames one
    unread = bytearray((-1).to_bytes(4, "big", signed=True) + len(huge).to_bytes(8, "big") + huge)
    assert _whole_messages(unread) == ["y"]
