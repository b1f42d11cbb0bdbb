"""An operator drains a worker: it is told so, gets nothing new, and finishes what it holds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskwire.server.domain import NotFound, State, ValidationError
from tests.unit.engine.support import Drained, Rig, idle, until


async def test_a_drained_worker_finishes_its_task_and_gets_nothing_new(rig: Rig) -> None:
    busy = rig.connect("busy")
    first_id = await rig.submit()
    (first,) = busy.invocations
    other = rig.connect("other")

    grace = timedelta(seconds=30)
    told = await rig.engine.drain_worker(name="busy", grace=grace, reason="kernel upgrade")
    assert [(view.session_id, view.name, view.draining, view.replica) for view in told] == [
        (busy.session.session_id, "busy", True, "")
    ]
    assert busy.link.sent[-1] == Drained(grace, "kernel upgrade")
    assert busy.session.draining
    assert busy.session.free_slots == 0
    assert not other.session.draining

    # The drained worker's running attempt ends as usual, and its free slot takes nothing new.
    second_id = await rig.submit()
    await until(lambda: other.invocations, "the second task dispatched to the other worker")
    busy.complete(first)
    assert await rig.state(first_id) is State.SUCCESS
    third_id = await rig.submit()
    await idle()
    assert busy.invocations == [first]
    other.complete(other.invocations[0])
    await until(lambda: len(other.invocations) == 2, "the third task dispatched to the other worker")
    other.complete(other.invocations[1])
    assert await rig.state(second_id) is State.SUCCESS
    assert await rig.state(third_id) is State.SUCCESS


async def test_drain_by_session_id_tells_only_that_session_with_a_default_reason(rig: Rig) -> None:
    one = rig.connect("twin", instance_id="a")
    two = rig.connect("twin", instance_id="b")
    told = await rig.engine.drain_worker(session_id=two.session.session_id)
    assert [view.session_id for view in told] == [two.session.session_id]
    (drained,) = [sent for sent in two.link.sent if isinstance(sent, Drained)]
    assert drained.grace is None  # the worker's own drain timeout
    assert drained.reason
    assert not one.session.draining
    # By name: every session of that name (told again: draining is idempotent).
    told = await rig.engine.drain_worker(name="twin")
    assert sorted(view.session_id for view in told) == sorted([one.session.session_id, two.session.session_id])
    assert one.session.draining


async def test_drain_of_an_unknown_worker_is_not_found_and_of_nobody_is_invalid(rig: Rig) -> None:
    worker = rig.connect("w1")
    with pytest.raises(NotFound, match="'ghost'"):
        await rig.engine.drain_worker(name="ghost")
    with pytest.raises(NotFound, match="'nope'"):
        await rig.engine.drain_worker(name="w1", session_id="nope")
    with pytest.raises(ValidationError, match="name"):
        await rig.engine.drain_worker()
    worker.disconnect()
    with pytest.raises(NotFound, match="'w1'"):
        await rig.engine.drain_worker(name="w1")  # only connected workers can be drained
    assert not any(isinstance(sent, Drained) for sent in worker.link.sent)


async def test_a_drain_asked_of_a_stream_that_went_half_open_goes_on_on_the_workers_next_stream(rig: Rig) -> None:
    """The Drain went down a stream the worker had already given up on; its hello on a new stream replaces that
    session, and the new one is told to drain, with what is left of the grace."""
    before = rig.connect("busy", instance_id="i-1")
    other = rig.connect("other")
    await rig.engine.drain_worker(name="busy", grace=timedelta(seconds=30), reason="kernel upgrade")
    rig.clock.advance(10)

    back = rig.connect("busy", instance_id="i-1")

    assert not before.session.connected
    assert back.session.draining
    assert back.session.free_slots == 0
    assert [sent for sent in back.link.sent if isinstance(sent, Drained)] == [
        Drained(timedelta(seconds=20), "kernel upgrade")
    ]
    execution_id = await rig.submit()
    await until(lambda: other.invocations, "the task dispatched to the other worker")
    assert back.invocations == []
    other.complete(other.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS

    # Another instance of the same name was not asked, and a worker's own drain is its own to tell again.
    fresh = rig.connect("busy", instance_id="i-2")
    assert not fresh.session.draining
    assert not any(isinstance(sent, Drained) for sent in other.link.sent)


async def test_a_grace_spent_before_the_worker_came_back_is_none_left_and_no_grace_stays_the_workers_own(
    rig: Rig,
) -> None:
    rig.connect("a", instance_id="i-a")
    rig.connect("b", instance_id="i-b")
    await rig.engine.drain_worker(name="a", grace=timedelta(seconds=5), reason="now")
    await rig.engine.drain_worker(name="b", reason="whenever")
    rig.clock.advance(10)  # within the lease: the earlier sessions are still there to be replaced
    a = rig.connect("a", instance_id="i-a")
    b = rig.connect("b", instance_id="i-b")
    assert [sent for sent in a.link.sent if isinstance(sent, Drained)] == [Drained(timedelta(0), "now")]
    assert [sent for sent in b.link.sent if isinstance(sent, Drained)] == [Drained(None, "whenever")]


async def test_a_drain_is_told_again_when_the_server_saw_the_stream_break_first(rig: Rig) -> None:
    """The stream broke with the Drain still queued on it: the session is gone when the worker comes back."""
    before = rig.connect("busy", instance_id="i-1")
    await rig.engine.drain_worker(name="busy", grace=timedelta(seconds=30), reason="kernel upgrade")
    before.disconnect()
    rig.clock.advance(3)
    back = rig.connect("busy", instance_id="i-1")
    assert back.session.draining
    assert [sent for sent in back.link.sent if isinstance(sent, Drained)] == [
        Drained(timedelta(seconds=27), "kernel upgrade")
    ]


async def test_a_drain_asked_again_keeps_the_grace_that_ends_first(rig: Rig) -> None:
    """A worker drains by the earliest end it was told; its next stream is told that one, never a later one."""
    rig.connect("w", instance_id="i-1")
    await rig.engine.drain_worker(name="w", grace=timedelta(seconds=10), reason="soon")
    await rig.engine.drain_worker(name="w", grace=timedelta(seconds=600), reason="later")
    await rig.engine.drain_worker(name="w", reason="its own timeout")
    rig.clock.advance(4)
    back = rig.connect("w", instance_id="i-1")
    assert [sent for sent in back.link.sent if isinstance(sent, Drained)] == [Drained(timedelta(seconds=6), "soon")]


async def test_a_drained_worker_that_closes_its_stream_itself_is_not_drained_again_under_its_instance_id(
    rig: Rig,
) -> None:
    """It finished draining and exited; a process restarted under a fixed instance id starts afresh."""
    drained = rig.connect("fixed", instance_id="host-1")
    await rig.engine.drain_worker(name="fixed", grace=timedelta(seconds=60), reason="upgrade")
    rig.engine.disconnect_worker(drained.session, closed_by_worker=True)
    restarted = rig.connect("fixed", instance_id="host-1")
    assert not restarted.session.draining
    assert not any(isinstance(sent, Drained) for sent in restarted.link.sent)


async def test_a_single_server_keeps_no_record_of_finished_drains_past_their_time(rig: Rig) -> None:
    """What a replica would tell the others about a finished drain is let go once that drain would have ended."""
    drains = rig.engine._pool.drains.kept
    for number in range(3):
        drained = rig.connect("fixed", instance_id=f"host-{number}")
        await rig.engine.drain_worker(name="fixed", grace=timedelta(seconds=60), reason="upgrade")
        rig.engine.disconnect_worker(drained.session, closed_by_worker=True)
    rig.clock.advance(60 + rig.config.lease_timeout.total_seconds() + 1)
    rig.connect("other")  # any look at the drains lets the ended ones go
    assert drains.take_finished() == []
