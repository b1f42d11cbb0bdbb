"""Process isolation: each attempt in a child process, kept for the next; one ignoring its abort is terminated."""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import signal
import time

import pytest

from taskwire.worker import (
    AbortReason,
    Cancelled,
    ChildLimits,
    Completed,
    Failed,
    HandlerHarness,
    Isolation,
    TaskContext,
    demo,
)
from taskwire.worker._process import ChildProcesses, Ending, get_mp_context
from tests.harness import handler_processes, process_gone, wait_for

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def exits_abruptly(ctx: TaskContext) -> None:
    os._exit(3)


def pid(ctx: TaskContext) -> int:
    return os.getpid()


async def pid_async(ctx: TaskContext) -> int:
    return os.getpid()


def marks_its_context(ctx: TaskContext) -> dict[str, object]:
    """What the last handler left in its context variable (nothing, if each starts afresh), then a mark."""
    seen = _SEEN.get()
    _SEEN.set(f"set by {ctx.info.task_run_id}")
    return {"seen": seen, "pid": os.getpid()}


async def marks_its_context_async(ctx: TaskContext) -> dict[str, object]:
    return marks_its_context(ctx)


async def _value(harness: HandlerHarness, handler: object, input: object = None) -> object:
    outcome = await harness.run(handler, input, outcome_timeout_s=30)  # type: ignore[arg-type]
    assert isinstance(outcome, Completed), outcome
    return outcome.value


async def test_a_handler_runs_in_a_child_and_reports_back() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        run = harness.start(demo.progress, {"steps": 2, "interval": 0})
        outcome = await run.outcome(timeout_s=30)
        assert isinstance(outcome, Completed)
        assert outcome.value == {"steps": 2}
        assert run.started
        assert [p.fraction for p in run.progress] == [0.5, 1.0]
        assert [line.text for line in run.logs] == ["step 1 of 2", "step 2 of 2"]


async def test_a_cooperative_handler_stops_on_its_signal() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=10) as harness:
        run = harness.start(demo.sync_sleep, {"seconds": 60})
        await run.wait_started(timeout_s=30)
        run.abort(AbortReason.UPSTREAM_FAILED, "a sibling failed")
        assert await run.outcome(timeout_s=10) == Cancelled(
            reason=AbortReason.UPSTREAM_FAILED, message="a sibling failed"
        )


@pytest.mark.parametrize("reason", [AbortReason.CANCELLED, AbortReason.SHUTDOWN])
async def test_spin_is_terminated_within_the_grace(reason: AbortReason) -> None:
    grace_s = 0.3
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=grace_s, kill_grace_s=0.5) as harness:
        run = harness.start(demo.spin, {"seconds": 120})
        await run.wait_started(timeout_s=30)
        aborted_at = time.monotonic()
        run.abort(reason)
        outcome = await run.outcome(timeout_s=10)
        stopped_after_s = time.monotonic() - aborted_at
    if reason is AbortReason.SHUTDOWN:
        assert isinstance(outcome, Failed)
        assert outcome.error.type == "WorkerShutdown"
    else:
        assert outcome == Cancelled(reason=reason)
    # The grace, then SIGKILL: no kill grace is waited for.
    assert grace_s <= stopped_after_s < grace_s + 2.0


async def test_the_local_deadline_stops_a_spinning_child() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=0.1) as harness:
        outcome = await harness.run(demo.spin, {"seconds": 120}, timeout_s=0.5, outcome_timeout_s=30)
    assert isinstance(outcome, Failed)
    assert outcome.timed_out


async def test_a_child_that_dies_fails_the_attempt() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(exits_abruptly, outcome_timeout_s=30)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "HandlerProcessDied"
    assert "code 3" in outcome.error.message
    assert outcome.error.retryable


async def test_errors_cross_the_process_boundary() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(
            demo.fail, {"message": "no disk", "retryable": False, "type": "DiskFull"}, outcome_timeout_s=30
        )
    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message, outcome.error.retryable) == ("DiskFull", "no disk", False)
    assert "DiskFull" in outcome.error.traceback


async def test_a_child_is_kept_for_the_next_attempt_sync_or_async() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        pids = [await _value(harness, pid), await _value(harness, pid_async), await _value(harness, pid)]
    assert len(set(pids)) == 1
    assert pids[0] != os.getpid()


