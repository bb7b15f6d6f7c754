"""The proxies a preview compares in each cluster: one per distinct kind of configuration.

A sidecar in ``default`` stands for every namespace without a Sidecar resource of its own; each
Sidecar resource adds the sidecars it selects; each Gateway selector adds a gateway proxy. The
same list is made from both revisions' meshes, so a Sidecar or Gateway added by the change is
compared against what such a proxy had before.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..locality import Locality
from ..model import Mesh
from ..view import ROUTER, SIDECAR, ProxyView, ViewError, make_view

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, order=True)
class ViewSpec:
    """A proxy to compile, independent of either revision's mesh."""

    role: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    locality: str = ""  # "" for the cluster's own

    @property
    def label(self) -> str:
        selector = ",".join(f"{k}={v}" for k, v in self.labels)
        return " ".join(p for p in (self.role, self.namespace, selector and f"({selector})",
                                    self.locality and f"in {self.locality}") if p)

    def view(self, mesh: Mesh | None, cluster: str) -> ProxyView | None:
        """This proxy in ``mesh``; None when the mesh has no such cluster (or no mesh)."""
        if mesh is None or cluster not in mesh.clusters:
            return None
        node_id = f"{self.role}~127.0.0.1~preview.{self.namespace}~{self.namespace}.svc.cluster.local"
        try:
            return make_view(mesh, cluster, node_id, dict(self.labels), self.locality or None)
        except ViewError:
            return None


def proxy_specs(*meshes: Mesh | None) -> list[ViewSpec]:
    """The proxies worth comparing in any cluster of these meshes, in a stable order."""
    specs = {ViewSpec(SIDECAR, DEFAULT_NAMESPACE)}
    for mesh in filter(None, meshes):
        for sidecar in mesh.sidecars:
            selector = (sidecar.spec.get("workloadSelector") or {}).get("labels") or {}
            specs.add(ViewSpec(SIDECAR, sidecar.namespace, tuple(sorted(selector.items()))))
        for gateway in mesh.gateways:
            specs.add(ViewSpec(ROUTER, gateway.namespace, tuple(sorted((gateway.spec.get("selector") or {}).items()))))
    return sorted(specs, key=lambda s: (s.role != SIDECAR, s != ViewSpec(SIDECAR, DEFAULT_NAMESPACE), s))


def caller_localities(cluster: str, *meshes: Mesh | None) -> list[str]:
    """Where callers in ``cluster`` may be: its own locality first, then every other locality its
    endpoints are in."""
    own: list[str] = []
    others: set[Locality] = set()
    for mesh in filter(None, meshes):
        home = mesh.clusters.get(cluster)
        if home is None:
            continue
        if not own:
            own.append(str(home.locality))
        others.update(locality for place, locality in mesh.endpoint_places() if place == cluster)
    return own + sorted(str(loc) for loc in others if str(loc) and str(loc) not in own)

