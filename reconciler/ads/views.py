"""A view's configuration, compiled once and shared by every proxy of that view.

A served view holds its resources' serialized bytes (compiler/xds.py's CompiledView), never their
messages: responses are assembled from those bytes by concatenation (see wire.py), and cached
per subscription, whole, so every proxy of a view that asks for the same gets the same bytes.
The response of a whole type (what a proxy subscribing to every resource gets) is written once,
when the view is served, and the view's resources are then views of it: each byte is held once.
The next revision's compile takes back what its objects did not change, and a resource whose
version did not change keeps the bytes proxies already hold, with the revision at which it last
changed: only what really changed is pushed.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field, replace
from typing import AbstractSet

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from compiler.model import Mesh
from compiler.wire import tag
from compiler.view import ANY_ADDRESS, ProxyView, ViewError, make_view
from compiler.xds import CompiledView, Resource, compile_view, config_dump, update_endpoints
from compiler.xds_types import ENDPOINT, ROUTE, TYPES

from . import wire


def _combined_version(resources) -> str:
    digest = hashlib.sha256()
    for resource in resources:
        digest.update(f"{resource.name}\0{resource.version}\n".encode())
    return digest.hexdigest()[:16]


_serials = itertools.count(1)


def _packed(type_url: str, resources: list[Resource]) -> list[bytes]:
    """The resources as encoded Any messages, for a response."""
    return [wire.any_message(type_url, resource.data) for resource in resources]


def delta_resources(type_url: str, resources: list[Resource]) -> list[bytes]:
    """The resources as encoded discovery Resources, for a delta response (built per response: each
    stream's differ, and keeping them would double what a view holds)."""
    return [wire.delta_resource(r.name, r.version, wire.any_message(type_url, r.data)) for r in resources]


@dataclass
class ServedView:
    compiled: CompiledView
    versions: dict[str, str]                            # type URL -> version of all its resources
    changed: int = 0                                    # resources whose bytes were not kept from before
    serial: int = field(default_factory=lambda: next(_serials))
    _versions: dict = field(default_factory=dict, repr=False)
    _responses: dict = field(default_factory=dict, repr=False)

    @property
    def view(self) -> ProxyView:
        return self.compiled.view

    @property
    def revision(self) -> str:
        return self.compiled.revision

    @property
    def resources(self) -> dict[str, dict[str, Resource]]:
        """Type URL -> name -> resource, in name order."""
        return self.compiled.resources

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
        if names is not None and names.issuperset(self.resources.get(type_url, ())):
            names = None  # every resource, as a subscription to all of them by name asks (EDS, RDS)
        key = (type_url, names)
        cached = self._responses.get(key)
        if cached is None and names is None:
            _write_whole(self, type_url)  # not written when the view was served (serve_view's endpoints_of)
            cached = self._responses[key]
        if cached is None:
            version = self.type_version(type_url, names)
            chosen = [r for n, r in self.resources.get(type_url, {}).items() if n in names]
            nonce = f"{version}-{self.serial}"
            cached = version, nonce, wire.sotw_response(wire.sotw_body(version, _packed(type_url, chosen), type_url), nonce)
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
            body = wire.sotw_body(version, _packed(type_url, chosen), type_url) if chosen else None
            cached = version, nonce, body and wire.sotw_response(body, nonce)
            self._responses[key] = cached
        return cached

    def config_dump(self) -> dict[str, list[dict]]:
        """The view as ``galleon compile`` prints it."""
        return config_dump(self.compiled)

    def size(self) -> int:
        """Its resources' serialized size, in bytes."""
        return self.compiled.size()

    def held_bytes(self) -> int:
        """What it holds in memory beyond objects' own overhead: its resources and cached responses."""
        return self.size() + sum(len(r[2] or b"") for r in self._responses.values())


def serve_view(mesh: Mesh, view: ProxyView, previous: ServedView | None = None,
               endpoints_of: AbstractSet[str] | None = None) -> ServedView:
    """Compile a view, taking back from ``previous`` (this view's served before) what did not change,
    and write each type's whole response, which its resources then point into.

    With ``endpoints_of`` (hosts whose endpoints alone changed: model.relisted), only their
    assignments are built again (xds.update_endpoints): every other type is previous's, bytes and
    response, and the endpoints' whole response is written when a proxy first asks for it (most
    proxies hold every assignment already and get only those that changed)."""
    before = previous.compiled if previous is not None else None
    if endpoints_of is not None and before is not None:
        compiled = update_endpoints(mesh, before, endpoints_of)
        rebuilt: tuple[str, ...] = (ENDPOINT,)
        written: tuple[str, ...] = ()
    else:
        compiled = compile_view(mesh, view, previous=before)
        rebuilt = written = tuple(t.url for t in TYPES)
    kept = 0
    if before is not None:
        for xds_type in TYPES:
            old = before.resources[xds_type.url]
            kept += sum(1 for name, r in compiled.resources[xds_type.url].items() if old.get(name) is r)
    changed = sum(len(by_name) for by_name in compiled.resources.values()) - kept
    versions = {t.url: _combined_version(compiled.resources[t.url].values()) if t.url in rebuilt
                else previous.versions[t.url] for t in TYPES}  # type: ignore[union-attr]
    served = ServedView(compiled, versions, changed)
    for xds_type in TYPES:
        if xds_type.url in written:
            _write_whole(served, xds_type.url)
        elif xds_type.url not in rebuilt:
            served._responses[(xds_type.url, None)] = previous._responses[(xds_type.url, None)]  # type: ignore[union-attr]
    return served


def _write_whole(served: ServedView, type_url: str) -> None:
    """Write the response of every resource of a type and keep it as the view's cached answer; the
    view's resources, and the virtual hosts the next compile takes back, become views of its bytes,
    so the bytes they held before (this compile's, or a previous view's) are let go."""
    compiled, version = served.compiled, served.versions[type_url]
    nonce = f"{version}-{served.serial}"
    head, tail, url = wire.field(1, version), wire.field(4, type_url) + wire.field(5, nonce), wire.field(1, type_url)
    chunks: list[bytes | memoryview] = [head]
    placed: list[tuple[Resource, list[int]]] = []  # each resource, and where each of its parts starts
    at = len(head)
    for resource in compiled.resources[type_url].values():
        size = resource.size
        value = tag(2, size)
        entry = tag(2, len(url) + len(value) + size)
        chunks += (entry, url, value)
        at += len(entry) + len(url) + len(value)
        starts = []
        for part in resource.parts:
            starts.append(at)
            chunks.append(part)
            at += len(part)
        placed.append((resource, starts))
    chunks.append(tail)
    response = b"".join(chunks)
    whole = memoryview(response)
    moved: dict[int, memoryview] = {}  # id of a part held before -> its view in the response
    resources = compiled.resources[type_url]
    for resource, starts in placed:
        if type_url == ROUTE:  # its virtual hosts' bytes are the next compile's too: a view for each part
            parts = tuple(whole[start:start + len(part)] for start, part in zip(starts, resource.parts))
            moved.update((id(old), new) for old, new in zip(resource.parts, parts))
        else:  # one view (each costs more than a hundred bytes)
            parts = (whole[starts[0]:starts[0] + resource.size],)
        resources[resource.name] = Resource(resource.name, resource.version, parts, resource.revision)
    for key, unit in compiled.units.virtual_hosts.items():
        data = moved.get(id(unit.data))
        if data is not None:
            compiled.units.virtual_hosts[key] = replace(unit, data=data)
    served._responses[(type_url, None)] = version, nonce, response


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
