"""The checker: after a scenario, compare what clients saw, what the store holds and what handlers ran.

In the spirit of Jepsen's queue checker. Three independent records are compared:

- what clients saw (`Submission`): each submit's outcome — acknowledged (with its execution id), refused
  (a definite error: it must not exist), or unknown (the call failed in a way that says nothing, such as
  the connection dropping while the server died);
- what the store holds at the end (`StoredExecution`), read back through the public API;
- what the handlers themselves ran (`HandlerRun`), from a journal they append to on every start and end.

It reports:

- **lost**: acknowledged, but not in the store;
- **unexpected**: in the store or the journal without a submit that may have made it, or SUCCESS without
  a handler run that completed;
- **duplicated**: a handler ran a task run more often than at-least-once allows after the faults that
  were injected (an allowed re-run is listed apart, with the reason it was allowed);
- **stuck**: not terminal at the end (the caller checks only after the system went quiet);
- **leaked**: worker slots still in use while nothing runs.

Pure: no I/O, no clock. Scenarios collect the inputs and call `check`.
"""

from __future__ import annotations

import enum
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TERMINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED"})


class Fault(enum.StrEnum):
    """A fault a scenario injected: each widens what at-least-once may legitimately repeat."""

    SERVER_CRASH = "server_crash"  # kill -9 of the server (or its writer process)
    WORKER_CRASH = "worker_crash"  # kill -9 of a worker
    WORKER_PAUSE = "worker_pause"  # SIGSTOP past the lease, then SIGCONT
    PARTITION = "partition"  # a stream that stops carrying frames without closing
    SERVER_PAUSE = "server_pause"  # the server stopped past the lease
    STORE_ERROR = "store_error"  # the store refused writes (full disk, I/O error)
    HANDLER_CRASH = "handler_crash"  # kill -9 of a handler's own process (process isolation)


class Outcome(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Submission:
    """One submit as the client saw it. `op` is unique per submit and is carried in the execution's metadata."""

    op: str
    outcome: Outcome
    execution_id: str = ""


@dataclass(frozen=True, slots=True)
class StoredTaskRun:
    task_run_id: str
    state: str
    # Attempt numbers with their outcomes, as the store recorded them.
    attempts: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredExecution:
    execution_id: str
    op: str
    state: str
    task_runs: tuple[StoredTaskRun, ...] = ()


@dataclass(frozen=True, slots=True)
class HandlerRun:
    """One run of a handler, from its journal: `ended` is None when the process died while it ran."""

    execution_id: str
    task_run_id: str
    attempt: int
    worker: str
    started: float  # wall-clock seconds, comparable across processes on one machine
    ended: float | None = None
    result: str = ""  # "ok", "error", "aborted"; "" while unfinished
    dispatch: str = ""  # the dispatch's identity (session/number): an attempt number may be sent twice, this not

    def overlaps(self, other: HandlerRun) -> bool:
        end = self.ended if self.ended is not None else float("inf")
        other_end = other.ended if other.ended is not None else float("inf")
        return self.started < other_end and other.started < end


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"


@dataclass(slots=True)
class Report:
    lost: list[Finding] = field(default_factory=list)
    duplicated: list[Finding] = field(default_factory=list)
    unexpected: list[Finding] = field(default_factory=list)
    stuck: list[Finding] = field(default_factory=list)
    leaked: list[Finding] = field(default_factory=list)
    # Re-runs that at-least-once allows after the injected faults, each with its reason.
    allowed: list[Finding] = field(default_factory=list)
    # What was checked, for the summary line.
    acknowledged: int = 0
    stored: int = 0
    runs: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
            "stuck": len(self.stuck),
            "leaked": len(self.leaked),
        }

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def __str__(self) -> str:
        head = (
            f"checked {self.acknowledged} acknowledged, {self.stored} stored, {self.runs} handler runs: "
            + ", ".join(f"{name} {count}" for name, count in self.counts.items())
            + f" (allowed re-runs {len(self.allowed)})"
        )
        problems = [*self.lost, *self.duplicated, *self.unexpected, *self.stuck, *self.leaked]
        return "\n".join([head, *(f"  {finding}" for finding in problems[:50])])


def check(
    *,
    submissions: Iterable[Submission],
    stored: Iterable[StoredExecution],
    runs: Iterable[HandlerRun],
    faults: Iterable[Fault] = (),
    slots_in_use: Mapping[str, int] | None = None,
) -> Report:
    """Compare the three records; `slots_in_use` is each worker's in-flight count at the end."""
    faults = frozenset(faults)
    submissions = list(submissions)
    stored_by_id = {execution.execution_id: execution for execution in stored}
    runs = list(runs)
    report = Report(
        acknowledged=sum(s.outcome is Outcome.ACKNOWLEDGED for s in submissions),
        stored=len(stored_by_id),
        runs=len(runs),
    )
    _check_submissions(report, submissions, stored_by_id)
    stuck_ids = {e.execution_id for e in stored_by_id.values() if e.state not in TERMINAL}
    report.stuck.extend(
        Finding("stuck", execution_id, f"execution is {stored_by_id[execution_id].state}")
        for execution_id in sorted(stuck_ids)
    )
    acknowledged = frozenset(s.execution_id for s in submissions if s.outcome is Outcome.ACKNOWLEDGED)
    _check_runs(report, stored_by_id, runs, faults, acknowledged)
    if slots_in_use is not None and not stuck_ids:
        report.leaked.extend(
            Finding("leaked", worker, f"{count} slot(s) in use with nothing running")
            for worker, count in sorted(slots_in_use.items())
            if count
        )
    return report


