"""`taskwire submit -f FILE`: an execution of several tasks from a YAML or JSON file; a mistake in the file
is reported at its line and field, and nothing is submitted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.client.conftest import Cli

CHAIN = """\
name: numbers
metadata: {team: data}
tasks:
  - task_id: fetch
    handler: echo
    input: {items: [1, 2, 3]}
  - task_id: pick
    handler: echo
    depends_on: [fetch]
    input: {got: {$from: fetch, path: items.1}}
    retry_policy: {max_attempts: 2, initial_interval: 500ms}
  - task_id: last
    handler: echo
    depends_on: [pick]
    input: {$from: pick}
    timeout: 30s
"""


def test_a_three_task_file_runs_as_one_execution(cli: Cli, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(CHAIN)
    result = cli("submit", "-f", str(flow), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["name"] == "numbers"
    assert view["metadata"] == {"team": "data"}
    tasks = {task["task_id"]: task for task in view["task_runs"]}
    assert tasks["pick"]["depends_on"] == ["fetch"]
    assert tasks["pick"]["retry_policy"]["max_attempts"] == 2
    assert tasks["last"]["timeout_s"] == 30.0
    assert tasks["pick"]["attempts"][0]["output"] == {"got": 2}
    assert tasks["last"]["attempts"][0]["output"] == {"got": 2}

    # `get` and `watch` draw the tasks as a tree of dependencies, with their states.
    shown = cli("get", view["id"]).stdout
    assert "numbers\n└── fetch SUCCESS\n    └── pick SUCCESS\n        └── last SUCCESS" in shown, shown
    watched = cli("watch", view["id"]).stdout
    assert "└── last SUCCESS" in watched, watched


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("max_attempts: 2", "max_attempts: 500"), "flow.yaml:11: tasks[1].retry_policy.max_attempts: must be between"),
        (("    timeout: 30s", "    timeout: soon"), "flow.yaml:16: tasks[2].timeout: expected seconds or a duration"),
        (("    depends_on: [pick]\n", "    retries: 3\n"), "flow.yaml:14: tasks[2].retries: unknown field"),
        (("    depends_on: [fetch]\n", ""), "flow.yaml:9: tasks[1].input.got: refers to the output of task 'fetch'"),
        (("  - task_id: last", "  - task_id: pick"), "flow.yaml:12: tasks[2].task_id: duplicate task id 'pick'"),
        (("input: {items: [1, 2, 3]}", "input: {items: [1, 2"), "flow.yaml:7: not valid YAML or JSON"),
        (("input: {items: [1, 2, 3]}", "input: {items: !!set {1}}"), "flow.yaml:6: tasks[0].input.items: not a plain"),
        (("input: {items: [1, 2, 3]}", "input: &a {items: *a}"), "flow.yaml:6: tasks[0].input.items: an alias to a"),
        (("input: {items: [1, 2, 3]}", "input: !!python/object:os.system x"), "tasks[0].input: not a plain YAML value"),
        (("    timeout: 30s", "    timeout: 99999999999999999999d"), "flow.yaml:16: tasks[2].timeout: too long"),
    ],
    ids=[
        "out-of-range",
        "bad-duration",
        "unknown-field",
        "reference-to-non-dependency",
        "duplicate-id",
        "syntax",
        "a-set",
        "a-value-holding-itself",
        "a-python-tag",
        "a-duration-past-any-date",
    ],
)
def test_a_mistake_is_reported_at_its_line_and_nothing_is_submitted(
    cli: Cli, tmp_path: Path, change: tuple[str, str], error: str
) -> None:
    old, new = change
    assert old in CHAIN
    flow = tmp_path / "flow.yaml"
    flow.write_text(CHAIN.replace(old, new))
    before = cli("list", "--json").stdout
    result = cli("submit", "-f", str(flow))
    assert result.returncode == 2, result
    assert error in result.stderr.replace(str(tmp_path) + "/", ""), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli("list", "--json").stdout == before  # nothing stored


def test_a_handler_and_a_file_together_are_refused(cli: Cli, tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps({"tasks": [{"handler": "echo"}]}))
    both = cli("submit", "echo", "-f", str(flow))
    assert both.returncode == 2
    assert "HANDLER or -f FILE" in both.stderr
    options = cli("submit", "-f", str(flow), "--timeout", "5")
    assert options.returncode == 2
    assert "--timeout: set these in the flow file's tasks" in options.stderr
    ok = cli("submit", "-f", "-", "--wait", stdin=flow.read_text())
    assert ok.returncode == 0, ok.stderr
