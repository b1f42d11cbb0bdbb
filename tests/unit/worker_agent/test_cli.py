"""taskwire-worker's command line: bad arguments are one line on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taskwire.worker._main import build_parser, main

WORKER = str(Path(sys.executable).parent / "taskwire-worker")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--handlers", "no_such_module_anywhere"], "cannot import handler module 'no_such_module_anywhere'"),
        (["--handlers", "json"], "defines no handler"),
        (["--handlers", "taskwire.worker.demo", "--slots", "0"], "must be at least 1"),
        (["--handlers", "taskwire.worker.demo", "--slots", "many"], "expected a whole number"),
        (["--handlers", "taskwire.worker.demo", "--isolation", "vm"], "invalid choice"),
        (["--handlers", "taskwire.worker.demo", "--max-attempts-per-child", "0"], "--max-attempts-per-child"),
        (["--handlers", "taskwire.worker.demo", "--max-memory-per-child", "lots"], "--max-memory-per-child"),
        (["--handlers", "taskwire.worker.demo", "--min-children", "-1"], "must be at least 0, got -1"),
        (
            ["--handlers", "taskwire.worker.demo", "--min-children", "5"],
            "--min-children (5) cannot be more than --slots (4)",
        ),
        (["--handlers", "taskwire.worker.demo", "--drain-timeout", "-1"], "zero or more seconds"),
        (["--handlers", "taskwire.worker.demo", "--label", "novalue"], "KEY=VALUE"),
        (["--handlers", "taskwire.worker.demo", "--server", " , "], "no server address given"),
        (["--handlers", "taskwire.worker.demo", "--keepalive", "0"], "more than zero seconds"),
        (["--handlers", "taskwire.worker.demo", "--tls-ca", "/definitely/not/here.pem"], "cannot read the TLS CA file"),
        (["--handlers", "taskwire.worker.demo", "--bogus"], "unrecognized arguments"),
        ([], "no handler modules given"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKWIRE_HANDLERS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("taskwire-worker: error: ")
    assert message in err


def test_environment_variables_are_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKWIRE_SERVER", "10.0.0.1:9000,10.0.0.2:9000")
    monkeypatch.setenv("TASKWIRE_HANDLERS", "taskwire.worker.demo")
    monkeypatch.setenv("TASKWIRE_SLOTS", "7")
    monkeypatch.setenv("TASKWIRE_WORKER_NAME", "edge-1")
    monkeypatch.setenv("TASKWIRE_ISOLATION", "process")
    monkeypatch.setenv("TASKWIRE_DRAIN_TIMEOUT", "12.5")
    monkeypatch.setenv("TASKWIRE_INSTANCE_ID", "instance-9")
    monkeypatch.setenv("TASKWIRE_MAX_ATTEMPTS_PER_CHILD", "100")
    monkeypatch.setenv("TASKWIRE_MAX_MEMORY_PER_CHILD", "512")
    monkeypatch.setenv("TASKWIRE_MIN_CHILDREN", "3")
    args = build_parser().parse_args([])
    assert args.server == ["10.0.0.1:9000", "10.0.0.2:9000"]  # an active server and its standby, tried in turn
    assert (args.handlers, args.slots, args.name) == ("taskwire.worker.demo", 7, "edge-1")
    assert (args.isolation, args.drain_timeout, args.instance_id) == ("process", 12.5, "instance-9")
    assert (args.max_attempts_per_child, args.max_memory_per_child, args.min_children) == (100, 512, 3)
    assert build_parser().parse_args(["--slots", "2"]).slots == 2  # flags win over the environment


def test_defaults() -> None:
    args = build_parser().parse_args(["--handlers", "taskwire.worker.demo"])
    assert (args.server, args.slots, args.isolation, args.drain_timeout) == (["127.0.0.1:50051"], 4, "thread", 30.0)
    assert args.keepalive == 5.0
    assert args.instance_id is None  # a fresh uuid4 is made per process
    assert args.max_reconnect_attempts is None
    assert args.max_attempts_per_child is None  # children are kept for as many attempts as come
    assert args.max_memory_per_child is None
    assert args.min_children == 0  # children start as attempts need them


def test_help_explains_each_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option, env in [
        ("--server", "TASKWIRE_SERVER"),
        ("--handlers", "TASKWIRE_HANDLERS"),
        ("--slots", "TASKWIRE_SLOTS"),
        ("--name", "TASKWIRE_WORKER_NAME"),
        ("--isolation", "TASKWIRE_ISOLATION"),
        ("--max-attempts-per-child", "TASKWIRE_MAX_ATTEMPTS_PER_CHILD"),
        ("--max-memory-per-child", "TASKWIRE_MAX_MEMORY_PER_CHILD"),
        ("--min-children", "TASKWIRE_MIN_CHILDREN"),
        ("--drain-timeout", "TASKWIRE_DRAIN_TIMEOUT"),
        ("--instance-id", "TASKWIRE_INSTANCE_ID"),
        ("--log-level", "TASKWIRE_LOG_LEVEL"),
        ("--max-reconnect-attempts", "TASKWIRE_MAX_RECONNECT_ATTEMPTS"),
        ("--keepalive", "TASKWIRE_KEEPALIVE"),
    ]:
        assert option in out
        assert env in out


def test_the_console_script_prints_no_traceback() -> None:
    result = subprocess.run(
        [WORKER, "--handlers", "no_such_module_anywhere"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TASKWIRE_ISOLATION", "bogus", "--isolation: invalid choice 'bogus' from the environment"),
        ("TASKWIRE_LOG_LEVEL", "LOUD", "--log-level: invalid choice 'loud' from the environment"),
        ("TASKWIRE_TLS", "maybe", "TASKWIRE_TLS='maybe' is neither yes nor no"),
        ("TASKWIRE_SERVER", "127.0.0.1:99999", "127.0.0.1:99999: a port is at most 65535"),
    ],
)
def test_a_bad_environment_value_is_one_line_and_status_2(
    name: str, value: str, message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["--handlers", "taskwire.worker.demo"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_tls_off_in_the_environment_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskwire.common.tls import tls_from_args

    for off in ("off", "no", "False", "0", ""):
        monkeypatch.setenv("TASKWIRE_TLS", off)
        assert tls_from_args(build_parser().parse_args(["--handlers", "taskwire.worker.demo"])) is None


def test_a_handler_module_that_exits_as_it_imports_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(5)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--handlers", "exits_on_import"]) == 2
    err = capsys.readouterr().err
    assert "handler module 'exits_on_import' failed to import: SystemExit: 5" in err
    sys.modules.pop("exits_on_import", None)


def test_a_metrics_address_without_a_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--handlers", "taskwire.worker.demo", "--metrics-listen", "nope"]) == 2
    assert "cannot serve metrics on nope: expected HOST:PORT (port 0 picks one), got 'nope'" in capsys.readouterr().err


def test_a_tls_file_of_junk_is_refused_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not tried at every reconnect: gRPC itself takes any bytes, and fails each handshake."""
    junk = tmp_path / "ca.pem"
    junk.write_text("this is not a certificate\n")
    assert main(["--handlers", "taskwire.worker.demo", "--tls-ca", str(junk)]) == 2
    assert f"{str(junk)!r} holds no PEM certificate" in capsys.readouterr().err
