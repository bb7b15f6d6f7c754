"""The CertificateAuthority policy that applies to a cluster, defaults applied.

Apart from issuing (intermediate.py), so that what only reads policies (a preview's CA section)
does not load cryptography unless there is a policy to hash.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Iterable

from compiler.durations import nanoseconds
from compiler.parse import SourceObject

from .errors import CAError

if TYPE_CHECKING:
    from cryptography import x509

# Algorithm names: the CertificateAuthority schema's spelling, and init-root's.
RSA_4096 = "RSA_4096"
ECDSA_P256 = "ECDSA_P256"

KIND = "CertificateAuthority"
DEFAULT_LIFETIME = "8760h"  # 1 year
DEFAULT_RENEW_BEFORE = "720h"  # 30 days
# Istio's tools/certs makes RSA 4096 intermediates; a policy picks ECDSA_P256 for speed and size.
DEFAULT_KEY_ALGORITHM = RSA_4096
DEFAULT_ORGANIZATION = "Istio"


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
        from cryptography import x509
        from cryptography.x509.oid import NameOID
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
