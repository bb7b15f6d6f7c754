"""A local stand-in for kube-apiserver, for tests.

kube-apiserver (and etcd) cannot be installed on the machines these tests run on, so this module
serves the slice of the Kubernetes API that Galleon reads and writes, over real HTTP, to the
official ``kubernetes`` Python client, unchanged: tests reach it through a kubeconfig file that
``write_kubeconfig`` writes (plain http, one context per cluster name; several contexts may point
at one stand-in or at several).

Resources: core/v1 ``secrets``, ``configmaps``, ``services``, ``pods`` (namespaced), ``namespaces``
and ``nodes`` (cluster-scoped), coordination.k8s.io/v1 ``leases`` and discovery.k8s.io/v1
``endpointslices`` (namespaced), at the API server's paths: ``/api/v1/namespaces/NS/pods[/NAME]``,
``/api/v1/nodes[/NAME]``, ``/api/v1/namespaces[/NAME]``, and every namespaced kind across all
namespaces (``/api/v1/pods``, ``/apis/discovery.k8s.io/v1/endpointslices``). A namespaced object
may be written in a namespace that has no Namespace object (every namespace exists). And
authentication.k8s.io/v1 ``tokenreviews`` (create only). The rules it enforces are the API server's:

- GET one, LIST, POST, PUT, PATCH, DELETE; WATCH (below). Label selectors: ``=``, ``==``, ``!=``,
  ``key``, ``!key``, comma-separated.
- ``metadata.resourceVersion`` is one global counter (etcd's revision), bumped by every write and
  delete. ``uid`` and ``creationTimestamp`` are set on create and kept on update. ``generation``
  is not set. ``status`` is stored as written (there is no ``/status`` subresource, and a Service
  is given no clusterIP): tests write what kubelets and controllers would.
- POST: 409 AlreadyExists when the name is taken; ``generateName``; a ``resourceVersion`` in the
  body is the storage layer's 500 ("resourceVersion should not be set on objects to be created").
- PUT: 404 when the object is missing (these kinds do not create on update); 409 Conflict when the
  body's ``resourceVersion`` is stale (no ``resourceVersion``: unconditional update) or its
  ``uid`` differs; 400 BadRequest when the body's name, namespace, kind or apiVersion do not
  match the URL. A cluster-scoped object's ``metadata.namespace`` is cleared.
- PATCH: ``application/merge-patch+json`` (RFC 7386) and
  ``application/strategic-merge-patch+json`` (the same here: no lists with merge keys are patched
  by Galleon); a ``resourceVersion`` in the patch is a precondition.
  Server-side apply (``application/apply-patch+yaml``) needs ``fieldManager`` (422), creates or
  updates, records field ownership per applying manager in ``metadata.managedFields``, removes
  fields a manager applied before and no longer applies, and answers 409 Conflict when another
  applying manager owns a field with a different value (``force=true`` takes it over).
- DELETE: 404 when missing, ``preconditions`` (resourceVersion, uid) give 409; answers a Success
  Status, or for Pods and Services the deleted object (as there). Deleting a Namespace deletes every object in it first, each with its own DELETED event
  (the namespace controller's work, done at once: there is no Terminating phase).
- Validation (422 Invalid, with causes): names are DNS-1123 subdomains (Namespaces: DNS-1123
  labels; Services: DNS-1035 labels); label keys and values; Secret and ConfigMap keys,
  overlapping ``data``/``binaryData`` keys, the 1 MiB size limit, ``immutable`` objects and a
  Secret's ``type`` cannot change, ``kubernetes.io/tls`` Secrets need ``tls.crt`` and ``tls.key``;
  a Lease's ``leaseDurationSeconds`` > 0 and ``leaseTransitions`` >= 0; an EndpointSlice's
  ``addressType`` is required, one of IPv4, IPv6, FQDN, and immutable. Pods, Services and Nodes are
  checked no further (their names and labels only). Bodies that cannot be decoded (bad JSON, bad
  base64, bad MicroTime) are 400 BadRequest.
- Canonical forms: a Secret's ``stringData`` is folded into ``data``; its ``type`` defaults to
  Opaque; Lease times come back as RFC 3339 MicroTime (``2006-01-02T15:04:05.000000Z``); a
  Namespace gets ``spec.finalizers: [kubernetes]`` and ``status.phase: Active``.
- ``dryRun=All`` validates and answers without storing.
- LIST answers ``metadata.resourceVersion`` (the counter) and items without ``kind`` and
  ``apiVersion``, ordered by namespace and name. ``limit`` pages it: ``metadata.continue`` (and
  ``remainingItemCount`` when there is no selector) leads to the next page, served from the
  state of the first one, as etcd's consistent list is; a continue token that was forgotten
  (after ``compact()``, or once 64 newer paged lists were made) is 410 Expired, an undecodable
  one 400. ``resourceVersion`` (and ``resourceVersionMatch``) are accepted and answered with the
  current state, which satisfies "0" and NotOlderThan; with ``continue`` it is 400, as there.
- WATCH (``watch=1`` or ``watch=true``) is a chunked stream of JSON lines ``{"type", "object"}``:
  ADDED, MODIFIED, DELETED (the last state, carrying the deletion's resourceVersion), BOOKMARK
  (only with ``allowWatchBookmarks=true``: an object with kind, apiVersion and
  ``metadata.resourceVersion``, every ``bookmark_interval`` seconds and on ``bookmark()``),
  ERROR. It starts after the given ``resourceVersion``; without one (or "0") it first sends the
  current state as ADDED events. With a label selector, an object that comes to match is ADDED
  and one that stops matching is DELETED. ``timeoutSeconds`` ends the stream cleanly. The last
  ``history`` events (1000 by default) are kept, as the watch cache keeps a window: a watch from
  an older resourceVersion (or one that falls that far behind) gets an ERROR event with a 410
  Expired Status ("too old resource version") in its 200 stream, then the stream ends.
- Every error is a ``Status`` (kind Status, apiVersion v1, status Failure, message, reason,
  details, code), so the client raises ``ApiException`` with the right ``status``.
- Authentication: any token is accepted until ``require_token(TOKEN)``; then a request without
  ``Authorization: Bearer TOKEN`` is 401 Unauthorized. TokenReview answers 201 Created: a token
  given to ``add_service_account_token`` is ``authenticated: true`` as
  ``system:serviceaccount:NS:SA`` with the ``audiences`` it shares with ``spec.audiences``
  (default: the API server's own, ``API_AUDIENCE``); an unknown token, or one for none of the
  audiences asked, has an ``error`` and no ``authenticated`` (false is omitted, as the API
  server's JSON omits it); an empty token is 400.

Not served (a request for them fails loudly, never silently): JSON patch
(``application/json-patch+json``), ``fieldSelector``, subresources (``/status``), other
resources, finalizers and graceful deletion. Non-apply writes do not take field ownership.

Fast enough for benchmarks: stored objects are never changed in place, so a paged list holds
references, not copies; each stored version is encoded to JSON once for every list that sends it,
each change once for every watch (150,000 pods take the stand-in about 2 s to list the first time,
in pages of 500 to 5,000, and half a second the next).

For tests: ``fail`` and ``delay`` inject faults into the next matching requests (lists and watches
too), ``requests`` is the log of what was served, ``edit``/``put``/``get``/``delete`` act on stored
objects from outside, as another controller would (each change bumps the resourceVersion).
``drop_watches()`` cuts every open watch connection, ``stop_serving()`` makes the server
unreachable (connections cut and refused) until ``resume()`` serves again on the same port,
``compact()`` forgets the watch history and paged lists.
"""
from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import functools
import itertools
import json
import pickle
import random
import re
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, NamedTuple
from urllib.parse import parse_qs, urlsplit

