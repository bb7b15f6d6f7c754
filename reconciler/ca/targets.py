"""Where a cluster's ``cacerts`` Secret lives, and the reconcile step that reads, plans and writes.

A target is anything with ``read(cluster) -> dict | None`` and ``write(cluster, secret)``.
``DirTarget`` is DESIGN.md's ``dir:PATH``: one manifest per object at
``PATH/<cluster>/<namespace>/<Kind>/<name>.yaml``, usable with ``kubectl apply -f``. The ``kube``
target (``kube.KubeTarget``: official client, resourceVersion, retries) implements the same two
methods; its ``write`` may raise ``ConflictError``, and ``reconcile`` then reads and plans again.
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Mapping, Protocol


from reconciler.kube.conflict import CONFLICT_ATTEMPTS, CONFLICT_BACKOFF, ConflictError
from reconciler.kube.manifests import ManifestDir, parse_target

from .errors import CAError
from .intermediate import issue
from .planning import NAME, NAMESPACE, SECRET, Plan, plan, secret_manifest
from .policy import Policy
from .root import RootCA


class Target(Protocol):
    def read(self, cluster: str) -> dict | None:
        """The cluster's ``istio-system/cacerts`` Secret, or None when it does not exist."""

    def write(self, cluster: str, secret: dict) -> None:
        """Replace the Secret as a whole: a reader sees the old one or the new one, never a mix.

        Raises ``ConflictError`` when the Secret is no longer the one ``read`` returned."""


class DirTarget(ManifestDir):
    """DESIGN.md's ``dir:PATH`` (reconciler/kube/manifests.py), for ``istio-system/cacerts``."""

    def __init__(self, path: Path):
        super().__init__(path, NAMESPACE, "Secret", NAME, CAError)


def target_from(spec: str, contexts: Mapping[str, str | None] | None = None,
                kubeconfig: Path | None = None) -> Target:
    """A ``--target`` value: ``dir:PATH``, or ``kube`` (each cluster's kubeContext from ``contexts``,
    in ``kubeconfig`` or kubectl's default one)."""
    path = parse_target(spec, CAError)
    if path is not None:
        return DirTarget(path)
    from .kube import KubeTarget  # imports the Kubernetes client: only when it is used
    return KubeTarget(contexts or {}, kubeconfig)


def reconcile(target: Target, root: RootCA, cluster: str, policy: Policy, now: datetime,
              dry_run: bool = False, adopt: bool = False) -> Plan:
    """Read ``cluster``'s Secret, decide, and write a new intermediate only when the plan says so.

    When the write meets a Secret changed since the read, the decision is made again on the new
    one: it may now be ours and current (someone else reconciled), or no longer ours (refused).
    """
    issued = None
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:
            time.sleep(CONFLICT_BACKOFF * 2 ** (attempt - 1))
        current = target.read(cluster)
        decided = plan(current, root, cluster, policy, now, adopt)
        if not decided.writes or dry_run:
            return decided
        # Issued once: the certificate depends only on the root, cluster, policy and clock, which a
        # conflict does not change (and an RSA-4096 key takes a second to make).
        issued = issued or issue(root, cluster, policy, now)
        try:
            target.write(cluster, secret_manifest(issued, root, policy, current))
            return decided
        except ConflictError as exc:
            last = exc
    raise CAError(f"{cluster}: {SECRET} kept changing while it was written ({CONFLICT_ATTEMPTS} attempts), "
                  f"last: {last}")
