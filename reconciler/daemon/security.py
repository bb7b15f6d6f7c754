"""The daemon's gate (reconciler/security/gate.py) as its options ask: mutual TLS, TokenReview through
this cluster's API server (``--kubeconfig``/``--kube-context``, else in-cluster), admin identities
and the refs a Preview may read.

Threads: the gate is made before the daemon starts and never changed; TokenReview runs on worker
threads and keeps its own lock."""
from __future__ import annotations

import threading

import kubernetes.client

from ..kube.client import KubeError, api_client
from ..security.gate import DEFAULT_PREVIEW_REFS, Gate
from ..security.tokens import TokenReviewer
from .options import ServeOptions


def gate_of(options: ServeOptions) -> Gate:
    s = options.security
    reviewer = TokenReviewer(_Clients(options), s.token_audience) if s.token_review else None
    return Gate(options.cluster, mtls=s.client_ca is not None, reviewer=reviewer, admins=frozenset(s.admins),
                preview_refs=s.preview_refs or DEFAULT_PREVIEW_REFS, insecure=s.insecure)


class _Clients:
    """The API client of each cluster a token may be checked by: this one's, made on first use."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self._made: dict[str, kubernetes.client.ApiClient | None] = {}
        self._lock = threading.Lock()

    def __call__(self, cluster: str) -> kubernetes.client.ApiClient | None:
        if cluster != self.options.cluster:
            return None
        with self._lock:
            if cluster not in self._made:
                s = self.options.security
                try:
                    self._made[cluster] = api_client(s.kubeconfig, s.context)
                except KubeError:
                    self._made[cluster] = None
            return self._made[cluster]
