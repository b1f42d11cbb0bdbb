"""How an attempt ended: what a handler produced, and what the worker reports for it."""

from __future__ import annotations

from dataclasses import dataclass

from taskwire.common import ErrorInfo, Payload

from ._abort import AbortReason
from ._payload import decode_input

# The error of a failed attempt is the shared `ErrorInfo` (type, message, retryable, traceback), as the server
# records it; `ErrorInfo.from_exception` makes one from what a handler raised.


# What a handler produced, before the worker knows whether anyone asked it to stop.


@dataclass(frozen=True, slots=True)
class Returned:
    """The handler returned; its value already encoded."""

    output: Payload


@dataclass(frozen=True, slots=True)
class Raised:
    """The handler raised (or could not be run at all)."""

    error: ErrorInfo


HandlerResult = Returned | Raised


# The outcome the worker reports.


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """The handler returned ``output`` (reported as AttemptCompleted)."""

    output: Payload

    @property
    def value(self) -> object:
        """The output decoded like an input: JSON value, or bytes for other media types."""
        return decode_input(self.output)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The handler raised, its deadline passed (``timed_out``), or the worker shut down under it."""

    error: ErrorInfo
    timed_out: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """The handler stopped after a cancellation (reported as CancelAcknowledged).

    With reason LEASE_LOST nothing is reported: the server no longer considers the attempt current.
    """

    reason: AbortReason
    message: str = ""


Outcome = Completed | Failed | Cancelled
