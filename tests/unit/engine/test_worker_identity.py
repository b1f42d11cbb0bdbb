"""A worker is who its credential says: the identity is on its session and on every attempt it holds; a
report or an adoption by another identity is refused and changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from taskwire.server.domain import AttemptOutcome, ErrorInfo, PermissionDenied, State, TaskFailed
from taskwire.server.engine import AttemptEnd
from tests.unit.engine.support import Rig, task


async def test_the_dispatched_attempt_records_the_identity_of_its_worker(rig: Rig) -> None:
    worker = rig.connect("a", identity="worker-a")
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    assert invoked.attempt.worker_identity == "worker-a"
    assert (await rig.task_run(execution_id)).attempts[0].worker_identity == "worker-a"
    assert worker.session.identity == "worker-a"


@pytest.mark.parametrize("kind", ["complete", "fail", "progress", "log"])
async def test_a_report_on_another_identitys_attempt_is_refused_and_changes_nothing(
    rig: Rig, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    owner = rig.connect("a", identity="worker-a")
    execution_id = await rig.submit()
    (invoked,) = owner.invocations
    before = await rig.snapshot(execution_id)
    intruder = rig.connect("b", identity="worker-b")
    report: Callable[[], None] = {
        "complete": lambda: intruder.complete(invoked),
        "fail": lambda: intruder.fail(invoked),
        "progress": lambda: intruder.progress(invoked, 0.5, "mine now"),
        "log": lambda: intruder.log(invoked, "mine now"),
    }[kind]
    with caplog.at_level(logging.INFO, logger="taskwire.audit"), pytest.raises(PermissionDenied, match="worker-b"):
        report()
    assert await rig.snapshot(execution_id) == before
    assert owner.held == {invoked.key}
    assert any("action=denied identity=worker-b" in r.getMessage() for r in caplog.records)
    owner.complete(invoked)  # the holder still can
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_report_from_the_same_identity_on_another_session_is_fenced_by_holder(rig: Rig) -> None:
    first = rig.connect("a1", identity="pool")
    execution_id = await rig.submit()
    (invoked,) = first.invocations
    second = rig.connect("a2", identity="pool")
    second.complete(invoked)  # allowed by identity, ignored by holder: as before identities
    assert (await rig.task_run(execution_id)).state is State.RUNNING


async def test_a_reconnect_of_another_identity_cannot_adopt_the_attempt(rig: Rig) -> None:
    owner = rig.connect("a", instance_id="same", identity="worker-a")
    execution_id = await rig.submit()
    (invoked,) = owner.invocations
    owner.disconnect()
    # Same name and instance id (chosen by the worker), another credential.
    thief = rig.connect("a", instance_id="same", identity="worker-b", running=[invoked.key])
    assert thief.welcome.rejected == (invoked.key,)
    assert thief.welcome.adopted == ()
    back = rig.connect("a", instance_id="same", identity="worker-a", running=[invoked.key])
    assert back.welcome.adopted == (invoked.key,)
    back.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_after_a_restart_only_the_recorded_identity_takes_the_attempt_back(rig: Rig) -> None:
    owner = rig.connect("a", identity="worker-a")
    execution_id = await rig.submit(task())
    (invoked,) = owner.invocations
    await rig.engine.flush()
    await rig.restart()
    thief = rig.connect("a", identity="worker-b", running=[invoked.key])
    assert thief.welcome.rejected == (invoked.key,)
    with pytest.raises(PermissionDenied):
        thief.report(AttemptEnd(invoked.task_run.id, TaskFailed(1, ErrorInfo(type="ValueError", message="not mine"))))
    owner = rig.connect("a", identity="worker-a", running=[invoked.key])
    assert owner.welcome.adopted == (invoked.key,)
    owner.complete(invoked)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.SUCCESS
    assert snapshot.task_runs[0].attempts[0].outcome is AttemptOutcome.SUCCEEDED


async def test_without_authentication_every_worker_is_the_same_nobody(rig: Rig) -> None:
    owner = rig.connect("a", instance_id="same")
    execution_id = await rig.submit()
    (invoked,) = owner.invocations
    owner.disconnect()
    again = rig.connect("a", instance_id="same", running=[invoked.key])
    assert again.welcome.adopted == (invoked.key,)
    again.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_without_authentication_an_attempt_with_an_identity_is_taken_back_too(rig: Rig) -> None:
    owner = rig.connect("a", instance_id="same", identity="worker-a")
    execution_id = await rig.submit()
    (invoked,) = owner.invocations
    await rig.engine.flush()
    await rig.restart()  # started again without an auth file: no identities
    again = rig.connect("a", instance_id="same", running=[invoked.key])
    assert again.welcome.adopted == (invoked.key,)
    again.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS
