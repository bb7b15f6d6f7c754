"""TLS for the daemon's gRPC port (ADS and the status API), from PEM files that are read again when
they change: a certificate rotated by the CA reconciler or cert-manager is served to the next
connection without a restart.

gRPC asks for the configuration at each new connection (``dynamic_ssl_server_credentials``); the
files' sizes and modification times decide whether they are read again, and a rotation caught half
written (a key that does not match its certificate yet) keeps the previous configuration.
"""
from __future__ import annotations

import os
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = structlog.get_logger("galleon.tls")


class TlsError(Exception):
    """The TLS files cannot be used; the message says which and why, in one line."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{what} {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TlsError(f"{what} {path} is empty")
    return data


def check_pair(cert_pem: bytes, key_pem: bytes, cert: Path, key: Path) -> None:
    """Raise TlsError unless ``key`` is the private key of the first certificate of ``cert``."""
    try:
        certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError as exc:
        raise TlsError(f"--tls-cert {cert}: not a PEM certificate ({exc})") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"--tls-key {key}: not an unencrypted PEM private key ({exc})") from None
    public = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
    if public(private.public_key()) != public(certificate.public_key()):
        raise TlsError(f"--tls-key {key} is not the key of the certificate in --tls-cert {cert}")


def check_bundle(ca_pem: bytes, path: Path) -> None:
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise TlsError(f"--client-ca {path}: not a PEM certificate bundle ({exc})") from None


class ReloadingCredentials:
    """The server's TLS credentials from ``cert``, ``key`` and (for mutual TLS) ``client_ca``."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp = self._stamps()
        self._initial = self._load()  # raises TlsError: a bad file at start is an error now

    def _stamps(self) -> tuple:
        stamps = []
        for path in (self.cert, self.key, self.client_ca):
            try:
                stat = os.stat(path) if path is not None else None
                stamps.append((stat.st_size, stat.st_mtime_ns, stat.st_ino) if stat else None)
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _load(self):
        cert_pem, key_pem = _read(self.cert, "--tls-cert"), _read(self.key, "--tls-key")
        check_pair(cert_pem, key_pem, self.cert, self.key)
        ca_pem = None
        if self.client_ca is not None:
            ca_pem = _read(self.client_ca, "--client-ca")
            check_bundle(ca_pem, self.client_ca)
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=ca_pem)

    def _fetch(self):
        """gRPC's question at a new connection: a new configuration, or None to keep the one it has."""
        stamp = self._stamps()
        if stamp == self._stamp:
            return None
        try:
            config = self._load()
        except TlsError as exc:
            log.error("TLS files changed but cannot be used; serving the previous certificate", error=str(exc))
            return None
        self._stamp = stamp
        log.info("TLS certificate reloaded", cert=str(self.cert))
        return config

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._initial, self._fetch,
                                                   require_client_authentication=self.client_ca is not None)