import yaml


@dataclass(frozen=True)
class _Type:
    resource: str
    kind: str
    group: str
    version: str
    namespaced: bool = True
    names: str = "subdomain"  # the rule for metadata.name: a key of _NAME_RULES
    returns_deleted: bool = False  # DELETE answers the deleted object (the registry's ReturnDeletedObject), not a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the API server names the resource in messages: ``leases.coordination.k8s.io``."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @functools.cached_property
    def prefix(self) -> bytes:
        """The start of an encoded object of this type; the rest is its list item's encoding."""
        return f'{{"kind":"{self.kind}","apiVersion":"{self.api_version}",'.encode()


TYPES = {t.resource: t for t in (
    _Type("secrets", "Secret", "", "v1"),
    _Type("configmaps", "ConfigMap", "", "v1"),
    _Type("leases", "Lease", "coordination.k8s.io", "v1"),
    _Type("services", "Service", "", "v1", names="dns1035", returns_deleted=True),
    _Type("pods", "Pod", "", "v1", returns_deleted=True),
    _Type("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1"),
    _Type("namespaces", "Namespace", "", "v1", namespaced=False, names="label"),
    _Type("nodes", "Node", "", "v1", namespaced=False),
)}

# /api/v1[/namespaces/NS]/RESOURCE[/NAME] and /apis/GROUP/v1/...: "namespaces/NS" is a scope only
# when a resource follows it, else it is the Namespace NS itself.
_ROUTE = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)(?:/namespaces/(?P<ns>[^/]+)(?=/[^/]))?"
                    r"/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?/?$")
_TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
# What service-account tokens are for when a TokenReview names no audience (kubeadm's default
# --api-audiences, the service-account issuer).
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
_MERGE_PATCH = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_APPLY_PATCH = "application/apply-patch+yaml"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# metadata.name rules: (longest, pattern, the API server's message).
_NAME_RULES = {
    "subdomain": (253, _DNS_SUBDOMAIN, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character"),
    "label": (63, re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"), "a lowercase RFC 1123 label must consist of "
              "lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
    "dns1035": (63, re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"), "a DNS-1035 label must consist of lower case "
                "alphanumeric characters or '-', start with an alphabetic character, and end with an "
                "alphanumeric character"),
}
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_MAX_DATA_BYTES = 1024 * 1024
# Fields the server owns: never taken from a request body, never owned by an applier.
_SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


class ApiError(Exception):
    """An API error, answered as a Status object."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


class Served(NamedTuple):
    method: str
    path: str
    query: str
    status: int


@dataclass
class _Fault:
    kind: str  # "fail" (value: an HTTP status) or "delay" (value: seconds)
    value: float
    method: str | None
    path_contains: str | None
    times: int | None  # None: every matching request until clear_faults()

    def matches(self, method: str, target: str) -> bool:
        return ((self.method is None or self.method.upper() == method)
                and (self.path_contains is None or self.path_contains in target))


@dataclass
class _Owner:
    fields: dict[tuple, Any]  # path -> the value the manager applied
    time: str


def _clone(obj: Any) -> Any:
    """A deep copy of JSON data (a stored object is never shared with a caller), quicker than
    copy.deepcopy: loading a benchmark's hundreds of thousands of objects copies each twice."""
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _details(t: _Type, name: str, **extra) -> dict:
    details = {"name": name, "kind": t.resource, **extra}
    if t.group:
        details["group"] = t.group
    return details


def _not_found(t: _Type, name: str) -> ApiError:
    return ApiError(404, f'{t.qualified} "{name}" not found', details=_details(t, name))


def _conflict(t: _Type, name: str, why: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {t.qualified} "{name}": {why}',
                    details=_details(t, name))


class _Invalid:
    """Collects field errors the way the API server's validation does, then raises one 422."""

    def __init__(self) -> None:
        self.causes: list[dict] = []

    def add(self, field: str, detail: str, value: Any = None, reason: str = "FieldValueInvalid") -> None:
        if reason == "FieldValueInvalid":
            detail = f"Invalid value: {json.dumps(value)}: {detail}"
        self.causes.append({"reason": reason, "message": detail, "field": field})

    def required(self, field: str, detail: str = "") -> None:
        self.add(field, "Required value" + (f": {detail}" if detail else ""), reason="FieldValueRequired")

    def forbidden(self, field: str, detail: str) -> None:
        self.add(field, f"Forbidden: {detail}", reason="FieldValueForbidden")

    def raise_if_any(self, t: _Type, name: str) -> None:
        if not self.causes:
            return
        texts = [f"{c['field']}: {c['message']}" for c in self.causes]
        joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        raise ApiError(422, f'{t.kind} "{name}" is invalid: {joined}',
                       details={**_details(t, name, kind=t.kind), "causes": self.causes})


def _bad_request(t: _Type, detail: str) -> ApiError:
    return ApiError(400, f'{t.kind} in version "{t.version}" cannot be handled as a {t.kind}: {detail}')


# ---- validation and canonical forms, per kind ---------------------------------------------------

def _check_metadata(t: _Type, meta: dict, errors: _Invalid) -> None:
    name = meta.get("name", "")
    longest, pattern, message = _NAME_RULES[t.names]
    if len(name) > longest or not pattern.fullmatch(name):
        errors.add("metadata.name", message, name)
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))) \
                or len(label) > 63 or not _LABEL_NAME.fullmatch(label):
            errors.add("metadata.labels", "name part must consist of alphanumeric characters, '-', '_' or '.', "
                       "optionally prefixed by a DNS subdomain and '/'", key)
        if len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
            errors.add("metadata.labels", "a valid label must be an empty string or consist of alphanumeric "
                       "characters, '-', '_' or '.', and must start and end with an alphanumeric character", value)


