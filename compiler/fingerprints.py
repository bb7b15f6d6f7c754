"""What a resource is built from, as keys that are equal exactly when its inputs are.

An incremental compile (xds.compile_view's ``previous``) keeps a resource whose key is
unchanged. Objects are compared by their document's text, file and line (SourceObject.digest),
so an edit anywhere in a document, or a shift of its lines, rebuilds what it feeds.

Keys are flat tuples of strings that name the hosts and hold the digests they are made of, so
``Changes`` can tell which keys may differ from a previous compile's without computing any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from . import cache, kube
from .gateways import MeshVirtualServices, destination_hosts
from .hosts import CLUSTER_DOMAIN, fqdn, matches
from .kinds import ENDPOINT_KINDS, NODE, SERVICE
from .model import Mesh, ObjectsByDigest, Service
from .parse import SourceObject
from .view import ProxyView

Key = tuple[str, ...]


def view_key(mesh: Mesh, view: ProxyView) -> str:
    """The proxy and every mesh-wide object (clusters, networks, settings, gateways, sidecars)."""
    return f"{mesh.digest}|{view!r}"


def route_key(mesh: Mesh, service: Service) -> Key:
    """What routes to a service are built from: its fields, where it is written (routes name it in
    their provenance) and its DestinationRule; not its endpoints, which routes never see."""
    def compute() -> Key:
        rule = mesh.destination_rule(service.host)
        return (service.host, repr((service.namespace, service.ports, service.resolution, service.location,
                                    service.addresses, sorted(service.exported_to), mesh.aliases_of(service.host))),
                f"{service.source.ref} {service.source.file}:{service.source.line}",
                rule.source.digest if rule else "-")
    return cache.ROUTE_KEY.of(mesh, service.host, compute)


def virtual_host_key(mesh: Mesh, port: int, services: Mapping[str, Service], service: Service) -> Key:
    """What a sidecar's virtual host for a service is made from: the port, the service, its
    VirtualService, and every service that VirtualService sends traffic to (or that it is not seen)."""
    vs = MeshVirtualServices.of(mesh).for_host(service.host)
    key = (str(port), *route_key(mesh, service))
    if vs is None:
        return key
    key += (vs.digest,)
    for host in destination_hosts(vs):
        other = services.get(host)
        key += route_key(mesh, other) if other else (host, "unseen")
    return key


def service_key(mesh: Mesh, service: Service) -> Key:
    """A service's clusters and assignments, beyond the view key: what its routes are built from,
    plus its ServiceEntry's text and the objects its endpoints come from."""
    def compute() -> Key:
        sources = sorted({obj.digest for source in service.endpoint_sources for obj in source.objects()})
        return (*route_key(mesh, service), service.source.digest, *sources)
    return cache.SERVICE_KEY.of(mesh, service.host, compute)


@dataclass(frozen=True)
class Changes:
    """What differs between the mesh of a previous compile (with the same view key) and this one."""

    gone: frozenset[str]  # digests of that mesh's objects not in this one: edited or removed
    hosts: frozenset[str]  # hosts an object new to this mesh (or edited) may feed

    def may_differ(self, key: Key) -> bool:
        """Whether a key computed on the previous mesh may differ on this one. A key holds the digest
        of every object it is made of, and names the host of every service it describes: if none
        is gone, and no new object feeds one of its hosts, it is the same."""
        return not (self.gone.isdisjoint(key) and self.hosts.isdisjoint(key))


def changes(mesh: Mesh, before: ObjectsByDigest) -> Changes:
    """The changes since a mesh whose per-service objects were ``before``: found once for all the
    views compiled against the same previous mesh."""
    return cache.CHANGES.of(mesh, before.serial, lambda: _changes(mesh, before))


def _changes(mesh: Mesh, before: ObjectsByDigest) -> Changes:
    now = mesh.per_service_objects.by_digest
    hosts: set[str] = set()
    namespaces: set[str] = set()  # of new WorkloadEntries and Pods: every service there may select them
    for digest in now.keys() - before.by_digest.keys():
        obj = now[digest]
        if obj.kind in ("WorkloadEntry", "Pod"):
            namespaces.add(obj.namespace)
        else:
            hosts |= _fed_by(mesh, obj)
    by_namespace = _hosts_by_namespace(mesh)
    for namespace in namespaces:
        hosts |= by_namespace.get(namespace, set())
    return Changes(frozenset(before.by_digest.keys() - now.keys()), frozenset(hosts))


def _hosts_by_namespace(mesh: Mesh) -> dict[str, set[str]]:
    def index() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for host, service in mesh.services.items():
            found.setdefault(service.namespace, set()).add(host)
        return found
    return cache.HOSTS_BY_NAMESPACE.of(mesh, (), index)


def _fed_by(mesh: Mesh, obj: SourceObject) -> set[str]:
    """The hosts whose keys may hold this object (a superset)."""
    if obj.kind in ("WorkloadEntry", "Pod"):
        # Only services of its own namespace select it (ServiceEntries, Kubernetes Services) or list it
        return set(_hosts_by_namespace(mesh).get(obj.namespace, ()))
    if obj.kind == NODE:  # the locality of every pod on it: a superset, but Nodes seldom change
        return set(mesh.services)
    if obj.kind == SERVICE:  # an ExternalName Service feeds the host it stands for too
        return {kube.service_host(obj), mesh.resolve_alias(kube.service_host(obj))}
    if obj.kind in ENDPOINT_KINDS:
        return {f"{kube.endpoint_slice_service(obj) if obj.kind == 'EndpointSlice' else obj.name}."
                f"{obj.namespace}.{CLUSTER_DOMAIN}"}
    spec = obj.spec
    patterns = {fqdn(h, obj.namespace) for h in ([spec["host"]] if obj.kind == "DestinationRule" else
                                                 spec.get("hosts", []))}
    hosts = {p for p in patterns if "*" not in p}
    if len(hosts) < len(patterns):  # a wildcard: every host it covers
        hosts.update(h for h in mesh.services for p in patterns if matches(p, h))
    return hosts
