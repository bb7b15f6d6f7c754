"""The kinds of objects a repository holds, by what Galleon does with them.

Which versions of a kind Galleon reads is what its schema defines (schemas.served_versions); this
module says what the kinds are for, and which API groups are Galleon's or Istio's, where a kind
Galleon does not read deserves a warning. A repository of manifests holds many other kinds
(ServiceAccounts, ConfigMaps, CRDs...): those are read silently.

A kind is known by the title of its schema. Two kinds of different groups may be written with the
same name: Kubernetes Gateway API's ``Gateway`` is not Istio's, so Galleon knows it as
``KubernetesGateway`` (Istio's name for it, gvk.KubernetesGateway), and its schema says how it is
written (``x-galleon-kind``; compiler/schemas.py maps one to the other).
"""
from __future__ import annotations

GALLEON_GROUP = "galleon.io"
ISTIO_NETWORKING = "networking.istio.io"

# The label that says which cluster of the mesh an object or endpoint is in (Istio's).
CLUSTER_LABEL = "topology.istio.io/cluster"
# The label that says which network a Pod (its endpoints) is on (Istio's).
NETWORK_LABEL = "topology.istio.io/network"
# The Namespace labels that turn on Istio's sidecar injection (istio-injection=enabled, or the revision
# of the control plane that injects); a pod's label or annotation sidecar.istio.io/inject opts it in or out.
INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
INJECT_LABEL = "sidecar.istio.io/inject"

# Kubernetes Gateway API (gateway.networking.k8s.io): its Gateway is read only for what VirtualServices
# name (a VirtualService may bind to one, as Istio's analyzers look it up); its other kinds (HTTPRoute,
# GatewayClass...) are read silently.
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
KUBERNETES_GATEWAY = "KubernetesGateway"
# Istio's security.istio.io: its RequestAuthentication is read only for the workloads it applies to (a
# VirtualService routing on JWT claims needs one on its gateway's pods, Istio's JWTClaimRouteAnalyzer);
# its other kinds (AuthorizationPolicy, PeerAuthentication) are not read (GAL0003).
SECURITY_GROUP = "security.istio.io"
REQUEST_AUTHENTICATION = "RequestAuthentication"
# Kinds validation reads (VirtualServices name them, or need them) but that configure no proxy Galleon
# compiles: never in the mesh (model.build_mesh leaves them out), so never in what is compiled.
REFERENCE_ONLY_KINDS = frozenset({KUBERNETES_GATEWAY, REQUEST_AUTHENTICATION})

SERVICE = "Service"
ENDPOINT_KINDS = frozenset({"EndpointSlice", "Endpoints"})
# Whose pods' labels every selector check matches: Gateway and Sidecar selectors, subsets, Services.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job"})
NAMESPACE = "Namespace"  # cluster-scoped: its identity is its name
NODE = "Node"  # cluster-scoped too; a live registry's Nodes give its pods' localities
# Kubernetes kinds that live in one cluster: the same name in two clusters is two objects.
PER_CLUSTER_KINDS = frozenset({SERVICE, NAMESPACE, NODE}) | ENDPOINT_KINDS | WORKLOAD_KINDS

# `kubectl get -o yaml` of several objects: a v1 List whose items are the objects.
LIST = ("v1", "List")


def is_ours(group: str) -> bool:
    """Galleon's own group or one of Istio's (networking.istio.io, security.istio.io, ...)."""
    return group == GALLEON_GROUP or group == "istio.io" or group.endswith(".istio.io")


def is_kubernetes(group: str) -> bool:
    """One of Kubernetes' own groups of workloads: the core group, ``apps``, ``batch``. (Groups such as
    ``gateway.networking.k8s.io`` have kinds of their own, a Gateway among them, which is not Istio's.)"""
    return "." not in group


def shown_kind(group: str, written: str, known_as: str) -> str:
    """How findings and previews name a kind: as written, but qualified by its group, as kubectl writes a
    kind of a group (``KIND.GROUP``), where Galleon knows it by another name. A Gateway API Gateway is
    ``Gateway.gateway.networking.k8s.io``: what the user wrote (kind Gateway, its apiVersion's group),
    which no reader takes for Istio's Gateway, as a bare ``Gateway`` would be taken; and not Galleon's
    internal ``KubernetesGateway``, which no file says."""
    return written if written == known_as else f"{written}.{group}"


def api_version(group: str, version: str) -> str:
    """How apiVersion writes a group's version: ``v1`` for the core group, else ``GROUP/VERSION``."""
    return f"{group}/{version}" if group else version
