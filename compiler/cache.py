"""Everything the compiler keeps to be fast, in one place: each entry says what it holds and what
decides it, so what is reused, and when it is not, is read here.

The builders (clusters.py, endpoints.py, listeners.py, routes.py, proxyless.py) are functions of a
mesh and a proxy view. What they find again instead of computing is kept in four ways:

- **With a mesh** (``MeshEntry``): values derived from one mesh, decided by the key given and the
  mesh itself, which never changes. They live in ``Mesh.memo`` and go with the mesh, so nothing
  there is ever stale.
- **In the process** (``Memo``): serialized parts that many resources have alike, keyed by exactly
  what decides their bytes, so they are never stale either. Bounded: emptied when full, so a daemon
  running for weeks does not grow them without end.
- **With a source object** (``ObjectEntry``): values derived from one parsed object and what else is
  named with them, kept as long as the object lives. An object shared by two revisions (parse's
  ``previous``: a preview reads two revisions, a daemon one after another) keeps them while that
  context is unchanged.
- **From a view's previous compile** (``ViewUnits``): a service's resources, and a sidecar's virtual
  hosts, kept under a key (fingerprints.py) that holds the digest of every object they were built
  from. A later compile of the same view takes them back exactly when its key is unchanged.

Not kept but shared: a live registry's batch makes a mesh whose indexes of every Pod and every
per-service object are the last mesh's with a few keys changed, overlaid rather than copied
(``overlay.Overlay``, model.relisted).

Values handed out are never changed by their takers: messages are kept serialized, and a builder
merges a part into its own message (``merge``), so no message is shared between resources.

Validation keeps its own, beside the objects it checks: each object's local analyzers' problems in
``SourceObject.checks`` (validate/framework.py), and what a score of analyzers read from one object in
a weak dictionary next to the function that reads it (``validate.index.destinations``,
``validate.jwt_claims.claim_route``; one pass of the annotation analyzers per index,
``validate.annotations._problems``): plain look-ups, asked tens of thousands of times a validation.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, TypeVar

from google.protobuf.message import Message


T = TypeVar("T")


def serialize(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def digest(*parts: bytes | memoryview) -> str:
    """A resource's version: a hash of its bytes (deterministic serialization: same config, same bytes)."""
    found = hashlib.sha256()
    for part in parts:
        found.update(part)
    return found.hexdigest()[:16]


# --- values derived from one mesh ------------------------------------------------------------------

