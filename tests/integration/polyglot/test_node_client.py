"""examples/node/client.js against a real server and worker: the contract works from Node.js with no generated code."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as types
from tests.harness import ServerProcess
from tests.integration.polyglot.conftest import NODE_EXAMPLE

CLIENT = NODE_EXAMPLE / "client.js"


def run_client(node: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(node), str(CLIENT), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_node_client_runs_echo_sleep_and_cancel(node: Path, demo_server: ServerProcess) -> None:
    result = run_client(node, "--server", demo_server.address, "--seconds", "1")
    output = result.stdout
    assert result.returncode == 0, f"client.js exited {result.returncode}\n{output}\n{result.stderr}"
    assert result.stderr == ""

    assert 'echo: SUCCESS result {"message":"hello from node","numbers":[1,2,3]}' in output
    progress = re.findall(r"^sleep: progress +(\d+)% slept \S+ of 1s$", output, re.MULTILINE)
    assert [int(percent) for percent in progress] == list(range(10, 101, 10)), output
    assert 'sleep: SUCCESS after 10 progress events, result {"slept_s":1}' in output
    assert "cancel: CANCELLED reason CANCEL_REQUESTED: cancelled by the node example" in output
    assert output.rstrip().endswith("all scenarios passed")

    # What the Node.js client saw is what the server stored.
    cancelled_id = re.search(r"^cancel: submitted (\S+)", output, re.MULTILINE)
    assert cancelled_id is not None, output
    with demo_server.channel() as channel:
        stored = (
            task_service_pb2_grpc.TaskServiceStub(channel)
            .GetExecution(tpb.GetExecutionRequest(execution_id=cancelled_id.group(1)), timeout=5)
            .execution
        )
    assert stored.state == types.EXECUTION_STATE_CANCELLED
    assert stored.reason_code == types.REASON_CODE_CANCEL_REQUESTED
    assert stored.reason_message == "cancelled by the node example"
    assert stored.name == "node-example-sleep"


def test_node_client_exits_non_zero_when_its_deadline_passes(node: Path, demo_server: ServerProcess) -> None:
    # The watched sleep lasts far longer than the client's overall --timeout.
    result = run_client(node, "--server", demo_server.address, "--seconds", "30", "--timeout", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.match(r"client\.js: \w+ failed: DEADLINE_EXCEEDED", result.stderr), result.stderr
    assert "all scenarios passed" not in result.stdout


def test_node_client_exits_non_zero_when_the_server_is_unreachable(node: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    result = run_client(node, "--server", f"127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"client.js: cannot reach the taskwire server at 127.0.0.1:{port}"), result.stderr


def test_node_client_rejects_an_unknown_option(node: Path) -> None:
    result = run_client(node, "--no-such-option")
    assert result.returncode == 2
    assert "Unknown option '--no-such-option'" in result.stderr
    assert "usage: node client.js" in result.stderr
