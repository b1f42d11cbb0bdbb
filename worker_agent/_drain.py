"""A draining worker's clock: when its running attempts are aborted, and when their reports are due.

A drain can only shorten the deadline in force. A server Drain's grace is when that server stops: the
attempts are then aborted early enough that their handlers can stop and their reports reach the server
before it does.
"""

from __future__ import annotations

from dataclasses import dataclass

#: At most this share of a server Drain's grace goes to stopping the handlers and sending their reports.
_DRAIN_REPORT_SHARE = 0.5


@dataclass(slots=True)
class DrainClock:
    stop_budget_s: float  # what stopping the handlers may take (their grace, the kill grace and a margin)
    deadline: float | None = None  # when the running attempts are aborted (loop time)
    reports_due: float | None = None  # when the server that asked for the drain stops (loop time)

    def tighten(self, now: float, grace_s: float, reports_due_s: float | None) -> float | None:
        """A drain asked at `now`: the grace now in force, or None when the deadline in force is earlier."""
        if reports_due_s is not None:
            due = now + reports_due_s
            if self.reports_due is None or due < self.reports_due:
                self.reports_due = due
            grace_s = min(grace_s, reports_due_s - min(reports_due_s * _DRAIN_REPORT_SHARE, self.stop_budget_s))
        deadline = now + grace_s
        if self.deadline is not None and deadline >= self.deadline:
            return None
        self.deadline = deadline
        return grace_s

    def stop_timeout_s(self, now: float) -> float | None:
        """How long stopping the handlers may take: whatever has not stopped by then is reported anyway,
        with time left to send it before the reports are due. None: no bound."""
        if self.reports_due is None:
            return None
        left_s = self.reports_due - now
        return min(self.stop_budget_s, max(0.0, left_s - min(0.5, left_s / 4)))
