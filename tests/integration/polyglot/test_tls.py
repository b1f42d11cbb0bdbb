"""The Node.js example and `buf curl` over mutual TLS, with certificates from `taskwire dev-certs`' code."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskwire.client._dev_certs import DevCerts, write_dev_certs
from tests.harness import Cluster, ServerProcess
from tests.integration.polyglot.conftest import BUF, ROOT, require_tool
from tests.integration.polyglot.test_node_client import run_client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return write_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> Iterator[ServerProcess]:
    running = Cluster(tmp_path_factory.mktemp("polyglot-tls"))
    try:
        server = running.server(*certs.server_flags(), "--lease-timeout", "2", "--heartbeat-interval", "0.5")
        running.worker(server, *certs.client_flags("worker"))
        yield server
    finally:
        running.close()


def test_node_client_over_mutual_tls(node: Path, mtls_server: ServerProcess, certs: DevCerts) -> None:
    result = run_client(node, "--server", mtls_server.address, "--seconds", "1", *certs.client_flags("admin"))
    assert result.returncode == 0, f"client.js exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.rstrip().endswith("all scenarios passed")

    # Without a client certificate the handshake is refused and the client says it cannot connect.
    refused = run_client(node, "--server", mtls_server.address, "--tls-ca", str(certs.ca), "--timeout", "5")
    assert refused.returncode == 1
    assert "cannot reach the taskwire server" in refused.stderr


def test_buf_curl_over_mutual_tls(mtls_server: ServerProcess, certs: DevCerts) -> None:
    buf = require_tool(BUF, "buf")
    tls = [
        "--cacert",
        str(certs.ca),
        "--cert",
        str(certs.client_cert("admin")),
        "--key",
        str(certs.client_key("admin")),
    ]
    result = subprocess.run(
        [str(buf), "curl", "--protocol", "grpc", *tls, f"https://{mtls_server.address}/grpc.health.v1.Health/Check"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
