"""The records live in `taskwire.common`; the domain's modules import them from here."""

from taskwire.common import Attempt, Closing, ErrorInfo, Execution, Payload, Progress, Reason, RetryPolicy, TaskRun

__all__ = ["Attempt", "Closing", "ErrorInfo", "Execution", "Payload", "Progress", "Reason", "RetryPolicy", "TaskRun"]
