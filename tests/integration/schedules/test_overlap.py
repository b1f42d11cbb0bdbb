"""Each overlap policy, with a handler that runs longer than the schedule's interval (the demo `sleep`)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from taskwire.client import ExecutionSnapshot, OverlapPolicy, State
from tests.harness import Cluster
from tests.integration.schedules.support import fire_time, sdk, wait_for_fires, wait_until_finished

RUNS_S = 2.5  # each execution sleeps this long; the schedule fires every second
FIRES = 6  # fire times handled before the schedule is paused


def intervals(executions: list[ExecutionSnapshot]) -> list[tuple[float, float]]:
    """Each execution's life (created, ended) in seconds, in creation order."""
    spans = []
    for snapshot in sorted(executions, key=lambda s: s.execution.created_at):
        ended = snapshot.execution.ended_at
        assert ended is not None
        spans.append((snapshot.execution.created_at.timestamp(), ended.timestamp()))
    return spans


def most_at_once(executions: list[ExecutionSnapshot]) -> int:
    """The most executions alive at the same moment."""
    edges = sorted([(start, 1) for start, _ in intervals(executions)] + [(end, -1) for _, end in intervals(executions)])
    alive = most = 0
    for _, delta in edges:
        alive += delta
        most = max(most, alive)
    return most


@pytest.mark.parametrize("policy", list(OverlapPolicy))
def test_overlap_policy(procs: Cluster, policy: OverlapPolicy) -> None:
    server = procs.server()
    procs.worker(server, slots=4)
    with sdk(server) as client:
        client.create_schedule("slow", "* * * * * *", "sleep", {"seconds": RUNS_S}, overlap=policy)
        wait_for_fires(client, "slow", FIRES)
        client.pause_schedule("slow")
        executions = wait_until_finished(client, "slow")
        info = client.get_schedule("slow")

    states = [s.state for s in executions]
    if policy is OverlapPolicy.SKIP:
        assert most_at_once(executions) == 1
        assert info.skipped >= 2
        assert set(states) == {State.SUCCESS}
    elif policy is OverlapPolicy.BUFFER_ONE:
        assert most_at_once(executions) == 1
        assert info.skipped >= 1
        assert set(states) == {State.SUCCESS}
        spans = intervals(executions)
        buffered = [s for s in executions if s.execution.created_at - fire_time(s) > timedelta(seconds=1)]
        assert buffered, "no fire waited for the running execution"
        for previous, following in itertools.pairwise(spans):
            assert following[0] >= previous[1]  # a held fire starts once the running one has ended
    elif policy is OverlapPolicy.ALLOW_ALL:
        assert most_at_once(executions) >= 2
        assert info.skipped == 0
        assert set(states) == {State.SUCCESS}
    else:  # CANCEL_OTHER
        assert info.skipped == 0
        assert states[:-1] == [State.CANCELLED] * (len(states) - 1)  # each replaced by the next fire
        assert states[-1] is State.SUCCESS  # the last one ran to its end (paused: nothing replaced it)
        ordered = sorted(executions, key=lambda s: s.execution.created_at)
        for replaced, successor in itertools.pairwise(ordered):
            assert replaced.reason is not None
            assert successor.execution.metadata["taskwire.schedule.fire_time"] in (replaced.reason.message or "")
