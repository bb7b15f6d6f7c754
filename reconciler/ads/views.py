"""A view's configuration, serialized once and shared by every proxy of that view.

Responses are assembled from those bytes by concatenation (see wire.py), never
serialized again per stream. The messages are kept as well, for the next
incremental compile (compile_view's ``previous``): they take about ten times
the memory of the bytes, the price of recompiling only what a commit touched.

Every resource's provenance names the revision it was compiled at, so a new
commit changes every resource's bytes. A resource's version hashes its bytes
without that revision, and a resource whose version did not change keeps the
bytes proxies already hold: only what really changed is pushed, and the
revision a proxy sees in a resource is the one at which that resource last
changed (while the server runs).
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from google.protobuf import any_pb2, json_format, struct_pb2

from compiler.model import Mesh
from compiler.view import ANY_ADDRESS, ProxyView, ViewError, make_view
from compiler.xds import (CLUSTER, DUMP_KEYS, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, ViewConfig, compile_view,
                          serialize, version_of)

from . import wire

# Envoy and gRPC subscribe to these by wildcard; the others by name.
WILDCARD_TYPES = frozenset((CLUSTER, LISTENER))
# In state of the world, a response that leaves one of these out keeps it (NOTES.md).
PARTIAL_TYPES = frozenset((ENDPOINT, ROUTE))


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str
    any: bytes      # an encoded google.protobuf.Any, ready for a DiscoveryResponse
    delta: bytes    # an encoded discovery Resource, ready for a DeltaDiscoveryResponse


def _combined_version(resources) -> str:
    digest = hashlib.sha256()
    for resource in resources:
        digest.update(f"{resource.name}\0{resource.version}\n".encode())
    return digest.hexdigest()[:16]


_serials = itertools.count(1)


@dataclass
class ServedView:
    view: ProxyView
    revision: str
    resources: dict[str, dict[str, Resource]]           # type URL -> name -> resource, in name order
    versions: dict[str, str]                            # type URL -> version of all its resources
    config: ViewConfig = field(repr=False)              # the messages, for the next incremental compile
    changed: int = 0                                    # resources whose bytes were not kept from before
    serial: int = field(default_factory=lambda: next(_serials))
    _versions: dict = field(default_factory=dict, repr=False)
    _responses: dict = field(default_factory=dict, repr=False)

    def type_version(self, type_url: str, names: frozenset[str] | None) -> str:
        """The version of every resource of a type (names None), or of the named ones."""
        if names is None:
            return self.versions[type_url]
        key = (type_url, names)
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = _combined_version(
                r for n, r in self.resources.get(type_url, {}).items() if n in names)
        return found

    def sotw(self, type_url: str, names: frozenset[str] | None) -> tuple[str, str, bytes]:
        """(version, nonce, DiscoveryResponse bytes) of every resource (names None) or of the named ones.

        Cached per subscription, whole: every proxy of a view gets the same bytes, nonce included.
        The nonce is the version and this view's serial, so a stream never sees one nonce twice for
        different content, and a late ACK is still told from the current one.
        """
        key = (type_url, names)
        cached = self._responses.get(key)
        if cached is None:
            version = self.type_version(type_url, names)
            chosen = [r for n, r in self.resources.get(type_url, {}).items() if names is None or n in names]
            nonce = f"{version}-{self.serial}"
            cached = version, nonce, wire.sotw_response(wire.sotw_body(version, [r.any for r in chosen], type_url),
                                                         nonce)
            self._responses[key] = cached
        return cached

    def sotw_update(self, type_url: str, names: frozenset[str], base: "ServedView",
                    base_names: frozenset[str]) -> tuple[str, str, bytes | None]:
        """Like ``sotw``, for a proxy that holds the named resources of ``base`` (asked for as
        ``base_names``): only those it lacks or holds in another version (None: it lacks none).
        Cached per base, so every proxy of a view that was in step gets the same bytes."""
        key = (type_url, names, base.serial, base_names)
        cached = self._responses.get(key)
        if cached is None:
            version = self.type_version(type_url, names)
            held = base.resources.get(type_url, {})
            chosen = [r for n, r in self.resources.get(type_url, {}).items()
                      if n in names and (n not in base_names or getattr(held.get(n), "version", None) != r.version)]
            nonce = f"{version}-{self.serial}-{base.serial}"
            body = wire.sotw_body(version, [r.any for r in chosen], type_url) if chosen else None
            cached = version, nonce, body and wire.sotw_response(body, nonce)
            self._responses[key] = cached
        return cached

    def config_dump(self) -> dict[str, list[dict]]:
        """The view as ``galleon compile`` prints it."""
        dump: dict[str, list[dict]] = {key: [] for key in DUMP_KEYS.values()}
        for type_url in PUSH_ORDER:
            for resource in self.resources[type_url].values():
                packed = any_pb2.Any.FromString(resource.any)
                dump[DUMP_KEYS[type_url]].append(json_format.MessageToDict(packed))
        return dump

    def size(self) -> int:
        return sum(len(r.any) + len(r.delta) for by_name in self.resources.values() for r in by_name.values())


def serve_view(mesh: Mesh, view: ProxyView, previous: ServedView | None = None) -> ServedView:
    """Compile a view and serialize each resource once; resources unchanged since ``previous`` (but
    for the revision in their provenance) keep its bytes."""
    config = compile_view(mesh, view, previous=previous.config if previous else None)
    revision = mesh.revision.encode()
    resources: dict[str, dict[str, Resource]] = {}
    changed = 0
    for type_url in PUSH_ORDER:
        before = previous.resources[type_url] if previous else {}
        reused = previous.config.resources[type_url] if previous else {}
        by_name = resources[type_url] = {}
        for name, message in config.resources[type_url].items():
            if reused.get(name) is message:  # the compiler kept it: so are its bytes
                by_name[name] = before[name]
                continue
            data = serialize(message)
            version = version_of(data.replace(revision, b"") if revision else data)
            kept = before.get(name)
            if kept is not None and kept.version == version:
                by_name[name] = kept
                continue
            packed = wire.any_message(type_url, data)
            by_name[name] = Resource(name, version, packed, wire.delta_resource(name, version, packed))
            changed += 1
    versions = {t: _combined_version(by_name.values()) for t, by_name in resources.items()}
    return ServedView(view, mesh.revision, resources, versions, config, changed)


# Node metadata keys, as Istio's agent sets them.
CLUSTER_ID, NETWORK, LABELS = "CLUSTER_ID", "NETWORK", "LABELS"
# Istio's mark of a proxyless gRPC client (GENERATOR: grpc); its node id is a sidecar's.
GENERATOR, GRPC_GENERATOR = "GENERATOR", "grpc"
# Galleon's own: where a proxy without traffic capture binds its listeners (see ProxyView).
LISTEN_ADDRESS = "GALLEON_LISTEN_ADDRESS"


def node_identity(node: base_pb2.Node) -> base_pb2.Node:
    """The parts of a node that its view is made of, copied out of the request that brought it:
    Envoy's whole node is about 60 KB, and a thousand proxies' worth would stay in memory."""
    kept = base_pb2.Node(id=node.id, cluster=node.cluster, locality=node.locality)
    for key in (CLUSTER_ID, NETWORK, LABELS, LISTEN_ADDRESS, GENERATOR):
        if key in node.metadata.fields:
            kept.metadata.fields[key].CopyFrom(node.metadata.fields[key])
    return kept


def _string(metadata: struct_pb2.Struct, key: str) -> str | None:
    value = metadata.fields.get(key)
    if value is None:
        return None
    if value.WhichOneof("kind") != "string_value":
        raise ViewError(f"node metadata {key} must be a string")
    return value.string_value or None


def view_of_node(mesh: Mesh, node: base_pb2.Node, default_cluster: str) -> ProxyView:
    """A proxy's view from its node (DESIGN.md "A proxy's view"); missing values default to the
    daemon's own cluster and that cluster's network and locality. A node with metadata GENERATOR=grpc
    is a proxyless gRPC client and gets the ``grpc`` view (compiler/proxyless.py); any other
    generator, or none, is an Envoy."""
    metadata = node.metadata
    labels: dict[str, str] = {}
    if LABELS in metadata.fields:
        value = metadata.fields[LABELS]
        if value.WhichOneof("kind") != "struct_value":
            raise ViewError("node metadata LABELS must be a map of strings")
        for key, label in value.struct_value.fields.items():
            if label.WhichOneof("kind") != "string_value":
                raise ViewError(f"node metadata LABELS.{key} must be a string")
            labels[key] = label.string_value
    locality = None
    if node.HasField("locality") and node.locality.region:
        parts = [node.locality.region, node.locality.zone, node.locality.sub_zone]
        locality = "/".join(parts).rstrip("/")
    return make_view(mesh, _string(metadata, CLUSTER_ID) or default_cluster, node.id, labels, locality,
                     _string(metadata, NETWORK), _string(metadata, LISTEN_ADDRESS) or ANY_ADDRESS,
                     proxyless=_string(metadata, GENERATOR) == GRPC_GENERATOR)