async def test_attempts_at_once_each_get_a_child_of_their_own() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        runs = [harness.start(demo.sync_sleep, {"seconds": 0.5}) for _ in range(3)]
        for run in runs:
            await run.wait_started(timeout_s=30)
        outcomes = await asyncio.gather(*(run.outcome(timeout_s=30) for run in runs))
        assert all(isinstance(outcome, Completed) for outcome in outcomes)
        # All three are kept, so three more at once start no new process.
        again = await asyncio.gather(*(_value(harness, pid) for _ in range(3)))
        assert await _value(harness, pid) in again


@pytest.mark.parametrize(("limit", "expected"), [(1, [0, 1, 2, 3]), (2, [0, 0, 1, 1])])
async def test_a_child_is_replaced_after_its_maximum_of_attempts(limit: int, expected: list[int]) -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, child_limits=ChildLimits(max_attempts=limit)) as harness:
        pids = [await _value(harness, pid) for _ in range(4)]
    assert [sorted(set(pids), key=pids.index).index(p) for p in pids] == expected


@pytest.mark.parametrize("handler", [marks_its_context, marks_its_context_async])
async def test_each_attempt_in_a_kept_child_starts_with_a_fresh_context(handler: object) -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        first, second = await _value(harness, handler), await _value(harness, handler)
    assert isinstance(first, dict)
    assert isinstance(second, dict)
    assert first["pid"] == second["pid"]
    assert (first["seen"], second["seen"]) == ("unset", "unset")


async def test_a_child_that_stopped_on_its_signal_is_kept_and_not_aborted_again() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=10) as harness:
        before = await _value(harness, pid)
        run = harness.start(demo.sync_sleep, {"seconds": 60})
        await run.wait_started(timeout_s=30)
        run.abort(AbortReason.CANCELLED)
        assert await run.outcome(timeout_s=10) == Cancelled(reason=AbortReason.CANCELLED)
        # The next attempt runs in the same child, unaware of the abort before it.
        assert await _value(harness, demo.sync_sleep, {"seconds": 0}) == {"slept_s": 0}
        assert await _value(harness, pid) == before


async def test_a_terminated_child_is_not_used_again() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=0.1) as harness:
        before = await _value(harness, pid)
        outcome = await harness.run(demo.spin, {"seconds": 120}, timeout_s=0.3, outcome_timeout_s=30)
        assert isinstance(outcome, Failed)
        assert outcome.timed_out
        after = await _value(harness, pid)
    assert after != before
    assert process_gone(int(str(before)))


async def test_a_child_that_died_while_idle_is_replaced_without_failing_the_next_attempt() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        before = await _value(harness, pid)
        assert isinstance(before, int)
        os.kill(before, signal.SIGKILL)
        wait_for(lambda: process_gone(before), timeout_s=10, what="the idle child to die")
        after = await _value(harness, pid)
    assert after != before


async def test_closing_lets_the_idle_children_exit() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        pids = await asyncio.gather(*(_value(harness, pid) for _ in range(2)))
        assert not any(process_gone(p) for p in pids if isinstance(p, int))
    assert all(process_gone(p) for p in pids if isinstance(p, int))


async def test_an_idle_child_exits_after_the_idle_time() -> None:
    started: list[int] = []
    ended: list[str] = []
    children = ChildProcesses(
        get_mp_context("spawn"), idle_s=0.2, on_start=lambda: started.append(1), on_end=ended.append
    )
    child = children.acquire()
    children.release(child)
    assert children.idle == 1
    assert await asyncio.to_thread(child.wait_exited, 30)
    assert children.idle == 0
    assert child.process.exitcode == 0
    assert (started, ended) == ([1], [Ending.IDLE])
    children.close()