def _check_string_map(t: _Type, obj: dict, field: str) -> dict:
    value = obj.get(field) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _bad_request(t, f"{field}: expected a map of strings")
    return value


def _check_keys(field: str, keys, errors: _Invalid) -> None:
    for key in keys:
        if len(key) > 253 or key in (".", "..") or not _CONFIG_KEY.fullmatch(key):
            errors.add(f"{field}[{key}]", "a valid config key must consist of alphanumeric characters, '-', "
                       "'_' or '.' (regex used for validation is '[-._a-zA-Z0-9]+')", key)


def _decoded_size(t: _Type, field: str, values: dict) -> int:
    size = 0
    for key, value in values.items():
        try:
            size += len(key) + len(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise _bad_request(t, f"{field}[{key}]: illegal base64 data: {exc}") from None
    return size


def _check_immutable(new: dict, old: dict | None, fields: tuple[str, ...], errors: _Invalid) -> None:
    if not old or not old.get("immutable"):
        return
    if not new.get("immutable"):
        errors.forbidden("immutable", "field is immutable when `immutable` is set")
    for field in fields:
        if (new.get(field) or {}) != (old.get(field) or {}):
            errors.forbidden(field, "field is immutable when `immutable` is set")


def _prepare_secret(t: _Type, obj: dict, old: dict | None, errors: _Invalid) -> None:
    data = dict(_check_string_map(t, obj, "data"))
    for key, value in _check_string_map(t, obj, "stringData").items():
        data[key] = base64.b64encode(value.encode()).decode()
    obj.pop("stringData", None)
    if data or "data" in obj:
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    _check_keys("data", data, errors)
    if _decoded_size(t, "data", data) > _MAX_DATA_BYTES:
        errors.add("data", f"Too long: must have at most {_MAX_DATA_BYTES} bytes", reason="FieldValueTooLong")
    if obj["type"] == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                errors.required(f"data[{key}]")
    if old is not None and old.get("type") != obj["type"]:
        errors.add("type", "field is immutable", obj["type"])
    _check_immutable(obj, old, ("data",), errors)


def _prepare_configmap(t: _Type, obj: dict, old: dict | None, errors: _Invalid) -> None:
    data, binary = _check_string_map(t, obj, "data"), _check_string_map(t, obj, "binaryData")
    _check_keys("data", data, errors)
    _check_keys("binaryData", binary, errors)
    for key in data.keys() & binary.keys():
        errors.add(f"data[{key}]", "duplicate of key present in binaryData", key)
    size = sum(len(k) + len(v.encode()) for k, v in data.items()) + _decoded_size(t, "binaryData", binary)
    if size > _MAX_DATA_BYTES:
        errors.add("data", f"Too long: must have at most {_MAX_DATA_BYTES} bytes", reason="FieldValueTooLong")
    _check_immutable(obj, old, ("data", "binaryData"), errors)


def _micro_time(t: _Type, field: str, value: Any) -> str:
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _bad_request(t, f'{field}: parsing time "{value}" as RFC 3339 MicroTime') from None
    if when.tzinfo is None:
        raise _bad_request(t, f'{field}: parsing time "{value}": no time zone')
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _prepare_lease(t: _Type, obj: dict, old: dict | None, errors: _Invalid) -> None:
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise _bad_request(t, "spec: expected an object")
    for field in ("acquireTime", "renewTime"):
        if spec.get(field) is not None:
            spec[field] = _micro_time(t, f"spec.{field}", spec[field])
    for field, low, text in (("leaseDurationSeconds", 1, "must be greater than 0"),
                             ("leaseTransitions", 0, "must be greater than or equal to 0")):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or value < low):
            errors.add(f"spec.{field}", text, value)


def _prepare_endpointslice(t: _Type, obj: dict, old: dict | None, errors: _Invalid) -> None:
    kind = obj.get("addressType")
    if not kind:
        errors.required("addressType")
    elif kind not in _ADDRESS_TYPES:
        errors.add("addressType", "Unsupported value: " + json.dumps(kind) + ": supported values: "
                   + ", ".join(f'"{a}"' for a in _ADDRESS_TYPES), reason="FieldValueNotSupported")
    elif old is not None and old.get("addressType") != kind:
        errors.add("addressType", "field is immutable", kind)


def _prepare_namespace(t: _Type, obj: dict, old: dict | None, errors: _Invalid) -> None:
    # The API server's defaults: the namespace controller's finalizer, and a phase (there is no
    # Terminating one here: a deleted Namespace goes at once, with its contents).
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def _no_rules(t: _Type, obj: dict, old: dict | None, errors: _Invalid) -> None:
    pass  # names and labels only (checked for every kind)


_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
_PREPARE: dict[str, Callable[[_Type, dict, dict | None, _Invalid], None]] = {
    "secrets": _prepare_secret, "configmaps": _prepare_configmap, "leases": _prepare_lease,
    "endpointslices": _prepare_endpointslice, "namespaces": _prepare_namespace,
    "services": _no_rules, "pods": _no_rules, "nodes": _no_rules}


# ---- merge patch and server-side apply ----------------------------------------------------------

def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _applied_fields(config: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    """The fields an applied configuration sets: maps are descended, lists and scalars are atomic."""
    fields = {}
    for key, value in config.items():
        path = prefix + (key,)
        if path in (("apiVersion",), ("kind",)) or (path[0] == "metadata" and len(path) == 2
                                                    and key not in ("labels", "annotations")):
            continue
        if isinstance(value, dict) and value:
            fields.update(_applied_fields(value, path))
        else:
            fields[path] = value
    return fields


def _get_path(obj: dict, path: tuple) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _remove_path(obj: dict, path: tuple) -> None:
    parents = [obj]
    for key in path[:-1]:
        obj = obj.get(key)
        if not isinstance(obj, dict):
            return
        parents.append(obj)
    obj.pop(path[-1], None)
    # Drop the maps the removal emptied (but not the object itself or its metadata).
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth] or path[:depth] == ("metadata",):
            break
        parents[depth - 1].pop(path[depth - 1])


def _fields_v1(paths) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


# ---- the stand-in -------------------------------------------------------------------------------

Key = tuple[str, str, str]  # (resource, namespace or "" for cluster-scoped kinds, name)

_TOKEN_REVIEW = _Type("tokenreviews", "TokenReview", "authentication.k8s.io", "v1", namespaced=False)
_LISTS_KEPT = 64  # paged lists whose continue tokens stay valid (the oldest expire first)
_INITIAL_BATCH = 500  # synthetic ADDED events per chunk when a watch starts with the current state
# Compact, and quicker than json.dumps for many small objects (one encoder, no cycle check: stored
# objects are JSON data).
_to_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _labels(obj: dict) -> dict:
    return obj["metadata"].get("labels") or {}


