"""A local stand-in for kube-apiserver, for tests.

kube-apiserver (and etcd) cannot be installed on the machines these tests run on, so this module
serves the slice of the Kubernetes API that Galleon writes, over real HTTP, to the official
``kubernetes`` Python client, unchanged: tests reach it through a kubeconfig file that
``write_kubeconfig`` writes (plain http, one context per cluster name; several contexts may point
at one stand-in or at several).

Resources: core/v1 ``secrets`` and ``configmaps`` and coordination.k8s.io/v1 ``leases``, all
namespaced (every namespace exists). The rules it enforces are the API server's:

- GET one, LIST a namespace (``labelSelector`` with ``=``, ``==``, ``!=``, ``key``, ``!key``),
  POST, PUT, PATCH, DELETE.
- ``metadata.resourceVersion`` is one global counter (etcd's revision), bumped by every write and
  delete. ``uid`` and ``creationTimestamp`` are set on create and kept on update. ``generation``
  is not set: the API server's strategies for these three kinds do not track it.
- POST: 409 AlreadyExists when the name is taken; ``generateName``; a ``resourceVersion`` in the
  body is the storage layer's 500 ("resourceVersion should not be set on objects to be created").
- PUT: 404 when the object is missing (these kinds do not create on update); 409 Conflict when the
  body's ``resourceVersion`` is stale (no ``resourceVersion``: unconditional update) or its
  ``uid`` differs; 400 BadRequest when the body's name, namespace, kind or apiVersion do not
  match the URL.
- PATCH: ``application/merge-patch+json`` (RFC 7386) and
  ``application/strategic-merge-patch+json`` (the same for these kinds: they have no lists with
  merge keys that Galleon writes); a ``resourceVersion`` in the patch is a precondition.
  Server-side apply (``application/apply-patch+yaml``) needs ``fieldManager`` (422), creates or
  updates, records field ownership per applying manager in ``metadata.managedFields``, removes
  fields a manager applied before and no longer applies, and answers 409 Conflict when another
  applying manager owns a field with a different value (``force=true`` takes it over).
- DELETE: 404 when missing, ``preconditions`` (resourceVersion, uid) give 409; answers a Success
  Status.
- Validation (422 Invalid, with causes): names are DNS-1123 subdomains; label keys and values;
  Secret and ConfigMap keys, overlapping ``data``/``binaryData`` keys, the 1 MiB size limit,
  ``immutable`` objects and a Secret's ``type`` cannot change, ``kubernetes.io/tls`` Secrets need
  ``tls.crt`` and ``tls.key``; a Lease's ``leaseDurationSeconds`` > 0 and ``leaseTransitions`` >= 0.
  Bodies that cannot be decoded (bad JSON, bad base64, bad MicroTime) are 400 BadRequest.
- Canonical forms: a Secret's ``stringData`` is folded into ``data``; its ``type`` defaults to
  Opaque; Lease times come back as RFC 3339 MicroTime (``2006-01-02T15:04:05.000000Z``).
- ``dryRun=All`` validates and answers without storing.
- Every error is a ``Status`` (kind Status, apiVersion v1, status Failure, message, reason,
  details, code), so the client raises ``ApiException`` with the right ``status``.

Not served (a request for them fails loudly, never silently): watches, JSON patch
(``application/json-patch+json``), other resources, authentication (any token is accepted),
finalizers and graceful deletion. Non-apply writes do not take field ownership.

For tests: ``fail`` and ``delay`` inject faults into the next matching requests, ``requests`` is
the log of what was served, and ``edit``/``put``/``get`` act on stored objects from outside, as
another controller would (each edit bumps the resourceVersion).
"""
from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import json
import random
import re
import threading
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple
from urllib.parse import parse_qs, urlsplit

import yaml


@dataclass(frozen=True)
class _Type:
    resource: str
    kind: str
    group: str
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the API server names the resource in messages: ``leases.coordination.k8s.io``."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


TYPES = {t.resource: t for t in (
    _Type("secrets", "Secret", "", "v1"),
    _Type("configmaps", "ConfigMap", "", "v1"),
    _Type("leases", "Lease", "coordination.k8s.io", "v1"),
)}

_ROUTE = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)"
                    r"(?:/(?P<name>[^/]+))?/?$")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
_MERGE_PATCH = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_APPLY_PATCH = "application/apply-patch+yaml"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
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

def _check_metadata(meta: dict, errors: _Invalid) -> None:
    name = meta.get("name", "")
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        errors.add("metadata.name", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                   "characters, '-' or '.', and must start and end with an alphanumeric character", name)
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


_PREPARE: dict[str, Callable[[_Type, dict, dict | None, _Invalid], None]] = {
    "secrets": _prepare_secret, "configmaps": _prepare_configmap, "leases": _prepare_lease}


# ---- merge patch and server-side apply ----------------------------------------------------------

def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
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

