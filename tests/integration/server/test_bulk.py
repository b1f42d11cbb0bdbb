"""Bulk actions: cancel or delete every execution a filter matches (after a dry run that counts), and
leave the others alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime

import pytest

from taskwire.client import Client, ExecutionFilter, ExecutionSpec, Payload, State, TaskSpec, ValidationError
from tests.harness import BIN, ServerProcess


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "taskwire"), *args],
        env={**os.environ, "TASKWIRE_SERVER": server.address},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def batch(label: str, count: int) -> list[ExecutionSpec]:
    task = TaskSpec("bulk.unserved", input=Payload(b"null"))  # nobody serves it: they stay PENDING
    return [ExecutionSpec(tasks=(task,), metadata={"batch": label}) for _ in range(count)]


def states_by_batch(client: Client) -> Counter[tuple[str, State]]:
    return Counter((s.execution.metadata.get("batch", ""), s.state) for s in client.list(limit=5000))


def test_a_bulk_cancel_of_a_thousand_matches_leaves_the_rest_alone(server: ServerProcess) -> None:
    with Client(server.address) as client:
        for _ in range(2):
            assert all(result.ok for result in client.submit_many(batch("a", 500)))
        assert all(result.ok for result in client.submit_many(batch("b", 40)))
        before = datetime.now(UTC)

        dry = json.loads(cli(server, "cancel", "--label", "batch=a", "--dry-run", "--json").stdout)
        assert dry == {"matched": 1000, "cancelled": 1000, "dry_run": True}
        assert states_by_batch(client) == Counter({("a", State.PENDING): 1000, ("b", State.PENDING): 40})

        done = cli(server, "cancel", "--label", "batch=a", "--state", "PENDING", "--reason", "wrong batch")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "cancelled 1000 of 1000 matching executions (0 had already ended)"
        assert states_by_batch(client) == Counter({("a", State.CANCELLED): 1000, ("b", State.PENDING): 40})
        cancelled = next(iter(client.list(states=["CANCELLED"], limit=1)))
        assert cancelled.reason is not None
        assert cancelled.reason.message == "wrong batch"

        # Again: all of them have ended now, nothing changes.
        again = client.cancel_matching(ExecutionFilter(labels={"batch": "a"}))
        assert (again.matched, again.changed) == (1000, 0)

        # Delete: the finished ones go, the unfinished ones are counted and left.
        counted = client.delete_matching(ExecutionFilter(created_before=datetime.now(UTC)), dry_run=True)
        assert (counted.matched, counted.changed, counted.skipped) == (1040, 1000, 40)
        deleted = cli(server, "delete", "--created-after", "2000-01-01T00:00:00Z")
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout.strip() == "deleted 1000 of 1040 matching executions (40 not finished, left alone)"
        assert states_by_batch(client) == Counter({("b", State.PENDING): 40})
        assert client.cancel_matching(ExecutionFilter(created_after=before), dry_run=True).matched == 0


def test_an_empty_or_backwards_filter_is_refused(server: ServerProcess) -> None:
    with Client(server.address) as client:
        with pytest.raises(ValidationError, match="filter: give at least one condition"):
            client.cancel_matching(ExecutionFilter())
        with pytest.raises(ValidationError, match=r"filter\.created_before: must be after created_after"):
            client.delete_matching(
                ExecutionFilter(
                    created_after=datetime(2030, 1, 2, tzinfo=UTC), created_before=datetime(2030, 1, 1, tzinfo=UTC)
                )
            )
    neither = cli(server, "cancel")
    assert neither.returncode == 2
    assert "give an execution ID, or filter options" in neither.stderr
    both = cli(server, "delete", "0193", "--state", "FAILED")
    assert both.returncode == 2
    assert "not both" in both.stderr
