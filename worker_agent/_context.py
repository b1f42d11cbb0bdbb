"""What a handler receives: its TaskContext, and the events it emits through it."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from taskwire.common import REFERENCE_MARKER, Payload, resolve

from ._abort import AbortSignal
from ._payload import decode_input, to_json_compatible


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressUpdate:
    """One ``ctx.progress(...)`` call."""

    fraction: float
    message: str = ""
    details: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine:
    """One record written to ``ctx.logger``; ``level`` is a :mod:`logging` level number."""

    level: int
    text: str
    logger_name: str = field(default="", compare=False)


class AttemptEvents(Protocol):
    """Where a running handler's progress and log lines go. Called from the handler's own thread."""

    def progress(self, update: ProgressUpdate) -> None: ...

    def log(self, line: LogLine) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptInfo:
    """Everything the worker knows about an attempt before it runs; plain data, so it can cross processes."""

    task_run_id: str
    attempt: int
    handler: str
    input: Payload
    execution_id: str = ""
    task_id: str = ""
    # Names this dispatch (session id / dispatch number); unlike the attempt number, no crash reuses it.
    dispatch_id: str = ""
    # The submitter's W3C trace context, and when the task run was queued for this attempt.
    trace_context: Mapping[str, str] = field(default_factory=dict)
    queued_at: datetime | None = None
    # The outputs of the tasks it depends on, by task id.
    upstream: Mapping[str, Payload] = field(default_factory=dict)


class TaskContext:
    """The single argument of every handler.

    ``input`` is the decoded JSON input (or the raw bytes when the input's media type is not JSON);
    ``abort`` fires when the handler should stop; ``progress()`` and ``logger`` report to the server.
    """

    __slots__ = ("_events", "_info", "_input", "_log_level", "_logger", "_upstream", "abort")

    def __init__(self, *, info: AttemptInfo, abort: AbortSignal, events: AttemptEvents, log_level: int) -> None:
        self._info = info
        self._events = events
        # Decoded up front so a malformed input fails the attempt before the handler runs; so are the
        # upstream outputs it refers to ({"$from": ...}, see taskwire.common.resolve).
        self._upstream = {task_id: decode_input(output) for task_id, output in info.upstream.items()}
        self._input = decode_input(info.input)
        if info.upstream and info.input.is_json and REFERENCE_MARKER in info.input.data:
            self._input = resolve(self._input, self._upstream)
        self.abort = abort
        self._log_level = log_level
        self._logger: logging.Logger | None = None

    @property
    def logger(self) -> logging.Logger:
        """A logger whose records become this attempt's log lines (made on first use: most handlers never log)."""
        if self._logger is None:
            self._logger = make_attempt_logger(
                handler_name=self._info.handler, level=self._log_level, events=self._events
            )
        return self._logger

    @property
    def input(self) -> object:
        """The input: decoded JSON (None when empty), or bytes when its media type is not JSON."""
        return self._input

    @property
    def upstream(self) -> Mapping[str, object]:
        """The outputs of the tasks this one depends on, by task id, decoded like `input`."""
        return self._upstream

    @property
    def raw_input(self) -> Payload:
        """The input exactly as it arrived: bytes and media type."""
        return self._info.input

    @property
    def info(self) -> AttemptInfo:
        """Everything known about the attempt before it ran (ids, handler, input, trace context)."""
        return self._info

    @property
    def execution_id(self) -> str:
        """The execution this task run belongs to."""
        return self._info.execution_id

    @property
    def task_id(self) -> str:
        """The task's id within its execution."""
        return self._info.task_id

    @property
    def task_run_id(self) -> str:
        """The task run; the same across its attempts."""
        return self._info.task_run_id

    @property
    def attempt(self) -> int:
        """The attempt number: 1 for the first run, then 2, 3, ... on retries."""
        return self._info.attempt

    @property
    def dispatch_id(self) -> str:
        """This dispatch's identity (empty in the harness). An attempt number is sent twice when a server
        died before its first dispatch was durable; the dispatch id never repeats."""
        return self._info.dispatch_id

    @property
    def handler(self) -> str:
        """The name this handler was invoked by."""
        return self._info.handler

    def progress(self, fraction: float, message: str = "", details: Mapping[str, object] | None = None) -> None:
        """Report progress: ``fraction`` in [0, 1], a short status, and optional JSON-compatible details."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or math.isnan(fraction):
            raise ValueError(f"progress fraction must be a number in [0, 1], got {fraction!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be in [0, 1], got {fraction}")
        if not isinstance(message, str):
            raise TypeError(f"progress message must be a str, got {type(message).__name__} {message!r:.100}")
        checked_details: Mapping[str, object] | None = None
        if details is not None:
            if not isinstance(details, Mapping):
                raise TypeError(f"progress details must be a mapping, got {type(details).__name__}")
            # Copied through JSON so the handler learns about unencodable details here, not later.
            try:
                copy = to_json_compatible(dict(details))
            except (TypeError, ValueError) as exc:  # the same kind of error, naming what it is about
                raise type(exc)(f"progress details cannot be sent as JSON: {exc}") from None
            except RecursionError:
                raise ValueError("progress details cannot be sent as JSON: nested too deep") from None
            assert isinstance(copy, dict)
            checked_details = copy
        update = ProgressUpdate(fraction=float(fraction), message=sendable_text(message), details=checked_details)
        self._events.progress(update)

    def __repr__(self) -> str:
        return f"<TaskContext {self.handler} run={self.task_run_id} attempt={self.attempt}>"


class _EventsLogHandler(logging.Handler):
    def __init__(self, events: AttemptEvents) -> None:
        super().__init__(level=logging.NOTSET)
        self._events = events
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._events.log(LogLine(level=record.levelno, text=sendable_text(text), logger_name=record.name))


def sendable_text(text: str) -> str:
    """`text` as the wire carries it (UTF-8): a lone surrogate, which no UTF-8 holds, becomes "?"."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def make_attempt_logger(*, handler_name: str, level: int, events: AttemptEvents) -> logging.Logger:
    """A logger private to one attempt whose records become that attempt's log lines.

    It is deliberately not registered with ``logging.getLogger``: the registry keeps loggers forever and
    one is created per attempt.
    """
    logger = logging.Logger(f"taskwire.handler.{handler_name}", level)
    logger.propagate = False
    logger.addHandler(_EventsLogHandler(events))
    return logger


def build_context(*, info: AttemptInfo, abort: AbortSignal, events: AttemptEvents, log_level: int) -> TaskContext:
    """The context a runner hands its handler; raises InputDecodingError for a malformed input."""
    return TaskContext(info=info, abort=abort, events=events, log_level=log_level)
