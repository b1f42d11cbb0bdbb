"""The worker agent's branch of the one error tree: every error it raises derives from WorkerAgentError,
and WorkerAgentError from `taskwire.common.TaskwireError`."""

from __future__ import annotations

from datetime import timedelta

from taskwire.common import TaskwireError


class WorkerAgentError(TaskwireError):
    """Base of every error raised by the worker agent."""


class NonRetryableError(WorkerAgentError):
    """Raise this (or a subclass) from a handler when retrying cannot help.

    The worker reports the failure with ``retryable = false``. Any exception class with a class or
    instance attribute ``retryable = False`` has the same effect; this one merely spells it out.
    """

    retryable = False


class RateLimited(WorkerAgentError):
    """Raise this from a handler when the remote side it calls rate limited it: ``raise
    RateLimited(retry_after=30)`` (seconds, or a timedelta).

    The server makes the task wait that long, ``WAITING(RETRY_BACKOFF)``, and tries again without spending
    an attempt of ``max_attempts`` (a handler rate limited forever is ended by its execution timeout).
    """

    def __init__(self, message: str = "rate limited by the remote side", *, retry_after: float | timedelta) -> None:
        super().__init__(message)
        after = retry_after if isinstance(retry_after, timedelta) else timedelta(seconds=float(retry_after))
        if not after >= timedelta(0):
            raise ValueError(f"retry_after must not be negative, got {retry_after!r}")
        # What `ErrorInfo.from_exception` reads.
        self.taskwire_retry_after = after

    @property
    def retry_after(self) -> timedelta:
        return self.taskwire_retry_after

    def __reduce__(self) -> tuple[object, ...]:
        # Handlers run in a child process under process isolation: the exception crosses back pickled.
        return (_rate_limited, (str(self), self.taskwire_retry_after))


def _rate_limited(message: str, retry_after: timedelta) -> RateLimited:
    return RateLimited(message, retry_after=retry_after)


class HandlerRegistrationError(WorkerAgentError):
    """A handler could not be registered (bad signature, or its name is already taken)."""


class HandlerLoadError(WorkerAgentError):
    """A handler module could not be imported, or it registers no handler."""


class InputDecodingError(WorkerAgentError):
    """The invocation's input is not valid for its content type; retrying the same input cannot help."""

    retryable = False


class OutputEncodingError(WorkerAgentError):
    """The handler returned a value that cannot be encoded as JSON; retrying will not change it."""

    retryable = False


class ConnectionLostError(WorkerAgentError):
    """The worker gave up reconnecting to the server (``max_reconnect_attempts`` exhausted)."""


class WorkerRefused(ConnectionLostError):
    """The server refused this worker's hello as invalid (INVALID_ARGUMENT: too many slots, a bad handler
    name or label): the same hello would be refused again, so the worker stops rather than retry."""
