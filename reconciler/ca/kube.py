"""The ``kube`` target: each cluster's ``istio-system/cacerts`` Secret through the official client.

Writes are optimistic, as the API server expects: the Secret is replaced with the resourceVersion
it was read at, or created when it was missing. When someone else changed it meanwhile (409, or a
404 on a Secret that was there), the target raises ``ConflictError`` and ``reconcile`` reads and
plans again. Errors that may pass on their own (5xx, 429, timeouts, lost connections) are retried
here with exponential backoff. Every create or replace carries the whole Secret, so istiod never
sees some of its keys new and others old.
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from reconciler.kube.client import KubeError, api_client

from .errors import CAError
from .root import RootCA, root_from_pem
from .plan import NAME, NAMESPACE, SECRET
from .targets import ConflictError

T = TypeVar("T")
# 429 asks the client to come back later; 5xx are the API server's or etcd's passing troubles.
_RETRYABLE = {429, 500, 502, 503, 504}


class KubeTarget:
    def __init__(self, contexts: Mapping[str, str | None], kubeconfig: Path | None = None, retries: int = 5,
                 backoff: float = 0.2, timeout: float = 10):
        """``contexts``: each cluster's kubeContext (None: the current context, or in-cluster)."""
        self.contexts = dict(contexts)
        self.kubeconfig = kubeconfig
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self._apis: dict[str | None, kubernetes.client.CoreV1Api] = {}
        # What each cluster's last read found (None: no Secret): the next write is conditional on it.
        self._read: dict[str, dict | None] = {}

    def read(self, cluster: str) -> dict | None:
        api = self._api(cluster)
        try:
            secret = self._call(cluster, f"reading {SECRET}", lambda timeout: api.read_namespaced_secret(
                NAME, NAMESPACE, _request_timeout=timeout))
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(cluster, f"reading {SECRET}", _status(exc)) from None
            secret = None
        else:
            secret = api.api_client.sanitize_for_serialization(secret)
        self._read[cluster] = secret
        return secret

    def write(self, cluster: str, secret: dict) -> None:
        # pop: a read allows one write; another write must read again, or it would undo this one.
        previous = self._read.pop(cluster)
        api = self._api(cluster)
        if previous is not None and _replaceable(previous, secret):
            body = {**secret, "metadata": {**secret["metadata"],
                                           "resourceVersion": previous["metadata"]["resourceVersion"]}}
            self._write(cluster, f"replacing {SECRET}", lambda timeout: api.replace_namespaced_secret(
                NAME, NAMESPACE, body, _request_timeout=timeout))
            return
        if previous is not None:
            # The Secret can only be recreated; the preconditions make sure the one deleted is the one read.
            meta = previous["metadata"]
            options = {"preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}}
            self._write(cluster, f"deleting {SECRET} to recreate it", lambda timeout: api.delete_namespaced_secret(
                NAME, NAMESPACE, body=options, _request_timeout=timeout))
        self._write(cluster, f"creating {SECRET}", lambda timeout: api.create_namespaced_secret(
            NAMESPACE, secret, _request_timeout=timeout))

    def _write(self, cluster: str, what: str, call: Callable[[float], object]) -> None:
        try:
            self._call(cluster, what, call)
        except ApiException as exc:
            # 409: a stale resourceVersion or uid, or a Secret created meanwhile; 404: deleted meanwhile.
            # Either way it is no longer what was read, so the plan is stale too. A retry of a write
            # that did happen (its answer timed out) lands here as well, and the new plan sees it.
            if exc.status in (404, 409):
                raise ConflictError(f"{self._where(cluster)}: {what}: {_status(exc)}") from None
            raise self._error(cluster, what, _status(exc)) from None

    def _call(self, cluster: str, what: str, call: Callable[[float], T]) -> T:
        """``call(timeout)``, retried while it fails in a way that may pass; other API errors are raised."""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return call(self.timeout)
            except ApiException as exc:
                if exc.status not in _RETRYABLE:
                    raise
                last = _status(exc)
            except urllib3.exceptions.HTTPError as exc:  # timeouts, refused or dropped connections
                last = _one_line(exc)
        raise self._error(cluster, what, f"failed {self.retries + 1} times, last: {last}")

    def _api(self, cluster: str) -> kubernetes.client.CoreV1Api:
        if cluster not in self.contexts:
            raise CAError(f"cluster {cluster}: no kubeContext is known for it")
        context = self.contexts[cluster]
        if context not in self._apis:
            try:
                configuration = api_client(self.kubeconfig, context).configuration
            except KubeError as exc:
                raise CAError(f"cluster {cluster}: {exc}") from None
            # urllib3 would otherwise retry timeouts and lost connections three more times, silently:
            # ``retries`` and ``timeout`` are to bound the whole call.
            configuration.retries = False
            self._apis[context] = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
        return self._apis[context]

    def _where(self, cluster: str) -> str:
        return f"cluster {cluster} (context {self.contexts[cluster] or 'current'})"

    def _error(self, cluster: str, what: str, why: str) -> CAError:
        return CAError(f"{self._where(cluster)}: {what}: {why}")


def _replaceable(previous: dict, secret: dict) -> bool:
    """Whether the API server lets ``previous`` be updated into ``secret`` in place: a Secret's type
    cannot change, and an immutable Secret cannot change at all."""
    return previous.get("type", "Opaque") == secret.get("type", "Opaque") and not previous.get("immutable")


def _status(exc: ApiException) -> str:
    """The API server's own one-line message (its Status), never the request: that holds the key."""
    try:
        message = json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = exc.reason
    return _one_line(f"HTTP {exc.status}: {message}")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


ROOT_KEYS = (("root-cert.pem", "root-key.pem"), ("tls.crt", "tls.key"))


def load_root_secret(ref: str, kubeconfig: Path | None = None, context: str | None = None,
                     timeout: float = 10) -> RootCA:
    """The root CA kept in the Kubernetes Secret ``NAMESPACE/NAME`` (keys root-cert.pem and root-key.pem,
    or a kubernetes.io/tls Secret's tls.crt and tls.key), read with the official client."""
    namespace, sep, name = ref.partition("/")
    if not (sep and namespace and name) or "/" in name:
        raise CAError(f"--root-ca-secret {ref!r} is not NAMESPACE/NAME")
    try:
        api = kubernetes.client.CoreV1Api(api_client(kubeconfig, context))
        secret = api.read_namespaced_secret(name, namespace, _request_timeout=timeout)
    except KubeError as exc:
        raise CAError(f"--root-ca-secret {ref}: {exc}") from None
    except ApiException as exc:
        why = "no such Secret" if exc.status == 404 else _status(exc)
        raise CAError(f"--root-ca-secret {ref}: {why}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise CAError(f"--root-ca-secret {ref}: {_one_line(exc)}") from None
    data = secret.data or {}
    for cert_key, key_key in ROOT_KEYS:
        if cert_key in data and key_key in data:
            try:
                cert, key = (base64.b64decode(data[k], validate=True) for k in (cert_key, key_key))
            except (binascii.Error, ValueError):
                raise CAError(f"Secret {ref}: {cert_key} or {key_key} is not base64") from None
            return root_from_pem(cert, key, f"Secret {ref} {cert_key}", f"Secret {ref} {key_key}")
    raise CAError(f"Secret {ref} holds neither root-cert.pem and root-key.pem nor tls.crt and tls.key")
