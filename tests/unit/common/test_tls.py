"""The client TLS options the CLI and the worker share: flags first, then the environment; files read when
credentials are made."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from taskwire.client._dev_certs import write_dev_certs
from taskwire.common.tls import TlsConfigError, TlsFiles, add_tls_arguments, tls_credentials, tls_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tls_arguments(parser)
    return parser.parse_args(argv)


def test_no_option_and_no_environment_is_plaintext() -> None:
    assert tls_from_args(parse(), env={}) is None
    assert tls_from_args(parse(), env={"TASKWIRE_TLS_SERVER_NAME": "x"}) is None


def test_flags_win_over_the_environment() -> None:
    env = {"TASKWIRE_TLS_CA": "env-ca.pem", "TASKWIRE_TLS_CERT": "env.pem", "TASKWIRE_TLS_KEY": "env.key"}
    assert tls_from_args(parse(), env=env) == TlsFiles(ca=Path("env-ca.pem"), cert=Path("env.pem"), key=Path("env.key"))
    assert tls_from_args(parse("--tls-ca", "ca.pem", "--tls-server-name", "srv"), env=env) == TlsFiles(
        ca=Path("ca.pem"), cert=Path("env.pem"), key=Path("env.key"), server_name="srv"
    )


@pytest.mark.parametrize("argv", [("--tls",), ()])
def test_tls_with_the_system_roots(argv: tuple[str, ...]) -> None:
    env = {} if argv else {"TASKWIRE_TLS": "1"}
    assert tls_from_args(parse(*argv), env=env) == TlsFiles()


def test_a_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(TlsConfigError, match="needs its key"):
        tls_from_args(parse("--tls-cert", "me.pem"), env={})


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TlsConfigError, match=r"cannot read the TLS CA file '.*nope\.pem'"):
        tls_credentials(ca=missing)


def test_credentials_and_the_server_name_option(tmp_path: Path) -> None:
    certs = write_dev_certs(tmp_path, clients=["admin"])
    ca = certs.ca
    assert isinstance(tls_credentials(ca=ca), grpc.ChannelCredentials)
    assert isinstance(
        tls_credentials(ca=ca, cert=certs.client_cert("admin"), key=certs.client_key("admin")), grpc.ChannelCredentials
    )
    assert TlsFiles(ca=ca, server_name="localhost").channel_options() == [
        ("grpc.ssl_target_name_override", "localhost")
    ]
    assert TlsFiles(ca=ca).channel_options() == []


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("ca", b"not a certificate", "holds no PEM certificate"),
        ("ca", b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "certificate block 1 is damaged"),
        ("cert", b"", "holds no PEM certificate"),
        (
            "key",
            b"-----BEGIN PRIVATE KEY-----\njunk\n-----END PRIVATE KEY-----\n",
            "holds no unencrypted PEM private key",
        ),
    ],
)
def test_files_that_do_not_hold_what_they_should_are_named(
    tmp_path: Path, which: str, content: bytes, message: str
) -> None:
    """Refused when the credentials are made (a worker's start, the CLI's call), not at each handshake."""
    certs = write_dev_certs(tmp_path, clients=["admin"])
    files = {"ca": certs.ca, "cert": certs.client_cert("admin"), "key": certs.client_key("admin")}
    files[which].write_bytes(content)
    with pytest.raises(TlsConfigError, match=message) as refused:
        tls_credentials(**files)
    assert str(files[which]) in str(refused.value)


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    certs = write_dev_certs(tmp_path, clients=["admin", "viewer"])
    with pytest.raises(
        TlsConfigError, match=r"the key '.*viewer\.key' does not belong to the certificate '.*admin\.pem'"
    ):
        tls_credentials(ca=certs.ca, cert=certs.client_cert("admin"), key=certs.client_key("viewer"))


def _pem(der: bytes, kind: str = "CERTIFICATE") -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN " + kind.encode() + b"-----\n" + body + b"-----END " + kind.encode() + b"-----\n"


def _der(pem: bytes) -> bytes:
    return base64.b64decode(b"".join(pem.splitlines()[1:-1]))


def test_a_bundle_is_taken_whole_with_its_legacy_and_trusted_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A certificate cryptography does not parse (a bundle's legacy one) is OpenSSL's to judge; OpenSSL's TRUSTED
    CERTIFICATE (a certificate, then its trust settings) is read."""
    first, second = (write_dev_certs(tmp_path / name, clients=[]).ca.read_bytes() for name in ("a", "b"))
    legacy = _der(first)
    real = x509.load_der_x509_certificate

    def refuses_the_legacy_one(der: bytes) -> x509.Certificate:
        if der == legacy:
            raise ValueError("an encoding cryptography does not accept")
        return real(der)

    monkeypatch.setattr(x509, "load_der_x509_certificate", refuses_the_legacy_one)
    trusted = _pem(_der(second) + bytes([0x30, 0x00]), "TRUSTED CERTIFICATE")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# comments between blocks\n" + first + second + trusted)
    assert isinstance(tls_credentials(ca=bundle), grpc.ChannelCredentials)
    bundle.write_bytes(trusted)
    assert isinstance(tls_credentials(ca=bundle), grpc.ChannelCredentials)
    bundle.write_bytes(first)  # read by OpenSSL, but no certificate of it parses here
    with pytest.raises(TlsConfigError, match="holds no PEM certificate"):
        tls_credentials(ca=bundle)


@pytest.mark.parametrize(
    "damaged",
    [
        b"-----BEGIN CERTIFICATE-----\nnot der\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n",  # a SEQUENCE cut short
        b"-----BEGIN TRUSTED CERTIFICATE-----\nMIIB\n-----END TRUSTED CERTIFICATE-----\n",
        _pem(bytes([0x30, 0x03, 0x02, 0x01, 0x01])),  # well-formed DER, not a certificate
        _pem(bytes([0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00])),  # an indefinite length, which DER does not allow
        _pem(bytes([0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x01, 0x00])),  # a byte after the SEQUENCE
    ],
)
def test_a_damaged_block_is_refused_naming_it_since_tls_would_load_nothing_after_it(
    tmp_path: Path, damaged: bytes
) -> None:
    """gRPC loads a CA file's certificates up to the first block it cannot read: a damaged block first leaves it no
    root at all (every handshake fails), and one later silently drops the certificates after it."""
    ca = write_dev_certs(tmp_path, clients=[]).ca.read_bytes()
    bundle = tmp_path / "bundle.pem"
    for content, number in [(damaged + ca, 1), (ca + damaged + ca, 2), (damaged, 1)]:
        bundle.write_bytes(content)
        with pytest.raises(TlsConfigError, match=rf"bundle\.pem': its certificate block {number} is damaged"):
            tls_credentials(ca=bundle)


def test_the_systems_bundle_is_taken_without_a_warning(recwarn: pytest.WarningsRecorder) -> None:
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system.exists():
        pytest.skip("no system CA bundle here")
    assert isinstance(tls_credentials(ca=system), grpc.ChannelCredentials)
    assert not recwarn.list


def test_a_damaged_certificate_in_a_client_chain_is_refused(tmp_path: Path) -> None:
    certs = write_dev_certs(tmp_path, clients=["admin"])
    chain = certs.client_cert("admin")
    chain.write_bytes(chain.read_bytes() + b"-----BEGIN CERTIFICATE-----\nnot der\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsConfigError, match=r"admin\.pem': its certificate block 2 is damaged"):
        tls_credentials(ca=certs.ca, cert=chain, key=certs.client_key("admin"))
