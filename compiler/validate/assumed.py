"""What validation assumes a cluster runs though the repository does not hold it: Istio's default
ingress gateway, as ``istioctl analyze`` assumes it when it analyzes files only.

istioctl adds a dummy Pod ``istio-ingressgateway-dummypod`` (label ``istio: ingressgateway``) and
the Service ``istio-ingressgateway`` in front of it to the files it analyzes, in the Istio
namespace (its AddDefaultResources, unless the MeshConfig's ingressControllerMode is OFF: Galleon's
MeshConfig has no such field). Galleon validates a repository, files only, so its selector and
port checks see them too: a Gateway of ``selector: {istio: ingressgateway}`` selects that Pod, and
its ports are judged against that Service's. A repository that holds an ingress gateway of its own
(a workload labelled ``istio: ingressgateway``, or a Service istio-system/istio-ingressgateway) is
judged on it alone.

They are parsed once from the text below, as ordinary objects of a file no repository can hold
(its name has no ``.yaml``); the index adds them (index.Index), validation reports nothing on them,
and they never reach the mesh (only the index holds them). A finding that names one says what it is
(``shown``).
"""
from __future__ import annotations

from functools import cache
from typing import Iterable

from .. import kube
from ..kinds import SERVICE, WORKLOAD_KINDS
from ..model import ROOT_NAMESPACE
from ..parse import SourceObject, parse
from ..snapshot import Snapshot

FILE = "<istio default ingress gateway>"
NOTE = "Istio's default ingress gateway, assumed as istioctl analyze assumes it offline"
LABEL, VALUE = "istio", "ingressgateway"
SERVICE_NAME = "istio-ingressgateway"

# Istio's own (pkg/config/analysis/local/defaults.go), in the Istio namespace.
_TEXT = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {SERVICE_NAME}-dummypod
  namespace: {ROOT_NAMESPACE}
  labels:
    {LABEL}: {VALUE}
spec:
  containers:
  - name: istio-proxy
---
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE_NAME}
  namespace: {ROOT_NAMESPACE}
spec:
  selector:
    {LABEL}: {VALUE}
  ports:
  - {{name: http2, nodePort: 31380, port: 80, protocol: TCP, targetPort: 80}}
  - {{name: https, nodePort: 31390, port: 443, protocol: TCP, targetPort: 443}}
  - {{name: tcp, nodePort: 31400, port: 31400, protocol: TCP, targetPort: 31400}}
  - {{name: tls, nodePort: 31447, port: 15443, protocol: TCP, targetPort: 15443}}
"""


@cache
def _ingress_gateway() -> tuple[SourceObject, ...]:
    parsed = parse(Snapshot("istio-defaults", {FILE: _TEXT.encode()}))
    assert not parsed.findings, parsed.findings
    return tuple(parsed.objects)


def ingress_gateway(objects: Iterable[SourceObject]) -> tuple[SourceObject, ...]:
    """Istio's default ingress gateway (its Pod and Service), unless ``objects`` hold an ingress
    gateway of their own: a workload (a workload manifest's pods, a WorkloadEntry) labelled
    ``istio: ingressgateway``, or the Service istio-system/istio-ingressgateway."""
    for obj in objects:
        if obj.kind in WORKLOAD_KINDS:
            labels = kube.workload_labels(obj)
        elif obj.kind == "WorkloadEntry":
            labels = obj.spec.get("labels") or {}
        elif obj.kind == SERVICE and (obj.namespace, obj.name) == (ROOT_NAMESPACE, SERVICE_NAME):
            return ()
        else:
            continue
        if labels.get(LABEL) == VALUE:
            return ()
    return _ingress_gateway()


def is_assumed(obj: SourceObject) -> bool:
    """Whether validation assumed ``obj`` (the repository does not hold it)."""
    return obj.file == FILE


def shown(obj: SourceObject, text: str | None = None) -> str:
    """``text`` (else ``namespace/name``) naming ``obj`` in a finding, saying what it is when assumed."""
    text = text if text is not None else f"{obj.namespace}/{obj.name}"
    return f"{text} ({NOTE})" if is_assumed(obj) else text
