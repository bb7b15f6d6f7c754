"""A proxy view's complete Envoy configuration, its versions, and its JSON form.

Resources are real protobuf messages from xds-protos. A resource's version is
a hash of its deterministic serialization, so the same snapshot and view give
the same versions on every run and after every restart.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from . import proxyless
from .clusters import build_clusters
from .endpoints import build_load_assignment
from .listeners import build_listeners
from .model import Mesh
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
    """Every resource of one view, by type URL and then by name, in name order."""

    resources: dict[str, dict[str, Message]]

    def items(self) -> Iterator[tuple[str, str, Message]]:
        for type_url in PUSH_ORDER:
            for name, message in self.resources[type_url].items():
                yield type_url, name, message

    def versions(self) -> dict[str, dict[str, str]]:
        return {t: {n: version_of(serialize(m)) for n, m in self.resources[t].items()} for t in PUSH_ORDER}


def _by_name(messages, key) -> dict[str, Message]:
    return {key(m): m for m in sorted(messages, key=key)}


def compile_view(mesh: Mesh, view: ProxyView) -> ViewConfig:
    if view.role == GRPC:
        return _compile_proxyless(mesh, view)
    services = visible_services(mesh, view)
    clusters = build_clusters(mesh, view, services)
    eds = [c for c in clusters if c.HasField("eds_cluster_config")]
    assignments = []
    by_host = {s.host: s for s in services}
    for cluster in eds:
        port, subset, host = parse_eds_name(cluster.name)
        service = by_host[host]
        assignments.append(build_load_assignment(mesh, view, service, service.port(port), subset or None,
                                                 sni_dnat=cluster.name.startswith("outbound_.")))
    return ViewConfig({
        CLUSTER: _by_name(clusters, lambda m: m.name),
        ENDPOINT: _by_name(assignments, lambda m: m.cluster_name),
        LISTENER: _by_name(build_listeners(mesh, view, services), lambda m: m.name),
        ROUTE: _by_name(build_routes(mesh, view, services), lambda m: m.name),
    })


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
