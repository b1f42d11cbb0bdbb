"""Payload coding and what a TaskContext shows a handler."""

from __future__ import annotations

import logging
import math

import pytest

from taskwire.worker import InputDecodingError, LogLine, OutputEncodingError, Payload, ProgressUpdate, TaskContext
from taskwire.worker._abort import AbortController
from taskwire.worker._context import AttemptInfo, build_context
from taskwire.worker._payload import decode_input, encode_output


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (Payload(data=b'{"a":[1,2]}', content_type="application/json"), {"a": [1, 2]}),
        (Payload(data=b"", content_type="application/json"), None),
        (Payload(data=b"3", content_type=""), 3),
        (Payload(data=b"\x00\x01", content_type="application/octet-stream"), b"\x00\x01"),
    ],
)
def test_decode_input(payload: Payload, expected: object) -> None:
    assert decode_input(payload) == expected


def test_malformed_json_input_is_a_non_retryable_error() -> None:
    with pytest.raises(InputDecodingError) as caught:
        decode_input(Payload(data=b"{nope", content_type="application/json"))
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("value", "data"),
    [
        ({"b": 1, "a": "é"}, '{"b":1,"a":"é"}'.encode()),
        (None, b"null"),
        ([1.5, True], b"[1.5,true]"),
    ],
)
def test_encode_output_is_compact_json(value: object, data: bytes) -> None:
    assert encode_output(value) == Payload(data=data, content_type="application/json")


def test_a_payload_return_value_passes_through() -> None:
    raw = Payload(data=b"\x89PNG", content_type="image/png")
    assert encode_output(raw) is raw


def test_a_payload_like_object_is_accepted() -> None:
    class ProtoLike:
        data = b"abc"
        content_type = "text/plain"

    assert encode_output(ProtoLike()) == Payload(data=b"abc", content_type="text/plain")


@pytest.mark.parametrize("value", [object(), math.nan, {1, 2}, b"bytes"])
def test_unencodable_output_is_a_non_retryable_error(value: object) -> None:
    with pytest.raises(OutputEncodingError) as caught:
        encode_output(value)
    assert caught.value.retryable is False


class _Events:
    def __init__(self) -> None:
        self.progress_updates: list[ProgressUpdate] = []
        self.lines: list[LogLine] = []

    def progress(self, update: ProgressUpdate) -> None:
        self.progress_updates.append(update)

    def log(self, line: LogLine) -> None:
        self.lines.append(line)


def _context(events: _Events, *, data: bytes = b'{"x":1}', content_type: str = "application/json") -> TaskContext:
    info = AttemptInfo(
        task_run_id="run-1",
        attempt=2,
        handler="resize",
        input=Payload(data=data, content_type=content_type),
        execution_id="exec-1",
        task_id="task-1",
    )
    return build_context(info=info, abort=AbortController().signal, events=events, log_level=logging.DEBUG)


def test_the_context_shows_the_attempt() -> None:
    ctx = _context(_Events())
    assert ctx.input == {"x": 1}
    assert ctx.raw_input == Payload(data=b'{"x":1}', content_type="application/json")
    assert (ctx.execution_id, ctx.task_id, ctx.task_run_id, ctx.attempt, ctx.handler) == (
        "exec-1",
        "task-1",
        "run-1",
        2,
        "resize",
    )
    assert not ctx.abort.is_set()


def test_raw_input_for_a_non_json_content_type() -> None:
    ctx = _context(_Events(), data=b"\xff", content_type="application/octet-stream")
    assert ctx.input == b"\xff"


def test_progress_is_validated_and_recorded() -> None:
    events = _Events()
    ctx = _context(events)
    ctx.progress(0.5, "half", {"rows": 10, "nested": {"ok": True}})
    ctx.progress(1)
    assert events.progress_updates == [
        ProgressUpdate(fraction=0.5, message="half", details={"rows": 10, "nested": {"ok": True}}),
        ProgressUpdate(fraction=1.0),
    ]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan, True])
def test_progress_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        _context(_Events()).progress(fraction)


def test_progress_details_must_be_json() -> None:
    with pytest.raises(TypeError):
        _context(_Events()).progress(0.1, details={"when": object()})


def test_logger_records_become_log_lines() -> None:
    events = _Events()
    ctx = _context(events)
    ctx.logger.info("resized %d images", 3)
    ctx.logger.debug("detail")
    try:
        raise ValueError("bad pixel")
    except ValueError:
        ctx.logger.exception("failed")
    assert [(line.level, line.text.splitlines()[0]) for line in events.lines] == [
        (logging.INFO, "resized 3 images"),
        (logging.DEBUG, "detail"),
        (logging.ERROR, "failed"),
    ]
    assert "ValueError: bad pixel" in events.lines[2].text
