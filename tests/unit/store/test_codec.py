"""Every record survives the trip to rows and back exactly, in pure code and through SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.server.domain import Execution, TaskRun
from taskwire.server.store import EventRecord, ExecutionSnapshot, NewExecution, WriteBatch
from taskwire.server.store import _json as json_codec
from taskwire.server.store import _sqlite_codec as codec
from taskwire.server.store import _sqlite_queries as queries
from taskwire.server.store._sqlite_schema import migrate
from taskwire.server.store._sqlite_writer import _Writer
from tests.unit.store import records

_T = TypeVar("_T")

# No deadline: the time of an example depends on the machine's load, not on the code. Whole
# records are costly to generate, so they get fewer (still varied) examples.
simple = settings(deadline=None)
records_settings = settings(deadline=None, max_examples=60)


def through_json(to_json: Callable[[_T], dict[str, Any]], from_json: Callable[[dict[str, Any]], _T], value: _T) -> _T:
    return from_json(json.loads(json_codec.dumps(to_json(value))))


# --------------------------------------------------------------------------- scalars


@simple
@given(st.datetimes(timezones=st.just(UTC)))
def test_datetimes_round_trip_over_the_whole_range(moment: datetime) -> None:
    back = json_codec.datetime_from_db(json_codec.datetime_to_db(moment))
    assert back == moment
    assert back.tzinfo is UTC


_fixed_offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))


@simple
@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 1, 1), timezones=_fixed_offsets.map(timezone))
)
def test_an_aware_datetime_in_any_zone_comes_back_as_the_same_instant_in_utc(moment: datetime) -> None:
    back = json_codec.datetime_from_db(json_codec.datetime_to_db(moment))
    assert back == moment
    assert back.utcoffset() == timedelta(0)


def test_microseconds_are_kept_and_the_epoch_is_zero() -> None:
    assert json_codec.datetime_to_db(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert (
        json_codec.datetime_to_db(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=timezone(timedelta(hours=1))))
        == -3_598_999_995
    )


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        json_codec.datetime_to_db(datetime(2026, 1, 1))


@simple
@given(records.storable_timedeltas)
def test_timedeltas_round_trip(duration: timedelta) -> None:
    assert json_codec.timedelta_from_db(json_codec.timedelta_to_db(duration)) == duration


def test_a_duration_too_long_for_64_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        json_codec.timedelta_to_db(timedelta(days=500_000_000))


# --------------------------------------------------------------------------- parts


@simple
@given(records.reasons())
def test_reason_round_trips(value: Any) -> None:
    assert through_json(json_codec.reason_to_json, json_codec.reason_from_json, value) == value


@simple
@given(records.payloads)
def test_payload_round_trips(value: Any) -> None:
    assert through_json(json_codec.payload_to_json, json_codec.payload_from_json, value) == value


@simple
@given(records.error_infos)
def test_error_info_round_trips(value: Any) -> None:
    assert through_json(json_codec.error_info_to_json, json_codec.error_info_from_json, value) == value


@simple
@given(records.progresses)
def test_progress_round_trips(value: Any) -> None:
    assert through_json(json_codec.progress_to_json, json_codec.progress_from_json, value) == value


@simple
@given(records.closings())
def test_closing_round_trips(value: Any) -> None:
    assert through_json(json_codec.closing_to_json, json_codec.closing_from_json, value) == value


@simple
@given(records.retry_policies)
def test_retry_policy_round_trips(value: Any) -> None:
    back = through_json(json_codec.retry_policy_to_json, json_codec.retry_policy_from_json, value)
    assert back == value
    assert type(back.non_retryable_error_types) is tuple


@records_settings
@given(st.booleans().flatmap(lambda running: records.attempts(running=running)))
def test_attempt_round_trips(value: Any) -> None:
    assert through_json(json_codec.attempt_to_json, json_codec.attempt_from_json, value) == value


# --------------------------------------------------------------------------- rows


@records_settings
@given(records.executions())
def test_execution_row_round_trips(execution: Execution) -> None:
    assert codec.execution_from_row(codec.execution_to_row(execution)) == execution


@records_settings
@given(records.task_runs())
def test_task_run_row_round_trips(task_run: TaskRun) -> None:
    back = codec.task_run_from_row(codec.task_run_to_row(task_run))
    assert back == task_run
    assert type(back.depends_on) is tuple
    assert type(back.attempts) is tuple


@simple
@given(records.events)
def test_event_row_round_trips(event: EventRecord) -> None:
    assert codec.event_from_row(codec.event_to_row(event)) == event


# --------------------------------------------------------------------------- through SQLite


@contextmanager
def schema_in_memory() -> Iterator[sqlite3.Connection]:
    """The store's schema in a throwaway database, with the store's own write and read code."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        migrate(conn)
        yield conn
    finally:
        conn.close()


def apply(conn: sqlite3.Connection, batch: WriteBatch) -> None:
    _Writer(conn)._apply([codec.Rows.of(batch)])


@records_settings
@given(st.data())
def test_records_come_back_exactly_from_sqlite_after_insert_and_update(data: st.DataObject) -> None:
    execution = data.draw(records.executions(), label="execution")
    ids = data.draw(st.lists(records.record_ids, max_size=3, unique=True), label="task run ids")
    inserted = [data.draw(records.task_runs(execution.id, task_run_id)) for task_run_id in ids]
    stored_events = data.draw(
        st.lists(records.events.map(lambda e: replace(e, execution_id=execution.id)), max_size=3, unique_by=seq),
        label="events",
    )
    with schema_in_memory() as conn:
        apply(conn, WriteBatch(new_executions=[NewExecution(execution, inserted, "fp")], events=stored_events))
        assert queries.read_execution(conn, execution.id) == ExecutionSnapshot(execution, tuple(inserted))
        assert queries.read_events(conn, execution.id, -1, 10) == sorted(stored_events, key=seq)

        updated_execution = data.draw(records.executions(execution.id), label="updated execution")
        # An update rewrites every field but the input, which a task run never changes (see task_run_inputs).
        updated = [
            replace(data.draw(records.task_runs(execution.id, task_run.id)), input=task_run.input)
            for task_run in inserted
        ]
        apply(conn, WriteBatch(executions=[updated_execution], task_runs=updated))
        assert queries.read_execution(conn, execution.id) == ExecutionSnapshot(updated_execution, tuple(updated))


def seq(event: EventRecord) -> int:
    return event.sequence
