"""Mutual TLS with real certificates on loopback: who the server lets in, and who it keeps out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskwire.client._dev_certs import DevCerts, Issued, issue_client, issue_server, make_ca
from tests.harness import BIN, ServerProcess, spawn
from tests.integration.security.conftest import client_files, credentials, health_check

pytestmark = pytest.mark.timeout(60)


def test_a_client_certificate_from_the_trusted_ca_is_let_in(mtls_server: ServerProcess, certs: DevCerts) -> None:
    assert health_check(mtls_server.address, credentials(certs.ca, client_files(certs, "admin"))) is grpc.StatusCode.OK


def test_a_client_without_a_certificate_is_refused(mtls_server: ServerProcess, certs: DevCerts) -> None:
    assert health_check(mtls_server.address, credentials(certs.ca)) is grpc.StatusCode.UNAVAILABLE
    # The same server, the same moment, with a certificate: it was the missing certificate that was refused.
    assert health_check(mtls_server.address, credentials(certs.ca, client_files(certs, "admin"))) is grpc.StatusCode.OK


def test_a_certificate_from_another_ca_is_refused(mtls_server: ServerProcess, certs: DevCerts) -> None:
    stranger = issue_client(make_ca("another CA"), "admin")  # same name, wrong issuer
    assert health_check(mtls_server.address, credentials(certs.ca, stranger)) is grpc.StatusCode.UNAVAILABLE


def test_an_expired_certificate_is_refused(mtls_server: ServerProcess, certs: DevCerts) -> None:
    ca = Issued.load(certs.ca, certs.ca_key)
    now = datetime.now(UTC)
    expired = issue_client(ca, "admin", not_before=now - timedelta(days=2), not_after=now - timedelta(days=1))
    assert health_check(mtls_server.address, credentials(certs.ca, expired)) is grpc.StatusCode.UNAVAILABLE
    fresh = issue_client(ca, "admin")
    assert health_check(mtls_server.address, credentials(certs.ca, fresh)) is grpc.StatusCode.OK


def test_a_plaintext_client_is_refused(mtls_server: ServerProcess) -> None:
    with grpc.insecure_channel(mtls_server.address) as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_client_refuses_a_server_its_ca_did_not_sign(mtls_server: ServerProcess, certs: DevCerts) -> None:
    other = make_ca("another CA")
    assert health_check(mtls_server.address, credentials(other.cert_pem, client_files(certs, "admin"))) is (
        grpc.StatusCode.UNAVAILABLE
    )


def test_rotated_server_certificate_and_client_ca_are_used_without_a_restart(
    mtls_server: ServerProcess, certs: DevCerts
) -> None:
    old_admin = client_files(certs, "admin")
    assert health_check(mtls_server.address, credentials(certs.ca, old_admin)) is grpc.StatusCode.OK
    old_ca = certs.ca.read_bytes()
    # An open connection made before the rotation.
    kept = grpc.secure_channel(mtls_server.address, credentials(certs.ca, old_admin))
    health = health_pb2_grpc.HealthStub(kept)
    health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    # Rotate everything to a new CA, in place: the server certificate with its key, and the client CA.
    new_ca = make_ca("the next CA")
    issue_server(new_ca).write(certs.server_cert, certs.server_key)
    new_ca.write(certs.ca, certs.ca_key)
    new_admin = issue_client(new_ca, "admin")

    # New connections see the new certificate: trusting only the old CA now fails, the new one works ...
    assert health_check(mtls_server.address, credentials(old_ca, old_admin)) is grpc.StatusCode.UNAVAILABLE
    assert health_check(mtls_server.address, credentials(new_ca.cert_pem, new_admin)) is grpc.StatusCode.OK
    # ... and the new client CA is required: a client certificate of the old CA is refused.
    assert health_check(mtls_server.address, credentials(new_ca.cert_pem, old_admin)) is grpc.StatusCode.UNAVAILABLE
    mtls_server.process.wait_for_line("TLS certificate files changed: new connections use the new ones")
    # Same process all along, and the connection opened before the rotation still works.
    assert mtls_server.process.popen.poll() is None
    health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    kept.close()


def test_a_key_that_is_not_the_certificates_stops_the_start_in_one_line(tmp_path: Path, certs: DevCerts) -> None:
    args = ["--listen", "127.0.0.1:0", "--db", str(tmp_path / "t.db")]
    args += ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.client_key("admin"))]
    process = spawn([str(BIN / "taskwire-server"), *args])
    assert process.wait() == 1
    assert process.output == (
        f"taskwire-server: cannot start: the key {str(certs.client_key('admin'))!r} does not belong to the "
        f"certificate {str(certs.server_cert)!r}"
    )
