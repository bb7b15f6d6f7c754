"""The mesh's root of trust: ``root-cert.pem`` and ``root-key.pem`` in a directory, never in Git."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .errors import CAError
from .x509util import (ECDSA_P256, RSA_4096, PrivateKey, cert_pem, fingerprint, is_ca, key_pem, new_key,
                       same_public_key, signature_hash, utc)

CERT_FILE = "root-cert.pem"
KEY_FILE = "root-key.pem"
ALGORITHMS = {"rsa-4096": RSA_4096, "ecdsa-p256": ECDSA_P256}
LIFETIME = timedelta(days=3650)  # 10 years, Istio's tools/certs ROOTCA_DAYS
# Backdated so that a cluster whose clock runs a little behind ours already trusts a fresh root.
BACKDATE = timedelta(hours=1)


@dataclass(frozen=True)
class RootCA:
    cert: x509.Certificate
    key: PrivateKey

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @property
    def pem(self) -> str:
        return cert_pem(self.cert).decode()

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc


def init_root(directory: Path, algorithm: str, now: datetime) -> RootCA:
    """Create a self-signed root in ``directory`` (``algorithm`` is ``rsa-4096`` or ``ecdsa-p256``).

    Refuses to replace an existing root: that would split the mesh's trust (rotation is its own,
    phased, operation). The key file is created with mode 0600 in the same call that creates it.
    """
    if algorithm not in ALGORITHMS:
        raise CAError(f"unknown root key algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    directory = Path(directory)
    existing = [name for name in (CERT_FILE, KEY_FILE) if (directory / name).exists()]
    if existing:
        raise CAError(f"{directory} already holds a root CA ({', '.join(existing)}); refusing to overwrite it")
    key = new_key(ALGORITHMS[algorithm])
    root = RootCA(_self_signed(key, utc(now)), key)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CAError(f"cannot create {directory}: {exc.strerror}") from None
    key_path = directory / KEY_FILE
    _create(key_path, key_pem(key), 0o600)
    try:
        _create(directory / CERT_FILE, cert_pem(root.cert), 0o644)
    except CAError:
        key_path.unlink()  # a key without its certificate is no root; leave the directory as it was
        raise
    return root


def _self_signed(key: PrivateKey, now: datetime) -> x509.Certificate:
    # Istio's tools/certs root profile (O=Istio, CN=Root CA, CA:true critical, SKI), except the key
    # usages: keyCertSign and cRLSign are what a CA key does; keyEncipherment means nothing for an
    # EC key and strict verifiers reject it there. No pathlen: the intermediates limit themselves.
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Istio"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Root CA")])
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, signature_hash(key)))


def ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


def _create(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never follow or reuse a file someone put there; the mode applies from creation on,
    # and fchmod makes it exact whatever the umask (which can only take bits away).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise CAError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_root(directory: Path) -> RootCA:
    """The root in ``directory``; a ``CAError`` naming the file and the problem otherwise."""
    directory = Path(directory)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    return root_from_pem(_read(cert_path), _read(key_path), str(cert_path), str(key_path))


def root_from_pem(cert_data: bytes, key_data: bytes, cert_name: str, key_name: str) -> RootCA:
    """A root from its PEM certificate and key, wherever they were read (named in errors)."""
    certs = _parse(cert_data, cert_name, lambda data: x509.load_pem_x509_certificates(data), "a PEM certificate")
    if len(certs) != 1:
        raise CAError(f"{cert_name} holds {len(certs)} certificates; a root CA holds exactly one")
    key = _parse(key_data, key_name, lambda data: serialization.load_pem_private_key(data, password=None),
                 "an unencrypted PEM private key")
    cert = certs[0]
    if not isinstance(key, PrivateKey):
        raise CAError(f"{key_name} is a {type(key).__name__}; the root key must be RSA or ECDSA")
    if not same_public_key(cert.public_key(), key.public_key()):
        raise CAError(f"{key_name} does not match {cert_name} (their public keys differ)")
    if not is_ca(cert):
        raise CAError(f"{cert_name} is not a CA certificate (basicConstraints CA:true is missing)")
    if cert.issuer != cert.subject:
        raise CAError(f"{cert_name} is not self-signed (issuer {cert.issuer.rfc4514_string()})")
    return RootCA(cert, key)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAError(f"{path}: no such file (create a root with `galleon ca init-root {path.parent}`)") from None
    except OSError as exc:
        raise CAError(f"cannot read {path}: {exc.strerror}") from None


def _parse(data: bytes, name: str, load, what: str):
    try:
        return load(data)
    except (ValueError, TypeError):
        # The library's message can quote the input; a key's content must never reach a log.
        raise CAError(f"{name} is not {what}") from None
