"""The checker finds each kind of anomaly, allows only what the injected faults explain, and passes clean runs."""

from __future__ import annotations

from tests.faults.checker import (
    Fault,
    HandlerRun,
    Outcome,
    StoredExecution,
    StoredTaskRun,
    Submission,
    check,
)


def _stored(
    execution_id: str, op: str, state: str = "SUCCESS", attempts: tuple[tuple[int, str], ...] = ((1, "SUCCEEDED"),)
) -> StoredExecution:
    return StoredExecution(
        execution_id=execution_id,
        op=op,
        state=state,
        task_runs=(StoredTaskRun(task_run_id=f"{execution_id}-t", state=state, attempts=attempts),),
    )


def _run(
    execution_id: str,
    attempt: int = 1,
    *,
    started: float = 0.0,
    ended: float | None = 1.0,
    result: str = "ok",
    worker: str = "w1",
) -> HandlerRun:
    return HandlerRun(
        execution_id=execution_id,
        task_run_id=f"{execution_id}-t",
        attempt=attempt,
        worker=worker,
        started=started,
        ended=ended,
        result=result if ended is not None else "",
    )


def test_a_clean_run_reports_zeros() -> None:
    report = check(
        submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1"), Submission("op2", Outcome.UNKNOWN)],
        stored=[_stored("e1", "op1")],
        runs=[_run("e1")],
        slots_in_use={"w1": 0},
    )
    assert report.ok, str(report)
    assert report.counts == {"lost": 0, "duplicated": 0, "unexpected": 0, "stuck": 0, "leaked": 0}


