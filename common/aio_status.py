"""The status a grpc.aio stream really ended with, for the SDK's submit stream and the worker's stream.

When a server ends a stream while the client is writing to it (refusing its credential as it opens, say),
the write fails, and grpc.aio then replaces the status the server sent with its own INTERNAL "Internal
error from Core" (grpc/grpc#36066). It sets the server's status first: `FirstStatus` keeps it, and gives it
back in place of that INTERNAL.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

_WRITE_FAILED = (grpc.StatusCode.INTERNAL, "Internal error from Core")


class FirstStatus:
    """Watches one call and keeps the first status it ended with."""

    def __init__(self, call: grpc.aio.Call) -> None:
        self._first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._keep)

    def _keep(self, call: grpc.aio.Call) -> None:
        # grpc.aio runs this as it sets a status; the call's coroutines then return without waiting.
        if self._first is not None:
            return
        code, details = _at_once(call.code()), _at_once(call.details())
        # Never grpc.aio's own status for the failed write, whatever the order the two statuses came in.
        if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK and (code, details) != _WRITE_FAILED:
            trailing = _at_once(call.trailing_metadata()) or grpc.aio.Metadata()
            self._first = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)

    def of(self, error: E) -> E | grpc.aio.AioRpcError:
        """`error`, or the server's own status when `error` is grpc.aio's INTERNAL for a write that failed as
        the call ended."""
        failed_write = isinstance(error, grpc.aio.AioRpcError) and (error.code(), error.details()) == _WRITE_FAILED
        return self._first if failed_write and self._first is not None else error


def _at_once(step: Coroutine[Any, Any, T]) -> T | None:
    """What a coroutine returns when it finishes without waiting; None (the coroutine closed) if it would wait."""
    try:
        step.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    step.close()
    return None


__all__ = ["FirstStatus"]
