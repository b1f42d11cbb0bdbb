"""No token appears in any log line: a workload with tokens (right, wrong, refused by role) through a real
server, a real worker and the CLI, all at DEBUG, and every line they wrote is searched for every token."""

from __future__ import annotations

import os
import subprocess

import pytest

from taskwire.client import PermissionDenied, Unauthenticated
from taskwire.common.bearer import new_token
from tests.harness import BIN, Cluster
from tests.integration.security.auth_support import start_secured


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "taskwire"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        check=False,
    )


def test_no_token_is_ever_logged(procs: Cluster) -> None:
    secured = start_secured(procs)
    wrong = new_token()
    worker = procs.worker(
        secured.server, "--log-level", "debug", name="logged", env={"TASKWIRE_TOKEN": secured.tokens["worker-a"]}
    )
    outputs: list[str] = []
    server = ["--server", secured.address]
    alice = {"TASKWIRE_TOKEN": secured.tokens["alice"]}
    done = _cli("submit", "echo", "--input", '{"x": 1}', "--wait", *server, env=alice)
    assert done.returncode == 0, done.stderr
    for args, env, exit_code in (
        (["submit", "fail", "--wait", *server], alice, 1),  # the execution FAILED, as asked
        (["list", *server, "--token", secured.tokens["reader"]], {}, 0),
        (["stats", *server, "--token", secured.tokens["reader"]], {}, 0),
        (["workers", "drain", "logged", *server], {"TASKWIRE_TOKEN": secured.tokens["reader"]}, 4),  # wrong role
        (["list", *server, "--token", wrong], {}, 4),  # an unknown token
        (["list", *server], {}, 4),  # none
    ):
        result = _cli(*args, env=env)
        assert result.returncode == exit_code, (args, result.stderr)
        outputs += [result.stdout, result.stderr]
    assert "may not call DrainWorker" in "".join(outputs)
    assert "not known to this server" in "".join(outputs)
    assert "pass --token or set TASKWIRE_TOKEN" in "".join(outputs)
    with secured.client(token=wrong) as stranger, pytest.raises(Unauthenticated):
        stranger.stats()
    with secured.client("worker-b") as intruder, pytest.raises(PermissionDenied):
        intruder.submit("echo", {})
    with secured.client("admin") as admin:
        execution = admin.submit("sleep", {"seconds": 30})
        admin.cancel(execution.id, reason="logged cancel")
        admin.wait_finished(execution.id)
        admin.drain_worker("logged", reason="end of the test")
    worker.wait()
    secured.server.process.stop()
    lines = [*secured.server.process.lines, *worker.lines, *(line for o in outputs for line in o.splitlines())]
    assert any("audit action=drain identity=admin" in line for line in lines)
    assert any("DEBUG" in line for line in lines)  # the most verbose level was on
    for token in [*secured.tokens.values(), wrong]:
        secret = token.removeprefix("tw_")
        leaked = [line for line in lines if secret in line]
        assert leaked == [], f"a token appears in the logs: {leaked[:3]}"
