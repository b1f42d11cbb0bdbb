"""Client-side TLS: channel credentials from certificate files, for the SDK, the CLI and the worker agent.

The one place that turns a CA file, a client certificate and its key into `grpc.ChannelCredentials`,
and the `--tls-*` options (with their environment variables) that `taskwire` and `taskwire-worker` share.
Files are read when credentials are made, so a worker that makes them again on each reconnect picks up
a rotated certificate without a restart.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import ssl
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import grpc

from ._arguments import env_flag

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

CA_ENV = "TASKWIRE_TLS_CA"
CERT_ENV = "TASKWIRE_TLS_CERT"
KEY_ENV = "TASKWIRE_TLS_KEY"
SERVER_NAME_ENV = "TASKWIRE_TLS_SERVER_NAME"
TLS_ENV = "TASKWIRE_TLS"


class TlsConfigError(ValueError):
    """A TLS option is missing its partner, or a file cannot be read."""


def read_tls_file(path: Path, what: str) -> bytes:
    """The bytes of a TLS file; TlsConfigError naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read the TLS {what} {str(path)!r}: {error.strerror or error}") from None


# PEM certificate blocks, OpenSSL's TRUSTED CERTIFICATE too (a certificate followed by its trust settings).
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN (TRUSTED )?CERTIFICATE-----(.*?)-----END (?:TRUSTED )?CERTIFICATE-----", re.DOTALL
)


class Damaged:
    """A PEM certificate block that TLS does not read: not base64 of a DER certificate."""


DAMAGED: Final = Damaged()


