"""The submit stream's groups: which submits of a message are made together, and how each is answered.

A fake call context feeds the stream its messages and keeps what it writes; `submit_one` and `submit_each`
are fakes that record what they were given, so these tests see the routing and the answers, not the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from taskwire.common import RateLimited
from taskwire.server._submit_stream import SubmitStream
from taskwire.server.domain import QueueFull, ShuttingDown, TaskwireError, ValidationError
from taskwire.v1 import task_service_pb2 as tpb

BUDGET_S = 60.0


class _Context:
    """Reads the given messages, then the end of the stream; keeps the answers written."""

    def __init__(self, *messages: tpb.StreamSubmitsRequest) -> None:
        self._messages = list(messages)
        self.answers: dict[int, tpb.StreamedSubmitAnswer] = {}
        self.written: list[int] = []  # the size of each message written

    async def read(self) -> Any:
        return self._messages.pop(0) if self._messages else grpc.aio.EOF

    async def write(self, response: tpb.StreamSubmitsResponse) -> None:
        self.written.append(response.ByteSize())
        for answer in response.answers:
            assert answer.id not in self.answers, f"submit {answer.id} answered twice"
            self.answers[answer.id] = answer


@dataclass
class _Server:
    """What the stream calls: records each call; `each_error` is raised by submit_each, `refuse` names the
    executions it refuses, and `hang` keeps submit_each from returning."""

    one: list[str] = field(default_factory=list)
    each: list[list[str]] = field(default_factory=list)
    each_error: BaseException | None = None
    refuse: dict[str, TaskwireError] = field(default_factory=dict)
    hang: bool = False
    charged: int = 0
    rate_limited_after: int | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    answer_padding: int = 0  # bytes added to each execution's name in its answer
    written: list[int] = field(default_factory=list)

    async def submit_one(
        self, request: tpb.SubmitExecutionRequest, budget_s: float, response: tpb.SubmitExecutionResponse
    ) -> None:
        self.one.append(request.execution.name)
        response.execution.id = f"id-{request.execution.name}"

    async def submit_each(
        self, requests: Sequence[tpb.SubmitExecutionRequest], responses: Sequence[tpb.SubmitExecutionResponse]
    ) -> list[TaskwireError | None]:
        self.each.append([request.execution.name for request in requests])
        if self.each_error is not None:
            raise self.each_error
        if self.hang:
            await asyncio.Event().wait()
        errors: list[TaskwireError | None] = []
        for request, response in zip(requests, responses, strict=True):
            refusal = self.refuse.get(request.execution.name)
            if refusal is None:
                response.execution.id = f"id-{request.execution.name}"
                response.execution.name = "n" * self.answer_padding
            errors.append(refusal)
        return errors

    def charge(self, count: int) -> RateLimited | None:
        self.charged += count
        if self.rate_limited_after is not None and self.charged > self.rate_limited_after:
            return RateLimited("over the submit rate", retry_after_s=0.25)
        return None

    async def serve(self, *submits: tpb.StreamedSubmit) -> dict[int, tpb.StreamedSubmitAnswer]:
        context = _Context(tpb.StreamSubmitsRequest(submits=list(submits)))
        stream = SubmitStream(
            submit_one=self.submit_one,
            submit_each=self.submit_each,
            budget_s=BUDGET_S,
            charge=self.charge,
            max_message_bytes=self.max_message_bytes,
        )
        refusal = await asyncio.wait_for(stream.serve(context), 10)  # type: ignore[arg-type]
        assert refusal is None
        self.written = context.written
        return context.answers


def _submit(
    submit_id: int,
    name: str,
    *,
    key: str = "",
    admission: tpb.AdmissionMode.ValueType = tpb.ADMISSION_MODE_UNSPECIFIED,
    timeout_s: float | None = None,
) -> tpb.StreamedSubmit:
    submit = tpb.StreamedSubmit(id=submit_id)
    submit.request.execution.name = name
    submit.request.execution.idempotency_key = key
    submit.request.admission = admission
    if timeout_s is not None:
        submit.timeout.FromNanoseconds(int(timeout_s * 1e9))
    return submit


async def test_keyless_fail_fast_submits_go_together_per_deadline_and_the_rest_alone() -> None:
    server = _Server()
    answers = await server.serve(
        _submit(1, "a"),
        _submit(2, "b", admission=tpb.ADMISSION_MODE_FAIL_FAST),
        _submit(3, "keyed", key="k"),
        _submit(4, "waits", admission=tpb.ADMISSION_MODE_WAIT_FOR_ROOM),
        _submit(5, "soon", timeout_s=5),
        _submit(6, "c"),
        _submit(7, "also-soon", timeout_s=5),
        tpb.StreamedSubmit(id=8),  # no request: refused alone
    )
    assert sorted(server.each) == [["a", "b", "c"], ["soon", "also-soon"]], "one group per deadline"
    assert sorted(server.one) == ["keyed", "waits"]
    for submit_id, name in ((1, "a"), (2, "b"), (3, "keyed"), (4, "waits"), (5, "soon"), (6, "c"), (7, "also-soon")):
        assert not answers[submit_id].error_code, answers[submit_id]
        assert answers[submit_id].response.execution.id == f"id-{name}"
    assert answers[8].error_code == "INVALID_ARGUMENT"
    assert answers[8].error_message.startswith("request: ")


async def test_a_submit_refused_in_a_group_is_refused_alone() -> None:
    server = _Server(refuse={"b": QueueFull(size=2, capacity=2, requested=1), "c": ValidationError("execution", "x")})
    answers = await server.serve(_submit(1, "a"), _submit(2, "b"), _submit(3, "c"), _submit(4, "d"))
    assert answers[2].error_code == "RESOURCE_EXHAUSTED"
    assert answers[3].error_code == "INVALID_ARGUMENT"
    assert answers[3].error_message == "execution: x"
    for refused in (2, 3):
        assert not answers[refused].HasField("response")
    for accepted in (1, 4):
        assert not answers[accepted].error_code
        assert answers[accepted].response.execution.id


async def test_each_submit_of_a_group_is_charged_to_the_rate_on_its_own() -> None:
    server = _Server(rate_limited_after=2)
    answers = await server.serve(_submit(1, "a"), _submit(2, "b"), _submit(3, "c"))
    assert server.each == [["a", "b"]], "the one over the rate is not submitted"
    assert answers[3].error_code == "RESOURCE_EXHAUSTED"
    assert answers[3].retry_after.ToTimedelta().total_seconds() == 0.25
    assert not answers[1].error_code
    assert not answers[2].error_code


async def test_a_group_refused_as_a_whole_answers_each_of_its_submits() -> None:
    server = _Server(each_error=ShuttingDown("the server is shutting down"))
    answers = await server.serve(_submit(1, "a"), _submit(2, "b"), _submit(3, "keyed", key="k"))
    assert [answers[n].error_code for n in (1, 2)] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert not answers[3].error_code, "the submit made alone is not part of the group"


async def test_a_defect_in_a_group_fails_its_submits_and_the_stream_goes_on() -> None:
    server = _Server(each_error=RuntimeError("a defect"))
    answers = await server.serve(_submit(1, "a"), _submit(2, "b"))
    for submit_id in (1, 2):
        assert answers[submit_id].error_code == "INTERNAL"
        assert not answers[submit_id].HasField("response")


async def test_a_group_past_its_deadline_answers_deadline_exceeded() -> None:
    server = _Server(hang=True)
    answers = await server.serve(_submit(1, "a", timeout_s=0.05), _submit(2, "b", timeout_s=0.05))
    for submit_id in (1, 2):
        assert answers[submit_id].error_code == "DEADLINE_EXCEEDED"
        assert not answers[submit_id].HasField("response")


async def test_answers_ready_together_are_written_in_messages_the_server_and_a_client_take() -> None:
    """Answers that are ready at once share a message up to the server's own message limit (less a margin) and
    at most 1 MiB, the rest going in the next: one message over the limit would end the call, failing every
    submit on it."""
    for limit, padding, count in ((70_000, 600, 200), (8 * 1024 * 1024, 20_000, 200)):
        server = _Server(max_message_bytes=limit, answer_padding=padding)
        answers = await server.serve(*(_submit(n, f"e{n}") for n in range(count)))
        assert sorted(answers) == list(range(count))
        assert all(not answer.error_code for answer in answers.values())
        assert len(server.written) > 1
        assert max(server.written) <= min(limit - 1024, 1024 * 1024), (limit, server.written)
    alone = _Server(max_message_bytes=70_000, answer_padding=100_000)  # one answer larger than the limit: alone
    answers = await alone.serve(*(_submit(n, f"e{n}") for n in range(3)))
    assert sorted(answers) == [0, 1, 2]
    assert len(alone.written) == 3
