"""The Kubernetes parts of the schemas: ObjectMeta, which every kind shares, and the Kubernetes kinds
Galleon reads from a repository (Services, their endpoints, the workloads selectors match, the
Namespaces whose labels decide sidecar injection, and the Gateway API Gateways VirtualServices bind to),
with Istio's RequestAuthentication, which validation reads only for the workloads it applies to.

Kubernetes validates these kinds itself and keeps adding fields to them, so their specs stay open:
only the fields Galleon reads are typed (a wrong type there would mislead the model), every other
field is accepted as Kubernetes would. ObjectMeta is stable and closed, so a misspelt ``namespace``
is caught rather than putting an object in ``default``. ``generate.py`` writes these as JSON.
"""
from __future__ import annotations

from typing import Any

from compiler.kinds import GATEWAY_API_GROUP, KUBERNETES_GATEWAY, REQUEST_AUTHENTICATION, SECURITY_GROUP, api_version

OBJECT_META_ID = "https://galleon.io/schemas/objectmeta.json"
DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
PROTOCOL = {"enum": ["TCP", "UDP", "SCTP"]}
OPEN: dict[str, Any] = {}

# Every field of ObjectMeta, so that `kubectl get -o yaml` output reads as it is.
OBJECT_META = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": OBJECT_META_ID,
    "title": "ObjectMeta",
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS_LABEL},
        "generateName": STRING,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "uid": STRING,
        "resourceVersion": STRING,
        "generation": INTEGER,
        "selfLink": STRING,
        # `kubectl create --dry-run -o yaml` writes creationTimestamp: null
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": INTEGER,
        "finalizers": STRINGS,
        "ownerReferences": {"type": "array", "items": {"type": "object", "properties": {
            "apiVersion": STRING, "kind": STRING, "name": STRING, "uid": STRING,
            "controller": BOOLEAN, "blockOwnerDeletion": BOOLEAN}}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
        "clusterName": STRING,
    },
}

# A pod's service account, node, host networking and user. Its containers stay open, as Kubernetes
# checks them: the analyzers that read them (compiler/validate/workloads.py, gateways.py) pass over
# anything else written there.
_POD_SPEC = {"type": "object", "properties": {"serviceAccountName": STRING, "serviceAccount": STRING,
                                              "nodeName": STRING, "hostNetwork": BOOLEAN,
                                              "securityContext": {"type": "object", "properties": {
                                                  "runAsUser": INTEGER}}}}
# What a running pod's status says that Galleon reads (a live registry's pods): its address and
# its Ready condition (compiler/kube.py).
_POD_STATUS = {"type": "object", "properties": {
    "podIP": STRING, "podIPs": {"type": "array", "items": {"type": "object", "properties": {"ip": STRING}}},
    "conditions": {"type": "array", "items": {"type": "object", "properties": {"type": STRING, "status": STRING}}},
}}
_POD_TEMPLATE = {"type": "object", "properties": {
    "metadata": {"type": "object", "properties": {"labels": STRING_MAP, "annotations": STRING_MAP}},
    "spec": _POD_SPEC,
}}
_LABEL_SELECTOR = {"type": "object", "properties": {"matchLabels": STRING_MAP}}
_WORKLOAD_SPEC = {"type": "object", "properties": {"template": _POD_TEMPLATE, "selector": _LABEL_SELECTOR}}

_SERVICE_SPEC = {"type": "object", "properties": {
    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
    "selector": STRING_MAP,
    "clusterIP": STRING,
    "clusterIPs": STRINGS,
    "externalName": STRING,
    "externalIPs": STRINGS,
    "publishNotReadyAddresses": BOOLEAN,
    "ports": {"type": "array", "items": {"type": "object", "required": ["port"], "properties": {
        # Any protocol name: Kubernetes' API server takes TCP, UDP or SCTP, but Istio reads Services as
        # written (its analyzers' test data says HTTP), and only UDP from the field (compiler/protocols.py)
        "name": STRING, "port": PORT_NUMBER, "targetPort": INT_OR_STRING, "protocol": STRING,
        "appProtocol": STRING, "nodePort": INTEGER}}},
}}

_TARGET_REF = {"type": "object", "properties": {"kind": STRING, "namespace": STRING, "name": STRING}}
_ENDPOINT_PORTS = {"type": "array", "items": {"type": "object", "properties": {
    "name": STRING, "port": PORT_NUMBER, "protocol": PROTOCOL, "appProtocol": STRING}}}

_ENDPOINT_SLICE = {
    "addressType": {"enum": ["IPv4", "IPv6", "FQDN"]},
    "endpoints": {"type": "array", "items": {"type": "object", "required": ["addresses"], "properties": {
        "addresses": {"type": "array", "items": STRING, "minItems": 1},
        "conditions": {"type": "object", "properties": {"ready": BOOLEAN, "serving": BOOLEAN,
                                                         "terminating": BOOLEAN}},
        "hostname": STRING, "nodeName": STRING, "zone": STRING, "targetRef": _TARGET_REF}}},
    "ports": _ENDPOINT_PORTS,
}

