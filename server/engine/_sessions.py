"""What a worker's stream is to the engine: its session, the link the engine sends on, what it reports.

The engine speaks domain values only. A stream's wire side
(`taskwire.server._worker_wire`) decodes each frame once into the reports
below and hands them to `Engine.on_worker_frame`; in the other direction the
engine calls the session's `WorkerLink` with domain values (the task run to
invoke, the attempt to cancel) and the link encodes and queues the message.
A link rather than a command object per message: the hot path (one invocation
per dispatch) builds its protobuf message directly, with nothing in between,
and a test's fake link is a plain object that records the calls.

A session holds an attempt from dispatch until its worker reports how the
attempt ended. Holding counts against the worker's slots and is what its lease
covers; `_holders.AttemptHolders` alone changes it.

May use: the domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from taskwire.server.domain import (
    Attempt,
    CancelAcknowledged,
    Payload,
    Reason,
    TaskFailed,
    TaskRun,
    TaskSucceeded,
    TaskTimedOut,
)

AttemptKey = tuple[str, int]  # (task run id, attempt number)


class WorkerLink(Protocol):
    """The way down one worker's stream. Sends queue and return at once; nothing is sent after close()."""

    def invoke(
        self,
        task_run: TaskRun,
        attempt: Attempt,
        dispatch: int,
        *,
        queued_at: datetime,
        trace_context: Mapping[str, str],
        upstream: Mapping[str, Payload],
    ) -> None:
        """Run `attempt` (just dispatched, so the task run's current one) of the task run; `dispatch` is
        this session's count of invocations, which the worker echoes in its heartbeats. `queued_at`: when
        the task run was queued for it; `trace_context`: the execution's (W3C traceparent, tracestate);
        `upstream`: the outputs of the tasks it depends on, by task id."""

    def cancel(self, task_run_id: str, attempt: int, reason: Reason) -> None:
        """Stop the attempt's handler; the worker answers with a cancel acknowledgement."""

    def drain(self, grace: timedelta | None, reason: str) -> None:
        """Finish what runs within `grace` (None: the worker's own drain timeout), take nothing new,
        then disconnect."""

    def going_away(self, reconnect_within: timedelta, reason: str) -> None:
        """The server is stopping: keep running what you hold, hang up, and reconnect to the next one
        (waiting at most `reconnect_within` between tries)."""

    def close(self) -> None:
        """The session is over: stop sending and end the stream."""


@dataclass(frozen=True, slots=True)
class WorkerHello:
    """A validated hello: who the worker is and what it can run."""

    name: str
    instance_id: str
    handlers: frozenset[str]
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    agent_version: str = ""
    running_attempts: tuple[AttemptKey, ...] = ()


@dataclass(frozen=True, slots=True)
class Welcome:
    """The engine's answer to a hello: the session, its timing, and which running attempts it may keep."""

    session_id: str
    heartbeat_interval: timedelta
    lease_timeout: timedelta
    adopted: tuple[AttemptKey, ...]
    rejected: tuple[AttemptKey, ...]
    # What the worker may send: the largest output payload, and the largest frame (0: not announced).
    max_payload_bytes: int = 0
    max_message_bytes: int = 0


@dataclass(frozen=True, slots=True)
class HelloRead:
    """When a worker's hello was read from its stream: its place among the worker pool's hellos, and the wall time."""

    number: int
    at: datetime


NOT_READ: Final = HelloRead(0, datetime.min.replace(tzinfo=UTC))  # a session with no hello (recovered attempts)


