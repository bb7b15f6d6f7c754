"""Gateway facts shared by the generators: which servers a proxy runs, and what they admit."""
from __future__ import annotations

from typing import Iterator

from .hosts import matches
from .model import Mesh, Port, Service
from .parse import SourceObject
from .view import ProxyView


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
