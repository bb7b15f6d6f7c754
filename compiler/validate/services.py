"""Checks on Kubernetes Services and the EndpointSlices that list their endpoints.

Port names: Istio's service.PortNameAnalyzer. Istio takes a Service port's protocol from its
``appProtocol``, else from its name's prefix (``http``, ``http-web``, ``grpc``...); a port whose
protocol it cannot tell this way is sniffed on each connection (compiler/protocols.py).
"""
from __future__ import annotations

from ..findings import Level
from ..kinds import SERVICE
from ..kube import SERVICE_NAME_LABEL, endpoint_slice_service, service_ports
from ..protocols import AUTO
from .framework import analyzer
from .index import Index

EXTERNAL_NAME = "ExternalName"
# Namespaces Istio's analyzers never load (Kubernetes' own).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})
# Services an Istio controller generates for the gateways it deploys (gateway.istio.io/managed).
MANAGED_LABEL = "gateway.istio.io/managed"
ISTIO_MANAGED = frozenset({"istio.io-gateway-controller", "istio.io-mesh-controller", "istio.io-eastwest-controller"})
NAMING = ("<protocol>[-<suffix>] with protocol one of http, http2, https, grpc, grpc-web, tcp, tls, mongo, redis, "
          "mysql, udp")


def _skipped(service) -> bool:
    """Services Istio's analyzer leaves alone: Kubernetes' own, Istio's control plane (a label ``istio``
    or ``release: istio``) and the gateways Istio deploys."""
    labels = service.labels
    return (service.namespace in IGNORED_NAMESPACES or "istio" in labels or labels.get("release") == "istio"
            or labels.get(MANAGED_LABEL) in ISTIO_MANAGED)


def _unnamed_protocols(index: Index, external_name: bool):
    """(Service, path, port, port as written) for each port Istio cannot tell the protocol of, on
    ExternalName Services or on the others; for an ExternalName Service, also a port named ``tcp``."""
    for service in index.by_kind[SERVICE]:
        if _skipped(service) or (service.spec.get("type") == EXTERNAL_NAME) != external_name:
            continue
        for i, (port, written) in enumerate(zip(service_ports(service), service.spec.get("ports") or ())):
            if port.protocol == AUTO or (external_name and written.get("name") == "tcp"):
                field = "appProtocol" if "appProtocol" in written else "name" if "name" in written else "port"
                yield service, ("spec", "ports", i, field), port, written


@analyzer("port-name-not-under-convention", "IST0118", Level.INFO,
          "a Service port's name (or appProtocol) names no protocol Istio knows", local=(), kinds=(SERVICE,))
def port_name_not_under_convention(index: Index):
    for service, path, port, written in _unnamed_protocols(index, external_name=False):
        target = written.get("targetPort", port.number)  # Kubernetes' default
        said = (f"appProtocol {written['appProtocol']!r} is not a protocol Istio knows" if "appProtocol" in written
                else f"name it {NAMING}, or set appProtocol")
        yield service, path, (
            f"Port name {port.name!r} (port: {port.number}, targetPort: {target}) doesn't follow the naming convention "
            f"of Istio port: {said}; until then Istio detects its protocol on each connection (HTTP or TCP), "
            "which server-first protocols break")


@analyzer("external-name-port-name", "IST0150", Level.WARNING,
          "an ExternalName Service's port is named tcp, or names no protocol Istio knows", local=(), kinds=(SERVICE,))
def external_name_port_name(index: Index):
    for service, path, port, _ in _unnamed_protocols(index, external_name=True):
        yield service, path, (
            "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic "
            f"for ports serving TCP protocol from being forwarded correctly: port {port.number} is named "
            f"{port.name!r}; name it after the protocol it serves ({NAMING}; not just tcp), or set appProtocol")


@analyzer("endpoint-slice-without-service", "GAL0120", Level.WARNING,
          "an EndpointSlice has no kubernetes.io/service-name label, so it lists endpoints of no Service",
          local=(), kinds=("EndpointSlice",))
def endpoint_slice_without_service(index: Index):
    for listing in index.by_kind["EndpointSlice"]:
        if endpoint_slice_service(listing) is None:
            yield listing, ("metadata", "labels"), (
                f"this EndpointSlice has no label {SERVICE_NAME_LABEL}, so its endpoints belong to no Service and "
                "Istio ignores them (so does Galleon); add the label with the name of the Service of its namespace "
                "it lists")
