"""`taskwire-server` on the command line: --help, and bad flag values refused with one line and status 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import BIN

SERVER = str(BIN / "taskwire-server")
FLAGS = [
    "--listen",
    "--db",
    "--queue-capacity",
    "--max-payload-bytes",
    "--lease-timeout",
    "--heartbeat-interval",
    "--cancel-grace",
    "--shutdown-grace",
    "--retention",
    "--with-local-worker",
    "--metrics-listen",
    "--log-level",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SERVER, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_help_mentions_every_flag() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for flag in FLAGS:
        assert flag in result.stdout, f"--help does not mention {flag}"
    assert "SIGTERM" in result.stdout


BAD_VALUES = {
    "zero-capacity": (["--queue-capacity", "0"], ["--queue-capacity", "'0'"]),
    "negative-capacity": (["--queue-capacity", "-5"], ["--queue-capacity", "'-5'"]),
    "word-lease-timeout": (["--lease-timeout", "abc"], ["--lease-timeout", "'abc'"]),
    "word-payload-limit": (["--max-payload-bytes", "lots"], ["--max-payload-bytes", "'lots'"]),
    "zero-heartbeat": (["--heartbeat-interval", "0"], ["--heartbeat-interval", "'0'"]),
    "word-shutdown-grace": (["--shutdown-grace", "soon"], ["--shutdown-grace", "'soon'"]),
    "negative-retention": (["--retention", "-1"], ["--retention", "'-1'"]),
    "lease-not-longer-than-heartbeat": (
        ["--lease-timeout", "1", "--heartbeat-interval", "2"],
        ["lease timeout", "heartbeat interval"],
    ),
    "unknown-flag": (["--queue-size", "3"], ["--queue-size"]),
    "metrics-without-port": (["--metrics-listen", "localhost"], ["--metrics-listen", "'localhost'"]),
}


@pytest.mark.parametrize(("args", "mentions"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_flag_value_exits_2_with_one_line(tmp_path: Path, args: list[str], mentions: list[str]) -> None:
    db = tmp_path / "never.db"
    result = run("--listen", "127.0.0.1:0", "--db", str(db), *args)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected a one-line message, got:\n{result.stderr}"
    assert lines[0].startswith("taskwire-server: error: "), lines[0]
    for word in mentions:
        assert word in lines[0], f"the message should mention {word!r}: {lines[0]!r}"
    assert not db.exists(), "a refused configuration must not create the database"
