"""Per-cluster intermediate CAs: the policy that applies to a cluster, and issuing one.

The certificate follows the profile of Istio's tools/certs (``intermediate.conf``), which is what
istiod is tested with: subject ``O=<organization>, CN=Intermediate CA, L=<cluster>``,
``CA:true, pathlen:0`` (critical), SAN ``DNS:istiod.istio-system.svc``, no extended key usage
(a serverAuth-only EKU on an intermediate broke workload connections in Istio).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from compiler.durations import nanoseconds
from compiler.parse import SourceObject

from .errors import CAError
from .root import RootCA, ca_key_usage
from .x509util import ECDSA_P256, RSA_4096, cert_pem, key_pem, new_key, signature_hash, utc

KIND = "CertificateAuthority"
DEFAULT_LIFETIME = "8760h"  # 1 year
DEFAULT_RENEW_BEFORE = "720h"  # 30 days
# Istio's tools/certs makes RSA 4096 intermediates; a policy picks ECDSA_P256 for speed and size.
DEFAULT_KEY_ALGORITHM = RSA_4096
DEFAULT_ORGANIZATION = "Istio"
ISTIOD_SAN = "istiod.istio-system.svc"
# The intermediate may be signed a little before a cluster's clock says "now" (clock skew).
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class Policy:
    """The effective CertificateAuthority policy for one cluster, defaults applied."""

    cluster: str
    key_algorithm: str = DEFAULT_KEY_ALGORITHM
    lifetime: str = DEFAULT_LIFETIME
    renew_before: str = DEFAULT_RENEW_BEFORE
    organization: str = DEFAULT_ORGANIZATION
    organizational_unit: str | None = None
    source: str = "defaults"  # kind/namespace/name of the object it came from, for messages

    @property
    def lifetime_delta(self) -> timedelta:
        return timedelta(microseconds=nanoseconds(self.lifetime) // 1000)

    @property
    def renew_before_delta(self) -> timedelta:
        return timedelta(microseconds=nanoseconds(self.renew_before) // 1000)

    def subject(self) -> x509.Name:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization)]
        if self.organizational_unit:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit))
        attributes += [x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA"),
                       x509.NameAttribute(NameOID.LOCALITY_NAME, self.cluster)]
        return x509.Name(attributes)

    @property
    def hash(self) -> str:
        """Changes exactly when the certificate this policy asks for changes (not when a comment
        or the object's name does), so that only a real policy change reissues."""
        fields = {"cluster": self.cluster, "keyAlgorithm": self.key_algorithm,
                  "lifetime": nanoseconds(self.lifetime), "renewBefore": nanoseconds(self.renew_before),
                  "subject": self.subject().rfc4514_string()}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def policy_for(objects: Iterable[SourceObject], cluster: str) -> Policy | None:
    """The policy of ``cluster`` from a validated snapshot's objects; None when no
    CertificateAuthority covers it (Galleon then leaves that cluster's CA alone).

    An object that lists the cluster in ``spec.clusters`` wins over one without ``clusters``
    (which covers every cluster); two of the same kind for one cluster is an error, since
    silently picking one would decide a CA's key and lifetime by file order.
    """
    authorities = [o for o in objects if o.kind == KIND]
    explicit = [o for o in authorities if cluster in o.spec.get("clusters", ())]
    fallback = [o for o in authorities if "clusters" not in o.spec]
    chosen = explicit or fallback
    if not chosen:
        return None
    if len(chosen) > 1:
        refs = " and ".join(sorted(o.ref for o in chosen))
        raise CAError(f"cluster {cluster!r} is covered by two CertificateAuthority policies ({refs}); keep one")
    obj = chosen[0]
    spec, subject = obj.spec, obj.spec.get("subject") or {}
    policy = Policy(cluster, spec.get("keyAlgorithm", DEFAULT_KEY_ALGORITHM),
                    spec.get("lifetime", DEFAULT_LIFETIME), spec.get("renewBefore", DEFAULT_RENEW_BEFORE),
                    subject.get("organization", DEFAULT_ORGANIZATION), subject.get("organizationalUnit"),
                    obj.ref)
    if policy.key_algorithm not in (RSA_4096, ECDSA_P256):
        raise CAError(f"{obj.ref}: unknown keyAlgorithm {policy.key_algorithm!r}")
    if policy.renew_before_delta >= policy.lifetime_delta:
        # Every fresh certificate would already be due: each run would reissue.
        raise CAError(f"{obj.ref}: renewBefore {policy.renew_before} must be shorter than "
                      f"lifetime {policy.lifetime}")
    return policy


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
