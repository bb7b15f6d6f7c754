"""What a peer of the gRPC port may ask for, as istiod decides it: a proxy gets configuration only
for the namespace of its identity (and, when a cluster's API server vouched for it, only as a proxy
of that cluster); the status API is read by authenticated peers, and ``Sync`` and ``Preview`` are
for the operator's admin identities only, and only of the refs the operator allows.

Without authentication (plaintext on loopback, or ``--insecure``) every peer is unauthenticated:
proxies are believed, and ``Sync`` and ``Preview`` answer loopback peers only.
"""
from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

import grpc

from .identity import Identity, from_certificate
from .tokens import TokenRefused, TokenReviewer

_COMMIT_ID = re.compile(r"[0-9a-f]{7,64}")
# Branches and pull (merge) requests, as GitHub and GitLab name them; a bare name is a branch.
DEFAULT_PREVIEW_REFS = ("refs/heads/*", "refs/pull/*", "refs/merge-requests/*")


class Denied(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def is_loopback_host(host: str) -> bool:
    """An address only this machine reaches: ``localhost``, 127.0.0.0/8, ::1, or either through an
    IPv4-mapped IPv6 address (as a dual-stack listener sees IPv4 peers)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback_peer(peer: str) -> bool:
    """gRPC's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``) is this host."""
    kind, _, rest = peer.partition(":")
    return kind == "unix" or is_loopback_host(rest.rsplit(":", 1)[0])


@dataclass
class Gate:
    home_cluster: str
    mtls: bool = False  # --client-ca: a peer's certificate names it
    reviewer: TokenReviewer | None = None  # --token-review
    admins: frozenset[str] = frozenset()  # --admin-identity SPIFFE IDs
    preview_refs: tuple[str, ...] = DEFAULT_PREVIEW_REFS
    insecure: bool = False  # --insecure: unauthenticated peers are served (and logged as such)

    @property
    def required(self) -> bool:
        return self.mtls or self.reviewer is not None

    async def identify(self, context, cluster: str) -> Identity | None:
        """The peer's identity; None when no authentication is configured. Raises Denied."""
        pem = (context.auth_context() or {}).get("x509_pem_cert")
        if pem:
            identity = from_certificate(pem[0])
            if identity is None:
                raise Denied(grpc.StatusCode.UNAUTHENTICATED, "no-spiffe-id",
                             "galleon: the client certificate names no SPIFFE ID "
                             "(a URI SAN spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)")
            return identity
        token = _bearer(context.invocation_metadata() or ())
        if token and self.reviewer is not None:
            try:
                return await asyncio.to_thread(self.reviewer.review, token, cluster)
            except TokenRefused as exc:
                raise Denied(grpc.StatusCode.UNAUTHENTICATED, "token-refused", f"galleon: {exc}") from None
        if self.required:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated",
                         "galleon: authenticate with a client certificate issued under the mesh's root"
                         + (" or a Kubernetes service-account token (authorization: Bearer ...)"
                            if self.reviewer is not None else ""))
        return None

    async def admit_proxy(self, context, node_id: str, namespace: str, cluster: str) -> Identity | None:
        """The identity of a proxy that asks for the view of ``namespace`` in ``cluster``. Raises Denied."""
        identity = await self.identify(context, cluster)
        if identity is None:
            return None
        if identity.namespace != namespace:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, "namespace",
                         f"galleon: {identity} may get the configuration of namespace {identity.namespace!r} "
                         f"only; node {node_id!r} asks for namespace {namespace!r}")
        if identity.cluster is not None and identity.cluster != cluster:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, "cluster",
                         f"galleon: {identity} was checked by cluster {identity.cluster!r}; node {node_id!r} "
                         f"claims CLUSTER_ID {cluster!r}")
        return identity

    async def admit_reader(self, context) -> Identity | None:
        """A peer of GetStatus or WatchStatus. Raises Denied."""
        return await self.identify(context, self.home_cluster)

    async def admit_admin(self, context) -> Identity | None:
        """A peer of Sync or Preview. Raises Denied."""
        identity = await self.identify(context, self.home_cluster)
        if identity is None:
            if is_loopback_peer(context.peer()):
                return None
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, "not-admin",
                         "galleon: Sync and Preview answer an --admin-identity only; this daemon authenticates "
                         "no one (serve with --client-ca or --token-review)")
        if identity.spiffe not in self.admins:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, "not-admin",
                         f"galleon: {identity.spiffe} is not an --admin-identity of this daemon")
        return identity

    def check_ref(self, rev: str | None, refs_at: Callable[[str], list[str]] = lambda commit: []) -> None:
        """A Preview of ``rev`` (None: the followed head) is allowed. A bare name is a branch; a commit id
        is allowed when a ref the operator allows points at it (``refs_at``: the refs of the source at
        a commit), not for being any commit the source has fetched. Raises Denied."""
        if not rev:
            return
        if _COMMIT_ID.fullmatch(rev):
            candidates = refs_at(rev)
        elif rev.startswith("refs/"):
            candidates = [rev]
        else:
            candidates = [rev, f"refs/heads/{rev}"]
        if not any(fnmatch.fnmatchcase(c, pattern) for c in candidates for pattern in self.preview_refs):
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, "ref",
                         f"galleon: previews of {rev!r} are not allowed here (allowed: "
                         f"{', '.join(self.preview_refs)}; the operator sets --preview-refs)")


def _bearer(metadata) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip() or None
    return None
