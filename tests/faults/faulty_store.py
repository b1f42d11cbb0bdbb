"""A store that fails on command: every call goes to a real store until `fail_with` is set, and from then
on commits (and, if asked, reads) raise that error, as a disk that returns I/O errors would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskwire.server.store import Store, StoreError, WriteBatch


class FaultyStore:
    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.fail_with: BaseException | None = None
        self.fail_reads = False
        self.commits = 0

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        if self.fail_with is not None:
            raise StoreError(f"cannot commit: {self.fail_with}") from self.fail_with
        self.commits += 1
        return await self._inner.commit(batches)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if self.fail_with is not None and self.fail_reads and callable(attribute):

            async def failing(*args: object, **kwargs: object) -> object:
                raise StoreError(f"cannot read: {self.fail_with}") from self.fail_with

            return failing
        return attribute
