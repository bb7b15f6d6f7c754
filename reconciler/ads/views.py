"""A view's configuration, compiled once and shared by every proxy of that view.

A served view holds its resources' serialized bytes (compiler/xds.py's CompiledView), never their
messages: responses are assembled from those bytes by concatenation (see wire.py), and cached
per subscription, whole, so every proxy of a view that asks for the same gets the same bytes.
The response of a whole type (what a proxy subscribing to every resource gets) is written once,
when the view is served, and the view's resources are then views of it: each byte is held once.
What a view keeps for part of a type is bounded (PARTIAL_RESPONSES, and no more bytes than its
serialized size), and what it works out from a subscription lives no longer than the subscription,
so a client's subscriptions cannot grow a view that outlives them.
The next revision's compile takes back what its objects did not change, and a resource whose
version did not change keeps the bytes proxies already hold, with the revision at which it last
changed: only what really changed is pushed.
"""
from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Optional

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from compiler.model import Mesh
from compiler.wire import tag
from compiler.view import ANY_ADDRESS, ProxyView, ViewError, make_view
from compiler.xds import CompiledView, Resource, compile_view, config_dump, update_endpoints
from compiler.xds_types import ROUTE, TYPES

from . import wire


def _mixed(resources) -> int:
    """The versions of resources, combined: each is a digest of the resource's bytes, its name in them,
    so their exclusive or changes with any one of them, and is kept up to date by those that change."""
    mixed = 0
    for resource in resources:
        mixed ^= int(resource.version, 16)
    return mixed


def _combined_version(resources) -> str:
    return f"{_mixed(resources):016x}"


_serials = itertools.count(1)


def _packed(type_url: str, resources: list[Resource]) -> list[bytes]:
    """The resources as encoded Any messages, for a response."""
    return [wire.any_message(type_url, resource.data) for resource in resources]


def delta_resources(type_url: str, resources: list[Resource]) -> list[bytes]:
    """The resources as encoded discovery Resources, for a delta response (built per response: each
    stream's differ, and keeping them would double what a view holds)."""
    return [wire.delta_resource(r.name, r.version, wire.any_message(type_url, r.data)) for r in resources]


# What a view has of a subscription to a type: the names of its resources asked for, in name order, and
# their version; None when it is asked for all of them.
Subset = Optional[tuple[tuple[str, ...], str]]

# Responses to part of a type kept per view, least recently used let go first: a view's proxies in
# step ask for the same parts, so a few serve them all.
PARTIAL_RESPONSES = 64
# Views a stream may have been in step with when a later one is served (ServedView.since): the one
# before, mostly, and a few for streams that lagged.
SINCE_BASES = 8
# Updates a view remembers the names of (ServedView.since): as many as a stream that lags behind a
# registry's publishes may be behind by.
LINEAGE = 32


