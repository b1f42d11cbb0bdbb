"""The worker agent's public surface: the shared values and the one error root, without the executor's internals."""

from __future__ import annotations

import pickle

import pytest

import taskwire.common
import taskwire.worker
from taskwire.worker import (
    Aborted,
    AbortReason,
    ErrorDetails,
    ErrorInfo,
    NonRetryableError,
    Payload,
    TaskwireError,
    WorkerAgentError,
)


def test_payload_and_error_info_are_the_shared_classes() -> None:
    assert Payload is taskwire.common.Payload
    assert ErrorInfo is taskwire.common.ErrorInfo
    assert ErrorDetails is ErrorInfo


def test_every_worker_error_has_the_one_root() -> None:
    assert TaskwireError is taskwire.common.TaskwireError
    errors = [getattr(taskwire.worker, name) for name in taskwire.worker.__all__]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, BaseException)]
    assert WorkerAgentError in errors
    assert all(issubclass(error, TaskwireError) for error in errors)
    assert isinstance(Aborted(AbortReason.CANCELLED, "stop"), TaskwireError)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (NonRetryableError(), ""),
        (NonRetryableError("bad input"), "bad input"),
        (NonRetryableError("bad input", 42), "('bad input', 42)"),
    ],
)
def test_handler_errors_behave_like_exceptions(error: NonRetryableError, text: str) -> None:
    assert str(error) == text
    assert error.retryable is False
    assert ErrorInfo.from_exception(error).retryable is False
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.args) == (NonRetryableError, error.args)


@pytest.mark.parametrize("name", ["Executor", "AttemptKey", "AttemptSink", "AttemptSpec", "SubmitResult"])
def test_the_executor_internals_are_not_exported(name: str) -> None:
    assert name not in taskwire.worker.__all__
    assert not hasattr(taskwire.worker, name)
