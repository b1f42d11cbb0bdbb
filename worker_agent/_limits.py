"""What fits on the wire: the limits a server announces in its Welcome, and how reports are made to fit.

A report the server cannot take must never reach the stream: a frame over the server's message limit
breaks the stream, and the same frame, resent on the next one, breaks that one too, until the attempt's
lease expires and the real cause is lost. Nor may a terminal report be dropped: the next heartbeat would
leave its attempt out, and the server would run it again, and again. So an output over the payload limit,
or one whose report would not fit in a frame, becomes a clear, non-retryable failure (``OutputTooLarge``),
a log line or progress message too long is trimmed, progress details too large are dropped, an error too
long is cut, and frames are split below the message limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from taskwire.common import ErrorInfo
from taskwire.v1 import worker_service_pb2 as wpb

from . import _convert
from ._executor import AttemptKey
from ._outcome import Completed, Failed, Outcome

_log = logging.getLogger("taskwire.worker")

#: The gRPC default message limit, assumed when a server does not announce its own.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Room left in every frame for the frame's own encoding and a heartbeat.
_FRAME_MARGIN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class WireLimits:
    """The limits of the server last connected to (``Welcome.max_payload_bytes`` / ``max_message_bytes``)."""

    #: The largest output the server stores; 0: unknown (not checked).
    max_payload_bytes: int = 0
    #: The largest frame the server reads.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    @classmethod
    def from_welcome(cls, welcome: wpb.Welcome) -> WireLimits:
        return cls(
            max_payload_bytes=max(0, welcome.max_payload_bytes),
            max_message_bytes=welcome.max_message_bytes if welcome.max_message_bytes > 0 else DEFAULT_MAX_MESSAGE_BYTES,
        )

    @property
    def frame_budget(self) -> int:
        """The most bytes of messages one frame may carry."""
        return max(self.max_message_bytes // 2, self.max_message_bytes - _FRAME_MARGIN_BYTES)

    def fit_outcome(self, outcome: Outcome) -> Outcome:
        """An outcome the server can take: an output over the limit becomes an OutputTooLarge failure."""
        if not isinstance(outcome, Completed):
            return outcome
        size = len(outcome.output.data)
        limit = self.max_payload_bytes or self.frame_budget
        if size <= limit:
            return outcome
        return _too_large(f"the handler's output is {size} bytes, over the server's limit of {limit} bytes")

    def fit_report(self, key: AttemptKey, outcome: Outcome) -> tuple[wpb.WorkerMessage | None, Outcome]:
        """The terminal report of an attempt that ended with ``outcome``, made to fit (None: nothing is sent,
        its lease was lost), and the outcome it reports.

        A completed report that would not fit in a frame (its output within the payload limit, but not with
        the message around it) reports an OutputTooLarge failure instead: dropped, it would leave its attempt
        to be run again, and again.
        """
        fitted = self.fit_outcome(outcome)
        report = _convert.outcome(key, fitted)
        if report is None or report.WhichOneof("kind") != "completed" or report.ByteSize() <= self.frame_budget:
            return report, fitted
        assert isinstance(fitted, Completed)
        fitted = _too_large(
            f"the handler's output is {len(fitted.output.data)} bytes: its report ({report.ByteSize()} bytes) "
            f"would not fit in a frame under the server's message limit of {self.max_message_bytes} bytes"
        )
        return _convert.outcome(key, fitted), fitted

    def fit_message(self, message: wpb.WorkerMessage) -> wpb.WorkerMessage | None:
        """The message trimmed to fit in a frame, or None (logged) when nothing of it can be sent."""
        budget = self.frame_budget
        size = message.ByteSize()
        if size <= budget:
            return message
        kind = message.WhichOneof("kind")
        fitted = wpb.WorkerMessage()
        fitted.CopyFrom(message)
        if kind == "log":
            fitted.log.text = _trim(message.log.text, budget // 2)
        elif kind == "progress":
            fitted.progress.ClearField("details")
            fitted.progress.message = _trim(message.progress.message, budget // 2)
        elif kind == "failed":
            error = fitted.failed.error
            error.traceback = _trim(error.traceback, budget // 4)
            error.message = _trim(error.message, budget // 4)
        if fitted.ByteSize() > budget:
            _log.warning("not sending a %s message of %d bytes: over the frame limit of %d bytes", kind, size, budget)
            return None
        _log.warning("trimmed a %s message of %d bytes to fit the frame limit of %d bytes", kind, size, budget)
        return fitted


def _too_large(message: str) -> Failed:
    return Failed(error=ErrorInfo(type="OutputTooLarge", message=message, retryable=False))


def _trim(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    note = f" ... [{len(data) - max_bytes} bytes trimmed]"
    return data[: max(0, max_bytes - len(note))].decode(errors="ignore") + note
