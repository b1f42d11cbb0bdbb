"""The real `taskwire` binary against a real server and worker: output modes, exit codes and error lines."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness import Cluster, ServerProcess, spawn
from tests.integration.client.conftest import SERVER_ARGS, Cli

ID = re.compile(r"^[0-9a-zA-Z_-]+$")


def table_ids(text: str) -> list[str]:
    """The first column of a table's rows (the lines below the header rule)."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    return [line.split()[0] for line in lines[rule + 1 :] if line.strip()]


def submit_id(cli: Cli, *args: str) -> str:
    result = cli("submit", *args)
    assert result.returncode == 0, result.stderr
    execution_id = result.stdout.strip()
    assert ID.match(execution_id), result.stdout
    return execution_id


def test_submit_wait_get_in_both_modes(cli: Cli) -> None:
    execution_id = submit_id(cli, "echo", "--input", '{"hello": "world"}', "--name", "greeting")

    waited = cli("wait", execution_id)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == {"hello": "world"}

    table = cli("get", execution_id)
    assert table.returncode == 0, table.stderr
    assert execution_id in table.stdout
    assert "SUCCESS" in table.stdout
    assert "greeting" in table.stdout
    assert '{"hello":"world"}' in table.stdout

    view = json.loads(cli("get", execution_id, "--json").stdout)
    assert view["version"] == "taskwire.v1"
    assert (view["id"], view["name"], view["state"]) == (execution_id, "greeting", "SUCCESS")
    assert view["reason"]["code"] == "COMPLETED"
    (run,) = view["task_runs"]
    assert (run["task_id"], run["handler"], run["input"]) == ("main", "echo", {"hello": "world"})
    assert run["attempts"][-1]["output"] == {"hello": "world"}

    waited_json = json.loads(cli("wait", execution_id, "--json").stdout)
    assert waited_json == view


def test_submit_json_and_wait_flags(cli: Cli) -> None:
    submitted = cli("submit", "echo", "--input", "[1, 2]", "--json")
    assert submitted.returncode == 0, submitted.stderr
    view = json.loads(submitted.stdout)
    assert view["state"] in ("PENDING", "RUNNING", "SUCCESS")
    assert view["task_runs"][0]["input"] == [1, 2]

    waited = cli("submit", "echo", "--input", '"text"', "--wait")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == "text"
    assert waited.stderr.startswith("submitted ")


def test_submit_input_from_a_file_and_stdin(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"from": "file"}', encoding="utf-8")
    from_file = cli("submit", "echo", "--input", f"@{path}", "--wait")
    assert json.loads(from_file.stdout) == {"from": "file"}
    from_stdin = cli("submit", "echo", "--input", "@-", "--wait", stdin='{"from": "stdin"}')
    assert json.loads(from_stdin.stdout) == {"from": "stdin"}


def test_submit_with_a_key_is_idempotent(cli: Cli) -> None:
    first = submit_id(cli, "echo", "--input", "1", "--key", "cli-key-1")
    assert submit_id(cli, "echo", "--input", "1", "--key", "cli-key-1") == first
    conflict = cli("submit", "echo", "--input", "2", "--key", "cli-key-1")
    assert conflict.returncode == 4
    assert conflict.stderr.startswith("taskwire: submit echo: idempotency key 'cli-key-1' was already used")


def test_list_in_both_modes(cli: Cli) -> None:
    ids = [submit_id(cli, "echo", "--input", str(n)) for n in range(3)]
    for execution_id in ids:
        assert cli("wait", execution_id).returncode == 0

    table = cli("list", "--handler", "echo", "--state", "SUCCESS", "--limit", "3")
    assert table.returncode == 0, table.stderr
    assert table_ids(table.stdout) == ids[::-1]  # newest first

    listed = json.loads(cli("list", "--handler", "echo", "--limit", "3", "--json").stdout)
    assert [view["id"] for view in listed["executions"]] == ids[::-1]
    assert all(view["state"] == "SUCCESS" for view in listed["executions"])

    none = json.loads(cli("list", "--handler", "no-such-handler", "--json").stdout)
    assert none["executions"] == []


