"""Bulk actions: cancel or delete every execution a filter matches, or count them first (dry run); and the
deleting of finished executions on request, one or many in a commit (`Deletions`).

Reads page by page from the store (after a flush, so that every accepted execution is there), and acts
on each match through the same path as a single cancel or delete: the same rules, the same history.

May use: the engine's public reads and actions (passed in), taskwire.common's filter, the live executions
(a lookup), the store's reads and the committer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from taskwire.common import ExecutionFilter
from taskwire.server.domain import InvalidTransition, NotFound, State
from taskwire.server.store import Committer, ExecutionPage, ExecutionSnapshot, Store

from ._live import LiveExecution

log = logging.getLogger(__name__)

_PAGE = 500

ListPage = Callable[..., Awaitable[ExecutionPage]]


@dataclass(frozen=True, slots=True)
class BulkResult:
    matched: int = 0
    changed: int = 0  # cancelled or deleted (or that would be, in a dry run)
    skipped: int = 0  # matched but left alone (a delete of an execution that has not ended)


async def matching(list_page: ListPage, selection: ExecutionFilter) -> AsyncIterator[ExecutionSnapshot]:
    """Every execution the filter matches, newest first."""
    states: Sequence[State] = selection.states
    token = ""
    while True:
        page = await list_page(states=states, handler=selection.handler, page_size=_PAGE, page_token=token)
        for snapshot in page.snapshots:
            if selection.matches(snapshot.execution, snapshot.task_runs):
                yield snapshot
        if not page.next_page_token:
            return
        token = page.next_page_token


async def cancel_matching(
    list_page: ListPage,
    cancel_many: Callable[[Sequence[str], str], Awaitable[int]],
    selection: ExecutionFilter,
    *,
    reason: str,
    dry_run: bool,
) -> BulkResult:
    matched = changed = 0
    doomed: list[str] = []
    async for snapshot in matching(list_page, selection):
        matched += 1
        if not snapshot.execution.state.is_terminal:
            doomed.append(snapshot.execution.id)
        if len(doomed) == _PAGE and not dry_run:  # a commit a page
            changed += await cancel_many(doomed, reason)
            doomed = []
    if dry_run:
        return BulkResult(matched, len(doomed))
    if doomed:
        changed += await cancel_many(doomed, reason)
    return BulkResult(matched, changed)


async def delete_matching(
    list_page: ListPage,
    delete_many: Callable[[Sequence[str]], Awaitable[int]],
    selection: ExecutionFilter,
    *,
    dry_run: bool,
) -> BulkResult:
    matched = changed = skipped = 0
    doomed: list[str] = []
    async for snapshot in matching(list_page, selection):
        matched += 1
        if snapshot.execution.state.is_terminal:
            doomed.append(snapshot.execution.id)
        else:
            skipped += 1
    if dry_run:
        return BulkResult(matched, len(doomed), skipped)
    for start in range(0, len(doomed), _PAGE):  # after the listing, which pages by position; a commit a page
        changed += await delete_many(doomed[start : start + _PAGE])
    return BulkResult(matched, changed, skipped)


class Deletions:
    """Finished executions deleted on request, with their task runs, history and idempotency key."""

    def __init__(
        self,
        *,
        live: Callable[[str], LiveExecution | None],
        store: Store,
        committer: Committer,
        deleting: Callable[[str], None] = lambda execution_id: None,
    ) -> None:
        """`deleting`: told of each execution whose deletion is staged."""
        self._live = live
        self._store = store
        self._committer = committer
        self._deleting = deleting

    async def delete(self, execution_id: str) -> None:
        await self._stage(execution_id)
        await self._committer.durable()
        log.info("execution %s deleted", execution_id)

    async def delete_many(self, execution_ids: Sequence[str]) -> int:
        """As `delete`, in one commit; those already gone are skipped, and one not finished raises after those
        before it are deleted. Returns how many were deleted."""
        await self._committer.durable()  # the ends written, so that those finished have left memory
        deleted = 0
        try:
            for execution_id in execution_ids:
                try:
                    await self._stage(execution_id)
                except NotFound:
                    continue  # deleted meanwhile (retention, another request)
                deleted += 1
        finally:
            await self._committer.durable()
        log.info("%d executions deleted", deleted)
        return deleted

    async def _stage(self, execution_id: str) -> None:
        live = self._live(execution_id)
        if live is not None and live.execution.state.is_terminal:
            await self._committer.durable()  # its end is written, then it leaves memory
            live = self._live(execution_id)
        snapshot = live.snapshot() if live is not None else await self._store.get_execution(execution_id)
        if snapshot is None:
            raise NotFound("execution", execution_id)
        state = snapshot.execution.state
        if live is not None or not state.is_terminal:
            raise InvalidTransition(
                entity="execution",
                entity_id=execution_id,
                state=str(state.value),
                event="delete",
                reason="only a finished execution can be deleted; cancel it first",
            )
        self._committer.stage_delete(execution_id)
        self._deleting(execution_id)