@dataclass
class ServedView:
    compiled: CompiledView
    versions: dict[str, str]                            # type URL -> version of all its resources
    changed: int = 0                                    # resources whose bytes were not kept from before
    serial: int = field(default_factory=lambda: next(_serials))
    # Type URL -> (version, nonce, response) of all its resources: the resources' bytes are views of it.
    _whole: dict = field(default_factory=dict, repr=False)
    # Type URL -> what this view has of each subscription (_subset), let go with the subscription.
    _subsets: dict = field(default_factory=dict, repr=False)
    # (type URL, names[, base serial, base names]) -> (version, nonce, response or None), least recently used first.
    _partial: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _partial_bytes: int = field(default=0, repr=False)
    # Type URL -> its resources' serialized size: summed once, or the view's it was updated from.
    _sizes: dict = field(default_factory=dict, repr=False)
    # (type URL, base serial) -> what changed since that view (since()), the few most recent bases.
    _since: OrderedDict = field(default_factory=OrderedDict, repr=False)
    # The views this one was updated from, oldest first, at most LINEAGE: (serial, type URL -> the
    # names that changed from it to the next, or None while not known). Names and serials only: no
    # earlier view is held.
    _lineage: tuple = field(default=(), repr=False)

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

    def _subset(self, type_url: str, names: frozenset[str]) -> Subset:
        """The names of this view's resources of a type that a subscription asks for, in name order, and
        their version; None when it asks for all of them. What a response holds depends on these alone,
        so the names a proxy asks for that the view lacks (any number) are kept nowhere."""
        memo = self._subsets.get(type_url)
        if memo is None:
            memo = self._subsets[type_url] = _PerSubscription()
        known = memo.get(names)
        if known is not None:
            return known[1]
        resources = self.resources.get(type_url, {})
        chosen = tuple(name for name in resources if name in names)
        found = None if len(chosen) == len(resources) else (chosen, _combined_version(resources[n] for n in chosen))
        memo.put(names, found)
        return found

    def type_version(self, type_url: str, names: frozenset[str] | None) -> str:
        """The version of every resource of a type (names None), or of the named ones."""
        subset = None if names is None else self._subset(type_url, names)
        return self.versions[type_url] if subset is None else subset[1]

    def sotw(self, type_url: str, names: frozenset[str] | None) -> tuple[str, str, bytes]:
        """(version, nonce, DiscoveryResponse bytes) of every resource (names None) or of the named ones.

        Cached per subscription, whole: every proxy of a view gets the same bytes, nonce included.
        The nonce is the version and this view's serial, so a stream never sees one nonce twice for
        different content, and a late ACK is still told from the current one.
        """
        subset = None if names is None else self._subset(type_url, names)
        if subset is None:  # every resource, as a subscription to all of them by name asks (EDS, RDS)
            if type_url not in self._whole:
                _write_whole(self, type_url)  # not written when the view was served (serve_view's endpoints_of)
            return self._whole[type_url]
        chosen, version = subset
        key = (type_url, chosen)
        cached = self._cached(key)
        if cached is None:
            resources = self.resources[type_url]
            nonce = f"{version}-{self.serial}"
            cached = self._keep(key, (version, nonce, wire.sotw_response(
                wire.sotw_body(version, _packed(type_url, [resources[n] for n in chosen]), type_url), nonce)))
        return cached

    def sotw_update(self, type_url: str, names: frozenset[str], base: "ServedView",
                    base_names: frozenset[str]) -> tuple[str, str, bytes | None]:
        """Like ``sotw``, for a proxy that holds the named resources of ``base`` (asked for as
        ``base_names``): only those it lacks or holds in another version (None: it lacks none).
        Cached per base, so every proxy of a view that was in step gets the same bytes."""
        subset, base_subset = self._subset(type_url, names), base._subset(type_url, base_names)
        # (None in the key: all of that view's resources of the type.)
        key = (type_url, subset and subset[0], base.serial, base_subset and base_subset[0])
        cached = self._cached(key)
        if cached is None:
            resources = self.resources.get(type_url, {})
            version, chosen = (self.versions[type_url], resources) if subset is None else (subset[1], subset[0])
            differ = self.since(type_url, base)[0]
            if names is base_names:  # the same subscription: what it lacks of this view differs from base
                sent = [resources[n] for n in differ if n in names]
            else:
                had = base.resources.get(type_url, {}).keys() if base_subset is None else frozenset(base_subset[0])
                differs = frozenset(differ)
                sent = [resources[n] for n in chosen if n not in had or n in differs]
            nonce = f"{version}-{self.serial}-{base.serial}"
            body = wire.sotw_body(version, _packed(type_url, sent), type_url) if sent else None
            cached = self._keep(key, (version, nonce, body and wire.sotw_response(body, nonce)))
        return cached

    def delta_all(self, type_url: str) -> bytes:
        """What of a delta response carrying every resource of a type comes before its nonce (each
        stream's own): the first response of every stream of the view that subscribes to all of them,
        written once for them all (kept as a partial response is)."""
        key = ("delta", type_url)
        cached = self._cached(key)
        if cached is None:
            body = wire.delta_body(self.versions[type_url],
                                   delta_resources(type_url, list(self.resources.get(type_url, {}).values())), type_url)
            cached = self._keep(key, (self.versions[type_url], "", body))
        return cached[2]

    def since(self, type_url: str, base: "ServedView") -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the names of this view's resources of a type that ``base`` lacks or holds in another version,
        the names ``base`` has and this view lacks): what a stream that holds ``base`` needs of this view
        (sotw_update; a delta stream in step). Found once per base, for all the streams that hold it: from
        the names the updates since base changed when base is in this view's lineage, else by comparing
        every resource."""
        key = (type_url, base.serial)
        found = self._since.get(key)
        if found is None:
            mine, theirs = self.resources.get(type_url, {}), base.resources.get(type_url, {})
            if mine is theirs:
                found = ((), ())
            elif (touched := self._touched_since(type_url, base.serial)) is not None:
                # only the names the updates since base changed can differ
                names = sorted(touched)
                found = (tuple(name for name in names if (resource := mine.get(name)) is not None
                               and ((old := theirs.get(name)) is None
                                    or (old is not resource and old.version != resource.version))),
                         tuple(name for name in names if name in theirs and name not in mine))
            else:
                found = (tuple(name for name, resource in mine.items()
                               if (old := theirs.get(name)) is not resource
                               and (old is None or old.version != resource.version)),
                         tuple(name for name in theirs if name not in mine))
            self._since[key] = found
            while len(self._since) > SINCE_BASES:
                self._since.popitem(last=False)
        return found

    def _touched_since(self, type_url: str, serial: int) -> set[str] | None:
        """The names of a type that the updates from the view ``serial`` to this one changed, or None
        when this view was not updated from it within its lineage."""
        for at, (step_serial, _) in enumerate(self._lineage):
            if step_serial == serial:
                steps = [names for _, names in self._lineage[at:]]
                if any(names is None for names in steps):
                    return None
                return {name for names in steps for name in names.get(type_url, ())}
        return None

    def _cached(self, key: tuple) -> tuple | None:
        found = self._partial.get(key)
        if found is not None:
            self._partial.move_to_end(key)
        return found

    def _keep(self, key: tuple, entry: tuple) -> tuple:
        """Cache a response to part of a type, within PARTIAL_RESPONSES and the view's serialized size (so
        it holds at most about twice that, the endpoints' whole response written or not), letting the
        least recently used go."""
        cost = _partial_cost(key, entry)
        limit = self.size()
        if cost > limit:
            return entry  # sent, not kept: larger than what a view may keep
        while self._partial and (len(self._partial) >= PARTIAL_RESPONSES or self._partial_bytes + cost > limit):
            self._partial_bytes -= _partial_cost(*self._partial.popitem(last=False))
        self._partial[key] = entry
        self._partial_bytes += cost
        return entry

    def config_dump(self) -> dict[str, list[dict]]:
        """The view as ``galleon compile`` prints it."""
        return config_dump(self.compiled)

    def size(self) -> int:
        """Its resources' serialized size, in bytes (the accounting of --views-memory asks every view's, a
        view updated for endpoints sums only theirs)."""
        for type_url, resources in self.resources.items():
            if type_url not in self._sizes:
                self._sizes[type_url] = sum(resource.size for resource in resources.values())
        return sum(self._sizes.values())

    def held_bytes(self) -> int:
        """What it holds in memory beyond objects' own overhead: its resources and cached responses."""
        return self.size() + sum(len(whole[2]) for whole in self._whole.values()) + self._partial_bytes

    def superseded(self) -> None:
        """No compile will start from this view any more (the server has its successor, or let it go):
        what only such a compile reads is let go, while the streams that hold it keep what they were
        sent."""
        self.compiled.units.let_go()


