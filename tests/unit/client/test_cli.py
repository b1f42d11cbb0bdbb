"""The CLI's pure parts: parsing, --input, exit codes, error lines, tables, JSON objects and watch views."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from rich.console import Console

from taskwire import common as d
from taskwire.client import (
    ConcurrencyKeyStats,
    ExecutionSnapshot,
    ExecutionTransition,
    HandlerStats,
    LogLevel,
    QueueStats,
    RateLimitStats,
    ServerUnavailable,
    Stats,
    TaskLog,
    TaskRunTransition,
    UnknownEvent,
    WaitTimeout,
)
from taskwire.client._cli import (
    EXIT_CODES_HELP,
    ExitCode,
    UsageError,
    action_of,
    build_parser,
    error_line,
    exit_code_for,
    final_exit,
    main,
    read_input,
    server_address,
)
from taskwire.client._cli_base import bearer_token
from taskwire.client._events import event_from_proto
from taskwire.client._live import JsonLinesView, LiveView, PlainView
from taskwire.client._render import (
    event_line,
    execution_detail,
    executions_table,
    jsonable,
    list_view,
    short_duration,
    stats_detail,
    stats_view,
    workers_table,
    workers_view,
)
from taskwire.v1 import types_pb2 as pb
from tests.unit.client.records import at, event, execution, task_progress, task_run, worker_info
from tests.unit.client.records import snapshot as make_snapshot


def render(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


# ---- Parsing ------------------------------------------------------------------------------------


def test_submit_arguments() -> None:
    args = build_parser().parse_args(
        [
            *["submit", "echo", "--input", '{"a":1}', "--timeout", "2.5", "--max-attempts", "3", "--key", "k"],
            *["--name", "n", "--fail-fast", "--wait", "--json", "--server", "h:1"],
        ]
    )
    assert (args.command, args.handler, args.input) == ("submit", "echo", '{"a":1}')
    assert args.timeout == timedelta(seconds=2.5)
    assert (args.max_attempts, args.key, args.name) == (3, "k", "n")
    assert args.fail_fast
    assert args.wait
    assert args.json
    assert not args.watch
    assert server_address(args, {}) == "h:1"


def test_submit_defaults_wait_for_room() -> None:
    args = build_parser().parse_args(["submit", "echo"])
    assert not args.fail_fast
    assert args.input is None
    assert not args.json


def test_server_address_precedence() -> None:
    parser = build_parser()
    assert server_address(parser.parse_args(["stats"]), {}) == "127.0.0.1:50051"
    assert server_address(parser.parse_args(["stats"]), {"TASKWIRE_SERVER": "env:2"}) == "env:2"
    assert server_address(parser.parse_args(["--server", "flag:3", "stats"]), {"TASKWIRE_SERVER": "env:2"}) == "flag:3"
    assert server_address(parser.parse_args(["stats", "--server", "flag:4"]), {}) == "flag:4"


# ---- The bearer token ---------------------------------------------------------------------------


def test_a_token_is_read_without_the_whitespace_around_it() -> None:
    parser = build_parser()
    assert bearer_token(parser.parse_args(["stats"]), {}) is None
    assert bearer_token(parser.parse_args(["stats"]), {"TASKWIRE_TOKEN": "tw_env\n"}) == "tw_env"
    assert (
        bearer_token(parser.parse_args(["stats", "--token", " tw_flag\t"]), {"TASKWIRE_TOKEN": "tw_env"}) == "tw_flag"
    )
    # A flag or a variable of whitespace alone gives no token.
    assert bearer_token(parser.parse_args(["stats", "--token", " "]), {"TASKWIRE_TOKEN": "tw_env"}) == "tw_env"
    assert bearer_token(parser.parse_args(["stats"]), {"TASKWIRE_TOKEN": "\n"}) is None


@dataclass
class Authorizations:
    """A server whose GetExecution notes the authorization header of each call, and finds nothing."""

    seen: list[str] = field(default_factory=list)

    def get_execution(self, request: object, context: grpc.ServicerContext) -> None:
        self.seen += [str(value) for key, value in context.invocation_metadata() if key == "authorization"]
        context.abort(grpc.StatusCode.NOT_FOUND, "execution X not found")


@pytest.fixture
def authorizations() -> Iterator[tuple[Authorizations, str]]:
    calls = Authorizations()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(calls.get_execution)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("taskwire.v1.TaskService", {"GetExecution": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield calls, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["get", "X"], {"TASKWIRE_TOKEN": "tw_abc\n"}), (["get", "X", "--token", " tw_abc "], {})],
    ids=["variable-with-a-newline", "flag-with-spaces"],
)
def test_a_token_with_whitespace_around_it_is_sent_without(
    authorizations: tuple[Authorizations, str], argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, address = authorizations
    monkeypatch.delenv("TASKWIRE_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = io.StringIO()
    assert main(["--server", address, *argv], stdout=io.StringIO(), stderr=err) == ExitCode.REJECTED
    assert err.getvalue().startswith("taskwire: get X: execution X not found"), err.getvalue()
    assert calls.seen == ["Bearer tw_abc"]


@pytest.mark.parametrize(
    ("argv", "env", "source"),
    [
        (["get", "X", "--token", "a b"], {}, "--token"),
        (["--token", "tw_\x07", "get", "X"], {}, "--token"),
        (["get", "X"], {"TASKWIRE_TOKEN": "tw_a\nb"}, "TASKWIRE_TOKEN"),
        (["console", "--listen", "127.0.0.1:0"], {"TASKWIRE_TOKEN": "a b"}, "TASKWIRE_TOKEN"),
        (["console", "--listen", "127.0.0.1:0", "--token", "a\tb"], {}, "--token"),
    ],
    ids=["space", "control-character", "newline-inside", "console", "console-tab"],
)
def test_a_token_that_cannot_be_sent_is_a_usage_error_naming_it(
    argv: list[str], env: dict[str, str], source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before anything is sent, in one line that names where the token came from (not the token)."""
    monkeypatch.delenv("TASKWIRE_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    assert main(["--server", "127.0.0.1:1", *argv], stdout=out, stderr=err) == ExitCode.USAGE
    assert err.getvalue() == (
        f"taskwire: {source}: token must be one word of printable characters (it is sent as an HTTP header)\n"
    )
    assert out.getvalue() == ""


def test_list_arguments() -> None:
    args = build_parser().parse_args(["list", "--state", "failed", "--state", "CANCELLED", "--handler", "h"])
    assert args.states == [d.State.FAILED, d.State.CANCELLED]
    assert (args.handler, args.limit) == ("h", 50)


@pytest.mark.parametrize(
    ("argv", "as_json"),
    [
        (["workers"], False),
        (["workers", "list"], False),
        (["workers", "--json"], True),
        (["workers", "--json", "list"], True),
        (["workers", "list", "--json"], True),
    ],
)
def test_workers_and_workers_list_both_list(argv: list[str], as_json: bool) -> None:
    args = build_parser().parse_args(argv)
    assert args.workers_action in (None, "list")
    assert args.json is as_json


def test_workers_drain_arguments() -> None:
    args = build_parser().parse_args(["workers", "drain", "w1", "--grace", "2.5", "--reason", "upgrade"])
    assert (args.workers_action, args.worker, args.reason) == ("drain", "w1", "upgrade")
    assert args.grace == timedelta(seconds=2.5)
    assert build_parser().parse_args(["workers", "drain", "w1"]).grace is None


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "echo", "--bogus"],
        ["submit", "echo", "--wait", "--watch"],
        ["submit", "echo", "--timeout", "soon"],
        ["submit", "echo", "--timeout", "nan"],
        ["submit", "echo", "--max-attempts", "x"],
        ["list", "--state", "DONE"],
        ["list", "--limit", "0"],
        ["get"],
        ["workers", "drain"],
        ["workers", "drain", "w1", "--grace", "soon"],
        ["wait", "e1", "--timeout", "-1"],
        ["wait", "e1", "--timeout", "inf"],
        ["watch", "e1", "--timeout", "0"],
        ["workers", "frobnicate"],
        ["schedule", "get", "nightly", "--next", "99999999999999999999"],
        ["list", "--limit", "99999999999999999999"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("taskwire")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_wait_of_no_time_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["wait", "e1", "--timeout", "-1"])
    assert "argument --timeout: must be more than zero seconds, got -1" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["watch", "--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert EXIT_CODES_HELP.strip() in out
    for code in ExitCode:
        if code is not ExitCode.INTERRUPTED:
            assert f"  {int(code)}  " in EXIT_CODES_HELP


# ---- --input ------------------------------------------------------------------------------------


def test_input_json_text() -> None:
    assert read_input('{"a": [1, 2]}') == {"a": [1, 2]}
    assert read_input('"text"') == "text"
    assert read_input("null") is None


def test_input_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('{"seconds": 1}', encoding="utf-8")
    assert read_input(f"@{path}") == {"seconds": 1}


def test_input_from_stdin() -> None:
    assert read_input("@-", stdin=io.StringIO("[1, 2]")) == [1, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{bad", "--input is not valid JSON"),
        ("hello", "quote strings as JSON"),
        ("@", "needs a file name"),
        ("@/definitely/not/here.json", "cannot read --input file '/definitely/not/here.json': No such file"),
    ],
)
def test_bad_input_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        read_input(text)


def test_bad_json_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(UsageError, match=f"--input file '{path}' is not valid JSON"):
        read_input(f"@{path}")


# ---- Exit codes and error lines -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (ServerUnavailable("h:1"), ExitCode.UNAVAILABLE),
        (d.ShuttingDown("bye"), ExitCode.UNAVAILABLE),
        (d.NotFound("execution", "x"), ExitCode.REJECTED),
        (d.ValidationError("execution.tasks[0].handler", "must not be empty"), ExitCode.REJECTED),
        (d.QueueFull(size=1, capacity=1, requested=1), ExitCode.REJECTED),
        (d.AdmissionTimeout("no room"), ExitCode.REJECTED),
        (d.IdempotencyConflict("k", "ex"), ExitCode.REJECTED),
        (d.TaskwireError("internal"), ExitCode.REJECTED),
        (WaitTimeout("ex", 1.0), ExitCode.TIMEOUT),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
    ],
)
def test_exit_code_for(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def test_exit_codes_are_stable() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "CANCELLED": 3,
        "REJECTED": 4,
        "UNAVAILABLE": 5,
        "TIMEOUT": 6,
        "INTERRUPTED": 130,
    }