def test_an_acknowledged_submit_missing_from_the_store_is_lost() -> None:
    report = check(submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1")], stored=[], runs=[])
    assert report.counts["lost"] == 1
    assert "e1" in str(report)


def test_an_unknown_outcome_may_exist_or_not() -> None:
    for stored in ([], [_stored("e9", "op1")]):
        runs = [_run("e9")] if stored else []
        assert check(submissions=[Submission("op1", Outcome.UNKNOWN)], stored=stored, runs=runs).ok


def test_a_refused_submit_that_was_stored_is_unexpected() -> None:
    report = check(submissions=[Submission("op1", Outcome.REFUSED)], stored=[_stored("e1", "op1")], runs=[_run("e1")])
    assert report.counts["unexpected"] == 1


def test_an_execution_nobody_submitted_is_unexpected() -> None:
    report = check(submissions=[], stored=[_stored("e1", "op-x")], runs=[_run("e1")])
    assert report.counts["unexpected"] == 1


def test_success_without_a_completed_run_is_unexpected() -> None:
    report = check(submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1")], stored=[_stored("e1", "op1")], runs=[])
    assert report.counts["unexpected"] == 1


def test_a_second_execution_for_one_acknowledged_submit_is_duplicated() -> None:
    report = check(
        submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1")],
        stored=[_stored("e1", "op1"), _stored("e2", "op1")],
        runs=[_run("e1"), _run("e2")],
    )
    assert report.counts["duplicated"] == 1


def test_the_same_attempt_run_twice_is_duplicated_whatever_the_faults() -> None:
    report = check(
        submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1")],
        stored=[_stored("e1", "op1")],
        runs=[_run("e1", started=0, ended=1, result="error"), _run("e1", started=2, ended=3, worker="w2")],
        faults=set(Fault),
    )
    assert report.counts["duplicated"] == 1


def test_a_completed_rerun_is_allowed_only_after_a_fault() -> None:
    stored = [_stored("e1", "op1", attempts=((1, "LOST"), (2, "SUCCEEDED")))]
    runs = [_run("e1", 1, started=0, ended=1), _run("e1", 2, started=5, ended=6, worker="w2")]
    submissions = [Submission("op1", Outcome.ACKNOWLEDGED, "e1")]
    without = check(submissions=submissions, stored=stored, runs=runs)
    assert without.counts["duplicated"] == 1
    after_crash = check(submissions=submissions, stored=stored, runs=runs, faults={Fault.WORKER_CRASH})
    assert after_crash.ok, str(after_crash)
    assert len(after_crash.allowed) == 1
    assert "allowed" in after_crash.allowed[0].detail


def test_two_attempts_at_once_are_duplicated_unless_the_first_lost_contact() -> None:
    stored = [_stored("e1", "op1", attempts=((1, "TIMED_OUT"), (2, "SUCCEEDED")))]
    overlapping = [_run("e1", 1, started=0, ended=5, result="error"), _run("e1", 2, started=1, ended=2)]
    submissions = [Submission("op1", Outcome.ACKNOWLEDGED, "e1")]
    assert check(submissions=submissions, stored=stored, runs=overlapping).counts["duplicated"] == 1
    killed_first = [_run("e1", 1, started=0, ended=None), _run("e1", 2, started=1, ended=2)]
    assert check(submissions=submissions, stored=stored, runs=killed_first, faults={Fault.WORKER_CRASH}).ok


def test_an_unrecorded_attempt_is_allowed_only_after_a_server_crash() -> None:
    stored = [_stored("e1", "op1", attempts=((2, "SUCCEEDED"),))]
    runs = [_run("e1", 1, started=0, ended=None), _run("e1", 2, started=3, ended=4)]
    submissions = [Submission("op1", Outcome.ACKNOWLEDGED, "e1")]
    assert check(submissions=submissions, stored=stored, runs=runs).counts["duplicated"] >= 1
    assert check(submissions=submissions, stored=stored, runs=runs, faults={Fault.SERVER_CRASH}).ok


def test_a_non_terminal_execution_is_stuck_and_hides_no_leak() -> None:
    report = check(
        submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1")],
        stored=[_stored("e1", "op1", state="RUNNING", attempts=((1, "RUNNING"),))],
        runs=[_run("e1", ended=None)],
        slots_in_use={"w1": 1},
    )
    assert report.counts["stuck"] == 1
    assert report.counts["leaked"] == 0  # a slot held by a running task is no leak


def test_slots_in_use_when_everything_ended_are_leaked() -> None:
    report = check(
        submissions=[Submission("op1", Outcome.ACKNOWLEDGED, "e1")],
        stored=[_stored("e1", "op1")],
        runs=[_run("e1")],
        slots_in_use={"w1": 2, "w2": 0},
    )
    assert report.counts["leaked"] == 1
    assert "w1" in str(report)


def test_a_run_of_an_unknown_task_run_is_unexpected() -> None:
    report = check(submissions=[], stored=[], runs=[_run("ghost")])
    assert report.counts["unexpected"] == 1


def test_a_run_of_a_never_acknowledged_submit_that_a_crash_took_back_is_allowed() -> None:
    submissions = [Submission("op1", Outcome.UNKNOWN)]
    assert check(submissions=submissions, stored=[], runs=[_run("e1")]).counts["unexpected"] == 1
    after_crash = check(submissions=submissions, stored=[], runs=[_run("e1")], faults={Fault.SERVER_CRASH})
    assert after_crash.ok, str(after_crash)
    assert "never acknowledged" in after_crash.allowed[0].detail


def test_a_frozen_workers_run_overlapping_the_retry_is_allowed_when_the_server_gave_it_up() -> None:
    submissions = [Submission("op1", Outcome.ACKNOWLEDGED, "e1")]
    runs = [_run("e1", 1, started=0, ended=9, result="ok"), _run("e1", 2, started=4, ended=5, worker="w2")]
    lost = [_stored("e1", "op1", attempts=((1, "LOST"), (2, "SUCCEEDED")))]
    timed_out = [_stored("e1", "op1", attempts=((1, "TIMED_OUT"), (2, "SUCCEEDED")))]
    assert check(submissions=submissions, stored=lost, runs=runs, faults={Fault.WORKER_PAUSE}).ok
    assert check(submissions=submissions, stored=lost, runs=runs).counts["duplicated"] >= 1
    assert (
        check(submissions=submissions, stored=timed_out, runs=runs, faults={Fault.WORKER_PAUSE}).counts["duplicated"]
        == 1
    )


def test_a_killed_handler_process_overlapping_the_retry_is_allowed_only_when_its_attempt_failed() -> None:
    submissions = [Submission("op1", Outcome.ACKNOWLEDGED, "e1")]
    killed_first = [_run("e1", 1, started=0, ended=None), _run("e1", 2, started=1, ended=2)]
    failed = [_stored("e1", "op1", attempts=((1, "FAILED"), (2, "SUCCEEDED")))]
    assert check(submissions=submissions, stored=failed, runs=killed_first, faults={Fault.HANDLER_CRASH}).ok
    assert check(submissions=submissions, stored=failed, runs=killed_first).counts["duplicated"] == 1
    # A run that did end overlapping the next, or an attempt the worker never reported failed, is not explained.
    ended_late = [_run("e1", 1, started=0, ended=5, result="error"), _run("e1", 2, started=1, ended=2)]
    lost = [_stored("e1", "op1", attempts=((1, "LOST"), (2, "SUCCEEDED")))]
    for runs, stored in ((ended_late, failed), (killed_first, lost)):
        report = check(submissions=submissions, stored=stored, runs=runs, faults={Fault.HANDLER_CRASH})
        assert report.counts["duplicated"] == 1


def test_two_dispatches_of_one_attempt_number_are_allowed_only_after_a_server_crash() -> None:
    submissions = [Submission("op1", Outcome.ACKNOWLEDGED, "e1")]
    stored = [_stored("e1", "op1")]
    first = HandlerRun("e1", "e1-t", 1, "w1", started=0, ended=1, result="aborted", dispatch="s1/1")
    again = HandlerRun("e1", "e1-t", 1, "w1", started=2, ended=3, result="ok", dispatch="s2/1")
    assert check(submissions=submissions, stored=stored, runs=[first, again]).counts["duplicated"] == 1
    after_crash = check(submissions=submissions, stored=stored, runs=[first, again], faults={Fault.SERVER_CRASH})
    assert after_crash.ok, str(after_crash)
    same = HandlerRun("e1", "e1-t", 1, "w2", started=2, ended=3, result="ok", dispatch="s1/1")
    assert (
        check(submissions=submissions, stored=stored, runs=[first, same], faults=set(Fault)).counts["duplicated"] == 1
    )
