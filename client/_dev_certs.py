"""`taskwire dev-certs`: a local certificate authority with a server certificate and client certificates.

For trying mutual TLS on one machine or a test network, not for production (use your own PKI there).
Keys are ECDSA P-256; every private key file is written with mode 0600.

A client certificate names its holder twice: the URI SAN `spiffe://taskwire/NAME` and the common name
NAME. The server's identity configuration maps the URI SAN to an identity.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The URI SAN of a client certificate: `spiffe://taskwire/` followed by the client's name.
CLIENT_URI_PREFIX = "spiffe://taskwire/"
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_CLIENTS = ("worker", "admin")
DEFAULT_VALIDITY = timedelta(days=365)
# Clocks of the machines that check a certificate may be a little behind the one that made it.
_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Issued:
        """A certificate and its EC key as `write` left them (to issue more from a CA made earlier)."""
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} holds no EC private key")
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """The certificate (mode 0644) and the key (mode 0600), each replaced in one rename."""
        _write(key_path, self.key_pem, mode=0o600)
        _write(cert_path, self.cert_pem, mode=0o644)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    # Written beside the target and renamed over it: a reader never sees half a file, and the key is
    # never readable by others, not even for a moment.
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.chmod(temporary, mode)  # the umask may have taken bits away
    os.replace(temporary, path)


def _name(common_name: str) -> x509.Name:
    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "taskwire")
    return x509.Name([organization, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start = not_before if not_before is not None else now - _BACKDATE
    return start, not_after if not_after is not None else now + DEFAULT_VALIDITY


def make_ca(
    common_name: str = "taskwire dev CA", *, not_before: datetime | None = None, not_after: datetime | None = None
) -> Issued:
    """A self-signed certificate authority that may sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(not_before, not_after)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name)


def _issue(
    ca: Issued,
    *,
    common_name: str,
    names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_before: datetime | None,
    not_after: datetime | None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(not_before, not_after)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue_server(
    ca: Issued, hosts: Iterable[str] = (), *, not_before: datetime | None = None, not_after: datetime | None = None
) -> Issued:
    """A server certificate for localhost, 127.0.0.1 and ::1, and `hosts` (DNS names or IP addresses)."""
    names = list(dict.fromkeys([*SERVER_NAMES, *hosts]))
    return _issue(
        ca,
        common_name=names[0],
        names=[_san(name) for name in names],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        not_before=not_before,
        not_after=not_after,
    )


def issue_client(
    ca: Issued, name: str, *, not_before: datetime | None = None, not_after: datetime | None = None
) -> Issued:
    """A client certificate for `name`: URI SAN `spiffe://taskwire/NAME`, common name NAME."""
    return _issue(
        ca,
        common_name=name,
        names=[x509.UniformResourceIdentifier(client_uri(name))],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        not_before=not_before,
        not_after=not_after,
    )


def client_uri(name: str) -> str:
    if not name or "/" in name or any(c.isspace() for c in name):
        raise ValueError(f"a client name is one word without '/', got {name!r}")
    return CLIENT_URI_PREFIX + name


@dataclass(frozen=True, slots=True)
class DevCerts:
    """Where `write_dev_certs` put the files."""

    directory: Path
    clients: tuple[str, ...] = field(default=DEFAULT_CLIENTS)

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def client_cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def server_flags(self) -> list[str]:
        return [
            "--tls-cert",
            str(self.server_cert),
            "--tls-key",
            str(self.server_key),
            "--tls-client-ca",
            str(self.ca),
        ]

    def client_flags(self, name: str) -> list[str]:
        cert, key = self.client_cert(name), self.client_key(name)
        return ["--tls-ca", str(self.ca), "--tls-cert", str(cert), "--tls-key", str(key)]


def write_dev_certs(
    directory: Path, *, hosts: Sequence[str] = (), clients: Sequence[str] = DEFAULT_CLIENTS
) -> DevCerts:
    """A new CA in `directory` (created if missing, mode 0700) with a server certificate and one client
    certificate per name. Existing files of the same names are replaced."""
    names = tuple(dict.fromkeys(clients))
    for name in names:
        client_uri(name)  # a bad name fails before anything is written
    for name in ("ca", "server"):
        if name in names:
            raise ValueError(f"a client cannot be named {name!r}: its files would overwrite the {name}'s")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    certs = DevCerts(directory.resolve(), names)
    ca = make_ca()
    ca.write(certs.ca, certs.ca_key)
    issue_server(ca, hosts).write(certs.server_cert, certs.server_key)
    for name in names:
        issue_client(ca, name).write(certs.client_cert(name), certs.client_key(name))
    return certs


def usage_text(certs: DevCerts, *, server: str = "127.0.0.1:50051") -> str:
    """What to run with the files: the server, a worker and the CLI over mutual TLS."""
    worker, admin = certs.clients[0], certs.clients[-1]
    flags = " ".join(certs.server_flags())
    clients = ", ".join(certs.clients)
    worker_flags = " ".join(certs.client_flags(worker))
    return "\n".join(
        [
            f"wrote a CA, a server certificate and client certificates for {clients} to {certs.directory}",
            "(keys are readable by their owner only; each client's certificate has the URI SAN "
            f"{CLIENT_URI_PREFIX}NAME)",
            "",
            "server:",
            f"  taskwire-server --listen {server} {flags}",
            f"worker ({worker}):",
            f"  taskwire-worker --server {server} --handlers taskwire.worker.demo {worker_flags}",
            f"CLI ({admin}):",
            f"  taskwire --server {server} {' '.join(certs.client_flags(admin))} stats",
            "or set them once for the CLI:",
            f"  export TASKWIRE_TLS_CA={certs.ca} TASKWIRE_TLS_CERT={certs.client_cert(admin)} "
            f"TASKWIRE_TLS_KEY={certs.client_key(admin)}",
        ]
    )
