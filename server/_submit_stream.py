"""StreamSubmits: single submits carried on one stream, each answered on its own once durable.

A unary call costs the server (and the client) more than the submit it carries: grpc.aio's per-call
machinery is most of a single submit's CPU. On a stream, a submit is a few hundred bytes of a message;
and when several callers submit at once, their submits share a message each way. Each submit is still
exactly what one `SubmitExecution` call does (`TaskService.submit_one`): validated, admitted, counted
against the caller's submit rate, answered once its execution is durable, its failure its own.

The stream's own rules: at most `MAX_PER_MESSAGE` submits in a message, no id twice among the unanswered,
and no reading past `MAX_UNANSWERED` unanswered submits (HTTP/2 flow control then holds the client back).
A break of these ends the stream with INVALID_ARGUMENT; the submits in flight are still answered first.

A message's submits start `START_GROUP` at a time, a loop turn apart: the committer takes the first
group while the next is started, so a message of many is committed and answered in waves that overlap
with the work on the rest (with all started at once, every answer waited for the last one's commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from taskwire.common import RateLimited
from taskwire.v1 import task_service_pb2 as tpb

from . import wire
from ._edge import Malformed
from .domain import TaskwireError, ValidationError

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
SubmitOne = Callable[[tpb.SubmitExecutionRequest, float, tpb.SubmitExecutionResponse], Awaitable[None]]
Charge = Callable[[int], RateLimited | None]

MAX_PER_MESSAGE = 1000
MAX_UNANSWERED = 10_000
START_GROUP = 16  # the submits of a message started in one loop turn


class SubmitStream:
    """One StreamSubmits call: its reader, its submits in flight, and the answers waiting to be written."""

    def __init__(self, *, submit_one: SubmitOne, budget_s: float, charge: Charge) -> None:
        self._submit_one = submit_one
        self._budget_s = budget_s  # the server's call timeout: no submit waits longer
        self._charge = charge
        self._answers: list[tpb.StreamedSubmitAnswer] = []
        self._ready = asyncio.Event()  # answers to write, or the reader ended
        self._room = asyncio.Event()  # fewer than MAX_UNANSWERED in flight
        self._room.set()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._refusal: ValidationError | None = None

    async def serve(self, context: Context) -> ValidationError | None:
        """Read submits and write their answers until the client has sent its last and every one is answered;
        returns the refusal that ended the stream early (the caller ends the call with it), if any."""
        reader = asyncio.ensure_future(self._read(context))
        try:
            while True:
                if self._answers:
                    answers, self._answers = self._answers, []
                    await context.write(tpb.StreamSubmitsResponse(answers=answers))
                elif reader.done() and not self._in_flight:
                    break
                else:
                    await self._ready.wait()
                    self._ready.clear()
            reader.result()  # a failure of the reader is the server's own: it ends the call as such
        finally:
            reader.cancel()
            for task in list(self._in_flight.values()):
                task.cancel()
        return self._refusal

    async def _read(self, context: Context) -> None:
        try:
            while True:
                await self._room.wait()
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                if isinstance(message, Malformed):
                    self._refusal = message.refusal()
                    return
                submits = message.submits
                if len(submits) > MAX_PER_MESSAGE:
                    self._refusal = ValidationError(
                        "submits", f"at most {MAX_PER_MESSAGE} per message, got {len(submits)}"
                    )
                    return
                for first in range(0, len(submits), START_GROUP):
                    if first:
                        # A loop turn between groups: the committer takes the group before, so its answers
                        # are on their way while the rest are started, rather than all after the last.
                        await asyncio.sleep(0)
                    self._refusal = self._start(submits[first : first + START_GROUP], first)
                    if self._refusal is not None:
                        return
        finally:
            self._ready.set()

    def _start(self, submits: Sequence[tpb.StreamedSubmit], first: int) -> ValidationError | None:
        """Start each submit of a group (the first at index `first` of its message); the refusal that ends the
        stream when one reuses an id in flight."""
        for index, submit in enumerate(submits, start=first):
            if submit.id in self._in_flight:
                return ValidationError(f"submits[{index}].id", f"{submit.id} is already in flight on this stream")
            self._in_flight[submit.id] = asyncio.ensure_future(self._answer(submit))
        if len(self._in_flight) >= MAX_UNANSWERED:
            self._room.clear()
        return None

    async def _answer(self, submit: tpb.StreamedSubmit) -> None:
        answer = tpb.StreamedSubmitAnswer(id=submit.id)
        try:
            refused = self._charge(1)
            if refused is not None:
                raise refused
            if not submit.HasField("request"):
                raise ValidationError("request", "required")
            budget_s = self._budget_s
            if submit.HasField("timeout"):
                budget_s = min(budget_s, max(submit.timeout.ToTimedelta().total_seconds(), 0.0))
            async with asyncio.timeout(budget_s):
                await self._submit_one(submit.request, budget_s, answer.response)
        except TaskwireError as error:
            answer.error_code, answer.error_message = wire.submit_result_error(error)
            if isinstance(error, RateLimited):
                answer.retry_after.FromNanoseconds(int(error.retry_after_s * 1e9))
        except TimeoutError:
            answer.error_code = grpc.StatusCode.DEADLINE_EXCEEDED.name
            answer.error_message = "the submit did not finish within its deadline"
        except Exception:  # a defect of the server's: this submit fails, the stream and the others go on
            log.exception("a streamed submit failed")
            answer.error_code = grpc.StatusCode.INTERNAL.name
            answer.error_message = "the server failed this submit; see its log"
        finally:
            del self._in_flight[submit.id]
            if len(self._in_flight) < MAX_UNANSWERED:
                self._room.set()
        self._answers.append(answer)
        self._ready.set()


__all__ = ["MAX_PER_MESSAGE", "MAX_UNANSWERED", "SubmitStream"]
