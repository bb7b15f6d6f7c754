"""Which services a proxy sees: Istio's Sidecar egress scoping."""
from __future__ import annotations

from .hosts import exported, matches
from .model import ROOT_NAMESPACE, Mesh, Service
from .parse import SourceObject
from .view import ProxyView


def sidecar_for(mesh: Mesh, view: ProxyView) -> SourceObject | None:
    """Istio's choice: a Sidecar in the proxy's namespace selecting it, else that namespace's
    default (no selector), else the mesh-wide default in the root namespace."""
    local = [s for s in mesh.sidecars if s.namespace == view.namespace]
    for sidecar in local:
        selector = (sidecar.spec.get("workloadSelector") or {}).get("labels")
        if selector and view.selected_by(selector):
            return sidecar
    for candidates in (local, [s for s in mesh.sidecars if s.namespace == ROOT_NAMESPACE]):
        for sidecar in candidates:
            if not sidecar.spec.get("workloadSelector"):
                return sidecar
    return None


def _imports(pattern: str, namespace_of_proxy: str, service: Service) -> bool:
    # "./" is the proxy's namespace, also in the mesh-wide default Sidecar of the root namespace
    # (Istio converts that Sidecar for each proxy's config namespace).
    namespace, _, host = pattern.partition("/")
    if namespace == ".":
        namespace = namespace_of_proxy
    return (namespace == "*" or namespace == service.namespace) and matches(host, service.host)


def visible_services(mesh: Mesh, view: ProxyView) -> list[Service]:
    """The services this proxy gets configuration for, sorted by host.

    A proxy sees the services exported to its namespace (exportTo). Gateways see every one of those
    (their routes decide); a sidecar sees what its Sidecar's egress hosts import, or everything when
    no Sidecar applies.
    """
    services = sorted((s for s in mesh.services.values() if exported(s.exported_to, view.namespace)),
                      key=lambda s: s.host)
    sidecar = sidecar_for(mesh, view) if view.role == "sidecar" else None
    if sidecar is None or not sidecar.spec.get("egress"):
        return services
    patterns = [h for egress in sidecar.spec["egress"] for h in egress.get("hosts", [])]
    return [s for s in services if any(_imports(p, view.namespace, s) for p in patterns)]
