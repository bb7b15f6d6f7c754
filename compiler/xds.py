"""A proxy view's complete Envoy configuration, its versions, and its JSON form.

Resources are real protobuf messages from xds-protos. A resource's version is
a hash of its deterministic serialization, so the same snapshot and view give
the same versions on every run and after every restart.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from . import proxyless
from .clusters import build_sni_dnat_cluster, service_clusters
from .endpoints import build_load_assignment
from .listeners import build_listeners
from .gateways import sni_dnat_targets
from .fingerprints import service_key, view_key
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
    built from.
    """

    resources: dict[str, dict[str, Message]]
    view_key: str = ""
    services: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict, repr=False)
    vhosts: dict = field(default_factory=dict, repr=False)  # a sidecar's virtual hosts by their key (routes.py)

    def items(self) -> Iterator[tuple[str, str, Message]]:
        for type_url in PUSH_ORDER:
            for name, message in self.resources[type_url].items():
                yield type_url, name, message

    def versions(self) -> dict[str, dict[str, str]]:
        return {t: {n: version_of(serialize(m)) for n, m in self.resources[t].items()} for t in PUSH_ORDER}


def _by_name(messages, key) -> dict[str, Message]:
    return {key(m): m for m in sorted(messages, key=key)}


def compile_view(mesh: Mesh, view: ProxyView, previous: ViewConfig | None = None) -> ViewConfig:
    """The configuration of one proxy view.

    With ``previous`` (this view's configuration of an earlier mesh), a service whose own objects
    (ServiceEntry, the WorkloadEntries it selects, its DestinationRule) and the mesh-wide objects are
    unchanged keeps its previous clusters and assignments instead of having them built again; they
    keep the revision they were compiled at in their provenance. Everything else is built anew, so
    the result equals a full compile but for those revisions.
    """
    if view.role == GRPC:
        return _compile_proxyless(mesh, view)
    services = visible_services(mesh, view)
    key_of_view = view_key(mesh, view)
    same_view = previous is not None and previous.view_key == key_of_view
    reusable = previous.services if same_view else {}
    dnat: dict[str, list] = {}
    for service, port, subset in sni_dnat_targets(mesh, view, services):
        dnat.setdefault(service.host, []).append((port, subset))
    clusters: list[Message] = []
    assignments: list[Message] = []
    built: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    vhosts: dict = {}
    for service in services:
        key = service_key(mesh, service)
        before = reusable.get(service.host)
        if before is not None and before[0] == key:
            mine = [previous.resources[CLUSTER][name] for name in before[1]]
            loads = [previous.resources[ENDPOINT][name] for name in before[2]]
        else:
            mine = service_clusters(mesh, view, service) + [build_sni_dnat_cluster(mesh, view, service, port, subset)
                                                             for port, subset in dnat.get(service.host, ())]
            loads = [_assignment(mesh, view, service, cluster) for cluster in mine
                     if cluster.HasField("eds_cluster_config")]
        clusters += mine
        assignments += loads
        built[service.host] = (key, tuple(c.name for c in mine), tuple(a.cluster_name for a in loads))
    return ViewConfig({
        CLUSTER: _by_name(clusters, lambda m: m.name),
        ENDPOINT: _by_name(assignments, lambda m: m.cluster_name),
        LISTENER: _by_name(build_listeners(mesh, view, services), lambda m: m.name),
        ROUTE: _by_name(build_routes(mesh, view, services, previous.vhosts if same_view else {}, vhosts),
                        lambda m: m.name),
    }, key_of_view, built, vhosts)


def _assignment(mesh: Mesh, view: ProxyView, service: Service, cluster: Message) -> Message:
    port, subset, _ = parse_eds_name(cluster.name)
    return build_load_assignment(mesh, view, service, service.port(port), subset or None,
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
