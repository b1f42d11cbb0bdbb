"""What the store benchmarks share: the execution a Submit writes, and where their databases go.

Kept apart from `bench._common`, which brings up real processes and gRPC clients that these do not need.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from taskwire.server.domain import Execution, Payload, RetryPolicy, State, TaskRun
from taskwire.server.store import NewExecution


def pending_execution(
    n: int,
    now: datetime,
    *,
    bench: str,
    deadline: datetime | None = None,
    timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
) -> NewExecution:
    """Execution number `n`, PENDING with one task run, as Submit writes it."""
    execution_id = f"bench-{n:09d}"
    execution = Execution(
        id=execution_id,
        name="bench",
        state=State.PENDING,
        reason=None,
        created_at=now,
        updated_at=now,
        metadata={"bench": bench},
        deadline=deadline,
    )
    task_run = TaskRun(
        id=f"{execution_id}-main",
        execution_id=execution_id,
        task_id="main",
        handler="bench:noop",
        input=Payload(b'{"n": %d}' % n),
        depends_on=(),
        timeout=timeout,
        retry_policy=retry_policy or RetryPolicy(),
        state=State.PENDING,
        reason=None,
        created_at=now,
        updated_at=now,
    )
    return NewExecution(execution, [task_run], "bench")


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help="where the databases go (default: a temporary folder)")


def run_in_folder(folder: Path | None, main_async: Callable[[Path], Coroutine[Any, Any, None]]) -> None:
    """Run `main_async` on `folder` (created if missing), or on a temporary folder removed afterwards."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        asyncio.run(main_async(folder))
        return
    with tempfile.TemporaryDirectory(prefix="taskwire-bench-") as temporary:
        asyncio.run(main_async(Path(temporary)))
