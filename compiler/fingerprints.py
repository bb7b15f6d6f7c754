"""What a resource is built from, as strings that are equal exactly when its inputs are.

An incremental compile (xds.compile_view's ``previous``) keeps a resource whose key is
unchanged. Objects are compared by their document's text, file and line (SourceObject.digest),
so an edit anywhere in a document, or a shift of its lines, rebuilds what it feeds.
"""
from __future__ import annotations

from .hosts import fqdn
from .model import Mesh, Service
from .parse import SourceObject
from .view import ProxyView


def view_key(mesh: Mesh, view: ProxyView) -> str:
    """The proxy and every mesh-wide object (clusters, networks, settings, gateways, sidecars)."""
    return f"{mesh.digest}|{view!r}"


def route_key(mesh: Mesh, service: Service) -> str:
    """What routes to a service are built from: its fields, where it is written (routes name it in
    their provenance) and its DestinationRule; not its endpoints, which routes never see."""
    def compute() -> str:
        rule = mesh.destination_rule(service.host)
        return "|".join([service.host, repr((service.namespace, service.ports, service.resolution,
                                             service.location, service.addresses)),
                         f"{service.source.ref} {service.source.file}:{service.source.line}",
                         rule.source.digest if rule else "-"])
    return _once(mesh, "route key", service, compute)


def service_key(mesh: Mesh, service: Service) -> str:
    """A service's clusters and assignments, beyond the view key: what its routes are built from,
    plus its ServiceEntry's text and the objects its endpoints come from."""
    def compute() -> str:
        # Endpoints written in one object (all of a ServiceEntry's) share its source: hash it once.
        sources = sorted(source.digest for source in {endpoint.source for endpoint in service.endpoints})
        return "|".join([route_key(mesh, service), service.source.digest, *sources])
    return _once(mesh, "service key", service, compute)


def _once(mesh: Mesh, what: str, service: Service, compute) -> str:
    """Keys are computed once per mesh and service."""
    found = mesh.memo.get((what, service.host))
    if found is None:
        found = mesh.memo[(what, service.host)] = compute()
    return found


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
