"""What a live registry read from a cluster, as objects of the mesh.

A registry (reconciler/registry/) reads each cluster's Services, EndpointSlices, Pods and Nodes
as the API server returns them; here each becomes a ``SourceObject`` like one parsed from the
repository, labelled with the cluster it was read from (``topology.istio.io/cluster``, which is how
the model places Kubernetes objects), checked against its kind's schema, and named by where it
lives (``kube:CLUSTER/NAMESPACE/KIND/NAME``, or the manifest's path for a ``dir:`` registry).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .kinds import CLUSTER_LABEL, NODE
from .parse import FileLines, SourceObject, format_path
from .validate import schema
from .validate.topology import kubernetes_address_errors


@dataclass(frozen=True)
class RegistryKind:
    """A kind a registry reads of each cluster: its apiVersion, the resource its API serves it as, and
    whether it lives in a namespace."""
    kind: str
    api_version: str
    resource: str
    namespaced: bool = True


REGISTRY_KINDS = (RegistryKind("Service", "v1", "services"),
                  RegistryKind("EndpointSlice", "discovery.k8s.io/v1", "endpointslices"),
                  RegistryKind("Pod", "v1", "pods"),
                  RegistryKind(NODE, "v1", "nodes", namespaced=False))
_READ = {(k.api_version, k.kind): k for k in REGISTRY_KINDS}


class Unreadable(ValueError):
    """An object a registry cannot use; the message says why, in one line."""


def live_object(cluster: str, body: Any, file: str) -> SourceObject:
    """One object read from ``cluster``: labelled with it, and its digest from its resourceVersion
    (the API server's, which changes with every write) or, without one, its content. Raises
    Unreadable for an object of another kind, or one its kind's schema or address rules (GAL0111's)
    refuse, as its API server would."""
    if not isinstance(body, dict):
        raise Unreadable(f"not an object but {type(body).__name__}")
    body = _set_fields(body)
    kind, api_version = body.get("kind"), body.get("apiVersion")
    read = _READ.get((api_version, kind))  # type: ignore[arg-type]
    if read is None:
        raise Unreadable(f"{api_version} {kind} is not a kind a registry reads")
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise Unreadable("metadata.name is missing")
    written = metadata.get("labels")
    if written is not None and not isinstance(written, dict):
        raise Unreadable(f".metadata.labels: expected a mapping, got {type(written).__name__}")
    labels: dict = written or {}
    if kind == NODE:  # (the other kinds' labels are their schema's)
        for key, value in labels.items():
            if not isinstance(value, str):
                raise Unreadable(f".metadata.labels.{key}: expected a string, got {value!r}")
    labelled = {**body, "metadata": {**metadata, "labels": {**labels, CLUSTER_LABEL: cluster}}}
    version = metadata.get("resourceVersion")
    digest = (f"{cluster}@{version}" if isinstance(version, str) and version
              else hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24])
    namespace = (metadata.get("namespace") or "default") if read.namespaced else ""
    group, _, version = read.api_version.rpartition("/")
    obj = SourceObject(group, version, str(kind), namespace, metadata["name"], labelled, file, 1,
                       FileLines("", 0, ((0, 0),), (digest,)))
    if kind != NODE:  # a Node is read for its labels alone
        problems = schema.check(obj)
        if problems:
            raise Unreadable(problems[0].message)
        errors = kubernetes_address_errors(obj)
        if errors:
            path, message = errors[0]
            raise Unreadable(f"{format_path(path)}: {message}")
    return obj


def _set_fields(body: dict) -> dict:
    """The object without its top-level fields set to null: a field set to null is a field not set, as
    Kubernetes reads objects, and the API server writes an empty list whose field has no omitempty as
    null (an EndpointSlice's ``endpoints`` and ``ports``; the other fields a registry reads are
    omitted when empty). A ``dir:`` registry's manifests are read without nulls at every depth."""
    if None in body.values():
        return {key: value for key, value in body.items() if value is not None}
    return body


def kube_file(cluster: str, kind: str, namespace: str, name: str) -> str:
    """Where an object read from a cluster's API server is said to be (findings, provenance)."""
    return f"kube:{cluster}/{namespace + '/' if namespace else ''}{kind}/{name}"
