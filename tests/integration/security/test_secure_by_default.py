"""Plaintext, or service without credentials, only on loopback unless the operator says --insecure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskwire.client._dev_certs import DevCerts
from tests.harness import BIN, READY, spawn

pytestmark = pytest.mark.timeout(60)


def server(tmp_path: Path, listen: str, *args: str) -> list[str]:
    return [str(BIN / "taskwire-server"), "--listen", listen, "--db", str(tmp_path / "t.db"), *args]


def refusal(tmp_path: Path, listen: str, *args: str) -> str:
    """The server's output when it refuses to start (it must exit with 1 and print one line)."""
    process = spawn(server(tmp_path, listen, *args), env={"TASKWIRE_INSECURE": ""})
    assert process.wait() == 1
    lines = [line for line in process.output.splitlines() if line.strip()]
    assert len(lines) == 1, process.output
    return lines[0]


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_a_plaintext_server_off_loopback_is_refused_in_one_line(tmp_path: Path, listen: str) -> None:
    line = refusal(tmp_path, listen)
    assert line.startswith(f"taskwire-server: cannot start: refusing to listen on {listen} without TLS")
    assert "--insecure" in line
    assert not (tmp_path / "t.db").exists()  # refused before anything was touched


def test_tls_without_credentials_off_loopback_is_refused(tmp_path: Path, certs: DevCerts) -> None:
    line = refusal(tmp_path, "0.0.0.0:0", *certs.server_flags())
    assert re.search(r"refusing to listen on 0\.0\.0\.0:0 without credentials \(--auth-file\)", line), line


def test_insecure_lets_it_listen_off_loopback(tmp_path: Path) -> None:
    process = spawn(server(tmp_path, "0.0.0.0:0", "--insecure"))
    try:
        assert process.wait_for_line(READY).group(1).startswith("0.0.0.0:")
    finally:
        process.stop()


def test_loopback_needs_neither(tmp_path: Path) -> None:
    process = spawn(server(tmp_path, "127.0.0.1:0"), env={"TASKWIRE_INSECURE": ""})
    try:
        assert "(plaintext, store:" in process.wait_for_line(READY).string
    finally:
        process.stop()


def test_the_local_worker_cannot_go_with_tls(tmp_path: Path, certs: DevCerts) -> None:
    process = spawn(server(tmp_path, "127.0.0.1:0", "--with-local-worker", *certs.server_flags()))
    assert process.wait() == 2
    assert "--with-local-worker runs over plaintext loopback only" in process.output
