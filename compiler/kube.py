"""What Kubernetes objects say, read as Istio reads them: a Service's host, ports and addresses, the
endpoints its EndpointSlices (or legacy Endpoints) list, the labels and service account of the
pods a workload runs. Plain values, shared by validation and the model; reading only, no meaning
beyond the objects themselves. Every object here passed its schema (schemas/kubernetes.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from . import protocols
from .hosts import CLUSTER_DOMAIN
from .parse import SourceObject

EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HEADLESS = "None"
DEFAULT_SERVICE_ACCOUNT = "default"  # what the API server gives a pod that names none


def service_host(service: SourceObject) -> str:
    return f"{service.name}.{service.namespace}.{CLUSTER_DOMAIN}"


@dataclass(frozen=True)
class ServicePort:
    number: int
    name: str
    protocol: str  # Istio's (compiler.protocols), chosen as Istio chooses it
    target_port: int | str | None
    kubernetes_protocol: str  # as written (TCP when not): TCP, UDP or SCTP in a cluster, any name in a file


def service_ports(service: SourceObject) -> tuple[ServicePort, ...]:
    out = []
    for port in service.spec.get("ports") or ():
        number, name = port["port"], port.get("name", "")
        written = port.get("protocol") or "TCP"  # Kubernetes' default, for an empty one too
        out.append(ServicePort(number, name, protocols.of_kubernetes_port(number, name, written, port.get("appProtocol")),
                               port.get("targetPort"), written))
    return tuple(out)


def cluster_ips(service: SourceObject) -> tuple[str, ...]:
    """The Service's virtual IPs: ``clusterIPs``, else ``clusterIP``; none when headless or unset."""
    spec = service.spec
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return tuple(ip for ip in ips if ip and ip != HEADLESS)


def is_headless(service: SourceObject) -> bool:
    return service.spec.get("clusterIP") == HEADLESS


def external_name(service: SourceObject) -> str | None:
    """The name an ExternalName Service stands for (Istio: an alias of that host, no cluster of its own)."""
    spec = service.spec
    return (spec.get("externalName") or None) if spec.get("type") == "ExternalName" else None


def selector(service: SourceObject) -> dict[str, str]:
    """The Service's pod selector; an empty one selects nothing (Istio's and Kubernetes' rule)."""
    return service.spec.get("selector") or {}


def export_to(obj: SourceObject) -> tuple[str, ...]:
    """A Service's ``networking.istio.io/exportTo`` annotation, as Istio splits it; () when absent."""
    annotations = (obj.body.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(EXPORT_TO_ANNOTATION, "")
    return tuple(part.strip() for part in text.split(",") if part.strip())


def workload_labels(obj: SourceObject) -> dict[str, str]:
    """The labels of the pods a workload object runs: a Pod's own, a controller's pod template's."""
    if obj.kind == "Pod":
        return obj.labels
    template = obj.spec.get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def workload_service_account(obj: SourceObject) -> str:
    pod_spec = obj.spec if obj.kind == "Pod" else (obj.spec.get("template") or {}).get("spec") or {}
    return pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT


@dataclass(frozen=True)
class ListedEndpoint:
    """One address an EndpointSlice (or Endpoints) lists for a Service, with its ports by the name of
    the Service port they serve."""

    address: str
    ports: Mapping[str, int]
    ready: bool
    zone: str
    node: str
    pod: str  # the Pod its targetRef names, "" when none


def endpoint_slice_service(obj: SourceObject) -> str | None:
    """The Service an EndpointSlice belongs to (its ``kubernetes.io/service-name`` label)."""
    return obj.labels.get(SERVICE_NAME_LABEL) or None


def slice_endpoints(obj: SourceObject) -> list[ListedEndpoint]:
    """The endpoints of an EndpointSlice. FQDN slices are not read (Istio neither); an endpoint without
    conditions is ready, and a terminating one is never sent (Istio's health rules)."""
    if obj.body.get("addressType") == "FQDN":
        return []
    ports = _ports(obj.body.get("ports"))
    out = []
    for endpoint in obj.body.get("endpoints") or ():
        ready = endpoint_ready(endpoint)
        for address in endpoint.get("addresses") or ():
            out.append(ListedEndpoint(address, ports, ready, endpoint.get("zone", ""), endpoint.get("nodeName", ""),
                                      _pod(endpoint.get("targetRef"))))
    return out


def endpoint_ready(endpoint: dict) -> bool:
    """Whether an EndpointSlice's endpoint takes traffic: without conditions it is ready; one not
    ready, or terminating, is never sent (Istio's health rules)."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready", True) is not False and not conditions.get("terminating")


def slice_addresses(body: dict) -> tuple[int, int]:
    """The addresses an EndpointSlice lists, and of them those not ready (listed, sent to no proxy)."""
    listed = not_ready = 0
    for endpoint in body.get("endpoints") or ():
        addresses = len(endpoint.get("addresses") or ())
        listed += addresses
        if not endpoint_ready(endpoint):
            not_ready += addresses
    return listed, not_ready


def endpoints_endpoints(obj: SourceObject) -> list[ListedEndpoint]:
    """The endpoints of a legacy v1 Endpoints object: ``addresses`` ready, ``notReadyAddresses`` not."""
    out = []
    for subset in obj.body.get("subsets") or ():
        ports = _ports(subset.get("ports"))
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(field) or ():
                out.append(ListedEndpoint(address["ip"], ports, ready, "", address.get("nodeName", ""),
                                          _pod(address.get("targetRef"))))
    return out


def _ports(ports: list[dict] | None) -> dict[str, int]:
    # A port without a name serves the Service's one unnamed port ("" on both sides).
    return {port.get("name", ""): port["port"] for port in ports or () if "port" in port}


def _pod(target: Any) -> str:
    return target.get("name", "") if isinstance(target, dict) and target.get("kind", "Pod") == "Pod" else ""


# --- what a cluster's registry says of pods and nodes (their status: only a live object has one) ----

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"


def node_locality(node: SourceObject) -> tuple[str, str, str]:
    """A Node's (region, zone, subzone), from its topology labels, as Istio reads them ("" when unset)."""
    labels = node.labels
    return labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, ""), labels.get(SUBZONE_LABEL, "")


def pod_ip(pod: SourceObject) -> str:
    """The address a running pod has (``status.podIP``); "" for a pod written in a repository."""
    status = pod.body.get("status")
    ip = status.get("podIP") if isinstance(status, dict) else None
    return ip if isinstance(ip, str) else ""


def pod_node(pod: SourceObject) -> str:
    node = pod.spec.get("nodeName")
    return node if isinstance(node, str) else ""


def pod_ready(pod: SourceObject) -> bool:
    """Whether a pod takes traffic: it has an address, its Ready condition is True, and it is not
    being deleted (Istio sends such a pod's address; a pod not ready, or terminating, it does not)."""
    if not pod_ip(pod) or (pod.body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.body.get("status") or {}
    conditions = status.get("conditions") if isinstance(status, dict) else None
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in conditions or ())
