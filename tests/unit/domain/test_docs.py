"""The docs cannot go stale: their tables and example are generated from the code and compared here.

To regenerate after a change: `.venv/bin/python -m tests.unit.domain.test_docs`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskwire.server.domain import (
    EXECUTION_TRANSITIONS,
    TASK_RUN_TRANSITIONS,
    AttemptOutcome,
    ErrorInfo,
    ExecutionSpec,
    Payload,
    ReasonCode,
    RetryDue,
    RetryPolicy,
    State,
    TaskFailed,
    TaskProgressed,
    TaskSpec,
    TaskSucceeded,
    execution_view,
)
from tests.unit.domain.factories import STATE_ORDER, Sim, at

ROOT = Path(__file__).resolve().parents[3]
STATES_MD = ROOT / "docs" / "states.md"
JSON_VIEW_MD = ROOT / "docs" / "json-view.md"
README_MD = ROOT / "README.md"
REGENERATE = "run `.venv/bin/python -m tests.unit.domain.test_docs` and review the diff"


def render_transitions(table: Mapping[tuple[State, type], Any]) -> str:
    """One line per allowed (state, event) row, grouped by state, in the table's own order within a state."""
    rows = sorted(table.items(), key=lambda item: STATE_ORDER.index(item[0][0]))
    lines = ["| From | Event | To |", "|---|---|---|"]
    for (state, event_type), row in rows:
        targets = ", ".join(target.value for target in STATE_ORDER if target in row.targets)
        lines.append(f"| {state.value} | `{event_type.__name__}` | {targets} |")
    return "\n".join(lines)


def example_view() -> dict[str, Any]:
    """A two-task execution whose first task succeeded on its second attempt."""
    sim = Sim.start(
        ExecutionSpec(
            name="nightly-report",
            metadata={"team": "data"},
            timeout=timedelta(hours=1),
            idempotency_key="nightly-2030-01-01",
            tasks=(
                TaskSpec(
                    "etl.extract",
                    task_id="extract",
                    input=Payload(b'{"day": "2030-01-01"}'),
                    timeout=timedelta(minutes=5),
                    retry_policy=RetryPolicy(max_attempts=3, non_retryable_error_types=("ValueError",)),
                ),
                TaskSpec(
                    "etl.report",
                    task_id="report",
                    depends_on=("extract",),
                    input=Payload(b"%PDF-template", content_type="application/pdf"),
                ),
            ),
        ),
        execution_id="ex_7Hq2",
        task_run_prefix="tr_7Hq2_",
    )
    sim.now = at(2)
    sim.dispatch("extract", "worker-a")
    sim.now = at(4.5)
    sim.task("extract", TaskFailed(attempt=1, error=ErrorInfo("ConnectionError", "connection reset by peer")))
    sim.now = at(5.5)
    sim.task("extract", RetryDue())
    sim.now = at(6)
    sim.dispatch("extract", "worker-b")
    sim.now = at(9)
    sim.task("extract", TaskProgressed(attempt=2, fraction=1.0, message="1200 rows"))
    sim.task("extract", TaskSucceeded(attempt=2, output=Payload(b'{"rows": 1200}')))
    sim.now = at(10)
    sim.dispatch("report", "worker-a")
    sim.now = at(12.25)
    sim.task("report", TaskSucceeded(attempt=1, output=Payload(b'{"url": "s3://reports/2030-01-01.pdf"}')))
    assert sim.execution.state is State.SUCCESS
    return execution_view(sim.execution, list(sim.task_runs.values()))


def render_example() -> str:
    return "```json\n" + json.dumps(example_view(), indent=2) + "\n```"


GENERATED: dict[Path, dict[str, Callable[[], str]]] = {
    STATES_MD: {
        "task-run-transitions": lambda: render_transitions(TASK_RUN_TRANSITIONS),
        "execution-transitions": lambda: render_transitions(EXECUTION_TRANSITIONS),
    },
    JSON_VIEW_MD: {"example": render_example},
}


def _block(name: str) -> re.Pattern[str]:
    """The text between the markers of a generated block (empty until first generated)."""
    name = re.escape(name)
    return re.compile(rf"(<!-- BEGIN GENERATED {name} -->\n)(.*?)\n?(<!-- END GENERATED {name} -->)", re.S)


def generated_block(text: str, name: str) -> str:
    match = _block(name).search(text)
    assert match is not None, f"no generated block {name!r}"
    return match.group(2)


def regenerate() -> None:
    for path, blocks in GENERATED.items():
        text = path.read_text()
        for name, render in blocks.items():
            rendered = render()
            text = _block(name).sub(lambda m, r=rendered: m.group(1) + r + "\n" + m.group(3), text)  # type: ignore[misc]
        path.write_text(text)


BLOCKS = [(path, name) for path, blocks in GENERATED.items() for name in blocks]


@pytest.mark.parametrize(("path", "name"), BLOCKS, ids=[name for _, name in BLOCKS])
def test_generated_blocks_are_fresh(path: Path, name: str) -> None:
    assert generated_block(path.read_text(), name) == GENERATED[path][name](), f"{path.name} is stale: {REGENERATE}"


def test_the_transition_tables_list_every_row() -> None:
    text = STATES_MD.read_text()
    for name, table in (
        ("task-run-transitions", TASK_RUN_TRANSITIONS),
        ("execution-transitions", EXECUTION_TRANSITIONS),
    ):
        block = generated_block(text, name)
        for state, event_type in table:
            assert f"| {state.value} | `{event_type.__name__}` |" in block


@pytest.mark.parametrize("name", [*State.__members__, *ReasonCode.__members__, *AttemptOutcome.__members__])
def test_states_md_explains_every_name(name: str) -> None:
    assert f"`{name}`" in STATES_MD.read_text()


@pytest.mark.parametrize("name", [*State.__members__, *ReasonCode.__members__])
def test_the_readme_section_lists_every_state_and_reason(name: str) -> None:
    assert f"`{name}`" in README_MD.read_text()


def _keys(value: Any, path: str = "$") -> dict[str, set[str]]:
    """Every object's key set by JSON path, lists collapsed to [*]."""
    found: dict[str, set[str]] = {}
    if isinstance(value, dict):
        found[path] = set(value)
        for key, item in value.items():
            if key not in ("metadata", "input", "output"):  # user data, not schema
                found.update(_keys(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for item in value:
            found.update(_keys(item, f"{path}[*]"))
    return found


def test_json_view_md_documents_every_field() -> None:
    text = JSON_VIEW_MD.read_text()
    for path, keys in _keys(example_view()).items():
        for key in keys:
            assert f"`{key}`" in text, f"json-view.md does not document {path}.{key}"


if __name__ == "__main__":
    regenerate()
