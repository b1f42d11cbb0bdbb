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