def test_error_line_for_an_unreachable_server() -> None:
    line = error_line(ServerUnavailable("127.0.0.1:1", "Connection refused"), action="stats")
    assert line == (
        "taskwire: cannot reach the server at 127.0.0.1:1 — is taskwire-server running? "
        "(set --server or TASKWIRE_SERVER)"
    )


def test_error_line_says_what_why_and_what_to_try() -> None:
    line = error_line(d.NotFound("execution", "abc"), action="get abc")
    assert line == "taskwire: get abc: no execution with id 'abc' — list executions with 'taskwire list'"
    line = error_line(d.QueueFull(size=1, capacity=1, requested=1), action="submit echo")
    assert line.startswith("taskwire: submit echo: queue full: 1 of 1 task runs queued")
    assert "\n" not in error_line(d.ValidationError("a", "b"), action="submit echo")
    assert error_line(WaitTimeout("ex", 2), action="wait ex") == (
        "taskwire: wait ex: execution ex did not finish within 2s; it keeps running — 'taskwire watch ex' follows it"
    )


def test_a_wait_for_room_timeout_explains_the_queue() -> None:
    error = d.AdmissionTimeout("no answer from the server at h:1 within 10s")
    assert error_line(error, action="submit echo").endswith(
        "the queue stayed full; try again later, check 'taskwire stats', or use --fail-fast"
    )
    assert error_line(error, action="get x") == "taskwire: get x: no answer from the server at h:1 within 10s"


