"""The xDS resource types Galleon serves: one row each, read by everything that handles them.

Compiling a view (xds.py: in this order, the push order), serving it (the ADS server: how proxies
subscribe, what a state-of-the-world response may leave out), dumping it (``galleon compile``, the
debug endpoint), diffing it and labelling its metrics all read this table. A new type is a row here
and its builder, called from xds.compile_view.
"""
from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.message import Message

PREFIX = "type.googleapis.com/"


@dataclass(frozen=True)
class XdsType:
    message: type[Message]
    dump_key: str  # its list in Envoy's config_dump shape, and its metrics label
    kind: str  # what one resource is called in a preview
    name_field: str  # the field that names a resource
    # Envoy and gRPC subscribe to every resource of the type (a wildcard), or to those they name
    wildcard: bool
    # In state of the world, a response that leaves one out keeps it (NOTES.md): only the named
    # types may be sent in part
    partial: bool

    @property
    def url(self) -> str:
        return PREFIX + self.message.DESCRIPTOR.full_name

    @property
    def metadata_field(self) -> int | None:
        """The number of the resource's own ``metadata`` field, where its provenance is stamped (None:
        it has none, as a ClusterLoadAssignment: its locality groups carry their sources')."""
        found = self.message.DESCRIPTOR.fields_by_name.get("metadata")
        return None if found is None else found.number

    def name_of(self, message: Message) -> str:
        return getattr(message, self.name_field)


CLUSTERS = XdsType(Cluster, "clusters", "cluster", "name", wildcard=True, partial=False)
ENDPOINTS = XdsType(ClusterLoadAssignment, "endpoints", "endpoints", "cluster_name", wildcard=False, partial=True)
LISTENERS = XdsType(Listener, "listeners", "listener", "name", wildcard=True, partial=False)
ROUTES = XdsType(RouteConfiguration, "routes", "route", "name", wildcard=False, partial=True)

# In push order, Envoy's make-before-break: a cluster exists before a route points at it.
TYPES = (CLUSTERS, ENDPOINTS, LISTENERS, ROUTES)
BY_URL = {t.url: t for t in TYPES}
CLUSTER, ENDPOINT, LISTENER, ROUTE = (t.url for t in TYPES)
