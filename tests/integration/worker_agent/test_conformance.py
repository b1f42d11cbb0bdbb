"""The conformance kit: the Python agent passes every check, and a worker that breaks the protocol fails
the check that covers it, with what was expected and what the worker did.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from taskwire.conformance import CHECKS
from tests.harness import BIN

AGENT = f"{BIN / 'taskwire-worker'} --server {{address}} --slots {{slots}} --handlers taskwire.conformance.handlers"


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "taskwire-conformance"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_the_python_agent_passes_every_check() -> None:
    result = conformance("--worker-cmd", AGENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CHECKS)} of {len(CHECKS)} checks passed" in result.stdout
    for check in CHECKS:
        assert f"pass {check.name}" in result.stdout


def test_a_worker_that_breaks_the_protocol_fails_with_what_was_expected() -> None:
    wrong_slots = AGENT.replace("--slots {slots}", "--slots 5")
    result = conformance("--only", "hello", "--worker-cmd", wrong_slots)
    assert result.returncode == 1, result.stdout
    assert "FAIL hello" in result.stdout
    assert "expected slots = 2, as the command gave; got 5" in " ".join(result.stdout.split())


def test_a_worker_that_never_connects_fails_and_a_bad_name_is_refused() -> None:
    result = conformance("--only", "result", "--connect-timeout", "2", "--worker-cmd", "sleep 60")
    assert result.returncode == 1
    assert "the worker to open a stream" in " ".join(result.stdout.split())
    assert "none in 2s" in " ".join(result.stdout.split())
    unknown = conformance("--only", "nothing-like-this", "--worker-cmd", AGENT)
    assert unknown.returncode == 2
    assert "no check named nothing-like-this" in unknown.stderr


def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_a_usage_error() -> None:
    cases = (
        ("--connect-timeout", "0", "must be more than zero seconds, got 0"),
        ("--timeout", "-1", "must be more than zero seconds, got -1"),
        ("--timeout", "soon", "expected a number of seconds, got 'soon'"),
    )
    for option, value, message in cases:
        result = conformance(option, value, "--worker-cmd", AGENT)
        assert result.returncode == 2, result.stdout
        assert f"argument {option}: {message}" in result.stderr


def test_the_page_lists_every_check() -> None:
    page = (Path(__file__).resolve().parents[3] / "docs" / "conformance.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| (.+) \|$", page, re.M)
    assert [(check.name, check.expects) for check in CHECKS] == [row for row in rows if row[0] in NAMES]
    assert {name for name, _ in rows} >= NAMES


NAMES = {check.name for check in CHECKS}
