"""Mutual TLS and identities together, end to end: a real server with dev-certs certificates and an auth
file that maps their SANs (spiffe://taskwire/NAME) to identities; a real worker known by its certificate
alone; a submitter and an admin by theirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskwire.client import Client, PermissionDenied, State, tls_credentials
from taskwire.client._dev_certs import DevCerts, write_dev_certs
from tests.harness import Cluster, ServerProcess, wait_for

pytestmark = pytest.mark.timeout(120)

AUTH = """
[[identity]]
name = "worker"
role = "worker"
sans = ["spiffe://taskwire/worker"]

[[identity]]
name = "ci"
role = "submitter"
sans = ["spiffe://taskwire/ci"]

[[identity]]
name = "admin"
role = "admin"
sans = ["spiffe://taskwire/admin"]
"""


@pytest.fixture
def pki(tmp_path: Path) -> DevCerts:
    return write_dev_certs(tmp_path / "certs", clients=("worker", "ci", "admin"))


@pytest.fixture
def server(procs: Cluster, pki: DevCerts, tmp_path: Path) -> ServerProcess:
    (tmp_path / "auth.toml").write_text(AUTH)
    return procs.server(*pki.server_flags(), "--auth-file", str(tmp_path / "auth.toml"))


def _client(server: ServerProcess, pki: DevCerts, name: str) -> Client:
    credentials = tls_credentials(ca=pki.ca, cert=pki.client_cert(name), key=pki.client_key(name))
    return Client(server.address, credentials=credentials)


def test_each_certificate_is_its_identity(procs: Cluster, server: ServerProcess, pki: DevCerts) -> None:
    server.process.wait_for_line(r"\(mutual TLS, store: .*authentication on: 3 identities")
    tls_env = {
        "TASKWIRE_TLS_CA": str(pki.ca),
        "TASKWIRE_TLS_CERT": str(pki.client_cert("worker")),
        "TASKWIRE_TLS_KEY": str(pki.client_key("worker")),
    }
    procs.worker(server, name="by-certificate", env=tls_env)  # no token: its certificate is its credential
    with _client(server, pki, "ci") as ci, _client(server, pki, "admin") as admin, _client(server, pki, "worker") as w:
        wait_for(lambda: [info.name for info in admin.workers()] == ["by-certificate"], what="the worker")
        execution = ci.submit("echo", {"who": "ci"})
        assert ci.wait(execution.id) == {"who": "ci"}
        assert [s.id for s in ci.list()] == [execution.id]
        with pytest.raises(PermissionDenied, match="role submitter may not call ListWorkers"):
            ci.workers()
        with pytest.raises(PermissionDenied, match="role worker may not call StreamSubmits"):
            w.submit("echo", {})
        assert admin.get(execution.id).state is State.SUCCESS
    server.process.wait_for_line(r"audit action=denied identity=worker method=StreamSubmits")