class KubeStandIn:
    """A Kubernetes API server stand-in on 127.0.0.1, started at construction; use it with ``with``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict] = {}
        self._owners: dict[tuple[str, str, str], dict[str, _Owner]] = {}
        self._revision = 0
        self._faults: list[_Fault] = []
        self._served: list[Served] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.standin = self  # type: ignore[attr-defined]
        # A short poll interval: close() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="kube-standin",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._stopping.set()  # wakes delayed requests
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> KubeStandIn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write_kubeconfig(self, path: Path, contexts=("standin",)) -> Path:
        """A kubeconfig whose contexts (named as given, the first current) all lead to this stand-in."""
        return write_kubeconfig(path, {name: self for name in contexts})

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

    @property
    def requests(self) -> list[Served]:
        with self._lock:
            return list(self._served)

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj)

    def put(self, obj: dict) -> dict:
        """Create or replace an object from outside (its kind says where), unconditionally."""
        t = next((t for t in TYPES.values() if t.kind == obj.get("kind")), None)
        if t is None:
            raise ValueError(f"the stand-in does not serve kind {obj.get('kind')!r}")
        meta = obj.get("metadata") or {}
        key = (t.resource, meta.get("namespace", "default"), meta.get("name", ""))
        with self._lock:
            return self._write(t, key, copy.deepcopy(obj), self._objects.get(key), dry_run=False)

    def edit(self, resource: str, namespace: str, name: str, change: Callable[[dict], None]) -> dict:
        """Change a stored object as another controller would: ``change`` mutates a copy, which is
        validated and stored with a new resourceVersion. Returns the stored object."""
        key = (resource, namespace, name)
        with self._lock:
            old = self._objects.get(key)
            if old is None:
                raise _not_found(TYPES[resource], name)
            new = copy.deepcopy(old)
            change(new)
            return self._write(TYPES[resource], key, new, old, dry_run=False)

    # -- serving --

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> tuple[int, dict]:
        """One request: (status, JSON body). Called by the HTTP handler's threads."""
        url = urlsplit(target)
        status, answer = 500, {}
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

    def _route(self, method: str, path: str, query: dict, content_type: str, body: bytes) -> tuple[int, dict]:
        match = _ROUTE.match(path)
        t = TYPES.get(match["resource"]) if match else None
        if t is None or (match["group"] or "") != t.group:
            raise ApiError(404, "the server could not find the requested resource", details={})
        namespace, name = match["ns"], match["name"]
        if query.get("watch", [""])[0] in ("1", "true"):
            raise ApiError(400, "the stand-in does not serve watches")
        dry_run = "All" in query.get("dryRun", [])

        def one(key: str) -> str | None:
            return query.get(key, [None])[0]
        media = content_type.split(";")[0].strip()
        with self._lock:
            if name is None:
                if method == "GET":
                    return 200, self._list(t, namespace, one("labelSelector"))
                if method == "POST":
                    return 201, self._create(t, namespace, self._decode(t, body), dry_run)
            elif method == "GET":
                return 200, self._read(t, namespace, name)
            elif method == "PUT":
                return 200, self._replace(t, namespace, name, self._decode(t, body), dry_run)
            elif method == "PATCH" and media in _MERGE_PATCH:
                return 200, self._patch(t, namespace, name, self._decode(t, body), dry_run)
            elif method == "PATCH" and media == _APPLY_PATCH:
                status, obj = self._apply(t, namespace, name, body, one("fieldManager"),
                                          one("force") == "true", dry_run)
                return status, obj
            elif method == "PATCH":
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                               f"include: {', '.join(_MERGE_PATCH)}, {_APPLY_PATCH}")
            elif method == "DELETE":
                return 200, self._delete(t, namespace, name, self._decode(t, body) if body else {}, dry_run)
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
        return copy.deepcopy(obj)

    def _list(self, t: _Type, namespace: str, selector: str | None) -> dict:
        match = _selector(selector)
        items = []
        for (resource, ns, _), obj in sorted(self._objects.items()):
            if resource == t.resource and ns == namespace and match(obj["metadata"].get("labels") or {}):
                item = copy.deepcopy(obj)
                # The API server's list items carry no kind or apiVersion.
                del item["kind"], item["apiVersion"]
                items.append(item)
        return {"kind": f"{t.kind}List", "apiVersion": t.api_version,
                "metadata": {"resourceVersion": str(self._revision)}, "items": items}

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
        if meta.get("namespace", namespace) != namespace:
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
        obj = _merge_patch(copy.deepcopy(old), patch)
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
        live = copy.deepcopy(old) if old is not None else {"metadata": {"name": name, "namespace": namespace}}
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
        if not dry_run:
            del self._objects[key]
            self._owners.pop(key, None)
            self._revision += 1
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": _details(t, name, uid=old["metadata"]["uid"])}

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
        meta["namespace"], meta["name"] = key[1], key[2]
        errors = _Invalid()
        _check_metadata(meta, errors)
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
        self._objects[key] = obj
        self._owners[key] = owners
        return copy.deepcopy(obj)


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, answer = self.server.standin.handle(  # type: ignore[attr-defined]
            self.command, self.path, self.headers.get("Content-Type", ""), body)
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:
            pass  # the client gave up (a timeout during an injected delay)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:
        pass  # the stand-in's request log is `requests`


def write_kubeconfig(path: Path, contexts: Mapping[str, KubeStandIn], current: str | None = None) -> Path:
    """A kubeconfig with one context (and cluster entry) per name, each leading to its stand-in.

    The current context is ``current``, else the first one.
    """
    names = list(contexts)
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": contexts[n].url}} for n in names],
        "users": [{"name": "standin", "user": {"token": "standin"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "standin"}} for n in names],
        "current-context": current or names[0],
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
