"""Transport security of the server: TLS credentials that follow their files, and the secure-by-default rule.

`CertificateFiles` gives gRPC dynamic credentials: before each new connection's handshake gRPC asks it for
the certificate configuration, and it answers with a new one when the certificate, key or client CA files
have changed (their stat first, then their bytes), so a rotation needs no restart. Connections already
open keep the certificate they were made with. A set of files that does not make a valid pair (a
certificate replaced before its key) is not taken: the last good configuration stays until it does.

`listen_refusal` says why the server will not listen where it was asked: plaintext or unauthenticated
service is for loopback only, unless the operator says `--insecure`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from taskwire.common.tls import TlsConfigError, check_certificates, check_pair, read_tls_file

from ._config import ServerConfig

log = logging.getLogger(__name__)


class TlsFileError(ValueError):
    """A TLS file is missing, unreadable, or does not hold what it should."""


@dataclass(frozen=True, slots=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None


class CertificateFiles:
    """The server's certificate, key and (for mutual TLS) client CA files, re-read when they change."""

    def __init__(self, *, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._lock = threading.Lock()  # gRPC calls the fetcher from its own threads
        self._stamp: tuple[tuple[int, int, int], ...] = ()
        self._material: _Material | None = None
        self._refused: tuple[tuple[int, int, int], ...] = ()
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def _paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.client_ca is None else (self.cert, self.key, self.client_ca)

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths():
            try:
                status = os.stat(path)
            except OSError:
                return ()  # missing for the moment (being replaced): look again next time
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(stamps)

    def _load(self) -> _Material:
        """The files' bytes: the certificate chain and key parse, and the key is the certificate's; the client CA
        holds certificates, none damaged."""
        try:
            cert, key = read_tls_file(self.cert, "certificate"), read_tls_file(self.key, "key")
            check_pair(cert, self.cert, key, self.key)
            client_ca = None
            if self.client_ca is not None:
                client_ca = read_tls_file(self.client_ca, "client CA")
                check_certificates(client_ca, self.client_ca)
        except TlsConfigError as error:
            raise TlsFileError(str(error)) from None
        return _Material(cert=cert, key=key, client_ca=client_ca)

    @staticmethod
    def _configuration(material: _Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.client_ca
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials from the files as they are now (TlsFileError if they are not usable), that
        follow the files from then on."""
        with self._lock:
            self._stamp = self._stat()
            self._material = self._load()
            initial = self._configuration(self._material)
        # The stubs say the fetcher returns a configuration; gRPC documents None as "no change".
        return grpc.dynamic_ssl_server_credentials(
            initial,
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration when the files changed, else None."""
        with self._lock:
            stamp = self._stat()
            if not stamp or stamp in (self._stamp, self._refused):
                return None
            try:
                material = self._load()
            except TlsFileError as error:
                # Keep serving with the last good files; the next change (the rest of the rotation) is tried.
                self._refused = stamp
                log.warning("TLS files changed but are not usable (%s); keeping the previous ones", error)
                return None
            self._stamp = stamp
            if material == self._material:
                return None
            self._material = material
            self.reloads += 1
            log.info("TLS certificate files changed: new connections use the new ones")
            return self._configuration(material)


def server_credentials(config: ServerConfig) -> tuple[grpc.ServerCredentials | None, CertificateFiles | None]:
    """The credentials to serve with (None: plaintext), and the files they follow."""
    if config.tls_cert is None or config.tls_key is None:
        return None, None
    files = CertificateFiles(cert=config.tls_cert, key=config.tls_key, client_ca=config.tls_client_ca)
    return files.credentials(), files


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (an empty host, or a wildcard, is not)."""
    name = host.strip("[]")
    if not name:
        return False
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def listen_refusal(config: ServerConfig) -> str | None:
    """Why the server must not listen on `config.listen` as configured, in one line; None when it may."""
    if config.insecure:
        return None
    host = config.listen.rpartition(":")[0]
    if is_loopback(host):
        return None
    missing = [
        what
        for what, absent in (
            ("TLS (--tls-cert and --tls-key)", config.tls_cert is None),
            ("credentials (--auth-file)", config.auth_file is None),
        )
        if absent
    ]
    if not missing:
        return None
    return (
        f"refusing to listen on {config.listen} without {' and '.join(missing)}: outside loopback anyone "
        "who reaches the port could run code on the workers; configure them, or pass --insecure"
    )