def test_action_names_the_subject() -> None:
    parser = build_parser()
    assert action_of(parser.parse_args(["get", "ex-1"])) == "get ex-1"
    assert action_of(parser.parse_args(["submit", "echo"])) == "submit echo"
    assert action_of(parser.parse_args(["stats"])) == "stats"


# ---- Tables and JSON objects --------------------------------------------------------------------


def test_execution_detail_shows_fields_and_task_runs() -> None:
    runs = (
        task_run("a", output={"x": 1}),
        task_run("b", state=d.State.FAILED, error=d.ErrorInfo(type="ValueError", message="boom")),
    )
    value = ExecutionSnapshot(execution=execution(d.State.FAILED, metadata={"team": "x"}), task_runs=runs)
    text = render(execution_detail(value))
    for expected in ["ex-1", "FAILED", "HANDLER_ERROR", "team=x", "Duration", '{"x":1}', "ValueError: boom"]:
        assert expected in text
    assert text.index("a ") < text.index("b ")


def test_executions_table_has_one_row_each() -> None:
    rows = [make_snapshot(d.State.SUCCESS, execution_id=f"ex-{i}") for i in range(3)]
    text = render(executions_table(rows))
    assert [line.split()[0] for line in text.splitlines() if line.startswith("ex-")] == ["ex-0", "ex-1", "ex-2"]
    assert "COMPLETED" in text
    assert "every task succeeded" not in text  # the list shows codes; `get` shows messages


