"""A peer's identity, as Istio names workloads: ``spiffe://<trust-domain>/ns/<namespace>/sa/<account>``,
from the URI SAN of its client certificate (mutual TLS) or from the service account a cluster's API
server says a token belongs to (TokenReview)."""
from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

SPIFFE = "spiffe://"
MTLS, TOKEN = "mtls", "token"


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    trust_domain: str  # "" for a token (the API server names no trust domain)
    how: str  # MTLS or TOKEN
    cluster: str | None = None  # the cluster whose API server vouched for it (a token)

    @property
    def spiffe(self) -> str:
        return f"{SPIFFE}{self.trust_domain or 'cluster.local'}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.spiffe if self.how == MTLS else \
            f"system:serviceaccount:{self.namespace}:{self.service_account} (token, cluster {self.cluster})"


def parse_spiffe(uri: str) -> Identity | None:
    """The identity a SPIFFE ID names in Istio's form; None for any other URI."""
    if not uri.startswith(SPIFFE):
        return None
    parts = uri[len(SPIFFE):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return Identity(parts[2], parts[4], parts[0], MTLS)


def from_certificate(pem: bytes) -> Identity | None:
    """The identity in a client certificate's URI SANs (the first in Istio's form), None without one."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in names.get_values_for_type(x509.UniformResourceIdentifier):
        found = parse_spiffe(uri)
        if found is not None:
            return found
    return None


def from_username(username: str, cluster: str) -> Identity | None:
    """``system:serviceaccount:<namespace>:<account>``, as TokenReview names a service account."""
    parts = username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not parts[2] or not parts[3]:
        return None
    return Identity(parts[2], parts[3], "", TOKEN, cluster)
