"""The worker agent's branch of the one error tree: every error it raises derives from WorkerAgentError,
and WorkerAgentError from `taskwire.common.TaskwireError`."""

from __future__ import annotations

from taskwire.common import TaskwireError


class WorkerAgentError(TaskwireError):
    """Base of every error raised by the worker agent."""


class NonRetryableError(WorkerAgentError):
    """Raise this (or a subclass) from a handler when retrying cannot help.

    The worker reports the failure with ``retryable = false``. Any exception class with a class or
    instance attribute ``retryable = False`` has the same effect; this one merely spells it out.
    """

    retryable = False


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
