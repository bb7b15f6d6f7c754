"""A proxy view's complete Envoy configuration, its versions, and its JSON form.

Resources are real protobuf messages from xds-protos. A resource's version is
a hash of its deterministic serialization, so the same snapshot and view give
the same versions on every run and after every restart.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import AbstractSet, Iterator

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from . import proxyless
from .clusters import build_sni_dnat_cluster, service_clusters
from .endpoints import build_load_assignment
from .listeners import build_listeners
from .gateways import sni_dnat_targets
from .fingerprints import Key, changes, digests, service_key, view_key
from .model import Mesh, Service
from .names import parse_eds_name
from .routes import build_routes
from .scope import visible_services
from .view import GRPC, ProxyView

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# Envoy's make-before-break order: a cluster exists before a route points at it.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
DUMP_KEYS = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}


def serialize(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class ViewConfig:
    """Every resource of one view, by type URL and then by name, in name order.

    ``services`` records, per service host, what its clusters and assignments were built from (see
    ``compile_view``'s ``previous``) and their names; ``vhosts`` the virtual hosts, by what they were
    built from; ``digests`` the mesh's objects that those keys hold (fingerprints.digests).
    """

    resources: dict[str, dict[str, Message]]
    view_key: str = ""
    services: dict[str, tuple[Key, tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict, repr=False)
    vhosts: dict = field(default_factory=dict, repr=False)  # a sidecar's virtual hosts by their key (routes.py)
    digests: frozenset[str] = field(default=frozenset(), repr=False)

    def items(self) -> Iterator[tuple[str, str, Message]]:
        for type_url in PUSH_ORDER:
            for name, message in self.resources[type_url].items():
                yield type_url, name, message

    def versions(self) -> dict[str, dict[str, str]]:
        return {t: {n: version_of(serialize(m)) for n, m in self.resources[t].items()} for t in PUSH_ORDER}


def _by_name(messages, key) -> dict[str, Message]:
    return {key(m): m for m in sorted(messages, key=key)}


def compile_view(mesh: Mesh, view: ProxyView, previous: ViewConfig | None = None,
                 only: AbstractSet[str] | None = None) -> ViewConfig:
    """The configuration of one proxy view.

    With ``previous`` (this view's configuration of an earlier mesh), a service whose own objects
    (ServiceEntry, the WorkloadEntries it selects, its DestinationRule) and the mesh-wide objects are
    unchanged keeps its previous clusters and assignments instead of having them built again; they
    keep the revision they were compiled at in their provenance. Everything else is built anew, so
    the result equals a full compile but for those revisions.

    With ``only`` (hosts; not with ``previous``), just those services' clusters, assignments and
    sidecar virtual hosts are built: the route configurations keep their names and hold only those
    virtual hosts; listeners and gateway routes are whole. Two meshes compiled for the same ``only``
    differ exactly where their whole configurations differ among those hosts (a preview's need).
    """
    if view.role == GRPC:
        return _compile_proxyless(mesh, view)
    if only is not None and previous is not None:
        raise ValueError("compile_view: give previous or only, not both")
    services = visible_services(mesh, view)
    key_of_view = view_key(mesh, view)
    # The previous configuration is only reused for the same view.
    prior = previous if previous is not None and previous.view_key == key_of_view else None
    reusable = prior.services if prior is not None else {}
    # Only the keys of services that the changed objects feed are computed again.
    changed = changes(mesh, prior.digests) if prior is not None else None
    dnat: dict[str, list] = {}
    for service, port, subset in sni_dnat_targets(mesh, view, services):
        dnat.setdefault(service.host, []).append((port, subset))
    # The previous resources, in name order, stay in place but for those of rebuilt or gone services.
    clusters = dict(prior.resources[CLUSTER]) if prior is not None else {}
    assignments = dict(prior.resources[ENDPOINT]) if prior is not None else {}
    built: dict[str, tuple[Key, tuple[str, ...], tuple[str, ...]]] = {}
    for host in reusable.keys() - {service.host for service in services}:
        _replace(clusters, reusable[host][1], [], lambda m: m.name)
        _replace(assignments, reusable[host][2], [], lambda m: m.cluster_name)
    in_order = True
    for service in services:
        if only is not None and service.host not in only:
            continue
        before = reusable.get(service.host)
        if before is not None and changed is not None and not changed.may_differ(before[0]):
            built[service.host] = before
            continue
        key = service_key(mesh, service)
        if before is not None and before[0] == key:
            built[service.host] = before
            continue
        mine = service_clusters(mesh, view, service) + [build_sni_dnat_cluster(mesh, view, service, port, subset)
                                                         for port, subset in dnat.get(service.host, ())]
        loads = [_assignment(mesh, view, service, cluster) for cluster in mine
                 if cluster.HasField("eds_cluster_config")]
        old = before or (key, (), ())
        in_order &= _replace(clusters, old[1], mine, lambda m: m.name)
        in_order &= _replace(assignments, old[2], loads, lambda m: m.cluster_name)
        built[service.host] = (key, tuple(c.name for c in mine), tuple(a.cluster_name for a in loads))
    if not in_order:
        clusters, assignments = dict(sorted(clusters.items())), dict(sorted(assignments.items()))
    vhosts: dict = {}
    return ViewConfig({
        CLUSTER: clusters,
        ENDPOINT: assignments,
        LISTENER: _by_name(build_listeners(mesh, view, services), lambda m: m.name),
        ROUTE: _by_name(build_routes(mesh, view, services, prior.vhosts if prior is not None else {}, vhosts, changed,
                                     only), lambda m: m.name),
    }, key_of_view, built, vhosts, digests(mesh))


def _replace(resources: dict[str, Message], old: tuple[str, ...], new: list[Message], name) -> bool:
    """Put a service's new resources in place of its old ones (named ``old``); False when one has a
    name that was not there, so the dict is no longer in name order."""
    fresh = {name(message): message for message in new}
    resources.update(fresh)  # an existing name keeps its place
    for gone in set(old) - fresh.keys():
        del resources[gone]
    return fresh.keys() <= set(old)


def _assignment(mesh: Mesh, view: ProxyView, service: Service, cluster: Message) -> Message:
    port, subset, _ = parse_eds_name(cluster.name)
    return build_load_assignment(mesh, view, service, service.known_port(port), subset or None,
                                 sni_dnat=cluster.name.startswith("outbound_."))


def _compile_proxyless(mesh: Mesh, view: ProxyView) -> ViewConfig:
    """A proxyless gRPC client's view (proxyless.py): api_listeners named ``host:port``, and the
    sidecar's routes, clusters and endpoints as gRPC accepts them."""
    services = proxyless.proxyless_services(mesh, view)
    clusters = proxyless.build_clusters(mesh, view, services)
    eds = [c for c in clusters if c.HasField("eds_cluster_config")]
    return ViewConfig({
        CLUSTER: _by_name(clusters, lambda m: m.name),
        ENDPOINT: _by_name(proxyless.build_load_assignments(mesh, view, services, eds), lambda m: m.cluster_name),
        LISTENER: _by_name(proxyless.build_listeners(mesh, view, services), lambda m: m.name),
        ROUTE: _by_name(proxyless.build_routes(mesh, view, services), lambda m: m.name),
    })


def config_dump(config: ViewConfig) -> dict[str, list[dict]]:
    """Envoy's config_dump shape: each resource as proto3 JSON in an Any with its ``@type``."""
    dump: dict[str, list[dict]] = {key: [] for key in DUMP_KEYS.values()}
    for type_url, _, message in config.items():
        packed = any_pb2.Any()
        packed.Pack(message)
        dump[DUMP_KEYS[type_url]].append(json_format.MessageToDict(packed))
    return dump


def dump_json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
