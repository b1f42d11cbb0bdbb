"""Bulk actions: cancel or delete every execution a filter matches, or count them first (dry run).

Reads page by page from the store (after a flush, so that every accepted execution is there), and acts
on each match through the same path as a single cancel or delete: the same rules, the same history.

May use: the engine's public reads and actions (passed in), taskwire.common's filter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from taskwire.common import ExecutionFilter
from taskwire.server.domain import State
from taskwire.server.store import ExecutionPage, ExecutionSnapshot

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