def test_stats_and_workers_in_both_modes(cli: Cli) -> None:
    stats = cli("stats")
    assert stats.returncode == 0, stats.stderr
    assert "1 connected" in stats.stdout
    assert "echo" in stats.stdout

    stats_json = json.loads(cli("stats", "--json").stdout)
    assert stats_json["connected_workers"] == 1
    assert stats_json["queue"]["capacity"] > 0
    assert "echo" in [h["handler"] for h in stats_json["handlers"]]

    workers = cli("workers")
    assert workers.returncode == 0, workers.stderr
    assert "echo, fail" in workers.stdout

    (worker,) = json.loads(cli("workers", "--json").stdout)["workers"]
    assert worker["slots"] == 8
    assert {"echo", "fail", "sleep", "progress"} <= set(worker["handlers"])
    assert worker["draining"] is False


def test_watch_success_prints_plain_lines_and_exits_0(cli: Cli) -> None:
    execution_id = submit_id(cli, "progress", "--input", '{"steps": 3, "interval": 0.05}')
    watched = cli("watch", execution_id)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert [int(line.split()[0][1:]) for line in lines[:-1]] == list(range(1, len(lines)))
    assert any(" progress 100% step 3 of 3" in line for line in lines)
    assert any(" log INFO step 1 of 3" in line for line in lines)
    assert lines[-1].startswith(f"execution {execution_id} SUCCESS (COMPLETED: ")


def test_watch_json_prints_one_event_per_line(cli: Cli) -> None:
    execution_id = submit_id(cli, "echo", "--input", "{}")
    watched = cli("watch", execution_id, "--json")
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["execution_transition"]["to_state"] == "EXECUTION_STATE_SUCCESS"


def test_watch_and_wait_of_a_failure_exit_1(cli: Cli) -> None:
    execution_id = submit_id(cli, "fail", "--input", '{"message": "boom", "retryable": false}')
    watched = cli("watch", execution_id)
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert re.search(rf"execution {execution_id} FAILED \(NON_RETRYABLE_ERROR: .*boom", watched.stdout.splitlines()[-1])

    waited = cli("wait", execution_id)
    assert waited.returncode == 1
    assert waited.stdout == ""
    assert waited.stderr.startswith(f"taskwire: execution {execution_id} FAILED (NON_RETRYABLE_ERROR")

    submitted = cli("submit", "fail", "--input", '{"retryable": false}', "--wait", "--json")
    assert submitted.returncode == 1
    assert json.loads(submitted.stdout)["state"] == "FAILED"


def test_watch_of_a_cancelled_execution_exits_3(cli: Cli) -> None:
    execution_id = submit_id(cli, "sleep", "--input", '{"seconds": 60}')
    watcher = spawn(cli.command("watch", execution_id), env={"TASKWIRE_SERVER": cli.address})
    try:
        watcher.wait_for_line(r"task main RUNNING")
        cancelled = cli("cancel", execution_id, "--reason", "enough")
        assert cancelled.returncode == 0, cancelled.stderr
        assert execution_id in cancelled.stdout
        assert watcher.wait(timeout_s=30) == 3, watcher.output
    finally:
        watcher.kill()
    assert watcher.lines[-1].startswith(f"execution {execution_id} CANCELLED (CANCEL_REQUESTED: ")
    assert "Traceback" not in watcher.output

    waited = cli("wait", execution_id)
    assert waited.returncode == 3
    assert f"{execution_id} CANCELLED" in waited.stderr

    again = cli("cancel", execution_id)
    assert again.returncode == 0
    assert json.loads(cli("cancel", execution_id, "--json").stdout)["state"] == "CANCELLED"


def test_cancel_of_a_finished_execution_changes_nothing(cli: Cli) -> None:
    execution_id = submit_id(cli, "echo")
    assert cli("wait", execution_id).returncode == 0
    result = cli("cancel", execution_id)
    assert result.returncode == 0
    assert result.stdout.strip() == f"{execution_id} had already ended SUCCESS; nothing to cancel"


def test_submit_watch_follows_live(cli: Cli) -> None:
    result = cli("submit", "progress", "--input", '{"steps": 2, "interval": 0.01}', "--watch")
    assert result.returncode == 0, result.stderr
    execution_id = result.stderr.split()[-1]
    assert result.stdout.splitlines()[-1].startswith(f"execution {execution_id} SUCCESS")


