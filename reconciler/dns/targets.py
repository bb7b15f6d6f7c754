"""Where a cluster's CoreDNS configuration lives: the ``kube-system/coredns`` ConfigMap.

A target is anything with ``read(cluster) -> dict | None`` (the ConfigMap, None when missing) and
``write(cluster, configmap)`` (replace it, or create it after a read found none), whose ``write``
raises ``ConflictError`` when the ConfigMap is no longer the one read: someone else (kubeadm, an
operator, another Galleon) changed it, and the reconcile step reads and edits again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

from reconciler.kube.manifests import ManifestDir, parse_target

from .configmap import NAME, NAMESPACE, DNSError


class Target(Protocol):
    def read(self, cluster: str) -> dict | None: ...

    def write(self, cluster: str, configmap: dict) -> None: ...


class DirTarget(ManifestDir):
    """DESIGN.md's ``dir:PATH`` (reconciler/kube/manifests.py), for ``kube-system/coredns``."""

    def __init__(self, path: Path):
        super().__init__(path, NAMESPACE, "ConfigMap", NAME, DNSError)


def target_from(spec: str, contexts: Mapping[str, str | None] | None = None,
                kubeconfig: Path | None = None) -> Target:
    """A ``--target`` value: ``dir:PATH``, or ``kube`` (each cluster's kubeContext from ``contexts``)."""
    path = parse_target(spec, DNSError)
    if path is not None:
        return DirTarget(path)
    from .kube import KubeTarget  # imports the Kubernetes client: only when it is used
    return KubeTarget(contexts or {}, kubeconfig)
