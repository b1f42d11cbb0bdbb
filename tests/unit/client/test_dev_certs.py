"""`taskwire dev-certs`: the files it writes, what the certificates say, and the flags it prints."""

from __future__ import annotations

import io
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from taskwire.client._cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_writes_a_ca_a_server_and_the_default_clients(tmp_path: Path) -> None:
    code, out, err = run("dev-certs", str(tmp_path / "certs"), "--host", "tasks.example", "--host", "10.1.2.3")
    assert (code, err) == (0, "")
    directory = tmp_path / "certs"
    names = {"ca", "server", "worker", "admin"}
    assert {p.name for p in directory.iterdir()} == {f"{n}.{e}" for n in names for e in ("pem", "key")}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in names:
        assert stat.S_IMODE((directory / f"{name}.key").stat().st_mode) == 0o600

    ca = load(directory / "ca.pem")
    server = load(directory / "server.pem")
    assert server.issuer == ca.subject
    server_names = sans(server)
    assert server_names.get_values_for_type(x509.DNSName) == ["localhost", "tasks.example"]
    assert set(server_names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")
    }
    worker = load(directory / "worker.pem")
    assert sans(worker).get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://taskwire/worker"]
    usage = worker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    certs = directory.resolve()
    assert f"--tls-cert {certs}/server.pem --tls-key {certs}/server.key --tls-client-ca {certs}/ca.pem" in out
    assert f"--tls-ca {certs}/ca.pem --tls-cert {certs}/worker.pem --tls-key {certs}/worker.key" in out
    assert f"--tls-cert {certs}/admin.pem --tls-key {certs}/admin.key stats" in out


def test_named_clients(tmp_path: Path) -> None:
    assert run("dev-certs", str(tmp_path), "--client", "eu-1", "--client", "ci")[0] == 0
    assert (tmp_path / "eu-1.pem").exists()
    assert (tmp_path / "ci.key").exists()
    assert not (tmp_path / "admin.pem").exists()


@pytest.mark.parametrize(("name", "message"), [("a/b", "one word without '/'"), ("ca", "cannot be named 'ca'")])
def test_a_bad_client_name_is_a_usage_error_and_writes_nothing(tmp_path: Path, name: str, message: str) -> None:
    code, out, err = run("dev-certs", str(tmp_path / "certs"), "--client", name)
    assert code == 2
    assert out == ""
    assert err.startswith("taskwire: dev-certs: ")
    assert message in err
    assert not (tmp_path / "certs").exists()
