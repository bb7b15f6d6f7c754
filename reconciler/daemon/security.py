"""The daemon's gate (reconciler/security/gate.py) as its options ask: mutual TLS, TokenReview through
this cluster's API server (``--kubeconfig``/``--kube-context``, else in-cluster), admin identities
and the refs a Preview may read.

Threads: the gate is made before the daemon starts and never changed; TokenReview runs on worker
threads and keeps its own lock."""
from __future__ import annotations

import threading
from typing import Callable

import kubernetes.client

from ..kube.client import KubeError, api_client
from ..security.gate import DEFAULT_PREVIEW_REFS, Gate
from ..security.tokens import TokenReviewer
from .options import ServeOptions


def gate_of(options: ServeOptions, registry_client: Callable[[str], kubernetes.client.ApiClient | None]) -> Gate:
    """``registry_client``: the client the live registry reads a cluster with (TokenReview of the
    proxies of other clusters goes through it)."""
    s = options.security
    reviewer = TokenReviewer(_Clients(options, registry_client), s.token_audience) if s.token_review else None
    return Gate(options.cluster, mtls=s.client_ca is not None, reviewer=reviewer, admins=frozenset(s.admins),
                preview_refs=s.preview_refs or DEFAULT_PREVIEW_REFS, insecure=s.insecure)


class _Clients:
    """The API client of each cluster a token may be checked by: the one the live registry reads it
    with, else, for this cluster, one made on first use."""

    def __init__(self, options: ServeOptions, registry_client) -> None:
        self.options, self.registry_client = options, registry_client
        self._made: dict[str, kubernetes.client.ApiClient | None] = {}
        self._lock = threading.Lock()

    def __call__(self, cluster: str) -> kubernetes.client.ApiClient | None:
        following = self.registry_client(cluster)
        if following is not None or cluster != self.options.cluster:
            return following
        with self._lock:
            if cluster not in self._made:
                s = self.options.security
                try:
                    self._made[cluster] = api_client(s.kubeconfig, s.context)
                except KubeError:
                    self._made[cluster] = None
            return self._made[cluster]