class _PerSubscription:
    """What a view works out from each subscription, found by the subscription's identity (streams
    share one set per distinct subscription: protocol.Subscriptions) and let go with it."""

    def __init__(self) -> None:
        self._found: dict[int, tuple[weakref.ref, Subset]] = {}

    def get(self, names: frozenset[str]) -> tuple[weakref.ref, Subset] | None:
        """(a reference to the subscription, what was worked out from it), or None when nothing was."""
        entry = self._found.get(id(names))
        return entry if entry is not None and entry[0]() is names else None

    def put(self, names: frozenset[str], found: Subset) -> None:
        key, memo = id(names), weakref.ref(self)

        def forget(_: weakref.ref) -> None:  # runs as the set is freed, before its id can be reused
            held = memo()
            if held is not None:
                held._found.pop(key, None)

        self._found[key] = (weakref.ref(names, forget), found)

    def __len__(self) -> int:
        return len(self._found)


def _partial_cost(key: tuple, entry: tuple) -> int:
    """The bytes a cached partial response holds: the response, and the names of its key (references)."""
    return len(entry[2] or b"") + 8 * sum(len(part) for part in key if isinstance(part, tuple))


def serve_view(mesh: Mesh, view: ProxyView, previous: ServedView | None = None,
               endpoints_of: AbstractSet[str] | None = None) -> ServedView:
    """Compile a view, taking back from ``previous`` (this view's served before) what did not change,
    and write the whole response of each type proxies subscribe to by wildcard (the others' when first
    asked for), which its resources then point into.

    With ``endpoints_of`` (hosts whose endpoints alone changed: model.relisted), only their
    assignments are built again (xds.update_endpoints): every other type is previous's, bytes and
    response, and the endpoints' whole response is written when a proxy first asks for it (most
    proxies hold every assignment already and get only those that changed)."""
    before = previous.compiled if previous is not None else None
    if endpoints_of is not None and before is not None:
        compiled = update_endpoints(mesh, before, endpoints_of)
    else:
        compiled = compile_view(mesh, view, previous=before)
    served = ServedView(compiled, {})
    unchanged: set[str] = set()  # types whose every resource is previous's: its whole response too
    step: dict[str, tuple[str, ...]] = {}  # type URL -> names changed from previous
    if previous is not None:
        # What may differ from previous: the assignments update_endpoints built again (the rest are
        # previous's), or, compiled whole, any resource; made exact below.
        served._lineage = (*previous._lineage, (previous.serial, compiled.rebuilt))[-LINEAGE:]
    for xds_type in TYPES:
        url, now = xds_type.url, compiled.resources[xds_type.url]
        if previous is None:
            served.versions[url] = _combined_version(now.values())
            served.changed += len(now)
            continue
        # previous's version, with what changed taken out and put in: a view of thousands of assignments
        # is updated many times a second for a few of them (model.relisted). What changed is what the
        # streams that hold previous are then sent (ServedView.since): found once for both.
        differ, gone = served.since(url, previous)
        old = previous.resources[url]
        mixed = int(previous.versions[url], 16) ^ _mixed(old[name] for name in gone)
        for name in differ:
            mixed ^= int(now[name].version, 16) ^ (int(old[name].version, 16) if name in old else 0)
        served.versions[url] = f"{mixed:016x}"
        served.changed += len(differ)
        if differ or gone:
            step[url] = differ + gone
        else:
            unchanged.add(url)
    if previous is not None:
        served._lineage = (*served._lineage[:-1], (previous.serial, step))
    for xds_type in TYPES:
        if xds_type.url in unchanged:
            # previous's resources: its whole response (when written) and size too
            for mine, theirs in ((served._whole, previous._whole), (served._sizes, previous._sizes)):  # type: ignore[union-attr]
                if xds_type.url in theirs:
                    mine[xds_type.url] = theirs[xds_type.url]
        elif xds_type.wildcard:
            # A proxy subscribed by wildcard gets every resource of the type on each change; one that
            # asks by name, and holds the view before, only those that changed: its whole response
            # waits for a proxy that asks for all of it (sotw).
            _write_whole(served, xds_type.url)
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
    served._whole[type_url] = version, nonce, response


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
