"""Who holds which attempt: `AttemptHolders` is the one place that says which session holds an attempt.

A dispatch, a recovered attempt waiting for its worker, an adoption on reconnect, an attempt's end and a lost
lease all change holding through it. A session holds an attempt from its dispatch until its worker reports the
end; the holder alone may report on the attempt (fencing by holder), the state machine fences the rest (stale
attempt numbers). It also counts the heartbeats that leave a held attempt out (`unlisted`), and the cancels
sent for held attempts.

May use: the sessions.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable

from ._sessions import AttemptKey, WorkerSession

log = logging.getLogger(__name__)


class AttemptHolders:
    """Which session holds which attempt; each session's `held` mirrors its share."""

    def __init__(self) -> None:
        self._holder: dict[AttemptKey, WorkerSession] = {}
        self._by_task_run: dict[str, set[AttemptKey]] = {}  # the held attempts of each task run
        self._order: dict[AttemptKey, int] = {}  # when each attempt came to be held, in holding order
        self._unlisted: dict[AttemptKey, int] = {}  # heartbeats in a row whose list left the attempt out
        # The session's dispatch number of each attempt it was sent (0: adopted, the worker has it).
        self._dispatch: dict[AttemptKey, int] = {}
        # When the server sent a cancel for each held attempt (monotonic seconds), and its handler.
        self.cancels_sent: dict[AttemptKey, tuple[str, float]] = {}
        self._holds = itertools.count()
        # Wired by the engine: nobody holds the attempt any more (its end reported, or lost with its session).
        self.forgotten: Callable[[AttemptKey], None] = lambda key: None

    def __len__(self) -> int:
        return len(self._holder)

    def holder(self, key: AttemptKey) -> WorkerSession | None:
        return self._holder.get(key)

    def hold(self, key: AttemptKey, session: WorkerSession, *, dispatch: int = 0) -> WorkerSession | None:
        """`session` holds the attempt now (sent as its `dispatch`-th invocation, or adopted: 0); returns
        the session that held it before, if another one."""
        previous = self._holder.get(key)
        if previous is not None:
            previous.held.discard(key)
        session.held.add(key)
        self._holder[key] = session
        self._by_task_run.setdefault(key[0], set()).add(key)
        self._order[key] = next(self._holds)
        self._dispatch[key] = dispatch
        self._unlisted.pop(key, None)
        return previous if previous is not session else None

    def _forget(self, key: AttemptKey) -> None:
        self.cancels_sent.pop(key, None)
        self.forgotten(key)
        self._order.pop(key, None)
        self._dispatch.pop(key, None)
        self._unlisted.pop(key, None)
        keys = self._by_task_run.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_task_run[key[0]]

    def runs_on(self, session: WorkerSession, task_run_id: str) -> bool:
        """The session's worker still runs an attempt of the task run: one it holds (an earlier attempt
        whose end it has not reported, e.g. fenced by a server-side timeout), or one it reported running
        that nobody holds. A new attempt of that task run must go elsewhere, or wait."""
        if task_run_id in session.stray_task_runs:
            return True
        return any(self._holder.get(key) is session for key in self._by_task_run.get(task_run_id, ()))

    def release(self, key: AttemptKey) -> WorkerSession | None:
        """The attempt ended on its worker: nobody holds it. Returns the session that did."""
        session = self._holder.pop(key, None)
        if session is not None:
            session.held.discard(key)
            self._forget(key)
        return session

    def release_all(self, session: WorkerSession) -> list[AttemptKey]:
        """Everything `session` holds, which it holds no longer (its lease expired), in a stable order."""
        keys = sorted(session.held)
        for key in keys:
            if self._holder.get(key) is session:
                del self._holder[key]
                self._forget(key)
        session.held.clear()
        return keys

    def unlisted(
        self, session: WorkerSession, running: Iterable[AttemptKey], received: int | None = None
    ) -> list[AttemptKey]:
        """A heartbeat lists what its worker runs: the attempts `session` holds that its worker does not
        run (and has not reported). When the heartbeat says which dispatches the worker had received, one
        of those left out is gone, and a later one is still on its way (a heartbeat written before an
        invocation arrived, or read late after the server stood still, says nothing of it). When it does
        not say: one left out of two heartbeats in a row is gone; so is one left out of a heartbeat that
        lists an attempt held after it (the stream is ordered: the worker had it)."""
        listed = set(running)
        if received is not None:
            return [key for key in sorted(session.held) if key not in listed and self._dispatch.get(key, 0) <= received]
        newest_listed = max((self._order[k] for k in listed if self._holder.get(k) is session), default=-1)
        gone: list[AttemptKey] = []
        for key in sorted(session.held):
            if key in listed:
                self._unlisted.pop(key, None)
                continue
            misses = self._unlisted.get(key, 0) + 1
            if misses >= 2 or self._order[key] < newest_listed:
                gone.append(key)
            else:
                self._unlisted[key] = misses
        return gone

    def speaks_for(self, session: WorkerSession, key: AttemptKey) -> bool:
        """Only the session that holds an attempt reports on it; another one's report is ignored."""
        holder = self._holder.get(key)
        if holder is None or holder is session:
            return True  # no holder: the attempt is over, and the state machine fences the report
        log.warning("ignored a report for attempt %s#%d from %s: %s holds it", *key, session.name, holder.name)
        return False
