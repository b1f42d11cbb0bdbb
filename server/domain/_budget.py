"""What an ended attempt costs: the handler's retry budget, the infrastructure's, or nothing.

- A refusal (`taskwire.common.Refusal`): the worker never started the attempt; the dispatch was the
  server's mistake, so it costs nothing.
- An infrastructure failure: the attempt was lost with its worker (LOST: the lease expired, the worker
  no longer ran it, or it never came back after a server restart) or abandoned by a worker shutting
  down (`WorkerShutdown`). Not the handler's fault: it costs one of `max_infrastructure_retries`.
- A remote rate limit: the handler said the remote side rate limited it (`ErrorInfo.retry_after`); it
  costs nothing, and the task run waits as long as it asked.
- Anything else is the handler's: it costs one of `max_attempts`.
"""

from __future__ import annotations

from ._models import Attempt
from ._states import AttemptOutcome, ReasonCode


def is_refusal(attempt: Attempt) -> bool:
    """The attempt never ran: its worker refused it (`taskwire.common.Refusal`)."""
    return attempt.outcome is AttemptOutcome.FAILED and attempt.error is not None and attempt.error.is_refusal


def infrastructure_failure(attempt: Attempt) -> ReasonCode | None:
    """The reason code of an attempt that ended for no fault of its handler, else None."""
    if attempt.outcome is AttemptOutcome.LOST:
        return ReasonCode.WORKER_LOST
    if attempt.outcome is AttemptOutcome.FAILED and attempt.error is not None and attempt.error.is_worker_shutdown:
        return ReasonCode.WORKER_SHUTDOWN
    return None


def attempts_used(attempts: tuple[Attempt, ...]) -> int:
    """How many attempts count against `max_attempts`: those whose handler had its say."""
    return sum(
        not is_refusal(attempt) and infrastructure_failure(attempt) is None and not _rate_limited(attempt)
        for attempt in attempts
    )


def _rate_limited(attempt: Attempt) -> bool:
    return attempt.outcome is AttemptOutcome.FAILED and attempt.error is not None and attempt.error.is_rate_limited


def infrastructure_failures(attempts: tuple[Attempt, ...]) -> int:
    """How many attempts count against `max_infrastructure_retries`."""
    return sum(infrastructure_failure(attempt) is not None for attempt in attempts)
