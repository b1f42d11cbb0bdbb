"""`taskwire-server` on the command line: --help, and bad flag values refused with one line and status 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from taskwire.server._main import build_parser
from tests.harness import BIN

SERVER = str(BIN / "taskwire-server")
FLAGS = [
    "--listen",
    "--db",
    "--store",
    "TASKWIRE_STORE",
    "--standby",
    "TASKWIRE_STANDBY",
    "--store-lease",
    "TASKWIRE_STORE_LEASE",
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
    "infinite-heartbeat": (["--heartbeat-interval", "1e400"], ["--heartbeat-interval", "finite", "'1e400'"]),
    "infinite-retention": (["--retention", "inf"], ["--retention", "finite", "'inf'"]),
    "heartbeat-past-any-date": (["--heartbeat-interval", "1e300"], ["--heartbeat-interval", "longer than any date"]),
    "empty-db": (["--db", ""], ["--db", "expected a file name"]),
    "port-past-65535": (["--listen", "127.0.0.1:99999"], ["--listen", "'127.0.0.1:99999'"]),
    "listen-without-port": (["--listen", "nope"], ["--listen", "HOST:PORT", "'nope'"]),
    "payload-past-grpc": (["--max-payload-bytes", "99999999999"], ["--max-payload-bytes", "at most"]),
    "nan-aging": (["--priority-aging", "nan"], ["--priority-aging", "finite"]),
    "db-a-directory": (["--db", "/"], ["--db", "is a directory"]),
}

BAD_ENVIRONMENT = {
    "log-level": ({"TASKWIRE_LOG_LEVEL": "LOUD"}, ["--log-level", "'LOUD'", "from the environment"]),
    "insecure-maybe": ({"TASKWIRE_INSECURE": "maybe"}, ["TASKWIRE_INSECURE='maybe'", "neither yes nor no"]),
    "local-worker-maybe": ({"TASKWIRE_WITH_LOCAL_WORKER": "sometimes"}, ["TASKWIRE_WITH_LOCAL_WORKER"]),
}


@pytest.mark.parametrize(("environment", "mentions"), BAD_ENVIRONMENT.values(), ids=BAD_ENVIRONMENT.keys())
def test_a_bad_environment_value_exits_2_with_one_line(
    tmp_path: Path, environment: dict[str, str], mentions: list[str]
) -> None:
    db = tmp_path / "never.db"
    result = subprocess.run(
        [SERVER, "--listen", "127.0.0.1:0", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **environment},
    )
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected a one-line message, got:\n{result.stderr}"
    assert lines[0].startswith("taskwire-server: error: "), lines[0]
    for word in mentions:
        assert word in lines[0], f"the message should mention {word!r}: {lines[0]!r}"
    assert not db.exists()


def test_lowercase_log_levels_are_taken() -> None:
    assert build_parser().parse_args(["--log-level", "debug"]).log_level == "DEBUG"


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


STORE_REFUSALS = {
    "unknown-scheme": (["--store", "mysql://tw:s3cret@db/tw"], ["--store", "postgresql://", "mysql://tw:***@db/tw"]),
    "sqlite-with-a-host": (["--store", "sqlite://host/db"], ["names a host"]),
    "store-and-db": (["--store", "sqlite:x.db", "--db", "y.db"], ["--db and --store"]),
    "standby-on-sqlite": (["--db", "x.db", "--standby"], ["--standby needs a PostgreSQL store"]),
    "replica-on-sqlite": (["--db", "x.db", "--replica", "r1"], ["--replica needs a PostgreSQL store"]),
    "replica-and-standby": (
        ["--store", "postgresql://tw:s3cret@db/tw", "--replica", "r1", "--standby"],
        ["--replica and --standby exclude each other"],
    ),
    "replica-name-with-spaces": (
        ["--store", "postgresql://tw:s3cret@db/tw", "--replica", " r1"],
        ["--replica must be a printable name", "' r1'"],
    ),
    "replica-name-too-long": (
        ["--store", "postgresql://tw:s3cret@db/tw", "--replica", "r" * 101],
        ["--replica must be a printable name of at most 100 characters"],
    ),
    "store-notify-maybe": (
        ["--store", "postgresql://tw:s3cret@db/tw", "--store-notify", "maybe"],
        ["--store-notify", "'maybe'"],
    ),
    "no-store-lease": (["--store", "postgresql://tw:s3cret@db/tw", "--store-lease", "0"], ["store lease must be"]),
    "short-store-lease": (
        ["--store", "postgresql://tw:s3cret@db/tw", "--store-lease", "0.5"],
        ["store lease must be at least 1s"],
    ),
}


@pytest.mark.parametrize(("args", "mentions"), STORE_REFUSALS.values(), ids=STORE_REFUSALS.keys())
def test_a_bad_store_url_exits_2_with_one_line(tmp_path: Path, args: list[str], mentions: list[str]) -> None:
    result = subprocess.run(
        [SERVER, "--listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    for word in mentions:
        assert word in line, f"the message should mention {word!r}: {line!r}"
    assert "s3cret" not in line
    assert list(tmp_path.iterdir()) == [], "a refused configuration must not create a database"


def test_an_unreachable_database_stops_the_start_without_showing_the_password() -> None:
    result = run("--listen", "127.0.0.1:0", "--store", "postgresql://tw:s3cret@127.0.0.1:1/tw")
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "cannot start" in result.stderr
    assert "postgresql://tw:***@127.0.0.1:1/tw" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
