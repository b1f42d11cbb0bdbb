"""The worker pool: sessions, connecting and reconnecting, leases, and what a worker may report.

Which session holds which attempt is `_holders`' to say; operators' drains are `_operator_drains`'. A session
silent for the lease timeout loses every attempt it holds: each is applied `LeaseExpired`, and the retry policy
decides what follows.

With authentication, the identity of a worker's credential is on its session
and on each attempt dispatched to it: a report on, or an adoption of, an
attempt of another identity is refused (`PermissionDenied`, audited).

May use: the clock, the timers, the live executions (to apply what workers
report), the attempt holders, the operators' drains, the audit log, and one hook: a session may have a free
slot now.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from taskwire.server._audit import audit_refused_attempt
from taskwire.server._config import ServerConfig
from taskwire.server.domain import (
    CancelOnWorker,
    InvalidTransition,
    LeaseExpired,
    PermissionDenied,
    Reason,
    ReasonCode,
    ShuttingDown,
    Superseded,
)

from ._clock import Clock
from ._holders import AttemptHolders
from ._ids import new_id
from ._live import Executions
from ._observer import Observer, Unobserved
from ._operator_drains import OperatorDrains
from ._sessions import (
    AttemptEnd,
    AttemptKey,
    AttemptLog,
    AttemptProgress,
    Draining,
    Heartbeat,
    HelloRead,
    Welcome,
    WorkerHello,
    WorkerLink,
    WorkerReport,
    WorkerSession,
    went_to,
)
from ._timers import Timers

log = logging.getLogger(__name__)


_CAME_BACK_WITHOUT = "reconnected without it: its report was lost with the stream or the server"
_NOT_RUN = "does not run it: its heartbeat left it out"
_NOT_HELD = Reason(ReasonCode.LEASE_EXPIRED, "the server does not hold this attempt for this worker")


def _slot_hook_unwired(session: WorkerSession) -> None:
    raise AssertionError("the engine wires this hook before use")


class WorkerPool:
    def __init__(
        self,
        *,
        clock: Clock,
        timers: Timers,
        config: ServerConfig,
        executions: Executions,
        observer: Observer | None = None,
    ) -> None:
        self._clock = clock
        self._observer: Observer = observer or Unobserved()
        self._timers = timers
        self._config = config
        self._lease_s = config.lease_timeout.total_seconds()
        self._executions = executions
        self.sessions: dict[str, WorkerSession] = {}
        self.drains = OperatorDrains(lease_s=self._lease_s, clock=clock, connected=self.connected)
        self._hellos = itertools.count(1)  # tickets of hellos read, in order
        self.holders = AttemptHolders()
        self.changed = asyncio.Event()  # set whenever a session connects or goes
        self.leaving = False  # the server is going away: no new sessions
        # Wired by the engine: a session may have a free slot now (it connected, or an attempt ended).
        self.slot_freed: Callable[[WorkerSession], None] = _slot_hook_unwired

    def serves(self, handler: str, *, besides: Callable[[WorkerSession], bool] | None = None) -> bool:
        """Whether a connected worker (other than those `besides` picks) takes new work for `handler` (a draining
        one takes none)."""
        return any(
            handler in session.handlers
            and session.connected
            and not session.draining
            and (besides is None or not besides(session))
            for session in self.sessions.values()
        )

    def _left(self, session: WorkerSession) -> None:
        """`session`'s worker went: dispatch looks again, so that what waited for another worker than the one
        that lost it (`Dispatcher._elsewhere`) goes to those left. The dispatcher keeps every session with a
        free slot in view; this one, with none now, it drops."""
        self.slot_freed(session)

    def connected(self) -> list[WorkerSession]:
        return [session for session in self.sessions.values() if session.connected]

    def _new_session(
        self, hello: WorkerHello, link: WorkerLink | None, session_id: str, identity: str = ""
    ) -> WorkerSession:
        now = self._clock.now()
        return WorkerSession(
            identity=identity,
            session_id=session_id,
            instance_id=hello.instance_id,
            name=hello.name,
            handlers=hello.handlers,
            slots=hello.slots,
            labels=hello.labels,
            agent_version=hello.agent_version,
            connected_at=now,
            last_seen_at=now,
            last_seen=self._clock.monotonic(),
            link=link,
            connected=link is not None,
        )

    # ---- Recovery -------------------------------------------------------------------------------

    def recovery_holder(self) -> WorkerSession:
        """A session without a stream that holds the attempts running before a restart until their
        workers reclaim them (or its lease, which starts now, runs out)."""
        hello = WorkerHello(name="(awaiting reconnect)", instance_id="", handlers=frozenset(), slots=0)
        return self._new_session(hello, None, f"recovered-{new_id()}")

    def keep_recovered(self, holder: WorkerSession) -> None:
        if holder.held:
            self.sessions[holder.session_id] = holder
            self._arm_lease(holder)

    # ---- Connecting -----------------------------------------------------------------------------

    def hello_read(self) -> HelloRead:
        """A ticket for a hello just read from its stream: hellos connect in the order their tickets say."""
        return HelloRead(next(self._hellos), self._clock.now())

    def connect(
        self, hello: WorkerHello, link: WorkerLink, *, identity: str = "", ticket: HelloRead | None = None
    ) -> tuple[WorkerSession, Welcome]:
        """Open a session for a worker whose credential names `identity`; adopt the running attempts it
        reports that are still current and its own. Refused (ShuttingDown) once the server is going away:
        the worker comes back to the next one. `ticket`: when the hello was read (`hello_read`; now, if None).
        A hello read before that of a session of its instance that is connected now is stale (it waited for a
        hand over while the worker gave its stream up and opened another): refused (Superseded), so that it
        does not end the newer session."""
        if self.leaving:
            raise ShuttingDown("the server is shutting down; reconnect to the next one")
        ticket = self.hello_read() if ticket is None else ticket
        for newer in self.connected():
            if (
                newer.hello.number > ticket.number
                and newer.is_instance(hello.instance_id, identity)
                and hello.instance_id
            ):
                raise Superseded(
                    f"worker instance {hello.instance_id}: a newer stream of it is connected (session "
                    f"{newer.session_id}); this one was given up"
                )
        session = self._new_session(hello, link, new_id(), identity)
        session.hello = ticket
        adopted, rejected = [], []
        for key in hello.running_attempts:
            if self._may_adopt(key, hello, identity):
                previous = self.holders.hold(key, session)
                if previous is not None:
                    self.slot_freed(previous)
                adopted.append(key)
            else:
                rejected.append(key)
        session.stray = set(rejected)  # still running there until the worker stops them
        self.sessions[session.session_id] = session
        self._arm_lease(session)
        self.changed.set()
        self.replaced(session.instance_id, session.identity, by=session)
        self.drains.tell_again(session)
        self.slot_freed(session)
        self._left_behind(hello)
        log.info(
            "worker %s connected (session %s, %d slots, handlers %s, %d adopted, %d rejected)",
            session.name,
            session.session_id,
            session.slots,
            ",".join(sorted(session.handlers)),
            len(adopted),
            len(rejected),
        )
        welcome = Welcome(
            session_id=session.session_id,
            heartbeat_interval=self._config.heartbeat_interval,
            lease_timeout=self._config.lease_timeout,
            adopted=tuple(adopted),
            rejected=tuple(rejected),
            max_payload_bytes=self._config.limits.max_payload_bytes,
            max_message_bytes=self._config.max_message_bytes,
        )
        return session, welcome

    def _left_behind(self, hello: WorkerHello) -> None:
        """A hello lists everything its worker runs or has a report queued for: an attempt that worker's
        earlier stream left behind (held by its session that ended, or since a restart by its instance) and
        that the hello leaves out is gone (its report went down a broken stream, or its invocation never
        arrived). It is lost at once, retried per its policy, rather than a lease later. A session whose
        stream has not ended yet is left alone: frames of it may still be on their way."""
        listed = set(hello.running_attempts)
        for earlier in list(self.sessions.values()):
            if earlier.connected or not earlier.held:
                continue
            gone = [key for key in sorted(earlier.held) if key not in listed and self._held_for(key, earlier, hello)]
            for key in gone:
                log.warning("worker %s came back without attempt %s#%d: it is lost", hello.name, *key)
                self.holders.release(key)
                self._executions.report(key[0], LeaseExpired(key[1], why=_CAME_BACK_WITHOUT))
            if not earlier.held and earlier.instance_id:
                self.sessions.pop(earlier.session_id, None)

    def replaced(
        self, instance_id: str, identity: str, *, by: WorkerSession | None = None, before: datetime | None = None
    ) -> None:
        """A worker instance has one stream at a time: its hello on a new one (`by`, here, or on another replica,
        read at `before`) means the stream of its earlier session is dead, though it may look open here (half-open:
        the worker noticed first). That session ends now, so that no work goes down a stream no one reads; what it
        still holds waits for its lease, as after a disconnect (or is handed over). Only a session of the same
        credential's (`identity`): a worker cannot end another's by naming its instance; and only one that connected
        before that hello was read."""
        if not instance_id:
            return
        for earlier in list(self.sessions.values()):
            if before is not None and earlier.hello.at > before:
                continue
            if earlier is not by and earlier.connected and earlier.is_instance(instance_id, identity):
                log.info("worker %s came back on a new stream: its session %s ends", earlier.name, earlier.session_id)
                self.disconnect(earlier)

    def _held_for(self, key: AttemptKey, holder: WorkerSession, hello: WorkerHello) -> bool:
        """Whether `holder` holds the attempt for the worker of `hello`: it is that worker's session (the same
        instance), or, held since a restart or an adoption, the attempt went to that instance (to that name, if
        it was stored before attempts kept their instance)."""
        if holder.instance_id:
            return holder.instance_id == hello.instance_id
        attempt = self._executions.current_attempt(key[0])
        return attempt is not None and attempt.number == key[1] and went_to(attempt, hello.instance_id, hello.name)

    def _may_adopt(self, key: AttemptKey, hello: WorkerHello, identity: str) -> bool:
        """A reconnecting worker gets back an attempt only if it is current and was that worker's.

        The attempt number alone is not enough: after a crash before a dispatch was stored, the same
        number can go to another worker, and the first one must not take it over on its return. Nor are
        the worker's name and instance id, which the worker chooses: the attempt's identity must be the
        credential's (`owner_of`).
        """
        attempt = self._executions.current_attempt(key[0])
        if attempt is None or attempt.number != key[1]:
            return False
        if not self._identity_may_report(key, identity):
            audit_refused_attempt(identity, hello.name, key, "adopt")
            return False
        holder = self.holders.holder(key)
        return holder is None or self._held_for(key, holder, hello)

    def disconnect(self, session: WorkerSession, *, closed_by_worker: bool = False) -> None:
        """The stream ended (`closed_by_worker`: the worker half-closed it, as a drained one does when it has
        finished). Held attempts keep their lease until it times out or the worker returns."""
        if closed_by_worker and session.draining:
            self.drains.finished(session)
        if not session.connected:  # told already (its stream's end is told again by its servicer)
            if not session.held:
                self.sessions.pop(session.session_id, None)
            return
        session.disconnect()
        if not session.held:
            self.sessions.pop(session.session_id, None)
        self.changed.set()
        self._left(session)
        log.info(
            "worker %s disconnected (session %s, %d attempts held)", session.name, session.session_id, len(session.held)
        )

    def going_away(self, reconnect_within: timedelta, reason: str) -> None:
        """The server is stopping: refuse new sessions, and tell every connected worker to hang up and
        come back to the next server. The sessions keep their attempts (and their slots) meanwhile."""
        self.leaving = True
        for session in self.connected():
            if session.link is not None:
                session.link.going_away(reconnect_within, reason)

    def close(self) -> None:
        for session in list(self.sessions.values()):
            session.disconnect()

    def cancel_on_worker(self, effect: CancelOnWorker) -> None:
        """Send a cancel down the stream of the session that holds the attempt, if it is connected."""
        key = (effect.task_run_id, effect.attempt)
        session = self.holders.holder(key)
        if session is not None and session.connected and session.link is not None:
            session.link.cancel(effect.task_run_id, effect.attempt, effect.reason)
            live = self._executions.by_task_run.get(effect.task_run_id)
            if live is not None and key not in self.holders.cancels_sent:
                handler = live.task_runs[effect.task_run_id].handler
                self.holders.cancels_sent[key] = (handler, self._clock.monotonic())

    # ---- Reports --------------------------------------------------------------------------------

    def on_frame(self, session: WorkerSession, reports: Iterable[WorkerReport]) -> None:
        """One frame from a worker, decoded: it is alive, and each report is judged on its own."""
        session.seen(self._clock.monotonic(), self._clock.now())
        for report in reports:
            try:
                self._on_report(session, report)
            except InvalidTransition as error:
                # A report the state machine refuses (not a stale one: those are no-ops). Keep serving.
                log.warning("ignored %s from worker %s: %s", type(report).__name__, session.name, error)

    def _identity_may_report(self, key: AttemptKey, identity: str) -> bool:
        """Whether a worker whose credential names `identity` may speak for the attempt: the attempt's
        recorded identity is its own, or empty (dispatched without authentication), or the attempt is not
        the current one (a stale report: the state machine fences it, and it changes nothing). Without an
        identity (a server without authentication, where everything is allowed) it may."""
        if not identity:
            return True
        attempt = self._executions.current_attempt(key[0])
        if attempt is None or attempt.number != key[1]:
            return True
        return attempt.worker_identity in ("", identity)

    def _check_identity(self, session: WorkerSession, report: WorkerReport) -> None:
        """A report on an attempt held for another identity ends the stream (PermissionDenied) unapplied."""
        if not session.identity:
            return  # the hot path without authentication
        if isinstance(report, AttemptEnd):
            key = (report.task_run_id, report.event.attempt)
        elif isinstance(report, AttemptProgress | AttemptLog):
            key = (report.task_run_id, report.attempt)
        else:
            return
        if not self._identity_may_report(key, session.identity):
            audit_refused_attempt(session.identity, session.name, key, "report")
            raise PermissionDenied(
                f"attempt {key[0]}#{key[1]} is not held for identity {session.identity!r}: "
                "a worker reports only on attempts dispatched to its own identity"
            )

    def _on_report(self, session: WorkerSession, report: WorkerReport) -> None:
        self._check_identity(session, report)
        if isinstance(report, AttemptEnd):
            key = (report.task_run_id, report.event.attempt)
            if not self.holders.speaks_for(session, key):
                return
            sent = self.holders.cancels_sent.get(key)
            if sent is not None:
                self._observer.cancel_confirmed(sent[0], self._clock.monotonic() - sent[1])
            holder = self.holders.release(key)
            if holder is not None:
                self.slot_freed(holder)
            self._executions.report(report.task_run_id, report.event)
        elif isinstance(report, AttemptProgress):
            if self.holders.speaks_for(session, (report.task_run_id, report.attempt)):
                self._executions.progress(report)
        elif isinstance(report, AttemptLog):
            if self.holders.speaks_for(session, (report.task_run_id, report.attempt)):
                self._executions.log_line(report)
        elif isinstance(report, Draining):
            session.draining = True
        elif isinstance(report, Heartbeat):
            self._reconcile(session, report.running, report.received)

    def _reconcile(self, session: WorkerSession, running: tuple[AttemptKey, ...], received: int | None) -> None:
        """Compare what the worker says it runs with what its session holds. An attempt held that the
        worker does not run is lost at once (retried per its policy, as after a lease expiry); one it runs
        that the session does not hold is stopped there (LEASE_LOST: it reports nothing), and takes one
        of its slots until the worker stops listing it."""
        lost = self.holders.unlisted(session, running, received)
        for key in lost:
            log.warning("worker %s does not run attempt %s#%d that it holds: it is lost", session.name, *key)
            self.holders.release(key)
            self._executions.report(key[0], LeaseExpired(key[1], why=_NOT_RUN))
        stray = {key for key in running if self.holders.holder(key) is not session}
        if session.link is not None and session.connected:
            for key in sorted(stray - session.stray):
                log.warning("worker %s runs attempt %s#%d that it does not hold: stopped", session.name, *key)
                session.link.cancel(*key, _NOT_HELD)
        freed = len(session.stray) > len(stray)
        session.stray = stray
        if freed or lost:
            self.slot_freed(session)

    # ---- Leases ---------------------------------------------------------------------------------

    def renew_leases(self, late_s: float) -> None:
        """The server stood still for `late_s` seconds: whatever its workers sent meanwhile is still
        unread, so no lease is judged on that span. Every session's lease starts again now; one whose
        worker stays silent from here on still loses it a lease later."""
        now = self._clock.monotonic()
        for session in self.sessions.values():
            session.renew_lease(now)
        log.warning("renewed the leases of %d sessions after a %.1fs pause", len(self.sessions), late_s)

    def _arm_lease(self, session: WorkerSession) -> None:
        at = session.last_seen + self._lease_s
        self._timers.arm(("lease", session.session_id), at, lambda: self._check_lease(session))

    def _check_lease(self, session: WorkerSession) -> None:
        if self.sessions.get(session.session_id) is not session:
            return
        if self._clock.monotonic() - session.last_seen < self._lease_s:
            self._arm_lease(session)  # heard from since: look again when the renewed lease ends
            return
        self._lose(session, "lost its lease")

    def backlogged(self, session: WorkerSession, backlogged: bool) -> None:
        """The session's stream is backed up (its worker does not read): it gets no work until it drains,
        and loses its attempts if it stays backed up for a lease."""
        key = ("backlog", session.session_id)
        if not backlogged:
            session.backlogged_since = None
            self._timers.disarm(key)
            self.slot_freed(session)
            return
        session.backlogged_since = self._clock.monotonic()
        log.warning("worker %s does not read its stream: no new work until it does", session.name)

        def check() -> None:
            if self.sessions.get(session.session_id) is session and session.backlogged_since is not None:
                self._lose(session, "did not read its stream for a lease")

        self._timers.arm_in(key, self._lease_s, check)

    def _lose(self, session: WorkerSession, why: str) -> None:
        """Drop the session; each attempt it held is lost (retried per its policy)."""
        log.warning("worker %s %s (%d attempts held)", session.name, why, len(session.held))
        self._timers.disarm(("backlog", session.session_id))
        session.disconnect()
        del self.sessions[session.session_id]
        self.changed.set()
        self._left(session)
        for task_run_id, attempt in self.holders.release_all(session):
            self._executions.report(task_run_id, LeaseExpired(attempt))