def test_list_view_is_execution_views() -> None:
    value = make_snapshot(d.State.SUCCESS)
    assert list_view([value]) == {"version": d.JSON_VIEW_VERSION, "executions": [value.to_json()]}


STATS = Stats(
    queue=QueueStats(size=2, capacity=10, waiting_submitters=1),
    in_flight=3,
    connected_workers=1,
    free_slots=1,
    handlers=(HandlerStats(handler="echo", pending=2, in_flight=3, free_slots=1, workers=1),),
    concurrency_keys=(ConcurrencyKeyStats(key="customer-42", limit=2, running=2, queued=0, waiting=48),),
    rate_limits=(RateLimitStats(name="remote-api", rate_per_s=10, burst=20, tokens=0, reserved=1, waiting=7),),
)


def test_stats_table_and_json() -> None:
    text = render(stats_detail(STATS))
    assert "2 of 10" in text
    assert "1 connected, 1 free slots" in text
    assert "echo" in text
    assert "customer-42" in text
    assert "remote-api" in text
    assert "48" in text
    assert stats_view(STATS) == {
        "version": "taskwire.v1",
        "queue": {"size": 2, "capacity": 10, "full": False, "empty": False, "waiting_submitters": 1},
        "in_flight": 3,
        "connected_workers": 1,
        "free_slots": 1,
        "handlers": [{"handler": "echo", "pending": 2, "in_flight": 3, "free_slots": 1, "workers": 1}],
        "concurrency_keys": [{"key": "customer-42", "limit": 2, "running": 2, "queued": 0, "waiting": 48}],
        "rate_limits": [
            {"name": "remote-api", "rate_per_s": 10, "burst": 20, "tokens": 0, "reserved": 1, "waiting": 7}
        ],
    }


WORKER = worker_info(agent_version="v1", draining=True)


def test_workers_table_and_json() -> None:
    text = render(workers_table([WORKER]))
    for expected in ["w1", "s1", "echo, sleep", "draining", "2030-01-01 12:00:05Z"]:
        assert expected in text
    assert workers_view([WORKER]) == {
        "version": "taskwire.v1",
        "workers": [
            {
                "session_id": "s1",
                "instance_id": "i1",
                "name": "w1",
                "handlers": ["echo", "sleep"],
                "slots": 4,
                "in_flight": 1,
                "labels": {"zone": "a"},
                "agent_version": "v1",
                "connected_at": "2030-01-01T12:00:00.000000Z",
                "last_seen_at": "2030-01-01T12:00:05.000000Z",
                "draining": True,
                "lease_timeout_s": 30.0,
                "replica": "",
            }
        ],
    }


def test_the_workers_table_names_each_workers_replica_when_the_server_is_one() -> None:
    assert "REPLICA" not in render(workers_table([WORKER]))
    two = [dataclasses.replace(WORKER, replica="r2"), dataclasses.replace(WORKER, session_id="s2", replica="r1")]
    text = render(workers_table(two))
    assert "REPLICA" in text
    assert [line.split()[-1] for line in text.splitlines() if line.split()[:1] == ["w1"]] == ["r2", "r1"]


def test_jsonable_outputs() -> None:
    raw = d.Payload(b"\x00", content_type="application/octet-stream")
    assert jsonable({"a": raw, "b": 1}) == {"a": {"content_type": "application/octet-stream", "base64": "AA=="}, "b": 1}
    json.dumps(jsonable(raw))


@pytest.mark.parametrize(("seconds", "text"), [(0.012, "0.01s"), (12.34, "12.3s"), (75, "1m15s"), (3725, "1h02m05s")])
def test_short_duration(seconds: float, text: str) -> None:
    assert short_duration(timedelta(seconds=seconds)) == text


# ---- Watch views --------------------------------------------------------------------------------

RUNNING = TaskRunTransition(
    execution_id="ex-1",
    sequence=1,
    time=at(1),
    task_run_id="tr-1",
    task_id="main",
    from_state=d.State.PENDING,
    to_state=d.State.RUNNING,
    attempt=1,
    worker_id="w1",
)
PROGRESS = task_progress(2, fraction=0.5, message="half")
LOG = TaskLog(
    execution_id="ex-1",
    sequence=3,
    time=at(3),
    task_run_id="tr-1",
    task_id="main",
    attempt=1,
    level=LogLevel.WARNING,
    text="careful",
)
FAILED = TaskRunTransition(
    execution_id="ex-1",
    sequence=4,
    time=at(4),
    task_run_id="tr-1",
    task_id="main",
    from_state=d.State.RUNNING,
    to_state=d.State.FAILED,
    reason=d.Reason(d.ReasonCode.HANDLER_ERROR, "attempt 1 failed"),
    attempt=1,
    attempt_outcome=d.AttemptOutcome.FAILED,
    error=d.ErrorInfo(type="ValueError", message="boom"),
)
DONE = ExecutionTransition(
    execution_id="ex-1",
    sequence=5,
    time=at(5),
    from_state=d.State.RUNNING,
    to_state=d.State.FAILED,
    reason=d.Reason(d.ReasonCode.HANDLER_ERROR, "task 'main' failed"),
)
EVENTS = (RUNNING, PROGRESS, LOG, FAILED, DONE)