@dataclass(eq=False, kw_only=True)
class WorkerSession:
    session_id: str
    instance_id: str
    name: str
    handlers: frozenset[str]
    slots: int
    labels: dict[str, str]
    agent_version: str
    connected_at: datetime
    last_seen_at: datetime
    last_seen: float  # monotonic seconds
    link: WorkerLink | None  # None for the session that holds recovered attempts until their workers return
    # Who the worker's credential says it is ("" without authentication); recorded on every attempt it holds.
    identity: str = ""
    held: set[AttemptKey] = field(default_factory=set)  # written by AttemptHolders only
    # Attempts the worker says it runs that this session does not hold (rejected on reconnect, or held
    # by nobody now): they take its slots until it stops listing them. Written by the worker pool.
    stray: set[AttemptKey] = field(default_factory=set)
    draining: bool = False  # asked to drain, or the worker said it drains
    connected: bool = True
    dispatches: int = 0  # invocations sent on this session's stream: the last dispatch number
    hello: HelloRead = NOT_READ  # when its hello was read (`WorkerPool.hello_read`)
    # Since when (monotonic seconds) its stream's unsent messages are over their bound: no new work meanwhile.
    backlogged_since: float | None = None

    @property
    def free_slots(self) -> int:
        if not self.connected or self.draining or self.backlogged_since is not None:
            return 0
        return max(self.slots - len(self.held) - len(self.stray), 0)

    def is_instance(self, instance_id: str, identity: str) -> bool:
        """Whether this is a session of that worker instance under that credential."""
        return self.instance_id == instance_id and self.identity == identity

    @property
    def stray_task_runs(self) -> set[str]:
        return {task_run_id for task_run_id, _ in self.stray}

    def seen(self, monotonic_s: float, at: datetime) -> None:
        self.last_seen = monotonic_s
        self.last_seen_at = at

    def renew_lease(self, monotonic_s: float) -> None:
        """The lease counts from `monotonic_s` (the server stood still; the worker may well have spoken)."""
        self.last_seen = max(self.last_seen, monotonic_s)

    def disconnect(self) -> None:
        """The stream is gone (or must go): stop sending; the held attempts wait for their lease."""
        if self.connected and self.link is not None:
            self.link.close()
        self.connected = False


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A connected worker as an operator sees it: a session of this server, or one that another replica published
    (`replica`: where its stream is connected; '' on a single server)."""

    session_id: str
    instance_id: str
    name: str
    handlers: tuple[str, ...]
    slots: int
    in_flight: int
    labels: Mapping[str, str]
    agent_version: str
    connected_at: datetime
    last_seen_at: datetime
    draining: bool
    replica: str = ""
    identity: str = ""  # who its credential says it is (not shown: what a drain of it elsewhere is told by)

    @classmethod
    def of(cls, session: WorkerSession, replica: str = "") -> WorkerView:
        return cls(
            session_id=session.session_id,
            instance_id=session.instance_id,
            name=session.name,
            handlers=tuple(sorted(session.handlers)),
            slots=session.slots,
            in_flight=len(session.held),
            labels=dict(session.labels),
            agent_version=session.agent_version,
            connected_at=session.connected_at,
            last_seen_at=session.last_seen_at,
            draining=session.draining,
            replica=replica,
            identity=session.identity,
        )


def is_named(worker: WorkerSession | WorkerView, name: str, session_id: str) -> bool:
    """Whether an operator's name and session id (either may be empty: any) pick the worker."""
    return (not name or worker.name == name) and (not session_id or worker.session_id == session_id)


def went_to(attempt: Attempt, instance_id: str, name: str) -> bool:
    """Whether the attempt went to that worker: its instance (names may be shared), or its name for an attempt
    stored before attempts kept their worker's instance."""
    return attempt.worker_instance == instance_id if attempt.worker_instance else attempt.worker_id == name


# ---- What a worker reports (one value per message of a frame) --------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """The attempt is over on the worker: completed, failed, timed out there, or cancelled as asked."""

    task_run_id: str
    event: TaskSucceeded | TaskFailed | TaskTimedOut | CancelAcknowledged


@dataclass(frozen=True, slots=True)
class AttemptProgress:
    task_run_id: str
    attempt: int
    fraction: float
    message: str
    # Structured details as the worker sent them: the engine passes them to the history unread.
    details: object | None = None


@dataclass(frozen=True, slots=True)
class AttemptLog:
    task_run_id: str
    attempt: int
    level: int  # the wire's log level number, passed to the history unread
    text: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The worker is alive; it runs these attempts."""

    running: tuple[AttemptKey, ...] = ()
    # The highest dispatch number the worker had received when it wrote this; None when it does not say.
    received: int | None = None


@dataclass(frozen=True, slots=True)
class Draining:
    """The worker takes no new work (it is shutting down)."""

    reason: str = ""


WorkerReport = AttemptEnd | AttemptProgress | AttemptLog | Heartbeat | Draining