def _check_submissions(report: Report, submissions: list[Submission], stored: Mapping[str, StoredExecution]) -> None:
    by_op = {submission.op: submission for submission in submissions}
    for submission in submissions:
        if submission.outcome is Outcome.ACKNOWLEDGED and submission.execution_id not in stored:
            report.lost.append(Finding("lost", submission.op, f"acknowledged as {submission.execution_id}, not stored"))
    per_op: dict[str, list[str]] = defaultdict(list)
    for execution in stored.values():
        made_by = by_op.get(execution.op)
        if made_by is None:
            report.unexpected.append(Finding("unexpected", execution.execution_id, "stored, but never submitted"))
        elif made_by.outcome is Outcome.REFUSED:
            report.unexpected.append(
                Finding("unexpected", execution.execution_id, f"stored, but its submit {execution.op} was refused")
            )
        else:
            per_op[execution.op].append(execution.execution_id)
    for op, execution_ids in per_op.items():
        if len(execution_ids) > 1:
            report.duplicated.append(
                Finding("duplicated", op, f"one submit stored {len(execution_ids)} times: {', '.join(execution_ids)}")
            )


def _check_runs(
    report: Report,
    stored: Mapping[str, StoredExecution],
    runs: list[HandlerRun],
    faults: frozenset[Fault],
    acknowledged: frozenset[str],
) -> None:
    task_runs = {tr.task_run_id: (e, tr) for e in stored.values() for tr in e.task_runs}
    by_task_run: dict[str, list[HandlerRun]] = defaultdict(list)
    crashes = faults & {Fault.SERVER_CRASH, Fault.STORE_ERROR}
    for run in runs:
        if run.task_run_id not in task_runs:
            # Dispatch does not wait for the submit's commit: a crash can take back a submit that was never
            # acknowledged after its handler started. Allowed then; anything else is a phantom.
            finding = Finding("phantom", run.task_run_id, f"attempt {run.attempt} ran, but no stored execution has it")
            if crashes and run.execution_id not in acknowledged:
                report.allowed.append(
                    Finding(
                        finding.kind,
                        finding.subject,
                        f"{finding.detail} (allowed: its submit was never acknowledged and a crash took it back)",
                    )
                )
            else:
                report.unexpected.append(Finding("unexpected", finding.subject, finding.detail))
            continue
        by_task_run[run.task_run_id].append(run)
    lost_contact = faults & {Fault.WORKER_CRASH, Fault.WORKER_PAUSE, Fault.PARTITION, Fault.SERVER_PAUSE}
    for task_run_id, (_execution, task_run) in task_runs.items():
        mine = sorted(by_task_run.get(task_run_id, ()), key=lambda run: run.started)
        recorded = dict(task_run.attempts)
        if task_run.state == "SUCCESS" and not any(run.result == "ok" for run in mine):
            report.unexpected.append(Finding("unexpected", task_run_id, "SUCCESS, but no handler run completed"))
        seen: dict[int, HandlerRun] = {}
        for run in mine:
            if run.attempt in seen:
                earlier = seen[run.attempt]
                finding = Finding(
                    "re-dispatch" if run.dispatch != earlier.dispatch else "duplicated",
                    task_run_id,
                    f"attempt {run.attempt} ran twice (workers {earlier.worker}, {run.worker}; "
                    f"dispatches {earlier.dispatch or '?'}, {run.dispatch or '?'})",
                )
                _allow_if(
                    report,
                    finding,
                    bool(crashes)
                    and bool(run.dispatch)
                    and bool(earlier.dispatch)
                    and run.dispatch != earlier.dispatch,
                    "two dispatches of one attempt number: a server died before the first was durable",
                )
                continue
            seen[run.attempt] = run
            if run.attempt not in recorded:
                finding = Finding("re-run", task_run_id, f"attempt {run.attempt} ran but is not recorded")
                _allow_if(report, finding, bool(crashes), "dispatched by a server that crashed before it was durable")
        for first, second in itertools.combinations(mine, 2):
            if second.attempt != first.attempt and first.overlaps(second):
                finding = Finding(
                    "concurrent", task_run_id, f"attempts {first.attempt} and {second.attempt} ran at the same time"
                )
                given_up = first.ended is None or first.result == "aborted" or recorded.get(first.attempt) == "LOST"
                out_of_contact = bool(lost_contact | crashes) and given_up
                # A killed handler process leaves no end in the journal; its worker saw it die (the process
                # was reaped) before it reported the attempt FAILED, and only then was the next dispatched.
                killed = (
                    Fault.HANDLER_CRASH in faults and first.ended is None and recorded.get(first.attempt) == "FAILED"
                )
                _allow_if(
                    report,
                    finding,
                    out_of_contact or killed,
                    "the first attempt's worker was out of contact and the server gave it up (LOST), or its run "
                    "was aborted or never ended"
                    if out_of_contact
                    else "the first attempt's process was killed, and its worker reported the attempt failed",
                )
        completed = [run for run in mine if run.result == "ok"]
        if len(completed) > 1:
            finding = Finding("re-run", task_run_id, f"completed {len(completed)} times")
            _allow_if(report, finding, bool(lost_contact | crashes), "a completion was not durable before a fault")


def _allow_if(report: Report, finding: Finding, allowed: bool, reason: str) -> None:
    if allowed:
        report.allowed.append(Finding(finding.kind, finding.subject, f"{finding.detail} (allowed: {reason})"))
    else:
        report.duplicated.append(Finding("duplicated", finding.subject, finding.detail))
