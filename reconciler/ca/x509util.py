"""Small X.509 helpers shared by the root, the intermediates and the plan."""
from __future__ import annotations

from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .policy import ECDSA_P256, RSA_4096

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def utc(now: datetime) -> datetime:
    """``now`` as an aware UTC datetime; a naive one is refused because its zone is a guess."""
    if now.tzinfo is None:
        raise ValueError("the clock must give timezone-aware datetimes")
    return now.astimezone(timezone.utc)


def new_key(algorithm: str) -> PrivateKey:
    if algorithm == RSA_4096:
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if algorithm == ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key algorithm {algorithm!r}")


def key_algorithm(public_key) -> str:
    """The policy spelling of a key's algorithm, or a description when it is none of ours."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSA_4096 if public_key.key_size == 4096 else f"RSA_{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECDSA_P256 if isinstance(public_key.curve, ec.SECP256R1) else f"ECDSA_{public_key.curve.name}"
    return type(public_key).__name__


def signature_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    # Match the hash to the curve's strength (a P-384 root from elsewhere signs with SHA-384).
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex: what ``openssl x509 -fingerprint -sha256`` shows."""
    return cert.fingerprint(hashes.SHA256()).hex()


def same_public_key(a, b) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(*der) == b.public_bytes(*der)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def stamp(when: datetime) -> str:
    """A date for people and annotations: RFC 3339, UTC, whole seconds."""
    return utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")