@dataclass(eq=False)
class _Event:
    """One change, as a watch sends it: ``obj`` after it (for DELETED, the last state with the
    deletion's resourceVersion, as etcd reports it), ``prev`` before it."""
    revision: int
    type: str
    t: _Type
    key: Key
    obj: dict
    prev: dict | None
    encoded: bytes | None = None  # the object's JSON, made once for every watcher


class _Selection(NamedTuple):
    """Stored objects in the API server's order (namespace, name). References, not copies: stored
    objects are never changed in place, so this stays the state it was taken from."""
    keys: list[Key]
    objects: list[dict]


@dataclass
class _Snapshot:
    """A paged list: what the first page saw, served page by page (the API server's consistent
    continue)."""
    t: _Type
    namespace: str | None
    revision: int
    items: _Selection


@dataclass(eq=False)
class _Watch:
    """One open watch: what it asked for and how far into the history it has been sent."""
    t: _Type
    namespace: str | None  # None: every namespace
    match: Callable[[dict], bool] | None  # None: every object
    position: int  # the last revision considered (events up to it are sent or filtered out)
    initial: _Selection  # synthetic ADDED events to send first
    bookmarks: bool
    deadline: float  # on the monotonic clock; inf without timeoutSeconds
    bookmarks_sent: int = 0  # the stand-in's count of bookmark() calls when this watch last sent one
    gone: str | None = None  # why the stream ends with 410 Gone
    dropped: bool = False  # cut by drop_watches() or stop_serving(): no clean end
    sock: socket.socket | None = None


@dataclass(frozen=True)
class _ServiceAccount:
    namespace: str
    name: str
    audiences: tuple[str, ...]
    uid: str


def _cut(sock: socket.socket) -> None:
    """End a connection at once, as a lost network would (the peer sees it close mid-response)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def _peer_closed(sock: socket.socket | None) -> bool:
    """Whether the client closed its end: a watch with nothing to send would otherwise not notice."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _event_line(type: str, obj: bytes) -> bytes:
    return b'{"type":"' + type.encode() + b'","object":' + obj + b"}\n"


def _go_strings(values) -> str:
    """A list as Go's %q prints it in the API server's messages: ["a" "b"]."""
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


