"""A proxy view's complete Envoy configuration, compiled to serialized resources, and its JSON form.

The builders (clusters.py, endpoints.py, listeners.py, routes.py; proxyless.py for gRPC clients)
make protobuf messages from a mesh and a view; a compiled view keeps only their bytes. A
resource's version is a digest of its content, the sources its provenance names included, taken
before its revision is stamped: the same snapshot and view give the same versions on every run
and after every restart. The revision is then appended as the resource's own metadata (a later
field merges over an earlier one): the revision compiled, or, when the view's previous compile
is given, the revision at which the resource last changed.

With the previous compile, what was built from objects that did not change is taken back instead
of being built again (cache.ViewUnits, by the keys of fingerprints.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Iterator

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from . import cache, proxyless, wire
from .cache import digest, serialize
from .clusters import build_sni_dnat_cluster, service_clusters, shared_by_views
from .endpoints import build_load_assignment, view_facts
from .fingerprints import changes, service_key, view_key, virtual_host_key
from .gateways import sni_dnat_targets
from .listeners import build_listeners
from .model import Mesh, Service
from .names import parse_eds_name
from .provenance import stamp
from .routes import SidecarRoutes, build_routes, route_configuration_shell, sidecar_route_tables, sidecar_virtual_host
from .scope import visible_services
from .view import GRPC, ROUTER, ProxyView
from .xds_types import BY_URL, CLUSTERS, ENDPOINTS, LISTENERS, ROUTES, TYPES, XdsType

VIRTUAL_HOSTS = ROUTES.message.DESCRIPTOR.fields_by_name["virtual_hosts"].number


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str  # a digest of its content and sources, before the revision was stamped
    # Its serialization, in parts (a route configuration's are its virtual hosts'); a served view's
    # are views of the response that carries them (reconciler/ads/views.py)
    parts: tuple[bytes | memoryview, ...]
    revision: str  # the revision stamped in it

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)


@dataclass
class CompiledView:
    view: ProxyView
    revision: str
    resources: dict[str, dict[str, Resource]]  # type URL -> name -> resource, in name order
    units: cache.ViewUnits = field(repr=False)  # what the next compile of this view may take back
    # update_endpoints: the names of the resources it built again, by type URL (every other resource is
    # the previous compile's, the same object); None: compiled whole.
    rebuilt: dict[str, tuple[str, ...]] | None = field(default=None, repr=False)

    def items(self) -> Iterator[tuple[XdsType, Resource]]:
        """Every resource, in push order, then by name."""
        for xds_type in TYPES:
            for resource in self.resources[xds_type.url].values():
                yield xds_type, resource

    def message(self, type_url: str, name: str) -> Message | None:
        """One resource as a message (parsed from its bytes: a compiled view keeps no message)."""
        resource = self.resources[type_url].get(name)
        return None if resource is None else BY_URL[type_url].message.FromString(resource.data)

    def messages(self, type_url: str) -> dict[str, Message]:
        """Every resource of a type as a message, by name."""
        parse = BY_URL[type_url].message.FromString
        return {name: parse(resource.data) for name, resource in self.resources[type_url].items()}

    def versions(self) -> dict[str, dict[str, str]]:
        return {url: {name: r.version for name, r in by_name.items()} for url, by_name in self.resources.items()}

    def size(self) -> int:
        """Its serialized size, in bytes."""
        return sum(resource.size for _, resource in self.items())


def compile_view(mesh: Mesh, view: ProxyView, previous: CompiledView | None = None,
                 only: AbstractSet[str] | None = None) -> CompiledView:
    """The configuration of one proxy view.

    With ``previous`` (this view's compile of an earlier mesh), the resources of a service whose own
    objects (ServiceEntry or Service, the workloads and listings its endpoints come from, its
    DestinationRule) and the mesh-wide objects are unchanged are taken back unbuilt, as are a
    sidecar's virtual hosts whose routes' objects are; a resource whose version is unchanged keeps
    its revision. The result equals a full compile but for those revisions.

    With ``only`` (hosts; not with ``previous``), just those services' clusters, assignments and
    sidecar virtual hosts are built: the route configurations keep their names and hold only those
    virtual hosts; listeners and gateway routes are whole. Two meshes compiled for the same ``only``
    differ exactly where their whole configurations differ among those hosts (a preview's need).
    """
    if only is not None and previous is not None:
        raise ValueError("compile_view: give previous or only, not both")
    build = _Compilation(mesh, view, previous)
    if view.role == GRPC:
        services = proxyless.proxyless_services(mesh, view)
        clusters = proxyless.build_clusters(mesh, view, services)
        eds = [c for c in clusters if c.HasField("eds_cluster_config")]
        build.add_all(CLUSTERS, clusters)
        build.add_all(ENDPOINTS, proxyless.build_load_assignments(mesh, view, services, eds))
        build.add_all(LISTENERS, proxyless.build_listeners(mesh, view, services))
        build.add_all(ROUTES, proxyless.build_routes(mesh, view, services))
        return build.result()
    services = visible_services(mesh, view)
    dnat: dict[str, list] = {}
    for service, port, subset in sni_dnat_targets(mesh, view, services):
        dnat.setdefault(service.host, []).append((port, subset))
    for service in services:
        if only is None or service.host in only:
            build.service(service, dnat.get(service.host, ()))
    build.add_all(LISTENERS, build_listeners(mesh, view, services))
    if view.role == ROUTER:
        build.add_all(ROUTES, build_routes(mesh, view, services))
    else:
        by_host = {service.host: service for service in services}
        for table in sidecar_route_tables(services):
            if only is not None:
                table = SidecarRoutes(table.name, table.port, [s for s in table.services if s.host in only])
            build.sidecar_routes(table, by_host)
    return build.result()


def updates_endpoints_in_part(view: ProxyView) -> bool:
    """Whether update_endpoints builds only the given services' assignments of this view: a proxyless
    client's resources are not kept per service, so its view is compiled whole."""
    return view.role != GRPC


def update_endpoints(mesh: Mesh, previous: CompiledView, hosts: AbstractSet[str]) -> CompiledView:
    """``previous`` with the assignments of ``hosts`` built again from ``mesh``: a mesh that differs
    from previous's only in those services' endpoints, and not in anything their clusters read
    (model.relisted's ``endpoints_only``). Clusters, listeners and routes are previous's, unbuilt.
    Equal to ``compile_view(mesh, view, previous)`` but for the work."""
    if not updates_endpoints_in_part(previous.view):
        return compile_view(mesh, previous.view, previous)
    build = _Compilation(mesh, previous.view, previous, whole=False)
    build.resources = {url: by_name if url != ENDPOINTS.url else dict(by_name)
                       for url, by_name in previous.resources.items()}
    build.carried.add(ENDPOINTS.url)  # each assignment is replaced in place: the names stay in order
    build.units = cache.ViewUnits(previous.units.view_key, dict(previous.units.services), previous.units.tables,
                                  previous.units.virtual_hosts, mesh.per_service_objects)
    rebuilt: list[str] = []
    for host in sorted(hosts):
        unit = previous.units.services.get(host)
        service = mesh.services.get(host)
        if unit is None or service is None:
            continue  # not seen by this view
        for name in unit.names.get(ENDPOINTS.url, ()):
            build._put(ENDPOINTS, *build._assignment(service, name))
            rebuilt.append(name)
        build.units.services[host] = cache.ServiceUnit(service_key(mesh, service), unit.names)
    return replace(build.result(), rebuilt={ENDPOINTS.url: tuple(rebuilt)})


class _Compilation:
    """One compile of one view: what it has built so far, and what the previous compile left."""

    def __init__(self, mesh: Mesh, view: ProxyView, previous: CompiledView | None, whole: bool = True):
        self.mesh, self.view, self.revision = mesh, view, mesh.revision
        self.resources: dict[str, dict[str, Resource]] = {t.url: {} for t in TYPES}
        self.before: dict[str, dict[str, Resource]] = \
            previous.resources if previous is not None and previous.view == view else {}
        # Types whose previous resources were carried over whole (each service then replaces its own),
        # and those of them that gained a name, so are no longer in name order.
        self.carried: set[str] = set()
        self.unordered: set[str] = set()
        self.kept = cache.ViewUnits()
        if not whole:  # update_endpoints: it takes what it keeps itself
            return
        key = view_key(mesh, view)
        # A resource of the same proxy's previous compile whose version is unchanged is kept; what
        # it was built from is taken back only for a mesh alike but for per-service objects.
        same = previous is not None and previous.units.view_key == key
        if same and previous is not None:
            self.kept = previous.units
        before = self.kept.objects  # (read once: the server may drop a superseded view's meanwhile)
        self.changed = changes(mesh, before) if same and before is not None else None
        self.units = cache.ViewUnits(key, objects=mesh.per_service_objects)
        if same:
            # Most services' clusters and assignments are taken back: copying the previous ones whole
            # and replacing a rebuilt service's costs less than putting each back.
            for url in (CLUSTERS.url, ENDPOINTS.url):
                self.resources[url] = dict(self.before[url])
                self.carried.add(url)

    def result(self) -> CompiledView:
        """The compiled view, each type's resources in name order (the previous compile's order when
        the names are the same, as after most changes)."""
        for host in self.kept.services.keys() - self.units.services.keys():
            for url, names in self.kept.services[host].names.items():  # a service this view no longer sees
                for name in names:
                    self.resources[url].pop(name, None)
        ordered = {}
        for url, by_name in self.resources.items():
            before = self.before.get(url)
            if by_name is before or (url in self.carried and url not in self.unordered):
                ordered[url] = by_name
            elif before is not None and len(before) == len(by_name) and before.keys() == by_name.keys():
                ordered[url] = {name: by_name[name] for name in before}
            else:
                ordered[url] = dict(sorted(by_name.items()))
        return CompiledView(self.view, self.revision, ordered, self.units)

    def add_all(self, xds_type: XdsType, messages: list[Message]) -> None:
        for message in messages:
            self.add(xds_type, message)

    def add(self, xds_type: XdsType, message: Message) -> str:
        return self._put(xds_type, *_serialized(xds_type, message))

    def _put(self, xds_type: XdsType, name: str, content: tuple[bytes | memoryview, ...], sources: bytes) -> str:
        """A resource of this content (its own metadata naming ``sources`` in it): the previous
        compile's when its version is the same, else stamped with this revision."""
        version = digest(*content)
        resources = self.resources[xds_type.url]
        if xds_type.url in self.carried and name not in resources:
            self.unordered.add(xds_type.url)
        kept = self.before.get(xds_type.url, {}).get(name)
        if kept is not None and kept.version == version:
            resources[name] = kept
            return name
        metadata = xds_type.metadata_field
        parts = content + (stamp(metadata, sources, self.revision),) if sources and metadata is not None else content
        resources[name] = Resource(name, version, parts, self.revision)
        return name

    def service(self, service: Service, dnat) -> None:
        """A service's clusters and assignments (and an east-west gateway's SNI-DNAT clusters of it)."""
        before = self.kept.services.get(service.host)
        if before is not None and self.changed is not None and not self.changed.may_differ(before.key):
            key = before.key  # none of the objects it holds changed: so is the key
        else:
            key = service_key(self.mesh, service)
        if before is not None and before.key == key:  # its resources were carried over
            self.units.services[service.host] = before
            return
        def serialized() -> list[tuple[tuple[str, tuple[bytes | memoryview, ...], bytes], bool]]:
            return [(_serialized(CLUSTERS, c), c.HasField("eds_cluster_config"))
                    for c in service_clusters(self.mesh, self.view, service)]
        clusters = cache.SERIALIZED_CLUSTERS.of(self.mesh, service.host, serialized) \
            if shared_by_views(service) else serialized()
        clusters = clusters + [(_serialized(CLUSTERS, c), c.HasField("eds_cluster_config"))
                               for c in (build_sni_dnat_cluster(self.mesh, self.view, service, port, subset)
                                         for port, subset in dnat)]
        names = {CLUSTERS.url: tuple(self._put(CLUSTERS, *cluster) for cluster, _ in clusters),
                 ENDPOINTS.url: tuple(self._put(ENDPOINTS, *self._assignment(service, cluster[0]))
                                      for cluster, eds in clusters if eds)}
        for url, old in (before.names.items() if before is not None else ()):
            for name in set(old).difference(names.get(url, ())):  # carried over, and no longer built
                del self.resources[url][name]
        self.units.services[service.host] = cache.ServiceUnit(key, names)

    def _assignment(self, service: Service, cluster_name: str) -> tuple[str, tuple[bytes | memoryview, ...], bytes]:
        """An EDS cluster's assignment, serialized: built once per mesh for the views alike in what it
        reads of them (endpoints.view_facts)."""
        number, subset, _ = parse_eds_name(cluster_name)
        port = service.known_port(number)
        facts = view_facts(self.mesh, self.view, service, port, subset or None)
        return cache.ASSIGNMENTS.of(self.mesh, (cluster_name, facts), lambda: _serialized(
            ENDPOINTS, build_load_assignment(self.mesh, self.view, service, port, subset or None,
                                             sni_dnat=cluster_name.startswith("outbound_."))))

    def sidecar_routes(self, table: SidecarRoutes, services: dict[str, Service]) -> None:
        """A sidecar's route configuration for one port, from its virtual hosts: each taken back from
        the previous compile while its key is unchanged, the configuration too while all are."""
        before = dict(self.kept.tables.get(table.name, ()))
        keys = []
        for service in table.services:
            key = before.get(service.host)
            if key is None or self.changed is None or self.changed.may_differ(key):
                key = virtual_host_key(self.mesh, table.port, services, service)
            keys.append((service.host, key))
        self.units.tables[table.name] = tuple(keys)
        if self.before and tuple(keys) == self.kept.tables.get(table.name) and table.name in self.before[ROUTES.url]:
            self.resources[ROUTES.url][table.name] = self.before[ROUTES.url][table.name]
            for _, key in keys:
                self.units.virtual_hosts[key] = self.kept.virtual_hosts[key]
            return
        hosts = []
        for host, key in keys:
            unit = self.kept.virtual_hosts.get(key) or _unit(sidecar_virtual_host(self.mesh, self.view, table.port,
                                                                               services, services[host]))
            self.units.virtual_hosts[key] = unit
            hosts.append(unit)
        content, sources = _assembled(table.name, hosts)
        self._put(ROUTES, table.name, content, sources)


def _serialized(xds_type: XdsType, message: Message) -> tuple[str, tuple[bytes | memoryview, ...], bytes]:
    """(name, content, the sources its own metadata names, serialized) of a message."""
    content = serialize(message)
    has_metadata = xds_type.metadata_field is not None and message.HasField("metadata")
    return xds_type.name_of(message), (content,), serialize(message.metadata) if has_metadata else b""


def _unit(vhost: rc.VirtualHost) -> cache.VirtualHostUnit:
    return cache.VirtualHostUnit(vhost.name, tuple(vhost.domains), serialize(vhost), serialize(vhost.metadata))


def _assembled(name: str, hosts: list[cache.VirtualHostUnit]) -> tuple[tuple[bytes | memoryview, ...], bytes]:
    """A route configuration's serialization, in parts, from its virtual hosts' (routes.route_configuration's
    result, a virtual host's bytes written once), and the sources it names: its first virtual host's."""
    parts: list[bytes | memoryview] = [serialize(route_configuration_shell(name))]
    taken: set[str] = set()
    sources = b""
    for unit in sorted(hosts, key=lambda unit: unit.name):
        data, unique = unit.data, list(dict.fromkeys(unit.domains))
        if len(unique) < len(unit.domains) or not taken.isdisjoint(unique):
            # Envoy rejects a domain listed twice in one configuration: the first virtual host keeps it
            unique = [d for d in unique if d not in taken]
            if not unique:
                continue
            vhost = rc.VirtualHost.FromString(bytes(data))
            del vhost.domains[:]
            vhost.domains.extend(unique)
            data = serialize(vhost)
        taken.update(unique)
        sources = sources or unit.sources
        parts += (wire.tag(VIRTUAL_HOSTS, len(data)), data)
    if sources:
        parts.append(wire.field(ROUTES.metadata_field or 0, sources))
    return tuple(parts), sources


def config_dump(compiled: CompiledView) -> dict[str, list[dict]]:
    """Envoy's config_dump shape: each resource as proto3 JSON in an Any with its ``@type``."""
    dump: dict[str, list[dict]] = {t.dump_key: [] for t in TYPES}
    for xds_type, resource in compiled.items():
        packed = any_pb2.Any(type_url=xds_type.url, value=resource.data)
        dump[xds_type.dump_key].append(json_format.MessageToDict(packed))
    return dump


def dump_json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