@dataclass(frozen=True)
class MeshEntry:
    name: str
    depends: str  # what, beside the mesh, the key names

    def of(self, mesh: Any, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, once per mesh and key (a mesh is never changed once built)."""
        memo = mesh.memo
        found = memo.get((self.name, key))
        if found is None:
            found = memo[(self.name, key)] = compute()
        return found

    def known(self, mesh: Any, key: Hashable) -> Any:
        """The value computed for this mesh and key, or None when none was."""
        return mesh.memo.get((self.name, key))

    def seed(self, mesh: Any, key: Hashable, value: Any) -> None:
        """Give a new mesh the value ``compute()`` would give it, found from another mesh's (model.relisted)."""
        mesh.memo[(self.name, key)] = value


POLICY = MeshEntry("policy", "(host, port, subset): its DestinationRule's merged traffic policy")
ALIASES = MeshEntry("aliases", "(): the ExternalName hosts that stand for each host")
ENDPOINT_PLACES = MeshEntry("endpoint places", "(): every endpoint's (cluster, locality)")
TARGETS = MeshEntry("targets", "(host, port): the service's endpoints on that port, by locality")
SUBSET_TARGETS = MeshEntry("subset targets", "(host, port, subset): the targets carrying the subset's labels")
LOCALITY_POLICY = MeshEntry("locality policy", "(host, port, subset): locality weighting and failover")
EDS_PLAN = MeshEntry("eds plan", "(host, port, subset): what every view's assignment of it starts from")
HORIZON = MeshEntry("horizon", "(network,): which other networks a proxy there reaches through gateways")
IDENTITIES = MeshEntry("identities", "(host,): the SPIFFE identities of the service's workloads")
ASSIGNMENTS = MeshEntry("assignments", "(EDS cluster name, what its assignment reads of a view: "
                        "endpoints.view_facts): the ClusterLoadAssignment, serialized")
SHARED_CLUSTER = MeshEntry("cluster", "(host, port, subset): a cluster no proxy view changes (not DNS)")
SERIALIZED_CLUSTERS = MeshEntry("serialized clusters", "(host,): a service's clusters no view changes, serialized")
MESH_VIRTUAL_SERVICES = MeshEntry("mesh virtual services", "(): the VirtualServices bound to the mesh, by host")
ROUTE_KEY = MeshEntry("route key", "(host,): what routes to the service are built from (fingerprints.py)")
SERVICE_KEY = MeshEntry("service key", "(host,): what its clusters and assignments are built from")
FEEDING = MeshEntry("feeding", "(): the hosts each Service's listings feed, and those whose selector picks Pods, "
                    "by namespace and one label pair of the selector (model.relisted)")
CHANGES = MeshEntry("changes", "(a previous mesh's per-service objects, by their serial: the objects "
                    "themselves would be kept with this mesh): what differs from them (fingerprints.changes)")
HOSTS_BY_NAMESPACE = MeshEntry("hosts by namespace", "(): the hosts of each namespace's services")
# With the mesh, not in the process: its keys are pods' addresses, and a live registry's pods come and go
# each with an address of its own, so a process-wide memo would keep every address it ever saw. What
# that costs, a fresh mesh's compile from scratch serializing its endpoints again, the daemon pays only
# for a view it has not served before (bench/RESULTS.md).
LB_ENDPOINTS = MeshEntry("lb endpoints", "(address, port, weight, tlsMode mark): a locality group holding one "
                         "endpoint, serialized")


# --- values derived from one source object ------------------------------------------------------------

class ObjectEntry:
    """Values by source object, each with the context it was computed in; held weakly (gone with the
    object), so a value must not refer to its object: it would keep it, and itself, for ever."""

    def __init__(self, name: str, depends: str):
        self.name, self.depends = name, depends
        self._values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def of(self, obj: Any, context: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, once per object while ``context`` stays equal to the one it was computed in."""
        found = self._values.get(obj)
        if found is None or found[0] != context:
            found = self._values[obj] = (context, compute())
        return found[1]


WRITTEN_ENDPOINTS = ObjectEntry("written endpoints", "a ServiceEntry's endpoints, built once however many "
                                "revisions share it; context: the mesh's clusters and networks")
WRITTEN_PLACES = ObjectEntry("written places", "the (cluster, locality) of a ServiceEntry's endpoints; no context")


# --- serialized parts shared in the process ---------------------------------------------------------

class Memo:
    """Values by what decides them, for every mesh and view; bounded (emptied when full)."""

    def __init__(self, name: str, depends: str, limit: int):
        self.name, self.depends, self.limit = name, depends, limit
        self._values: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        found = self._values.get(key)
        if found is None:
            if len(self._values) >= self.limit:
                self._values.clear()
            found = self._values[key] = compute()
        return found


PROVENANCE = Memo("provenance", "the source objects' identity, file and line", 1 << 16)
STAMPS = Memo("revision stamps", "a resource's provenance and the revision stamped in it", 1 << 16)
CLUSTER_SETTINGS = Memo("cluster settings", "a policy (its repr), discovery type, port protocol and locality "
                        "weighting: all of a cluster but its names, metadata, endpoints and TLS", 1 << 12)
MTLS_CONTEXTS = Memo("Istio mTLS contexts", "the identities an Istio mTLS peer must present", 1 << 16)
GROUP_HEADS = Memo("locality group heads", "(locality, weight, priority) of a locality group", 1 << 16)
ROUTE_TIMEOUTS = Memo("route timeouts", "the timeout text: a route action's timeout fields", 1 << 10)
RETRY_POLICIES = Memo("retry policies", "a VirtualService's retries (its repr) and whether the route hashes",
                      1 << 12)
CONFIG_SOURCES = Memo("config sources", "(): the ADS config source; (name,): an SDS secret's", 1 << 10)


def merge(message: Message, memo: Memo, key: Hashable, build: Callable[[], Message | None]) -> None:
    """Merge into ``message`` the part ``memo`` keeps under ``key`` (``build()`` serialized once;
    None: nothing). Parsing appends, as a message's serialization is its fields' concatenation."""
    data = memo.get(key, lambda: b"" if (part := build()) is None else serialize(part))
    if data:
        message.MergeFromString(data)


# --- what a view's previous compile leaves for the next ---------------------------------------------

@dataclass(frozen=True)
class ServiceUnit:
    """A service's part of a view: the key it was built under, and its resources' names by type URL
    (its clusters and assignments, which the compiled view holds)."""

    key: tuple[str, ...]
    names: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class VirtualHostUnit:
    """A sidecar's virtual host: its name, domains and bytes (the very bytes of the route
    configurations that hold it), and its sources (serialized metadata), which a configuration
    whose first virtual host it is names too."""

    name: str
    domains: tuple[str, ...]
    data: bytes | memoryview
    sources: bytes


@dataclass
class ViewUnits:
    """What one view's compile leaves for the next compile of that view (xds.compile_view), taken
    back exactly while its key (fingerprints.py) is unchanged: per service host, its unit; per
    sidecar route configuration name, (host, virtual host key) of each of its virtual hosts; per
    virtual host key, its unit.

    ``objects``: the mesh's per-service objects, from which the next compile finds the keys that
    may have changed (fingerprints.changes); ``view_key``: the view and every mesh-wide object,
    which must be the same for anything to be taken back."""

    view_key: str = ""
    services: dict[str, ServiceUnit] = field(default_factory=dict)
    tables: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = field(default_factory=dict)
    virtual_hosts: dict[tuple[str, ...], VirtualHostUnit] = field(default_factory=dict)
    objects: Any = None  # a model.ObjectsByDigest (model imports this module)

    def let_go(self) -> None:
        """Drop ``objects`` (a whole mesh's per-service objects) once no compile will start from this
        one: a served view outlives its successor in the streams that hold it (the routes a proxy was
        last sent, until they change), and must not keep its mesh's objects alive meanwhile. A compile
        that starts from it after all finds every key again (compile_view, with no changes known)."""
        self.objects = None
