"""Which Gateways and VirtualServices apply where: facts the route and listener generators share."""
from __future__ import annotations

from typing import Iterable, Iterator

from . import cache
from .hosts import fqdn, matches
from .model import Mesh, Port, Service
from .parse import SourceObject
from .view import ProxyView

MESH_GATEWAY = "mesh"


def selected_servers(mesh: Mesh, view: ProxyView) -> Iterator[tuple[SourceObject, dict]]:
    """(Gateway, server) for every server of every Gateway whose selector picks this proxy."""
    for gateway in mesh.gateways:
        if view.selected_by(gateway.spec.get("selector")):
            for server in gateway.spec.get("servers", []):
                yield gateway, server


def admits(gateway: SourceObject, server: dict, service: Service) -> bool:
    """Whether a server's ``namespace/host`` entries admit the service (``.`` is the Gateway's namespace)."""
    for entry in server.get("hosts", []):
        namespace, _, host = entry.rpartition("/")
        namespace = gateway.namespace if namespace == "." else (namespace or "*")
        if namespace in ("*", service.namespace) and matches(host, service.host):
            return True
    return False


def sni_dnat_targets(mesh: Mesh, view: ProxyView, services: list[Service]
                     ) -> list[tuple[Service, Port, str | None]]:
    """What an east-west gateway (an AUTO_PASSTHROUGH server) forwards by SNI: every admitted service
    port and subset. Wildcard hosts are left out: no client sends an SNI naming one."""
    servers = [(g, s) for g, s in selected_servers(mesh, view)
               if (s.get("tls") or {}).get("mode") == "AUTO_PASSTHROUGH"]
    if not servers:
        return []
    out = []
    for service in services:
        if "*" in service.host or not any(admits(g, s, service) for g, s in servers):
            continue
        rule = mesh.destination_rule(service.host)
        subsets = [None] + [subset.name for subset in rule.subsets] if rule else [None]
        out += [(service, port, subset) for port in service.ports for subset in subsets]
    return out


def bound_gateways(vs: SourceObject) -> set[str]:
    """The gateways a VirtualService is bound to; no list means the mesh (sidecars) only."""
    return qualified_gateways(vs.spec.get("gateways") or [MESH_GATEWAY], vs.namespace)


def qualified_gateways(names: Iterable[str], namespace: str) -> set[str]:
    """``mesh`` stays; a bare Gateway name is in the VirtualService's namespace."""
    return {n if n == MESH_GATEWAY or "/" in n else f"{namespace}/{n}" for n in names}


class MeshVirtualServices:
    """The VirtualServices bound to the mesh, indexed by host, so each service finds its own
    without a scan of every VirtualService. One per mesh: use ``of``."""

    @staticmethod
    def of(mesh: Mesh) -> "MeshVirtualServices":
        return cache.MESH_VIRTUAL_SERVICES.of(mesh, (), lambda: MeshVirtualServices(mesh))

    def __init__(self, mesh: Mesh):
        self.exact: dict[str, SourceObject] = {}
        wildcards: list[tuple[int, int, str, SourceObject]] = []
        for order, vs in enumerate(mesh.virtual_services):
            spec = vs.spec
            if spec.get("gateways") and MESH_GATEWAY not in spec["gateways"]:
                continue  # bound to Gateways only (as bound_gateways says, without building its set)
            for host in (fqdn(h, vs.namespace) for h in spec.get("hosts", [])):
                if host.startswith("*"):
                    wildcards.append((-len(host), order, host, vs))
                else:
                    self.exact.setdefault(host, vs)  # the first in mesh order wins
        # Most specific (longest) wildcard first; equal ones in mesh order.
        self.wildcards = [(host, vs) for _, _, host, vs in sorted(wildcards, key=lambda w: w[:2])]

    def for_host(self, host: str) -> SourceObject | None:
        """Istio's choice: the VirtualService naming the host, else the most specific wildcard covering it."""
        if host in self.exact:
            return self.exact[host]
        return next((vs for pattern, vs in self.wildcards if matches(pattern, host)), None)


def weighted_destinations(destinations: list[dict]) -> list[tuple[dict, int]]:
    """(destination, weight) pairs that get traffic. One destination takes all; among several, a
    missing weight is 0 unless none has a weight, which splits evenly; weight 0 gets nothing."""
    if len(destinations) == 1:
        return [(destinations[0], 1)]
    if not any("weight" in d for d in destinations):
        return [(d, 1) for d in destinations]
    return [(d, d.get("weight", 0)) for d in destinations if d.get("weight", 0) > 0]


def destination_hosts(vs: SourceObject) -> list[str]:
    """Every host a VirtualService's HTTP rules send (or mirror) traffic to, sorted."""
    hosts = set()
    for rule in vs.spec.get("http", []):
        for route in rule.get("route", []):
            hosts.add((route.get("destination") or {}).get("host"))
        hosts.add((rule.get("mirror") or {}).get("host"))
        for mirror in rule.get("mirrors", []):
            hosts.add((mirror.get("destination") or {}).get("host"))
    return sorted(fqdn(h, vs.namespace) for h in hosts if h)