class KubeStandIn:
    """A Kubernetes API server stand-in on 127.0.0.1, started at construction; use it with ``with``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on every change, for watches
        self._objects: dict[Key, dict] = {}
        self._owners: dict[Key, dict[str, _Owner]] = {}
        self._encoded: dict[Key, bytes] = {}  # stored objects' list item JSON, once made (under the lock)
        self._revision = 0
        self._history: collections.deque[_Event] = collections.deque(maxlen=1000)
        self._floor = 0  # every event after this revision is in the history: watches may start from it
        self._lists: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()
        self._watches: set[_Watch] = set()
        self._bookmarks = 0  # bookmark() calls
        self._connections: set[socket.socket] = set()
        self._token: str | None = None
        self._accounts: dict[str, _ServiceAccount] = {}
        self._faults: list[_Fault] = []
        self._served: list[Served] = []
        self._stopping = threading.Event()
        # How often a watch that allows bookmarks gets one (the API server's is about a minute).
        self.bookmark_interval = 60.0
        self._port = 0
        self._serve()

    def _serve(self) -> None:
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.standin = self  # type: ignore[attr-defined]
        self._port = self._server.server_address[1]
        # A short poll interval: close() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="kube-standin",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def close(self) -> None:
        self._stopping.set()  # wakes delayed requests and ends watches
        with self._lock:
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> KubeStandIn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write_kubeconfig(self, path: Path, contexts=("standin",), token: str = "standin") -> Path:
        """A kubeconfig whose contexts (named as given, the first current) all lead to this stand-in."""
        return write_kubeconfig(path, {name: self for name in contexts}, token=token)

    # -- for tests: faults, the request log, objects edited from outside --

    def fail(self, method: str | None = None, path_contains: str | None = None, status: int = 500,
             times: int | None = 1) -> None:
        """Answer the next ``times`` matching requests (None: all, until clear_faults) with ``status``.

        ``path_contains`` is matched against the path and query (``fieldManager=`` works); the
        request is not processed.
        """
        with self._lock:
            self._faults.append(_Fault("fail", status, method, path_contains, times))

    def delay(self, seconds: float, method: str | None = None, path_contains: str | None = None,
              times: int | None = 1) -> None:
        """Hold the next matching requests ``seconds`` before processing them (a client that times out
        meanwhile does not know whether its write happened: it does, after the delay)."""
        with self._lock:
            self._faults.append(_Fault("delay", seconds, method, path_contains, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection now, without the stream's clean end (a lost connection)."""
        with self._lock:
            watches = list(self._watches)
            for watch in watches:
                watch.dropped = True
            self._changed.notify_all()
        for watch in watches:
            if watch.sock is not None:
                _cut(watch.sock)

    def stop_serving(self) -> None:
        """Go away as a stopped API server does: every connection is cut and new ones are refused
        until ``resume()``."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.drop_watches()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)

    def resume(self) -> None:
        """Serve again, on the same port, with everything stored as it was."""
        self._serve()

    def require_token(self, token: str | None) -> None:
        """Answer 401 Unauthorized to requests without ``Authorization: Bearer <token>`` (None: accept any)."""
        with self._lock:
            self._token = token

    def add_service_account_token(self, token: str, namespace: str, service_account: str,
                                  audiences=("istio-ca",)) -> None:
        """A token that TokenReview answers for as ``system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT``."""
        with self._lock:
            self._accounts[token] = _ServiceAccount(namespace, service_account, tuple(audiences), str(uuid.uuid4()))

    @property
    def history(self) -> int:
        """How many events the stand-in keeps for watches (the watch cache's window): a watch from a
        resourceVersion older than they reach is 410 Gone."""
        return self._history.maxlen or 0

    @history.setter
    def history(self, size: int) -> None:
        if size < 1:
            raise ValueError("the history keeps at least one event")
        with self._lock:
            forgotten = len(self._history) - size
            if forgotten > 0:
                self._floor = self._history[forgotten - 1].revision
            self._history = collections.deque(itertools.islice(self._history, max(forgotten, 0), None), maxlen=size)

    def compact(self) -> None:
        """Forget every event so far and every paged list, as an etcd compaction does: a watch from an
        older resourceVersion, or a continue token issued before, is now 410 Gone."""
        with self._lock:
            self._history.clear()
            self._floor = self._revision
            self._lists.clear()
            self._changed.notify_all()

    def bookmark(self) -> None:
        """Send a BOOKMARK now on every open watch that allows them."""
        with self._lock:
            self._bookmarks += 1
            self._changed.notify_all()

    @property
    def requests(self) -> list[Served]:
        with self._lock:
            return list(self._served)

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """A stored object (``namespace`` "" or None for cluster-scoped kinds), or None."""
        with self._lock:
            obj = self._objects.get((resource, namespace or "", name))
            return _clone(obj)

    def put(self, obj: dict) -> dict:
        """Create or replace an object from outside (its kind says where), unconditionally."""
        t = next((t for t in TYPES.values() if t.kind == obj.get("kind")), None)
        if t is None:
            raise ValueError(f"the stand-in does not serve kind {obj.get('kind')!r}")
        meta = obj.get("metadata") or {}
        key = (t.resource, meta.get("namespace", "default") if t.namespaced else "", meta.get("name", ""))
        with self._lock:
            return self._write(t, key, _clone(obj), self._objects.get(key), dry_run=False)

    def edit(self, resource: str, namespace: str | None, name: str, change: Callable[[dict], None]) -> dict:
        """Change a stored object as another controller would: ``change`` mutates a copy, which is
        validated and stored with a new resourceVersion. Returns the stored object."""
        key = (resource, namespace or "", name)
        with self._lock:
            old = self._objects.get(key)
            if old is None:
                raise _not_found(TYPES[resource], name)
            new = _clone(old)
            change(new)
            return self._write(TYPES[resource], key, new, old, dry_run=False)

    def delete(self, resource: str, namespace: str | None, name: str) -> None:
        """Delete a stored object from outside (a Namespace with everything in it)."""
        with self._lock:
            self._delete(TYPES[resource], namespace or "", name, {}, dry_run=False)

    # -- serving --

    def unauthorized(self, method: str, target: str, authorization: str | None) -> tuple[int, dict] | None:
        """The 401 answer to a request without the required token (logged as served), or None.
        Checked before ``handle``, as the API server authenticates before anything else."""
        with self._lock:
            if self._token is None or authorization == f"Bearer {self._token}":
                return None
            url = urlsplit(target)
            self._served.append(Served(method, url.path, url.query, 401))
        return 401, ApiError(401, "Unauthorized").status()

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> tuple[int, dict | bytes | _Watch]:
        """One request: (status, answer). The answer is a JSON object, or its encoding, or a watch to
        stream. Called by the HTTP handler's threads."""
        url = urlsplit(target)
        status: int = 500
        answer: dict | bytes | _Watch = {}
        try:
            self._injected(method, target)
            status, answer = self._route(method, url.path, parse_qs(url.query), content_type, body)
        except ApiError as exc:
            status, answer = exc.code, exc.status()
        except Exception as exc:  # a bug in the stand-in: say so rather than drop the connection
            traceback.print_exc()
            status, answer = 500, ApiError(500, f"kube stand-in failed: {exc!r}").status()
        finally:
            with self._lock:
                self._served.append(Served(method, url.path, url.query, status))
        return status, answer

    def _injected(self, method: str, target: str) -> None:
        with self._lock:
            delay, fail = (self._take(kind, method, target) for kind in ("delay", "fail"))
        if delay:
            self._stopping.wait(delay)
        if fail:
            raise ApiError(int(fail), f"injected fault: {int(fail)} for {method} {target}")

    def _take(self, kind: str, method: str, target: str) -> float:
        """The value of the first fault of this kind matching the request, used up once (under the lock)."""
        fault = next((f for f in self._faults if f.kind == kind and f.matches(method, target)), None)
        if fault is None:
            return 0
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
        return fault.value

    def _route(self, method: str, path: str, query: dict, content_type: str,
               body: bytes) -> tuple[int, dict | bytes | _Watch]:
        if path == _TOKEN_REVIEWS:
            if method != "POST":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return 201, self._review(self._decode(_TOKEN_REVIEW, body))
        match = _ROUTE.match(path)
        t = TYPES.get(match["resource"]) if match else None
        if t is None or (match["group"] or "") != t.group or (match["ns"] is not None and not t.namespaced) \
                or (t.namespaced and match["name"] is not None and match["ns"] is None):
            raise ApiError(404, "the server could not find the requested resource", details={})
        namespace, name = match["ns"], match["name"]
        scope = namespace or ""  # the namespace in the stored object's key
        dry_run = "All" in query.get("dryRun", [])

        def one(key: str) -> str | None:
            return query.get(key, [None])[0]
        media = content_type.split(";")[0].strip()
        if name is None and method == "GET":
            if one("fieldSelector"):
                raise ApiError(400, "the stand-in does not serve fieldSelector")
            if one("watch") in ("1", "true"):
                return 200, self._open_watch(t, namespace, one)
            return 200, self._list(t, namespace, one)
        with self._lock:
            if name is None:
                if method == "POST" and (namespace is not None or not t.namespaced):
                    return 201, self._create(t, scope, self._decode(t, body), dry_run)
            elif method == "GET":
                return 200, self._read(t, scope, name)
            elif method == "PUT":
                return 200, self._replace(t, scope, name, self._decode(t, body), dry_run)
            elif method == "PATCH" and media in _MERGE_PATCH:
                return 200, self._patch(t, scope, name, self._decode(t, body), dry_run)
            elif method == "PATCH" and media == _APPLY_PATCH:
                status, obj = self._apply(t, scope, name, body, one("fieldManager"),
                                          one("force") == "true", dry_run)
                return status, obj
            elif method == "PATCH":
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                               f"include: {', '.join(_MERGE_PATCH)}, {_APPLY_PATCH}")
            elif method == "DELETE":
                return 200, self._delete(t, scope, name, self._decode(t, body) if body else {}, dry_run)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _decode(t: _Type, body: bytes) -> dict:
        try:
            obj = json.loads(body or b"null")
        except ValueError as exc:
            raise _bad_request(t, f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _bad_request(t, "the body must be a JSON object")
        return obj

    def _read(self, t: _Type, namespace: str, name: str) -> dict:
        obj = self._objects.get((t.resource, namespace, name))
        if obj is None:
            raise _not_found(t, name)
        return _clone(obj)

    # -- lists and watches --

    def _matching(self, t: _Type, namespace: str | None, match: Callable[[dict], bool] | None) -> _Selection:
        """The stored objects a list or watch asks for (under the lock). The keys are the stored
        ones, not new tuples: a large list would otherwise make the garbage collector walk every
        stored object several times."""
        keys = sorted(key for key in self._objects if key[0] == t.resource and (namespace is None or key[1] == namespace))
        if match is not None:
            keys = [key for key in keys if match(_labels(self._objects[key]))]
        return _Selection(keys, [self._objects[key] for key in keys])

    def _items_json(self, t: _Type, items: _Selection) -> list[bytes]:
        """Each object's JSON as a list item (without kind and apiVersion), made once per stored
        version. Encoded outside the lock: the objects are immutable and a large page takes a while."""
        with self._lock:
            found = [self._encoded.get(key) if self._objects.get(key) is obj else None
                     for key, obj in zip(items.keys, items.objects)]
        made = {}
        for i, data in enumerate(found):
            if data is None:
                # Stored objects start with kind and apiVersion (_write): the rest is the item.
                found[i] = made[i] = b"{" + _to_json(items.objects[i]).encode()[len(t.prefix):]
        with self._lock:
            for i, data in made.items():
                if self._objects.get(items.keys[i]) is items.objects[i]:  # not a version since replaced
                    self._encoded[items.keys[i]] = data
        return found  # type: ignore[return-value]  # every None was replaced

    def _objects_json(self, t: _Type, items: _Selection) -> list[bytes]:
        return [t.prefix + item[1:] for item in self._items_json(t, items)]

    def _list(self, t: _Type, namespace: str | None, one: Callable[[str], str | None]) -> bytes:
        limit, token, version = _number(one("limit"), "limit"), one("continue"), one("resourceVersion")
        if version:
            _number(version, "resourceVersion")  # any version is served the current state, which satisfies it
        if token and version:
            raise ApiError(400, "specifying resource version is not allowed when using continue")
        selector = one("labelSelector")
        with self._lock:
            if token:
                list_id, snapshot, start = self._continued(t, namespace, token)
            else:
                list_id, start = uuid.uuid4().hex, 0
                snapshot = _Snapshot(t, namespace, self._revision,
                                     self._matching(t, namespace, _selector(selector) if selector else None))
            total = len(snapshot.items.keys)
            end = start + limit if limit else total
            meta: dict[str, Any] = {"resourceVersion": str(snapshot.revision)}
            if end < total:
                self._lists[list_id] = snapshot
                self._lists.move_to_end(list_id)
                while len(self._lists) > _LISTS_KEPT:
                    self._lists.popitem(last=False)
                meta["continue"] = _continue_token(list_id, snapshot.revision, end)
                if not selector:  # the API server counts only when it need not filter
                    meta["remainingItemCount"] = total - end
            page = _Selection(snapshot.items.keys[start:end], snapshot.items.objects[start:end])
        return b"".join((b'{"kind":"', t.kind.encode(), b'List","apiVersion":"', t.api_version.encode(),
                         b'","metadata":', json.dumps(meta, separators=(",", ":")).encode(), b',"items":[',
                         b",".join(self._items_json(t, page)), b"]}"))

    def _continued(self, t: _Type, namespace: str | None, token: str) -> tuple[str, _Snapshot, int]:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            list_id, start = str(decoded["id"]), int(decoded["start"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, f"continue key is not valid: {token!r} cannot be decoded") from None
        snapshot = self._lists.get(list_id)
        if snapshot is None:
            raise ApiError(410, "The provided continue parameter is too old to display a consistent list result. "
                           "You can start a new list without the continue parameter.")
        if snapshot.t is not t or snapshot.namespace != namespace:
            raise ApiError(400, "continue key is not valid: it was issued for another list")
        return list_id, snapshot, start

    def _open_watch(self, t: _Type, namespace: str | None, one: Callable[[str], str | None]) -> _Watch:
        selector, version = one("labelSelector"), one("resourceVersion") or ""
        timeout = _number(one("timeoutSeconds"), "timeoutSeconds")
        match = _selector(selector) if selector else None
        with self._lock:
            if version in ("", "0"):
                # The API server's "start at most recent": the current state as ADDED events first.
                position, initial = self._revision, self._matching(t, namespace, match)
            else:
                position, initial = _number(version, "resourceVersion"), _Selection([], [])
            watch = _Watch(t, namespace, match, position, initial, one("allowWatchBookmarks") == "true",
                           time.monotonic() + timeout if timeout else float("inf"), self._bookmarks)
            # Registered now, before the answer starts: drop_watches() reaches every accepted watch.
            self._watches.add(watch)
        return watch

    def _forget(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def watch_stream(self, watch: _Watch) -> Generator[bytes, None, None]:
        """A watch's chunks of JSON lines, until its timeout (or 410 Gone, or the stand-in closing):
        then the caller ends the stream cleanly, unless ``watch.dropped``."""
        keys, objects = watch.initial
        for start in range(0, len(keys), _INITIAL_BATCH):
            batch = _Selection(keys[start:start + _INITIAL_BATCH], objects[start:start + _INITIAL_BATCH])
            yield b"".join(_event_line("ADDED", obj) for obj in self._objects_json(watch.t, batch))
        watch.initial = _Selection([], [])
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self._lock:
                events, bookmark, end = self._next_events(watch, next_bookmark)
            lines = [line for line in (self._event_line(watch, e) for e in events) if line]
            if bookmark:
                lines.append(json.dumps({"type": "BOOKMARK", "object": {
                    "kind": watch.t.kind, "apiVersion": watch.t.api_version,
                    "metadata": {"resourceVersion": str(watch.position)}}}).encode() + b"\n")
                next_bookmark = time.monotonic() + self.bookmark_interval
            if watch.gone:
                lines.append(json.dumps({"type": "ERROR", "object": ApiError(410, watch.gone).status()}).encode()
                             + b"\n")
            if lines:
                yield b"".join(lines)
            if end or (not lines and _peer_closed(watch.sock)):
                return

    def _next_events(self, watch: _Watch, next_bookmark: float) -> tuple[list[_Event], bool, bool]:
        """Under the lock: the events after the watch's position, whether a bookmark is due, and
        whether the stream ends. Waits a while first when there is nothing to send."""
        waited = False
        while True:
            if watch.dropped or self._stopping.is_set():
                return [], False, True
            if watch.position < self._floor:
                watch.gone = f"too old resource version: {watch.position} ({self._floor + 1})"
                return [], False, True
            events = []
            for event in reversed(self._history):
                if event.revision <= watch.position:
                    break
                events.append(event)
            events.reverse()
            watch.position = self._revision  # the history holds every revision after the floor
            now = time.monotonic()
            bookmark = watch.bookmarks and (now >= next_bookmark or watch.bookmarks_sent != self._bookmarks)
            watch.bookmarks_sent = self._bookmarks
            end = now >= watch.deadline
            if events or bookmark or end or waited:
                return events, bookmark, end
            # Woken by any change; at least every half second, to notice a client that went away.
            wake = min(0.5, watch.deadline - now, next_bookmark - now if watch.bookmarks else 0.5)
            self._changed.wait(max(wake, 0))
            waited = True

    def _event_line(self, watch: _Watch, event: _Event) -> bytes | None:
        """The line an event is for this watch, or None when it is not for it. With a label selector,
        an object that comes to match is ADDED and one that stops matching DELETED, as the API
        server's watch cache does."""
        if event.t is not watch.t or (watch.namespace is not None and event.key[1] != watch.namespace):
            return None
        type = event.type
        if watch.match is not None:
            before = event.prev is not None and watch.match(_labels(event.prev))
            after = watch.match(_labels(event.obj))
            seen = {(True, True): event.type, (False, True): "ADDED", (True, False): "DELETED"}.get((before, after))
            if seen is None:
                return None
            type = seen
        if event.encoded is None:
            # Not through the lists' cache: that takes the lock, which the writers hold meanwhile.
            event.encoded = _to_json(event.obj).encode()
        return _event_line(type, event.encoded)

    def _record(self, type: str, t: _Type, key: Key, obj: dict, prev: dict | None) -> None:
        """A change at the current revision (under the lock), for watches."""
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].revision
        self._history.append(_Event(self._revision, type, t, key, obj, prev))
        self._changed.notify_all()

    def _connection(self, sock: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    # -- TokenReview --

    def _review(self, review: dict) -> dict:
        spec = review.get("spec") or {}
        token = spec.get("token") if isinstance(spec, dict) else None
        if not token:
            raise ApiError(400, "token is required for TokenReview in authentication")
        wanted = list(spec.get("audiences") or [API_AUDIENCE])
        with self._lock:
            account = self._accounts.get(token)
        shared = [a for a in wanted if account is not None and a in account.audiences]
        # ``authenticated: false`` is left out, as the API server's omitempty does.
        status: dict[str, Any] = {"user": {}}
        if account is None:
            status["error"] = "[invalid bearer token, token lookup failed]"
        elif not shared:
            status["error"] = (f"[invalid bearer token, token audiences {_go_strings(account.audiences)} is "
                               f"invalid for the target audiences {_go_strings(wanted)}]")
        else:
            status = {"authenticated": True, "audiences": shared, "user": {
                "username": f"system:serviceaccount:{account.namespace}:{account.name}", "uid": account.uid,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account.namespace}",
                           "system:authenticated"]}}
        return {"kind": "TokenReview", "apiVersion": _TOKEN_REVIEW.api_version,
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    # -- writes --

    def _check_identity(self, t: _Type, obj: dict, namespace: str, name: str | None) -> dict:
        """The body must be of the URL's kind and namespace (and name, for an existing object)."""
        if obj.get("kind", t.kind) != t.kind or obj.get("apiVersion", t.api_version) != t.api_version:
            raise ApiError(400, f'{obj.get("kind")} in version "{obj.get("apiVersion")}" cannot be handled '
                           f"as a {t.kind}: the kind or apiVersion does not match the URL")
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise _bad_request(t, "metadata: expected an object")
        # A cluster-scoped object's namespace is cleared, not checked.
        if t.namespaced and meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                           "the request")
        if name is not None and meta.get("name") != name:
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the name on the "
                           f"URL ({name})")
        return meta

    def _create(self, t: _Type, namespace: str, obj: dict, dry_run: bool) -> dict:
        meta = self._check_identity(t, obj, namespace, None)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if not meta.get("name"):
            errors = _Invalid()
            errors.required("metadata.name", "name or generateName is required")
            errors.raise_if_any(t, "")
        key = (t.resource, namespace, meta["name"])
        if key in self._objects:
            raise ApiError(409, f'{t.qualified} "{meta["name"]}" already exists',
                           reason="AlreadyExists", details=_details(t, meta["name"]))
        return self._write(t, key, obj, None, dry_run)

    def _replace(self, t: _Type, namespace: str, name: str, obj: dict, dry_run: bool) -> dict:
        meta = self._check_identity(t, obj, namespace, name)
        key, old = self._existing(t, namespace, name)
        self._preconditions(t, old, meta.get("resourceVersion"), meta.get("uid"))
        return self._write(t, key, obj, old, dry_run)

    def _patch(self, t: _Type, namespace: str, name: str, patch: dict, dry_run: bool) -> dict:
        key, old = self._existing(t, namespace, name)
        meta = patch.get("metadata") or {}
        self._preconditions(t, old, meta.get("resourceVersion"), meta.get("uid"))
        obj = _merge_patch(_clone(old), patch)
        self._check_identity(t, obj, namespace, name)
        return self._write(t, key, obj, old, dry_run)

    def _apply(self, t: _Type, namespace: str, name: str, body: bytes, manager: str | None, force: bool,
               dry_run: bool) -> tuple[int, dict]:
        try:
            config = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise _bad_request(t, f"invalid YAML: {exc}") from None
        if not isinstance(config, dict) or "apiVersion" not in config or "kind" not in config:
            raise ApiError(400, "apiVersion and kind must be set in an applied configuration")
        meta = self._check_identity(t, config, namespace, name)
        if not manager:
            raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                           "required for apply patch", reason="Invalid", details={"kind": "PatchOptions"})
        key = (t.resource, namespace, name)
        old = self._objects.get(key)
        if old is not None:
            self._preconditions(t, old, meta.get("resourceVersion"), meta.get("uid"))
        applied = _applied_fields(config)
        owners = {m: _Owner(dict(o.fields), o.time) for m, o in self._owners.get(key, {}).items()}
        live = _clone(old) if old is not None else {"metadata": {"name": name, "namespace": namespace}}
        conflicts = [(other, path) for other, owner in owners.items() if other != manager
                     for path in applied if path in owner.fields and _get_path(live, path) != applied[path]]
        if conflicts and not force:
            fields = [(other, "." + ".".join(path)) for other, path in conflicts]
            causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{other}"', "field": field}
                      for other, field in fields]
            raise ApiError(409, f"Apply failed with {len(conflicts)} conflict(s): "
                           + "; ".join(f'conflict with "{other}": {field}' for other, field in fields),
                           reason="Conflict", details={**_details(t, name), "causes": causes})
        for other, path in conflicts:
            del owners[other].fields[path]
        before = owners.get(manager)
        for path in (before.fields if before else {}):
            if path not in applied and not any(path in o.fields for m, o in owners.items() if m != manager):
                _remove_path(live, path)
        owners[manager] = _Owner(applied, _now_rfc3339())
        obj = _merge_patch(live, {k: v for k, v in config.items() if k != "metadata"})
        obj["metadata"] = _merge_patch(live["metadata"], {k: v for k, v in meta.items()
                                                          if k in ("labels", "annotations")})
        stored = self._write(t, key, obj, old, dry_run, owners={m: o for m, o in owners.items() if o.fields})
        return (200 if old is not None else 201), stored

    def _existing(self, t: _Type, namespace: str, name: str) -> tuple[tuple, dict]:
        """(key, stored object) of an object a request needs to exist; 404 otherwise."""
        key = (t.resource, namespace, name)
        old = self._objects.get(key)
        if old is None:
            raise _not_found(t, name)
        return key, old

    def _delete(self, t: _Type, namespace: str, name: str, options: dict, dry_run: bool) -> dict:
        key, old = self._existing(t, namespace, name)
        preconditions = options.get("preconditions") or {}
        self._preconditions(t, old, preconditions.get("resourceVersion"), preconditions.get("uid"))
        last = old
        if not dry_run:
            if t.resource == "namespaces":
                # The namespace controller's work, done at once: everything in it goes, each its own
                # DELETED event.
                for inner in sorted(k for k in self._objects if k[1] == name and TYPES[k[0]].namespaced):
                    self._remove(inner)
            last = self._remove(key)
        if t.returns_deleted:
            return _clone(last)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": _details(t, name, uid=old["metadata"]["uid"])}

    def _remove(self, key: Key) -> dict:
        """Delete a stored object (under the lock); its last state, with the deletion's resourceVersion
        (as etcd reports a delete)."""
        old = self._objects.pop(key)
        self._owners.pop(key, None)
        self._encoded.pop(key, None)
        self._revision += 1
        last = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self._revision)}}
        self._record("DELETED", TYPES[key[0]], key, last, old)
        return last

    @staticmethod
    def _preconditions(t: _Type, old: dict, resource_version: str | None, uid: str | None) -> None:
        meta = old["metadata"]
        if uid and uid != meta["uid"]:
            raise _conflict(t, meta["name"], f"Precondition failed: UID in precondition: {uid}, "
                            f"UID in object meta: {meta['uid']}")
        if resource_version and resource_version != meta["resourceVersion"]:
            raise _conflict(t, meta["name"], "the object has been modified; please apply your changes to the "
                            "latest version and try again")

    def _write(self, t: _Type, key: tuple[str, str, str], obj: dict, old: dict | None, dry_run: bool,
               owners: dict[str, _Owner] | None = None) -> dict:
        """Validate, set the server's fields and store (under the lock). Returns the stored object."""
        obj["kind"], obj["apiVersion"] = t.kind, t.api_version
        meta = obj.setdefault("metadata", {})
        for field in _SERVER_METADATA:
            meta.pop(field, None)
        if t.namespaced:
            meta["namespace"] = key[1]
        else:
            meta.pop("namespace", None)
        meta["name"] = key[2]
        errors = _Invalid()
        _check_metadata(t, meta, errors)
        _PREPARE[t.resource](t, obj, old, errors)
        errors.raise_if_any(t, key[2])
        if old is not None:
            meta["uid"], meta["creationTimestamp"] = old["metadata"]["uid"], old["metadata"]["creationTimestamp"]
        else:
            meta["uid"], meta["creationTimestamp"] = str(uuid.uuid4()), _now_rfc3339()
        owners = self._owners.get(key, {}) if owners is None else owners
        if owners:
            meta["managedFields"] = [
                {"manager": m, "operation": "Apply", "apiVersion": t.api_version, "time": o.time,
                 "fieldsType": "FieldsV1", "fieldsV1": _fields_v1(o.fields)} for m, o in sorted(owners.items())]
        if dry_run:
            if old is not None:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return obj
        self._revision += 1
        meta["resourceVersion"] = str(self._revision)
        obj = {"kind": t.kind, "apiVersion": t.api_version, **obj}  # first: lists encode the rest (_items_json)
        self._objects[key] = obj
        self._encoded.pop(key, None)
        self._owners[key] = owners
        self._record("ADDED" if old is None else "MODIFIED", t, key, obj, old)
        return _clone(obj)


