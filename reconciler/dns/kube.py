"""The ``kube`` target for ``kube-system/coredns``, through the official client (reconciler/kube/calls.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from reconciler.kube.calls import ClusterCalls

from .configmap import CONFIGMAP, NAME, NAMESPACE, DNSError


class KubeTarget:
    """The ConfigMap through the official client: replaced with the resourceVersion it was read at
    (the Corefile is one string other managers edit too), created only after a read found none."""

    def __init__(self, contexts: Mapping[str, str | None], kubeconfig: Path | None = None, retries: int = 5,
                 backoff: float = 0.2, timeout: float = 10):
        self.calls = ClusterCalls(contexts, kubeconfig, DNSError, retries, backoff, timeout)

    def read(self, cluster: str) -> dict | None:
        api = self.calls.api(cluster)
        found = self.calls.read(cluster, f"reading {CONFIGMAP}", lambda timeout: api.read_namespaced_config_map(
            NAME, NAMESPACE, _request_timeout=timeout))
        return None if found is None else api.api_client.sanitize_for_serialization(found)

    def write(self, cluster: str, configmap: dict) -> None:
        api = self.calls.api(cluster)
        if configmap["metadata"].get("resourceVersion"):
            # The read's resourceVersion travels in the body: a stale one gets 409, and nothing is written.
            self.calls.write(cluster, f"replacing {CONFIGMAP}", lambda timeout: api.replace_namespaced_config_map(
                NAME, NAMESPACE, configmap, _request_timeout=timeout))
        else:
            self.calls.write(cluster, f"creating {CONFIGMAP}", lambda timeout: api.create_namespaced_config_map(
                NAMESPACE, configmap, _request_timeout=timeout))
