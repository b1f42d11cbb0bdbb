"""The SDK, the CLI and a worker agent over mutual TLS, end to end; the worker's certificate files are read
again when it reconnects."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from taskwire.client import AsyncClient, Client, State, tls_credentials
from taskwire.client._dev_certs import DevCerts, issue_client, issue_server, make_ca
from tests.harness import Cluster, ServerProcess, wait_for
from tests.integration.client.conftest import Cli

pytestmark = pytest.mark.timeout(120)


def sdk(server: ServerProcess, certs: DevCerts, name: str = "admin") -> Client:
    credentials = tls_credentials(ca=certs.ca, cert=certs.client_cert(name), key=certs.client_key(name))
    return Client(server.address, credentials=credentials)


def tls_env(certs: DevCerts, name: str) -> dict[str, str]:
    return {
        "TASKWIRE_TLS_CA": str(certs.ca),
        "TASKWIRE_TLS_CERT": str(certs.client_cert(name)),
        "TASKWIRE_TLS_KEY": str(certs.client_key(name)),
    }


def test_sdk_cli_and_worker_over_mutual_tls(procs: Cluster, mtls_server: ServerProcess, certs: DevCerts) -> None:
    procs.worker(mtls_server, env=tls_env(certs, "worker"))  # the environment variables
    with sdk(mtls_server, certs) as client:
        execution = client.submit("echo", {"over": "mTLS"})
        assert client.wait(execution.id) == {"over": "mTLS"}
        assert client.get(execution.id).state is State.SUCCESS

    cli = Cli(mtls_server.address)  # the flags
    flags = ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert("admin"))]
    flags += ["--tls-key", str(certs.client_key("admin"))]
    done = cli("submit", "echo", "--input", '{"from": "cli"}', "--wait", *flags)
    assert done.returncode == 0, done.stderr
    assert '"from": "cli"' in done.stdout

    # Without its client certificate the CLI is turned away at the handshake, and says so.
    refused = cli("stats", "--tls-ca", str(certs.ca))
    assert refused.returncode == 5
    assert "TLS handshake failed" in refused.stderr


def test_async_client_over_mutual_tls(procs: Cluster, mtls_server: ServerProcess, certs: DevCerts) -> None:
    procs.worker(mtls_server, *certs.client_flags("worker"))

    async def run() -> State:
        credentials = tls_credentials(ca=certs.ca, cert=certs.client_cert("admin"), key=certs.client_key("admin"))
        async with AsyncClient(mtls_server.address, credentials=credentials) as client:
            execution = await client.submit("echo", {"async": True})
            await client.wait(execution.id)
            return (await client.get(execution.id)).state

    assert asyncio.run(run()) is State.SUCCESS


def test_a_worker_reads_its_rotated_certificate_when_it_reconnects(
    procs: Cluster, mtls_server: ServerProcess, certs: DevCerts
) -> None:
    # The worker's own copies of its files, rotated in place below.
    mine = DevCerts(certs.directory / "worker-side", ("worker",))
    mine.directory.mkdir()
    shutil.copy(certs.ca, mine.ca)
    shutil.copy(certs.client_cert("worker"), mine.client_cert("worker"))
    shutil.copy(certs.client_key("worker"), mine.client_key("worker"))
    worker = procs.worker(mtls_server, *mine.client_flags("worker"), "--name", "rotating")
    with sdk(mtls_server, certs) as client:
        assert [w.name for w in client.workers()] == ["rotating"]
    mtls_server.process.stop()

    # A new CA everywhere: the server's files, the worker's trust root and client certificate.
    new_ca = make_ca("the next CA")
    issue_server(new_ca).write(certs.server_cert, certs.server_key)
    new_ca.write(certs.ca, certs.ca_key)
    shutil.copy(certs.ca, mine.ca)
    issue_client(new_ca, "worker").write(mine.client_cert("worker"), mine.client_key("worker"))
    issue_client(new_ca, "admin").write(certs.client_cert("admin"), certs.client_key("admin"))

    restarted = procs.server_at(mtls_server.address, *certs.server_flags())
    with sdk(restarted, certs) as client:
        wait_for(lambda: [w.name for w in client.workers()] == ["rotating"], what="the worker back over the new CA")
        execution = client.submit("echo", {"after": "rotation"})
        assert client.wait(execution.id) == {"after": "rotation"}
    assert worker.popen.poll() is None