def _number(text: str | None, name: str) -> int:
    """A whole-number query parameter (0 when absent)."""
    if not text:
        return 0
    if not text.isdigit():
        raise ApiError(400, f"invalid {name}: {text!r} is not a non-negative integer")
    return int(text)


def _continue_token(list_id: str, revision: int, start: int) -> str:
    """Shaped as the API server's (base64 of JSON with the list's revision and where to go on)."""
    data = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start, "id": list_id})
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _selector(text: str | None) -> Callable[[dict], bool]:
    """An equality-based label selector: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-separated."""
    tests = []
    for term in filter(None, (part.strip() for part in (text or "").split(","))):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda labels, k=term[1:].strip(): k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(test(labels) for test in tests)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client going away is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def setup(self) -> None:
        super().setup()
        self.server.standin._connection(self.connection, opened=True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._connection(self.connection, opened=False)  # type: ignore[attr-defined]

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        standin: KubeStandIn = self.server.standin  # type: ignore[attr-defined]
        status, answer = (standin.unauthorized(self.command, self.path, self.headers.get("Authorization"))
                          or standin.handle(self.command, self.path, self.headers.get("Content-Type", ""), body))
        if isinstance(answer, _Watch):
            self._stream(standin, answer)
            return
        data = answer if isinstance(answer, bytes) else json.dumps(answer, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:
            pass  # the client gave up (a timeout during an injected delay)

    def _stream(self, standin: KubeStandIn, watch: _Watch) -> None:
        chunks = standin.watch_stream(watch)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            # Only now may drop_watches() cut the connection: a watch is dropped mid-stream, never
            # before its answer began (the client would see a failed request, not a lost watch).
            watch.sock = self.connection
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if watch.dropped:
                self.close_connection = True  # no last chunk: the client sees the connection lost
            else:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            chunks.close()
            standin._forget(watch)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:
        pass  # the stand-in's request log is `requests`


def kubeconfig(contexts: Mapping[str, KubeStandIn], current: str | None = None, token: str = "standin") -> dict:
    """A kubeconfig with one context (and cluster entry) per name, each leading to its stand-in with
    a bearer ``token``. The current context is ``current``, else the first one."""
    names = list(contexts)
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": contexts[n].url}} for n in names],
        "users": [{"name": "standin", "user": {"token": token}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "standin"}} for n in names],
        "current-context": current or names[0],
    }


def write_kubeconfig(path: Path, contexts: Mapping[str, KubeStandIn], current: str | None = None,
                     token: str = "standin") -> Path:
    """``kubeconfig(...)`` written to ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(kubeconfig(contexts, current, token), sort_keys=False))
    return path
