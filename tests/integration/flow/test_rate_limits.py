"""Rate limits with real processes: a limit of 10/s with a burst of 5 holds over the whole run, measured on
the dispatch times the server recorded, with many free slots; the waiting tasks say why in `get` and `stats`."""

from __future__ import annotations

from taskwire.client import Client, ExecutionSpec, ReasonCode, State, TaskSpec
from tests.harness import Cluster
from tests.integration.client.conftest import Cli
from tests.integration.workers.support import FINISH, only_run

RATE, BURST, TASKS, SLOTS = 10, 5, 80, 40


def test_a_rate_limit_holds_within_its_burst(procs: Cluster) -> None:
    server = procs.server("--rate-limit", f"remote-api={RATE}/s:{BURST}")
    procs.worker(server, slots=SLOTS)
    server.wait_for_workers(1)
    with Client(server.address) as client:
        spec = ExecutionSpec(tasks=(TaskSpec("echo", rate_limit="remote-api"),))
        results = client.submit_many([spec] * TASKS)
        waiting = client.get(results[-1].execution_id)
        reason = only_run(waiting).reason
        assert reason is not None
        assert reason.code is ReasonCode.RATE_LIMITED, reason
        assert "rate limit 'remote-api' is empty: 10 per second, burst 5" in reason.message
        (bucket,) = client.stats().rate_limits
        assert bucket.name == "remote-api"
        assert bucket.waiting > TASKS // 2
        cli = Cli(server.address)
        stats_text = cli("stats").stdout
        assert "remote-api" in stats_text, stats_text
        get_text = cli("get", results[-1].execution_id).stdout
        assert "RATE_LIMITED" in get_text, get_text
        assert "is empty" in get_text, get_text

        done = [client.wait_finished(result.execution_id, FINISH) for result in results]
    assert [d.state for d in done] == [State.SUCCESS] * TASKS
    starts = sorted(only_run(d).attempts[0].started_at.timestamp() for d in done)
    for first, at in enumerate(starts):
        for last in range(first, len(starts)):
            window = starts[last] - at
            assert last - first + 1 <= BURST + RATE * window + 1e-6, (
                f"{last - first + 1} dispatches within {window:.3f}s: over {BURST} + {RATE}/s"
            )
    five_s = sum(1 for at in starts if at - starts[0] <= 5.0)
    assert five_s >= 0.8 * (BURST + RATE * 5), f"only {five_s} dispatches in the first 5 s: the limit is too slow"


def test_a_rate_limit_the_server_does_not_define_is_refused(procs: Cluster) -> None:
    server = procs.server("--rate-limit", "remote-api=10/s")
    result = Cli(server.address)("submit", "echo", "--rate-limit", "nope")
    assert result.returncode != 0, result
    assert "tasks[0].rate_limit: this server defines no rate limit 'nope' (it defines: remote-api)" in result.stderr
