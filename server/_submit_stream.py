"""StreamSubmits: single submits carried on one stream, each answered on its own once durable.

A unary call costs the server (and the client) more than the submit it carries: grpc.aio's per-call
machinery is most of a single submit's CPU. On a stream, a submit is a few hundred bytes of a message;
and when several callers submit at once, their submits share a message each way. Each submit is still
exactly what one `SubmitExecution` call does (`TaskService.submit_one`): validated, admitted, counted
against the caller's submit rate, answered once its execution is durable, its failure its own.

The stream's own rules: at most `MAX_PER_MESSAGE` submits in a message, no id twice among the unanswered,
and no reading past `MAX_UNANSWERED` unanswered submits (HTTP/2 flow control then holds the client back).
A break of these ends the stream with INVALID_ARGUMENT; the submits in flight are still answered first.
The answers ready together go out together, in messages of at most `ANSWERS_MAX_BYTES` and below the
server's own message limit: a message larger than either side takes would end the call.

A message's submits start `START_GROUP` at a time, a loop turn apart: the committer takes the first
group while the next is started, so a message of many is committed and answered in waves that overlap
with the work on the rest (with all started at once, every answer waited for the last one's commit).
The submits of a group that can go together (`_joinable`: an execution without an idempotency key, failing
fast, the same deadline) are made together (`TaskService.submit_each`): each still validated, admitted and
answered on its own, with one task, one dispatch pass and one wait for their commit between them. The rest
go one by one.
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
SubmitEach = Callable[
    [Sequence[tpb.SubmitExecutionRequest], Sequence[tpb.SubmitExecutionResponse]], Awaitable[list[TaskwireError | None]]
]
Charge = Callable[[int], RateLimited | None]

MAX_PER_MESSAGE = 1000
MAX_UNANSWERED = 10_000
START_GROUP = 16  # the submits of a message started in one loop turn
# Well under the 4 MiB a gRPC client takes by default; one larger answer goes alone.
ANSWERS_MAX_BYTES = 1024 * 1024
_FRAMING = 8  # an answer's field tag and length inside the message, with room to spare
_FAILING_FAST = frozenset((tpb.ADMISSION_MODE_UNSPECIFIED, tpb.ADMISSION_MODE_FAIL_FAST))


def _joinable(submit: tpb.StreamedSubmit) -> bool:
    """Whether the submit can be made together with others (`SubmitEach`): it has an execution without an
    idempotency key, and fails fast when the queue is full. One with a key, one that may wait for room, and
    one that is malformed go alone, through `SubmitOne`."""
    if not submit.HasField("request") or not submit.request.HasField("execution"):
        return False
    request = submit.request
    return not request.execution.idempotency_key and request.admission in _FAILING_FAST


def _refused(answer: tpb.StreamedSubmitAnswer, error: TaskwireError) -> None:
    answer.error_code, answer.error_message = wire.submit_result_error(error)
    if isinstance(error, RateLimited):
        answer.retry_after.FromNanoseconds(int(error.retry_after_s * 1e9))


def _timed_out(answer: tpb.StreamedSubmitAnswer) -> None:
    answer.error_code = grpc.StatusCode.DEADLINE_EXCEEDED.name
    answer.error_message = "the submit did not finish within its deadline"


def _failed(answer: tpb.StreamedSubmitAnswer) -> None:
    answer.error_code = grpc.StatusCode.INTERNAL.name
    answer.error_message = "the server failed this submit; see its log"


class SubmitStream:
    """One StreamSubmits call: its reader, its submits in flight, and the answers waiting to be written."""

    def __init__(
        self,
        *,
        submit_one: SubmitOne,
        submit_each: SubmitEach,
        budget_s: float,
        charge: Charge,
        max_message_bytes: int,
    ) -> None:
        self._submit_one = submit_one
        self._submit_each = submit_each
        self._budget_s = budget_s  # the server's call timeout: no submit waits longer
        self._charge = charge
        self._answers_max_bytes = min(ANSWERS_MAX_BYTES, max_message_bytes - 1024)
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
                    await context.write(tpb.StreamSubmitsResponse(answers=self._next_answers()))
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

    def _next_answers(self) -> list[tpb.StreamedSubmitAnswer]:
        """The answers of the next message, from the first: at least one, within the message's size."""
        total = 0
        for count, answer in enumerate(self._answers):
            total += answer.ByteSize() + _FRAMING
            if total > self._answers_max_bytes and count:
                answers, self._answers = self._answers[:count], self._answers[count:]
                return answers
        answers, self._answers = self._answers, []
        return answers

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
        """Start each submit of a group (the first at index `first` of its message): those that can go together
        as one task per deadline, the others one by one. Returns the refusal that ends the stream when one
        reuses an id in flight (the submits before it are started all the same)."""
        refusal: ValidationError | None = None
        together: dict[float, list[tpb.StreamedSubmit]] = {}  # by deadline
        joined: set[int] = set()
        for index, submit in enumerate(submits, start=first):
            if submit.id in self._in_flight or submit.id in joined:
                refusal = ValidationError(f"submits[{index}].id", f"{submit.id} is already in flight on this stream")
                break
            if _joinable(submit):
                together.setdefault(self._budget(submit), []).append(submit)
                joined.add(submit.id)
            else:
                self._in_flight[submit.id] = asyncio.ensure_future(self._answer(submit))
        for budget_s, group in together.items():
            task = asyncio.ensure_future(self._answer_together(group, budget_s))
            for submit in group:
                self._in_flight[submit.id] = task
        if len(self._in_flight) >= MAX_UNANSWERED:
            self._room.clear()
        return refusal

    def _budget(self, submit: tpb.StreamedSubmit) -> float:
        """How long the submit may take: its own timeout, capped by the server's call timeout."""
        if submit.HasField("timeout"):
            return min(self._budget_s, max(submit.timeout.ToTimedelta().total_seconds(), 0.0))
        return self._budget_s

    def _settled(self, submits: Sequence[tpb.StreamedSubmit]) -> None:
        for submit in submits:
            del self._in_flight[submit.id]
        if len(self._in_flight) < MAX_UNANSWERED:
            self._room.set()

    def _to_write(self, answers: Sequence[tpb.StreamedSubmitAnswer]) -> None:
        self._answers.extend(answers)
        self._ready.set()

    async def _answer_together(self, submits: list[tpb.StreamedSubmit], budget_s: float) -> None:
        """Answer submits made together (`_joinable`, one deadline): each charged, accepted or refused on its own."""
        answers = [tpb.StreamedSubmitAnswer(id=submit.id) for submit in submits]
        try:
            going: list[tuple[tpb.StreamedSubmitAnswer, tpb.SubmitExecutionRequest]] = []
            for answer, submit in zip(answers, submits, strict=True):
                refused = self._charge(1)
                if refused is not None:
                    _refused(answer, refused)
                else:
                    going.append((answer, submit.request))
            if going:
                try:
                    async with asyncio.timeout(budget_s):
                        errors = await self._submit_each(
                            [request for _, request in going], [answer.response for answer, _ in going]
                        )
                except TaskwireError as error:  # all of them, such as a server shutting down
                    for answer, _ in going:
                        _refused(answer, error)
                except TimeoutError:
                    for answer, _ in going:
                        answer.ClearField("response")
                        _timed_out(answer)
                except Exception:  # a defect of the server's: these submits fail, the stream and the others go on
                    log.exception("streamed submits failed")
                    for answer, _ in going:
                        answer.ClearField("response")
                        _failed(answer)
                else:
                    for (answer, _), refusal in zip(going, errors, strict=True):
                        if refusal is not None:
                            _refused(answer, refusal)
        finally:
            self._settled(submits)
        self._to_write(answers)

    async def _answer(self, submit: tpb.StreamedSubmit) -> None:
        answer = tpb.StreamedSubmitAnswer(id=submit.id)
        try:
            refused = self._charge(1)
            if refused is not None:
                raise refused
            if not submit.HasField("request"):
                raise ValidationError("request", "required")
            budget_s = self._budget(submit)
            async with asyncio.timeout(budget_s):
                await self._submit_one(submit.request, budget_s, answer.response)
        except TaskwireError as error:
            _refused(answer, error)
        except TimeoutError:
            _timed_out(answer)
        except Exception:  # a defect of the server's: this submit fails, the stream and the others go on
            log.exception("a streamed submit failed")
            _failed(answer)
        finally:
            self._settled((submit,))
        self._to_write((answer,))


__all__ = ["MAX_PER_MESSAGE", "MAX_UNANSWERED", "SubmitStream"]
