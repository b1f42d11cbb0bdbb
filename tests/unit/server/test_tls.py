"""The server's TLS files and its listen rule, without a network: what is taken after a change, and where
plaintext is allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskwire.client._dev_certs import issue_server, make_ca, write_dev_certs
from taskwire.server import ServerConfig
from taskwire.server._tls import CertificateFiles, TlsFileError, is_loopback, listen_refusal


@pytest.fixture
def files(tmp_path: Path) -> CertificateFiles:
    certs = write_dev_certs(tmp_path, clients=["admin"])
    return CertificateFiles(cert=certs.server_cert, key=certs.server_key, client_ca=certs.ca)


def _touch_later(path: Path) -> None:
    """A newer mtime, as a write a little later would leave (file systems' clocks are coarse)."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def test_unchanged_files_give_no_new_configuration(files: CertificateFiles) -> None:
    files.credentials()
    assert files._fetch() is None
    _touch_later(files.cert)  # touched, same bytes
    assert files._fetch() is None
    assert files.reloads == 0


def test_a_changed_pair_is_taken_and_a_half_rotated_one_waits(files: CertificateFiles) -> None:
    files.credentials()
    new = issue_server(make_ca("next"))
    files.cert.write_bytes(new.cert_pem)  # the certificate first: it does not match the old key yet
    _touch_later(files.cert)
    assert files._fetch() is None
    assert files._fetch() is None  # the same half-rotated files are not tried again
    files.key.write_bytes(new.key_pem)
    _touch_later(files.key)
    assert files._fetch() is not None
    assert files.reloads == 1
    assert files._fetch() is None


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("cert", b"not a certificate", "holds no PEM certificate"),
        ("key", b"not a key", "holds no unencrypted PEM private key"),
        ("client_ca", b"", "holds no PEM certificate"),
    ],
)
def test_unusable_files_are_refused_at_start_naming_the_file(
    files: CertificateFiles, which: str, content: bytes, message: str
) -> None:
    path: Path = getattr(files, which)
    path.write_bytes(content)
    with pytest.raises(TlsFileError, match=message) as refused:
        files.credentials()
    assert str(path) in str(refused.value)


def test_a_missing_file_is_refused_at_start(files: CertificateFiles) -> None:
    files.key.unlink()
    with pytest.raises(TlsFileError, match="cannot read the TLS key"):
        files.credentials()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("[::]", False),
        ("", False),
        ("192.0.2.1", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_off_loopback_needs_tls_and_credentials_or_insecure(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    assert listen_refusal(ServerConfig(listen="127.0.0.1:0")) is None
    refused = listen_refusal(ServerConfig(listen="0.0.0.0:0"))
    assert refused is not None
    assert "without TLS (--tls-cert and --tls-key) and credentials (--auth-file)" in refused
    tls_only = listen_refusal(ServerConfig(listen="0.0.0.0:0", tls_cert=pem, tls_key=pem))
    assert tls_only is not None
    assert "without credentials (--auth-file)" in tls_only
    assert listen_refusal(ServerConfig(listen="0.0.0.0:0", tls_cert=pem, tls_key=pem, auth_file=pem)) is None
    assert listen_refusal(ServerConfig(listen="0.0.0.0:0", insecure=True)) is None


def test_config_pairs_the_tls_files(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    with pytest.raises(ValueError, match="a TLS certificate needs its key"):
        ServerConfig(tls_cert=pem)
    with pytest.raises(ValueError, match="client CA"):
        ServerConfig(tls_client_ca=pem)