_ENDPOINT_ADDRESSES = {"type": "array", "items": {"type": "object", "required": ["ip"], "properties": {
    "ip": STRING, "hostname": STRING, "nodeName": STRING, "targetRef": _TARGET_REF}}}
_ENDPOINTS = {"subsets": {"type": "array", "items": {"type": "object", "properties": {
    "addresses": _ENDPOINT_ADDRESSES, "notReadyAddresses": _ENDPOINT_ADDRESSES, "ports": _ENDPOINT_PORTS}}}}

# Gateway API's Gateway (Galleon's KubernetesGateway, compiler/kinds.py), read only for the hostnames of
# its listeners, which the hosts of a VirtualService bound to it must match (Istio's GatewayAnalyzer; a
# listener without one matches every host). The Gateway API's CRD, which Kubernetes checks, says the
# rest: addresses, infrastructure, a listener's tls and allowedRoutes are accepted as written.
_LISTENER = {"type": "object", "properties": {"name": STRING, "hostname": STRING, "port": PORT_NUMBER,
                                              "protocol": STRING}}
_GATEWAY_SPEC = {"type": "object", "properties": {"gatewayClassName": STRING,
                                                  "listeners": {"type": "array", "items": _LISTENER}}}
# The versions Istio reads (its gvk.KubernetesGateway is v1, with v1beta1 and v1alpha2 as aliases)
GATEWAY_API_VERSIONS = ("v1", "v1beta1", "v1alpha2")

# Istio's RequestAuthentication (security.istio.io), read only for which workloads it applies to: its
# selector's matchLabels (none: every workload of its namespace), or the policy targets it names instead
# (Istio's JWTClaimRouteAnalyzer reads the selector alone). Its selector and targets are closed, as Istio's
# CRD writes them: a misspelt matchLabels would make it apply to every workload. Its jwtRules, which
# Galleon does not apply, are accepted as written (Istio's CRD and webhook check them).
_POLICY_TARGET = {"type": "object", "required": ["kind", "name"], "additionalProperties": False,
                  "properties": {"group": STRING, "kind": STRING, "name": STRING, "namespace": STRING}}
_REQUEST_AUTHENTICATION_SPEC = {"type": "object", "properties": {
    "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": STRING_MAP}},
    "targetRef": _POLICY_TARGET,
    "targetRefs": {"type": "array", "items": _POLICY_TARGET},
}}
# The versions Istio serves (its gvk.RequestAuthentication is v1, with v1beta1 as an alias)
REQUEST_AUTHENTICATION_VERSIONS = ("v1", "v1beta1")

# The kinds Galleon knows by another name than the one written (compiler/kinds.py): name -> kind as written.
WRITTEN_KINDS = {KUBERNETES_GATEWAY: "Gateway"}

# (group, kind, version): the top-level fields beside apiVersion, kind, metadata and status.
KINDS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("", "Service", "v1"): {"spec": _SERVICE_SPEC},
    ("discovery.k8s.io", "EndpointSlice", "v1"): _ENDPOINT_SLICE,
    ("", "Endpoints", "v1"): _ENDPOINTS,
    ("", "Pod", "v1"): {"spec": _POD_SPEC, "status": _POD_STATUS},
    ("apps", "Deployment", "v1"): {"spec": _WORKLOAD_SPEC},
    ("apps", "StatefulSet", "v1"): {"spec": _WORKLOAD_SPEC},
    ("apps", "DaemonSet", "v1"): {"spec": _WORKLOAD_SPEC},
    ("apps", "ReplicaSet", "v1"): {"spec": _WORKLOAD_SPEC},
    ("batch", "Job", "v1"): {"spec": _WORKLOAD_SPEC},
    # Cluster-scoped: a Namespace's identity is its name (the API server drops a metadata.namespace);
    # only its labels are read (sidecar injection)
    ("", "Namespace", "v1"): {"spec": {"type": "object"}},
    **{(GATEWAY_API_GROUP, KUBERNETES_GATEWAY, version): {"spec": _GATEWAY_SPEC} for version in GATEWAY_API_VERSIONS},
    **{(SECURITY_GROUP, REQUEST_AUTHENTICATION, version): {"spec": _REQUEST_AUTHENTICATION_SPEC}
       for version in REQUEST_AUTHENTICATION_VERSIONS},
}


def object_schema(kind: str, api: str, fields: dict[str, Any], required: tuple[str, ...] = ()) -> dict:
    """One version of a kind: apiVersion, kind, the shared ObjectMeta, ``status`` (allowed on every
    kind, open unless the kind's fields type what is read of it) and the kind's own fields."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", *required],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": api}, "kind": {"const": kind},
                       "metadata": {"$ref": OBJECT_META_ID}, "status": OPEN, **fields},
    }


def kubernetes_schemas() -> dict[tuple[str, str], dict[str, dict]]:
    """(group, kind) -> version -> schema of every Kubernetes kind Galleon reads, and of Istio's
    RequestAuthentication (a kind known by another name is checked as written: ``kind: Gateway``)."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for (group, kind, version), fields in KINDS.items():
        out.setdefault((group, kind), {})[version] = object_schema(WRITTEN_KINDS.get(kind, kind),
                                                                   api_version(group, version), fields)
    return out