def test_event_lines() -> None:
    assert [event_line(e) for e in EVENTS] == [
        "#1 2030-01-01 12:00:01Z task main RUNNING (attempt 1 on w1)",
        "#2 2030-01-01 12:00:02Z task main progress 50% half",
        "#3 2030-01-01 12:00:03Z task main log WARNING careful",
        "#4 2030-01-01 12:00:04Z task main FAILED HANDLER_ERROR: attempt 1 failed (attempt 1 FAILED: ValueError: boom)",
        "#5 2030-01-01 12:00:05Z execution FAILED HANDLER_ERROR: task 'main' failed",
    ]


def test_plain_view_prints_one_line_per_event_and_the_final_state() -> None:
    out = io.StringIO()
    with PlainView(out) as view:
        for e in EVENTS:
            view.show(e)
        view.finish("ex-1", DONE.to_state, DONE.reason)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(EVENTS) + 1
    assert lines[-1] == "execution ex-1 FAILED (HANDLER_ERROR: task 'main' failed)"


def test_json_lines_view_prints_the_wire_form() -> None:
    message = event(3, log=pb.TaskLog(task_id="main", attempt=1, level=pb.LOG_LEVEL_INFO, text="hi"))
    converted = event_from_proto(message)
    assert converted is not None
    out = io.StringIO()
    with JsonLinesView(out) as view:
        view.show(converted)
        view.finish("ex-1", d.State.SUCCESS, None)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line) == {
        "execution_id": "ex-1",
        "sequence": "3",
        "time": "2030-01-01T12:00:03Z",
        "log": {"task_id": "main", "attempt": 1, "level": "LOG_LEVEL_INFO", "text": "hi"},
    }


def test_live_view_draws_bars_logs_and_the_final_state() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    with LiveView(console) as view:
        for e in EVENTS:
            view.show(e)
        view.finish("ex-1", DONE.to_state, DONE.reason)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "main | careful" in text
    assert "50%" in text
    assert "execution ex-1 FAILED (HANDLER_ERROR: task 'main' failed)" in text


PAUSED = d.State.unrecognized("PAUSED")
PAUSED_REASON = d.ReasonCode.unrecognized("QUOTA")
NEWER = (
    dataclasses.replace(RUNNING, to_state=PAUSED, attempt_outcome=d.AttemptOutcome.unrecognized("UNKNOWN(44)")),
    dataclasses.replace(LOG, level=LogLevel.unrecognized("TRACE")),
    UnknownEvent(execution_id="ex-1", sequence=6, time=at(6)),
    dataclasses.replace(DONE, to_state=d.State.unrecognized("EXPIRED"), reason=d.Reason(PAUSED_REASON, "why")),
)


def test_values_from_a_newer_server_are_shown_by_every_view() -> None:
    assert [event_line(e) for e in NEWER] == [
        "#1 2030-01-01 12:00:01Z task main PAUSED (attempt 1 UNKNOWN(44))",
        "#3 2030-01-01 12:00:03Z task main log TRACE careful",
        "#6 2030-01-01 12:00:06Z an event of a kind this version does not know",
        "#5 2030-01-01 12:00:05Z execution EXPIRED QUOTA: why",
    ]
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    with LiveView(console) as view:
        for e in NEWER:
            view.show(e)
        view.finish("ex-1", NEWER[-1].to_state, NEWER[-1].reason)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "an event of a kind this version does not know" in text
    assert "execution ex-1 EXPIRED (QUOTA: why)" in text


def test_a_terminal_state_from_a_newer_server_exits_as_no_success() -> None:
    assert final_exit(d.State.unrecognized("EXPIRED")) is ExitCode.FAILED
    assert [final_exit(s) for s in (d.State.SUCCESS, d.State.FAILED, d.State.CANCELLED)] == [
        ExitCode.OK,
        ExitCode.FAILED,
        ExitCode.CANCELLED,
    ]
