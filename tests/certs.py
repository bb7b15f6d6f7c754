"""Certificates for tests: a mesh root made by Galleon's own `galleon ca init-root` code, and leaf
certificates issued under it (a server's, with IP and DNS names; a workload's, with its SPIFFE ID)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.ca.root import init_root, load_root


def root_in(directory: Path):
    """A root CA in ``directory`` (root-cert.pem, root-key.pem), as `galleon ca init-root` makes it."""
    init_root(directory, "ecdsa-p256", dt.datetime.now(dt.timezone.utc))
    return load_root(directory)


def issue(root, directory: Path, name: str, spiffe: str | None = None, dns: tuple[str, ...] = (),
          ips: tuple[str, ...] = (), days: float = 1.0, expired: bool = False) -> tuple[Path, Path]:
    """A leaf certificate and key under ``root``, written to NAME.pem and NAME-key.pem; (cert, key)."""
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    start, end = (now - dt.timedelta(days=2), now - dt.timedelta(days=1)) if expired else \
        (now - dt.timedelta(minutes=5), now + dt.timedelta(days=days))
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if spiffe:
        names.append(x509.UniformResourceIdentifier(spiffe))
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(root.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.SubjectAlternativeName(names), critical=bool(spiffe) and not dns)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    cert = builder.sign(root.key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
