"""Durations in a flow file: what YAML reads as a number but no duration is (`.nan`, `.inf`, more digits than a
float holds) is the file's own error, at its line and field, never a traceback."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.client._cli import ExitCode, main
from taskwire.client._flowfile import FlowFileError, load_flow

TASK = "tasks:\n  - handler: echo\n"
# Each duration field of a flow file, by its path in the errors: its line, and a file that sets it to VALUE.
FIELDS = {
    "timeout": (1, "timeout: VALUE\n" + TASK),
    "tasks[0].timeout": (3, TASK + "    timeout: VALUE\n"),
    "tasks[0].schedule_to_start_timeout": (3, TASK + "    schedule_to_start_timeout: VALUE\n"),
    "tasks[0].retry_policy.initial_interval": (4, TASK + "    retry_policy:\n      initial_interval: VALUE\n"),
    "tasks[0].retry_policy.maximum_interval": (4, TASK + "    retry_policy:\n      maximum_interval: VALUE\n"),
}


@pytest.mark.parametrize("path", FIELDS)
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (".nan", "must be a finite number of seconds; got nan"),
        (".NaN", "must be a finite number of seconds; got nan"),
        (".inf", "must be a finite number of seconds; got inf"),
        ("-.inf", "must be a finite number of seconds; got -inf"),
        ("-.nan", "expected seconds or a duration like 30s, 5m, 2h; got '-.nan'"),  # YAML reads a string
        ("9" * 400, "too long: a number of 400 digits"),
        ("9" * 400 + ".0", "must be a finite number of seconds; got inf"),
        ("99999999999999999999d", "too long: '99999999999999999999d'"),
        ("0", "must be positive"),
    ],
    ids=["nan", "NaN", "inf", "minus-inf", "minus-nan", "huge-integer", "huge-float", "past-any-date", "zero"],
)
def test_a_duration_that_is_none_is_the_files_error(path: str, value: str, problem: str) -> None:
    line, text = FIELDS[path]
    with pytest.raises(FlowFileError) as raised:
        load_flow(text.replace("VALUE", value), "flow.yaml")
    assert str(raised.value) == f"flow.yaml:{line}: {path}: {problem}"


def test_durations_that_are_read() -> None:
    spec = load_flow("timeout: 1.5\ntasks:\n  - handler: echo\n    timeout: 500ms\n", "flow.yaml")
    assert spec.timeout == timedelta(seconds=1.5)
    assert spec.tasks[0].timeout == timedelta(milliseconds=500)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.nan"])
def test_submit_of_such_a_file_exits_2_with_one_line(tmp_path: Path, value: str) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"tasks:\n  - handler: echo\n    timeout: {value}\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--server", "127.0.0.1:1", "submit", "-f", str(flow)], stdout=out, stderr=err)
    assert code == ExitCode.USAGE
    assert err.getvalue().startswith(f"taskwire: {flow}:3: tasks[0].timeout: "), err.getvalue()
    assert err.getvalue().count("\n") == 1
    assert out.getvalue() == ""
