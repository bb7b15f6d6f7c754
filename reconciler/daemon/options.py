"""What ``galleon serve`` was asked to do: the daemon's settings, fixed before it starts and never
changed after, so any thread may read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import ca, defaults, dns
from ..http import HttpLimits
from ..sources import GitCredentials
from ..sources.signatures import SignaturePolicy


@dataclass
class ServeOptions:
    source: str
    cluster: str
    rev: str | None = None
    ads: str = "127.0.0.1:15010"
    http: str = "127.0.0.1:15014"
    poll: float | None = None
    state_dir: Path | None = None
    parse_cache: bool = True  # keep parsed files in STATE_DIR/parses (reconciler/parse_cache.py)
    credentials: GitCredentials = field(default_factory=GitCredentials)
    debounce: float = defaults.DEBOUNCE
    debounce_max: float = defaults.DEBOUNCE_MAX
    grace: float = 5.0
    poll_jitter: float = 0.1  # each poll waits poll x (1 ± this), so replicas do not fetch in step
    webhook_secret: bytes | None = None
    debug_token: bytes | None = None  # lets /debug/* answer peers other than loopback that send it
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    signatures: SignaturePolicy | None = None  # a Git head must be signed by one of these keys
    max_connection_age: float | None = None
    views_memory: int = 1024  # MiB the compiled views may hold (reconciler/ads/server.py)
    # With a Lease, only the replica holding it writes to the cluster (the CA and DNS reconcilers);
    # every replica serves ADS. None: this daemon is the only one, and the leader.
    lease: LeaseOptions | None = None
    ca: CaOptions | None = None  # reconcile this cluster's cacerts (the leader only)
    dns: DnsOptions | None = None  # reconcile this cluster's CoreDNS global:53 block (the leader only)
    registry: RegistryOptions | None = None  # follow what runs in the clusters (reconciler/registry/)
    security: SecurityOptions = field(default_factory=lambda: SecurityOptions())


@dataclass
class CaOptions:
    root: Path  # the root CA's directory (galleon ca init-root)
    target: str  # kube or dir:PATH
    interval: float = 3600.0
    kubeconfig: Path | None = None
    context: str | None = None

    def target_of(self, cluster: str) -> ca.Target:
        return ca.target_from(self.target, contexts={cluster: self.context}, kubeconfig=self.kubeconfig)


@dataclass
class DnsOptions:
    target: str  # kube or dir:PATH
    interval: float = 300.0
    ttl: int = dns.DEFAULT_TTL
    create: bool = False
    kubeconfig: Path | None = None
    context: str | None = None

    def target_of(self, cluster: str) -> dns.Target:
        return dns.target_from(self.target, contexts={cluster: self.context}, kubeconfig=self.kubeconfig)


@dataclass
class LeaseOptions:
    namespace: str
    name: str
    identity: str
    kubeconfig: Path | None = None
    context: str | None = None


@dataclass
class RegistryOptions:
    sources: tuple[str, ...]  # each kube or dir:PATH
    kubeconfig: Path | None = None
    context: str | None = None
    quiet: float = defaults.REGISTRY_QUIET  # an object's changes are published once it has been quiet this long...
    max_wait: float = defaults.REGISTRY_MAX_WAIT  # ...or this long after its first change
    sync_timeout: float = 30.0  # at start, nothing is served until every cluster is listed, or this long


@dataclass
class SecurityOptions:
    """TLS and who may ask for what on the gRPC port (reconciler/security/)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None  # mutual TLS: a proxy's identity is its certificate's SPIFFE ID
    token_review: bool = False  # a proxy's service-account token, checked by its cluster's API server
    token_audience: str = "istio-ca"
    insecure: bool = False  # serve unauthenticated peers off loopback (each connection logged as such)
    admins: tuple[str, ...] = ()  # SPIFFE IDs that may Sync and Preview
    preview_refs: tuple[str, ...] = ()  # patterns of refs a Preview may read (empty: the default)
    kubeconfig: Path | None = None  # for TokenReview in this cluster
    context: str | None = None
