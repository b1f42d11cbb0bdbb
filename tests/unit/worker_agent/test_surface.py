"""The worker agent's public surface: the shared values and the one error root, without the executor's internals."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

import taskwire.common
import taskwire.worker
from taskwire.common import wire
from taskwire.worker import (
    Aborted,
    AbortReason,
    ErrorDetails,
    ErrorInfo,
    NonRetryableError,
    Payload,
    RateLimited,
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


def test_rate_limited_carries_its_wait_to_the_error_report() -> None:
    error = RateLimited("429", retry_after=2.5)
    assert error.retry_after == timedelta(seconds=2.5)
    info = ErrorInfo.from_exception(error)
    assert (info.type, info.message, info.retry_after) == ("RateLimited", "429", timedelta(seconds=2.5))
    assert info.is_rate_limited
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.retry_after) == (RateLimited, "429", timedelta(seconds=2.5))
    assert wire.error_from_proto(wire.error_to_proto(info)) == info  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be negative"):
        RateLimited(retry_after=-1)
    assert ErrorInfo.from_exception(ValueError("x")).retry_after is None
