"""Per-cluster intermediate CAs: issuing one under a cluster's policy (policy.py).

The certificate follows the profile of Istio's tools/certs (``intermediate.conf``), which is what
istiod is tested with: subject ``O=<organization>, CN=Intermediate CA, L=<cluster>``,
``CA:true, pathlen:0`` (critical), SAN ``DNS:istiod.istio-system.svc``, no extended key usage
(a serverAuth-only EKU on an intermediate broke workload connections in Istio).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from .errors import CAError
from .policy import Policy
from .root import RootCA, ca_key_usage
from .x509util import cert_pem, key_pem, new_key, signature_hash, utc

ISTIOD_SAN = "istiod.istio-system.svc"
# The intermediate may be signed a little before a cluster's clock says "now" (clock skew).
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class CaCerts:
    """The four values of Istio's plug-in CA Secret, as PEM text."""

    ca_cert: str
    ca_key: str
    root_cert: str
    cert_chain: str

    def data(self) -> dict[str, str]:
        """By Secret key. There is deliberately no ``istio-generated`` key: istiod treats a Secret
        that has one as its own self-signed CA."""
        return {"ca-cert.pem": self.ca_cert, "ca-key.pem": self.ca_key,
                "root-cert.pem": self.root_cert, "cert-chain.pem": self.cert_chain}


def not_before(root: RootCA, now: datetime) -> datetime:
    """When an intermediate issued at ``now`` starts: a little earlier, for clocks behind ours, but
    not before its root."""
    return max(utc(now) - BACKDATE, root.cert.not_valid_before_utc)


def not_after(root: RootCA, policy: Policy, now: datetime) -> datetime:
    """When an intermediate issued at ``now`` expires: its lifetime, cut at the root's own end
    (a verifier rejects the chain once the root expires, whatever the intermediate says)."""
    return min(utc(now) + policy.lifetime_delta, root.not_after)


def issue(root: RootCA, cluster: str, policy: Policy, now: datetime) -> CaCerts:
    """A new key and intermediate certificate for ``cluster``, signed by ``root``."""
    if policy.cluster != cluster:
        raise ValueError(f"policy for {policy.cluster!r} used for cluster {cluster!r}")
    now = utc(now)
    if root.not_after <= now:
        raise CAError(f"the root CA {root.fingerprint[:16]} expired at {root.not_after:%Y-%m-%d}; rotate the root")
    key = new_key(policy.key_algorithm)
    public = key.public_key()
    try:
        authority = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
    except x509.ExtensionNotFound:  # a root made elsewhere without an SKI
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(root.cert.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(policy.subject())
            .issuer_name(root.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before(root, now))
            .not_valid_after(not_after(root, policy, now))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(authority, critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(ISTIOD_SAN)]), critical=False)
            .sign(root.key, signature_hash(root.key)))
    intermediate = cert_pem(cert).decode()
    # cert-chain.pem runs from the intermediate up to the root, as istiod serves it to workloads.
    return CaCerts(intermediate, key_pem(key).decode(), root.pem, intermediate + root.pem)