def _der_sequence(der: bytes) -> bytes | None:
    """The DER SEQUENCE at the start of `der`, whole; None when `der` does not start with one."""
    if len(der) < 2 or der[0] != 0x30:
        return None
    length, start = der[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or len(der) < 2 + count:
            return None
        length, start = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    end = start + length
    return der[:end] if end <= len(der) else None


def _openssl_reads(der: bytes) -> bool:
    """Whether OpenSSL reads the DER certificate: the judge of one cryptography does not parse (a legacy one)."""
    try:
        ssl.create_default_context(cadata=der)
    except ssl.SSLError:
        return False
    return True


def _certificates(data: bytes) -> Iterator[Certificate | Damaged | None]:
    """Each PEM certificate block of `data` in order: parsed; DAMAGED; or None, a legacy certificate that
    cryptography does not parse and OpenSSL reads."""
    from cryptography import x509  # here: loaded only when TLS files are given

    for block in _PEM_CERTIFICATE.finditer(data):
        try:
            der = base64.b64decode(block.group(2), validate=False)
        except binascii.Error:
            yield DAMAGED
            continue
        sequence = _der_sequence(der)
        trusted = bool(block.group(1))  # the certificate's own SEQUENCE, then its trust settings
        if sequence is None or (not trusted and sequence != der):
            yield DAMAGED
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cryptography's deprecation warnings about legacy certificates
            try:
                certificate: Certificate | None = x509.load_der_x509_certificate(sequence)
            except ValueError:
                certificate = None
        yield certificate if certificate is not None or _openssl_reads(sequence) else DAMAGED


def check_certificates(data: bytes, path: Path) -> None:
    """`data` (read from `path`) holds PEM certificates, at least one that parses and none damaged: TLS libraries load
    a file's certificates up to the first they cannot read, and would silently trust none of those after it."""
    parsed = False
    for number, certificate in enumerate(_certificates(data), 1):
        if isinstance(certificate, Damaged):
            raise TlsConfigError(
                f"{str(path)!r}: its certificate block {number} is damaged (not base64 of a DER certificate); "
                "TLS would load no certificate from there on"
            )
        parsed = parsed or certificate is not None
    if not parsed:
        raise TlsConfigError(f"{str(path)!r} holds no PEM certificate")


def check_pair(cert: bytes, cert_path: Path, key: bytes, key_path: Path) -> None:
    """The certificate chain (none of it damaged) and the key parse, and the key is that of the chain's first
    certificate."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    check_certificates(cert, cert_path)
    leaf = next(_certificates(cert))
    if leaf is None or isinstance(leaf, Damaged):
        raise TlsConfigError(f"{str(cert_path)!r}: its first certificate cannot be read")
    try:
        # Only its public key is compared here (TLS checks the key itself): the RSA checks would cost milliseconds.
        private_key = serialization.load_pem_private_key(key, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TlsConfigError(f"{str(key_path)!r} holds no unencrypted PEM private key") from None
    try:
        certified = leaf.public_key()
    except UnsupportedAlgorithm:
        raise TlsConfigError(f"{str(cert_path)!r} holds a certificate of a key type that cannot be used") from None
    if certified != private_key.public_key():
        raise TlsConfigError(f"the key {str(key_path)!r} does not belong to the certificate {str(cert_path)!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Where a client's TLS material lives.

    `ca`: the certificates to trust for the server (None: the system's roots). `cert` and `key`: the
    client certificate and its private key, for a server that requires mutual TLS (both or neither).
    `server_name`: the name to check the server's certificate against when it differs from the host
    dialled (an address the certificate does not list, as in tests).
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsConfigError("a client certificate needs its key and a key its certificate: give both or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        """Credentials from the files as they are now; TlsConfigError when one cannot be read or does not hold
        what it should (gRPC itself would take any bytes, and fail each handshake)."""
        ca = cert = key = None
        if self.ca is not None:
            ca = read_tls_file(self.ca, "CA file")
            check_certificates(ca, self.ca)
        if self.cert is not None and self.key is not None:  # both or neither (checked when made)
            key = read_tls_file(self.key, "key file")
            cert = read_tls_file(self.cert, "certificate file")
            check_pair(cert, self.cert, key, self.key)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options that go with the credentials (the server name override)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def tls_credentials(
    *, ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials for `Client(credentials=...)` / `AsyncClient(credentials=...)`.

    `ca` is the CA certificate that signed the server's (default: the system's roots); `cert` and `key`
    are the client certificate and key for a server that requires mutual TLS.

        Client("server.example:50051", credentials=tls_credentials(ca="ca.pem", cert="admin.pem", key="admin.key"))
    """

    def path(value: str | Path | None) -> Path | None:
        return None if value is None else Path(value)

    return TlsFiles(ca=path(ca), cert=path(cert), key=path(key)).credentials()


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """The client `--tls-*` options; their defaults are left unset so `tls_from_args` can read the environment."""
    group = parser.add_argument_group("TLS (any of these turns TLS on)")
    add = group.add_argument
    add("--tls", action="store_true", default=argparse.SUPPRESS, help=f"use TLS with the system's roots [{TLS_ENV}=1]")
    add("--tls-ca", metavar="FILE", default=argparse.SUPPRESS, help=f"the CA that signed the server's [{CA_ENV}]")
    add(
        "--tls-cert",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"client certificate, for a server that requires mutual TLS [{CERT_ENV}]",
    )
    add("--tls-key", metavar="FILE", default=argparse.SUPPRESS, help=f"the client certificate's key [{KEY_ENV}]")
    add(
        "--tls-server-name",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"check the server's certificate against NAME instead of the host dialled [{SERVER_NAME_ENV}]",
    )


def tls_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> TlsFiles | None:
    """The TLS files the options (or else the environment) name; None for a plaintext connection."""
    environ = os.environ if env is None else env

    def value(attribute: str, name: str) -> str | None:
        given = getattr(args, attribute, None)
        return given if given else (environ.get(name) or None)

    ca, cert, key = value("tls_ca", CA_ENV), value("tls_cert", CERT_ENV), value("tls_key", KEY_ENV)
    server_name = value("tls_server_name", SERVER_NAME_ENV)
    try:
        wanted = getattr(args, "tls", False) or env_flag(TLS_ENV, environ)
    except ValueError as error:
        raise TlsConfigError(str(error)) from None
    if not (wanted or ca or cert or key):
        return None
    return TlsFiles(
        ca=Path(ca) if ca else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
        server_name=server_name,
    )