def test_wait_timeout_exits_6(cli: Cli) -> None:
    execution_id = submit_id(cli, "sleep", "--input", '{"seconds": 60}')
    try:
        result = cli("wait", execution_id, "--timeout", "0.5")
        assert result.returncode == 6
        assert result.stderr.strip() == (
            f"taskwire: wait {execution_id}: execution {execution_id} did not finish within 0.5s; "
            f"it keeps running — 'taskwire watch {execution_id}' follows it"
        )
    finally:
        cli("cancel", execution_id)


def test_unknown_id_exits_4(cli: Cli) -> None:
    for command in ("get", "watch", "cancel"):
        result = cli(command, "no-such-execution")
        assert result.returncode == 4, (command, result.stderr)
        assert result.stderr == (
            f"taskwire: {command} no-such-execution: no execution with id 'no-such-execution' "
            "— list executions with 'taskwire list'\n"
        )
    # `wait` checks the form of its ids first (WaitExecutions names the field), then that they exist.
    result = cli("wait", "no-such-execution")
    assert result.returncode == 4, result.stderr
    assert result.stderr == (
        "taskwire: wait no-such-execution: execution_ids[0]: 'no-such-execution' is not an execution id "
        "(32 hex digits) — fix the value and try again\n"
    )
    unknown = "0" * 32
    result = cli("wait", unknown)
    assert result.returncode == 4, result.stderr
    assert result.stderr == (
        f"taskwire: wait {unknown}: no execution with id '{unknown}' — list executions with 'taskwire list'\n"
    )


def test_a_request_the_server_refuses_exits_4(cli: Cli) -> None:
    result = cli("submit", "echo", "--max-attempts", "1000")
    assert result.returncode == 4
    assert result.stderr.startswith("taskwire: submit echo: execution.tasks[0].retry_policy.max_attempts: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("submit", "echo", "--input", "{oops"), "taskwire: --input is not valid JSON"),
        (("submit", "echo", "--input", "@/no/such/file.json"), "taskwire: cannot read --input file"),
        (("submit", "echo", "--frobnicate"), "taskwire: unrecognized arguments: --frobnicate"),
        (("list", "--state", "DONE"), "unknown state 'DONE'"),
    ],
)
def test_bad_input_exits_2(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize("args", [("stats",), ("get", "x", "--json"), ("submit", "echo"), ("watch", "x")])
def test_an_unreachable_server_exits_5_with_one_readable_line(args: tuple[str, ...]) -> None:
    result = Cli("127.0.0.1:1")(*args, "--server", "127.0.0.1:1")
    assert result.returncode == 5
    assert result.stderr == (
        "taskwire: cannot reach the server at 127.0.0.1:1 — is taskwire-server running? "
        "(set --server or TASKWIRE_SERVER)\n"
    )
    assert result.stdout == ""


def test_the_server_address_comes_from_the_environment(shared: ServerProcess) -> None:
    via_env = Cli(shared.address)("stats", "--json")
    assert via_env.returncode == 0
    via_flag = Cli("127.0.0.1:1")("--server", shared.address, "stats", "--json")
    assert via_flag.returncode == 0


def test_fail_fast_on_a_full_queue_exits_4(procs: Cluster) -> None:
    server = procs.server(*SERVER_ARGS, "--queue-capacity", "1")  # no worker: nothing leaves the queue
    cli = Cli(server.address)
    first = cli("submit", "echo")
    assert first.returncode == 0, first.stderr
    full = cli("submit", "echo", "--fail-fast")
    assert full.returncode == 4
    assert full.stderr.startswith("taskwire: submit echo: queue full: ")
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["queue"] == {"size": 1, "capacity": 1, "full": True, "empty": False, "waiting_submitters": 0}


def test_interrupting_watch_leaves_the_execution_running(cli: Cli) -> None:
    execution_id = submit_id(cli, "sleep", "--input", '{"seconds": 60}')
    watcher = spawn(cli.command("watch", execution_id), env={"TASKWIRE_SERVER": cli.address})
    try:
        watcher.wait_for_line(r"task main RUNNING")
        watcher.signal(2)  # SIGINT, as Ctrl-C
        assert watcher.wait() == 130
        assert f"taskwire: interrupted; the execution goes on ('taskwire cancel {execution_id}' stops it)" in (
            watcher.output
        )
        assert json.loads(cli("get", execution_id, "--json").stdout)["state"] == "RUNNING"
    finally:
        watcher.kill()
        cli("cancel", execution_id)


def test_console_script_is_installed() -> None:
    result = subprocess.run([str(Cli("x").command()[0]), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