@pytest.mark.parametrize("field", ["max_attempts", "max_memory_mib"])
def test_limits_must_be_at_least_one(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be at least 1, got 0"):
        ChildLimits(**{field: 0})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"slots": "4"}, TypeError, "slots must be an int, got str '4'"),
        ({"slots": True}, TypeError, "slots must be an int, got bool"),
        ({"slots": 0}, ValueError, "slots must be at least 1, got 0"),
        ({"isolation": "process"}, TypeError, "isolation must be one of Isolation.THREAD, Isolation.PROCESS"),
        ({"stop_grace_s": "2"}, TypeError, "stop_grace_s must be a number of seconds, got str"),
        ({"kill_grace_s": -1}, ValueError, "kill_grace_s must be zero or more seconds, got -1"),
        ({"stop_grace_s": float("nan")}, ValueError, "stop_grace_s must be zero or more seconds, got nan"),
        ({"mp_start_method": None}, TypeError, "mp_start_method must be a str, got NoneType"),
        ({"child_limits": {"min_children": 1}}, TypeError, "child_limits must be a ChildLimits, got dict"),
    ],
)
def test_options_of_the_wrong_kind_are_refused_by_name(options: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        HandlerHarness(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["max_attempts", "max_memory_mib", "min_children"])
def test_limits_of_the_wrong_kind_are_refused_by_name(field: str) -> None:
    with pytest.raises(TypeError, match=f"{field} must be an int, got str '3'"):
        ChildLimits(**{field: "3"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"{field} must be an int, got float 3.0"):
        ChildLimits(**{field: 3.0})  # type: ignore[arg-type]


def test_any_integer_type_will_do_and_an_infinite_grace_waits_for_ever() -> None:
    class Count:  # an integer type of another library (a numpy integer, say)
        def __index__(self) -> int:
            return 2

    assert ChildLimits(min_children=Count()).min_children == 2  # type: ignore[arg-type]
    assert HandlerHarness(slots=Count(), stop_grace_s=float("inf")).executor.slots == 2  # type: ignore[arg-type]


def test_children_kept_ready_are_no_more_than_the_slots() -> None:
    with pytest.raises(ValueError, match="min_children must be at least 0, got -1"):
        ChildLimits(min_children=-1)
    with pytest.raises(ValueError, match=r"min_children \(3\) must be at most slots \(2\)"):
        HandlerHarness(isolation=Isolation.PROCESS, slots=2, child_limits=ChildLimits(min_children=3))


def _new_children(before: set[int], count: int) -> set[int]:
    """Wait until `count` handler processes of this process exist beyond `before`, and return them."""
    return wait_for(
        lambda: found if len(found := handler_processes(os.getpid()) - before) == count else None,
        timeout_s=30,
        what=f"{count} handler process(es) besides {sorted(before)}",
    )


async def test_children_kept_ready_start_before_the_first_attempt_and_run_it() -> None:
    before = handler_processes(os.getpid())
    limits = ChildLimits(min_children=2)
    async with HandlerHarness(isolation=Isolation.PROCESS, slots=2, child_limits=limits) as harness:
        ready = await asyncio.to_thread(_new_children, before, 2)  # with no attempt yet
        ran = await asyncio.gather(*(_value(harness, sleeps_then_pid) for _ in range(2)))
        assert set(ran) == ready
        assert handler_processes(os.getpid()) - before == ready  # no child started for them


async def test_a_child_kept_ready_is_replaced_as_soon_as_it_is_let_go() -> None:
    before = handler_processes(os.getpid())
    limits = ChildLimits(min_children=1, max_attempts=1)
    async with HandlerHarness(isolation=Isolation.PROCESS, slots=1, child_limits=limits) as harness:
        (first,) = await asyncio.to_thread(_new_children, before, 1)
        assert await _value(harness, pid) == first
        # Its one attempt run, it is let go, and another is started before any attempt needs it. (Not counted
        # with the first, which may still be exiting while the new one, just started, shows no command line yet.)
        (second,) = await asyncio.to_thread(_new_children, before | {first}, 1)
        await asyncio.to_thread(wait_for, lambda: process_gone(first), timeout_s=10, what="the first child to exit")
        os.kill(second, signal.SIGKILL)  # dying while idle, too
        (third,) = await asyncio.to_thread(_new_children, before | {first, second}, 1)
        assert await _value(harness, pid) == third


async def test_children_kept_ready_are_not_let_go_when_idle_but_the_others_are() -> None:
    ended: list[str] = []
    children = ChildProcesses(
        get_mp_context("spawn"), limits=ChildLimits(min_children=1), idle_s=0.2, on_end=ended.append
    )
    children.start()
    assert children.idle == 1
    kept, spare = children.acquire(), children.acquire()  # the one started, then one more
    children.release(spare)
    children.release(kept)
    assert await asyncio.to_thread(spare.wait_exited, 30)
    assert ended == [Ending.IDLE]
    # Several idle times later, the one kept ready is still there (a window: nothing is to happen in it).
    assert not await asyncio.to_thread(kept.wait_exited, 1.0)
    assert (children.idle, ended) == (1, [Ending.IDLE])
    children.close()
    assert await asyncio.to_thread(kept.wait_exited, 30)


_HELD: list[bytearray] = []


def leaves_a_reporter(ctx: TaskContext) -> int:
    """Returns at once, leaving a thread that reports progress on this attempt's context for 2 s."""
    import threading

    def report() -> None:
        for _ in range(200):
            ctx.progress(0.5, "late")
            time.sleep(0.01)

    threading.Thread(target=report, daemon=True).start()
    return os.getpid()


def sleeps_then_pid(ctx: TaskContext) -> int:
    time.sleep(0.3)
    return os.getpid()


def holds_memory(ctx: TaskContext) -> int:
    """Input ``{"mib": n}``: keeps n MiB more of this process's memory, touched; returns its pid."""
    mib = int(ctx.input["mib"]) if isinstance(ctx.input, dict) else 0
    _HELD.append(bytearray(b"\x01" * (mib << 20)))
    return os.getpid()


async def test_a_child_past_its_memory_limit_is_replaced_after_its_attempt() -> None:
    limits = ChildLimits(max_memory_mib=400)
    async with HandlerHarness(isolation=Isolation.PROCESS, child_limits=limits) as harness:
        small = [await _value(harness, holds_memory, {"mib": 1}) for _ in range(2)]
        assert small[0] == small[1]  # well under the limit: kept
        big = await _value(harness, holds_memory, {"mib": 450})  # the attempt that passes it completes
        assert big == small[0]
        after = await _value(harness, holds_memory, {"mib": 1})
    assert after != big
    wait_for(lambda: process_gone(int(str(big))), timeout_s=10, what="the replaced child to exit")


async def test_a_handler_that_cannot_be_pickled_fails_its_attempt_and_the_next_runs() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(lambda ctx: 1, outcome_timeout_s=30)
        assert isinstance(outcome, Failed)
        assert "pickle" in outcome.error.message
        assert isinstance(await _value(harness, pid), int)


async def test_a_thread_left_behind_does_not_report_into_the_next_attempt() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        first = await harness.run(leaves_a_reporter, outcome_timeout_s=30)
        second = harness.start(sleeps_then_pid)  # in the same child, while the first's thread still reports
        outcome = await second.outcome(timeout_s=30)
    assert isinstance(first, Completed)
    assert isinstance(outcome, Completed)
    assert outcome.value == first.value
    assert second.progress == []


@pytest.mark.parametrize("method", ["fork", "no-such-method"])
def test_a_start_method_children_cannot_use_is_refused_up_front(method: str) -> None:
    with pytest.raises(ValueError, match="fork" if method == "fork" else "cannot find context"):
        HandlerHarness(isolation=Isolation.PROCESS, mp_start_method=method)


async def test_children_can_start_from_a_fork_server() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, mp_start_method="forkserver") as harness:
        pids = [await _value(harness, pid) for _ in range(2)]
    assert pids[0] == pids[1]


@pytest.mark.parametrize("handler", [demo.sync_sleep, demo.sleep])
async def test_an_abort_sent_with_the_job_reaches_it_in_a_kept_child(handler: object) -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=30) as harness:
        await _value(harness, pid)  # a child kept, so that the job and its abort go out together
        for _ in range(3):
            run = harness.start(handler, {"seconds": 60})  # type: ignore[arg-type]
            run.abort(AbortReason.CANCELLED, "at once")
            assert await run.outcome(timeout_s=20) == Cancelled(reason=AbortReason.CANCELLED, message="at once")


@pytest.mark.parametrize("reason", [AbortReason.CANCELLED, AbortReason.SHUTDOWN])
async def test_a_child_stopped_while_it_starts_up_ends_the_attempt_and_runs_nothing_elsewhere(
    reason: AbortReason,
) -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=0.05) as harness:
        # No child is kept yet: the first starts up (a fresh interpreter), and is stopped before it takes the job.
        run = harness.start(demo.spin, {"seconds": 120})
        run.abort(reason)
        outcome = await run.outcome(timeout_s=20)
        assert not run.started
        if reason is AbortReason.SHUTDOWN:
            assert isinstance(outcome, Failed)
            assert outcome.error.type == "WorkerShutdown"
        else:
            assert outcome == Cancelled(reason=reason)
        # Nothing went on to spin in another child.
        wait_for(lambda: not handler_processes(os.getpid()), timeout_s=10, what="no handler process left")
