"""The console's role logic: which actions each role sees, and --view-as, which can only take actions away."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskwire.client import ExecutionSnapshot, Identity, WorkerInfo
from taskwire.common import Execution, Payload, RetryPolicy, State, TaskRun
from taskwire.console import Action, viewer
from taskwire.console._views import summary, worker_rows

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def running_execution() -> ExecutionSnapshot:
    execution = Execution(
        id="e1", name="job", state=State.RUNNING, reason=None, created_at=NOW, updated_at=NOW, started_at=NOW
    )
    task_run = TaskRun(
        id="t1",
        execution_id="e1",
        task_id="main",
        handler="echo",
        input=Payload(),
        depends_on=(),
        timeout=None,
        retry_policy=RetryPolicy(),
        state=State.PENDING,
        reason=None,
        created_at=NOW,
        updated_at=NOW,
    )
    return ExecutionSnapshot(execution, (task_run,))


WORKER = WorkerInfo(session_id="s1", instance_id="i1", name="w1", handlers=("echo",), slots=2, in_flight=1)


@pytest.mark.parametrize(
    ("role", "view_as", "actions"),
    [
        ("admin", None, {Action.CANCEL, Action.DELETE, Action.DRAIN}),
        ("submitter", None, {Action.CANCEL}),
        ("reader", None, set()),
        ("worker", None, set()),
        ("somebody-new", None, set()),  # a role this version does not know may do nothing here
        ("admin", "reader", set()),
        ("admin", "submitter", {Action.CANCEL}),
        ("reader", "admin", set()),  # --view-as never adds what the server's role does not allow
    ],
)
def test_the_actions_of_each_role(role: str, view_as: str | None, actions: set[Action]) -> None:
    shown = viewer(Identity(name="someone", role=role), view_as)
    assert set(shown.actions) == actions
    assert shown.role == (view_as or role)


def test_a_reader_sees_no_cancel_and_no_drain_button() -> None:
    reader = viewer(Identity(name="", role="reader"))
    assert 'name="cancel"' not in summary(running_execution(), reader)
    assert 'name="drain"' not in worker_rows([WORKER], {}, reader)


def test_an_admin_sees_cancel_on_a_running_execution_and_drain_on_a_worker() -> None:
    admin = viewer(Identity(name="", role="admin"))
    assert 'name="cancel"' in summary(running_execution(), admin)
    assert 'name="delete"' not in summary(running_execution(), admin)  # only a finished one is deleted
    assert 'name="drain"' in worker_rows([WORKER], {}, admin)


def test_what_the_pages_show_is_escaped() -> None:
    admin = viewer(Identity(name="", role="admin"))
    hostile = WorkerInfo(
        session_id="s", instance_id="i", name="<script>x</script>", handlers=(), slots=1, in_flight=0, replica="<b>"
    )
    shown = worker_rows([hostile], {}, admin)
    assert "<script>" not in shown
    assert "on &lt;b&gt;" in shown  # the replica it is connected to
