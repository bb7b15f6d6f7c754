"""A proxy's view: the facts about a proxy that decide what configuration it gets.

Proxies with equal views get byte-identical configuration, so the server
compiles and serializes once per view, not once per proxy.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping

from .locality import Locality
from .model import Mesh
from .names import ANY_ADDRESS

SIDECAR, ROUTER = "sidecar", "router"
# A proxyless gRPC client (gRPC's own xDS client, node metadata GENERATOR=grpc as in Istio): it has a
# sidecar's node id and sees what a sidecar sees, but gets the configuration of compiler/proxyless.py.
GRPC = "grpc"


class ViewError(ValueError):
    """A node identity that names something the mesh does not have."""


@dataclass(frozen=True)
class ProxyView:
    cluster: str
    network: str
    locality: Locality
    role: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    # Where listeners bind. Istio captures traffic with iptables and binds 0.0.0.0; a proxy without
    # capture (a laptop, a test) binds loopback instead. Listener names keep the 0.0.0.0_<port> form.
    listen_address: str = ANY_ADDRESS

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def selected_by(self, selector: Mapping[str, str] | None) -> bool:
        """Whether a workload selector (Gateway, Sidecar) picks this proxy; an empty one picks all."""
        labels = self.label_map
        return all(labels.get(k) == v for k, v in (selector or {}).items())


def parse_node_id(node_id: str) -> tuple[str, str]:
    """Istio's ``TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`` -> (role, namespace)."""
    parts = node_id.split("~")
    if len(parts) != 4 or parts[0] not in (SIDECAR, ROUTER):
        raise ViewError(f"node id {node_id!r} is not sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local "
                        "or router~...")
    namespace = parts[3].split(".")[0] or "default"
    return parts[0], namespace


# What a repository without a Cluster lacks: every proxy's view is of one cluster of the mesh.
NO_CLUSTER_HINT = ("apiVersion: galleon.io/v1alpha1, kind: Cluster, metadata.name: the cluster's name, "
                   "spec.network, spec.locality: region/zone")


def make_view(mesh: Mesh, cluster: str, node_id: str = "sidecar~127.0.0.1~proxy.default~default.svc.cluster.local",
              labels: Mapping[str, str] | None = None, locality: str | None = None,
              network: str | None = None, listen_address: str = ANY_ADDRESS, proxyless: bool = False) -> ProxyView:
    """The view of a proxy; missing values default to its cluster's network and locality.
    ``proxyless``: a gRPC client (role ``grpc``) rather than the Envoy its node id names."""
    home = mesh.clusters.get(cluster)
    if home is None:
        if not mesh.clusters:
            raise ViewError(f"cluster {cluster!r} is not a Cluster of this mesh: the repository defines none; add one "
                            f"per Kubernetes cluster ({NO_CLUSTER_HINT})")
        raise ViewError(f"cluster {cluster!r} is not a Cluster of this mesh (clusters: {', '.join(sorted(mesh.clusters))})")
    role, namespace = parse_node_id(node_id)
    if proxyless:
        role = GRPC
    try:
        ipaddress.ip_address(listen_address)
    except ValueError:
        raise ViewError(f"listen address {listen_address!r} is not an IP address") from None
    if network and network not in mesh.networks:
        raise ViewError(f"network {network!r} is not in MeshNetworks")
    return ProxyView(cluster, network or home.network,
                     Locality.parse(locality) if locality else home.locality, role, namespace,
                     tuple(sorted((labels or {}).items())), listen_address)
