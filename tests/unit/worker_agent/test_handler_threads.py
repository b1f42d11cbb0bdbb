"""The threads sync handlers run in: reused, never a limit, isolated in their context, ended when idle or closed."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import pytest

from taskwire.worker._handler_threads import HandlerThreads
from tests.harness import wait_for

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


@pytest.fixture
def threads() -> Iterator[HandlerThreads]:
    pool = HandlerThreads()
    yield pool
    pool.close()


def _run(pool: HandlerThreads, name: str, fn: object = None) -> tuple[threading.Event, dict[str, object]]:
    """Run a call that records the thread it ran in; the event is set once it has returned."""
    done, seen = threading.Event(), dict[str, object]()

    def call() -> None:
        seen["ident"], seen["name"] = threading.get_ident(), threading.current_thread().name
        seen["daemon"] = threading.current_thread().daemon
        if callable(fn):
            seen["value"] = fn()
        done.set()

    pool.run(name, call)
    return done, seen


def test_calls_one_after_another_share_one_thread_named_for_each(threads: HandlerThreads) -> None:
    first_done, first = _run(threads, "taskwire-echo-a#1")
    assert first_done.wait(5)
    wait_for(lambda: threads.waiting == 1, timeout_s=5, what="the thread to wait for the next call")
    second_done, second = _run(threads, "taskwire-echo-b#1")
    assert second_done.wait(5)
    assert first["ident"] == second["ident"]
    assert (first["name"], second["name"]) == ("taskwire-echo-a#1", "taskwire-echo-b#1")
    assert first["daemon"] is True


def test_a_call_that_never_returns_does_not_hold_up_the_next(threads: HandlerThreads) -> None:
    release = threading.Event()
    stuck_done, stuck = _run(threads, "stuck", lambda: release.wait(10))
    wait_for(lambda: "ident" in stuck, timeout_s=5, what="the first call to start")
    other_done, other = _run(threads, "other")
    assert other_done.wait(5), "a second call waited for the first to return"
    assert other["ident"] != stuck["ident"]
    release.set()
    assert stuck_done.wait(5)


def test_what_a_call_sets_in_its_context_is_not_seen_by_the_next(threads: HandlerThreads) -> None:
    done, _ = _run(threads, "sets", lambda: _SEEN.set("from the first call"))
    assert done.wait(5)
    wait_for(lambda: threads.waiting == 1, timeout_s=5, what="the thread to wait for the next call")
    done, seen = _run(threads, "reads", _SEEN.get)
    assert done.wait(5)
    assert seen["value"] == "unset"


def test_a_thread_with_nothing_to_run_ends_after_its_idle_time() -> None:
    pool = HandlerThreads(idle_s=0.05)
    done, seen = _run(pool, "brief")
    assert done.wait(5)
    ident = seen["ident"]
    wait_for(
        lambda: pool.waiting == 0 and all(t.ident != ident for t in threading.enumerate()),
        timeout_s=5,
        what="the idle thread to end",
    )
    # A call after that starts a thread again.
    done, _ = _run(pool, "later")
    assert done.wait(5)
    pool.close()


def test_closing_ends_the_waiting_threads_and_a_running_one_when_it_returns() -> None:
    pool = HandlerThreads()
    release = threading.Event()
    running_done, running = _run(pool, "runs", lambda: release.wait(10))
    waiting_done, waiting = _run(pool, "waits")
    assert waiting_done.wait(5)
    wait_for(lambda: pool.waiting == 1 and "ident" in running, timeout_s=5, what="one thread waiting, one running")
    pool.close()

    def alive(ident: object) -> bool:
        return any(t.ident == ident for t in threading.enumerate())

    wait_for(lambda: not alive(waiting["ident"]), timeout_s=5, what="the waiting thread to end")
    assert alive(running["ident"])
    release.set()
    assert running_done.wait(5)
    wait_for(lambda: not alive(running["ident"]), timeout_s=5, what="the running thread to end once its call returned")
    assert pool.waiting == 0


def test_many_calls_at_once_each_get_a_thread_and_all_return(threads: HandlerThreads) -> None:
    barrier = threading.Barrier(20, timeout=10)  # every call waits for all twenty: none may queue behind another
    runs = [_run(threads, f"call-{index}", barrier.wait) for index in range(20)]
    for done, _ in runs:
        assert done.wait(10)
    assert len({seen["ident"] for _, seen in runs}) == 20
    wait_for(lambda: threads.waiting == 20, timeout_s=5, what="all twenty threads to wait for work")
    again = [_run(threads, f"again-{index}") for index in range(20)]
    for done, _ in again:
        assert done.wait(10)
    assert {seen["ident"] for _, seen in again} <= {seen["ident"] for _, seen in runs}
