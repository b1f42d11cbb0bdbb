"""Retention: finished executions older than `ServerConfig.retention` are deleted in the background.

A timer on the engine's clock starts a sweep every `interval`: it asks the store for the terminal
executions that ended before now minus the retention, oldest first, `retention_batch` at a time, and
stages their deletion with the committer (one commit per batch, in the group commit like every other
write, so it is ordered after whatever was staged for them). Between batches it waits for the commit,
which gives the loop to dispatch and to everything else; the writer does the deleting in its own process.
Executions the engine still holds in memory are left for the next sweep. Zero retention: no timer.

May use: the clock, the store and the committer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from taskwire.server.store import Committer, Store

from ._clock import Cancellable, Clock

log = logging.getLogger(__name__)

_LONGEST_INTERVAL_S = 60.0
_SHORTEST_INTERVAL_S = 0.1


def sweep_interval(retention: timedelta) -> float:
    """Seconds between sweeps: a quarter of the retention, between 0.1 s and a minute."""
    return min(max(retention.total_seconds() / 4, _SHORTEST_INTERVAL_S), _LONGEST_INTERVAL_S)


class Retention:
    def __init__(
        self,
        *,
        clock: Clock,
        store: Store,
        committer: Committer,
        is_live: Callable[[str], bool],
        retention: timedelta,
        batch: int,
        deleting: Callable[[str], None] = lambda execution_id: None,
    ) -> None:
        """`deleting`: told of each execution whose deletion is staged."""
        self._clock = clock
        self._store = store
        self._committer = committer
        self._is_live = is_live
        self._deleting = deleting
        self.retention = retention
        self._batch = batch
        self.interval_s = sweep_interval(retention)
        # Whether this server sweeps (replicas: only the leading one does; the timer keeps ticking).
        self.leading: Callable[[], bool] = lambda: True
        self._timer: Cancellable | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._closed = False
        self.sweeps = 0  # sweeps finished
        self.commits = 0  # batches deleted, one commit each
        self.deleted = 0  # executions deleted

    def start(self) -> None:
        if self.retention > timedelta(0):
            self._schedule()

    def _schedule(self) -> None:
        if not self._closed:
            self._timer = self._clock.call_at(self._clock.monotonic() + self.interval_s, self._due)

    def _due(self) -> None:
        self._timer = None
        if not self.leading():
            self._schedule()
        elif not self._closed and self._sweep is None:
            self._sweep = asyncio.create_task(self._run(), name="taskwire-retention")

    async def _run(self) -> None:
        try:
            await self._delete_expired()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A store that fails stops the server through the committer; a failed read is tried next time.
            log.exception("retention: deleting finished executions failed; trying again in %.1fs", self.interval_s)
        finally:
            self._sweep = None
            self.sweeps += 1
            self._schedule()

    async def _delete_expired(self) -> None:
        cutoff = self._clock.now() - self.retention
        while not self._closed:
            found = await self._store.finished_before(cutoff, self._batch)
            expired = [execution_id for execution_id in found if not self._is_live(execution_id)]
            if not expired:
                return
            for execution_id in expired:
                self._committer.stage_delete(execution_id)
                self._deleting(execution_id)
            await self._committer.durable()
            self.commits += 1
            self.deleted += len(expired)
            log.debug("retention: deleted %d finished executions", len(expired))
            if len(found) < self._batch:
                return

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sweep = self._sweep
        if sweep is not None:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
