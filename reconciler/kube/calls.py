"""Calls to each federated cluster's API, as every Galleon writer makes them.

A writer (the CA's ``cacerts``, the DNS reconciler's ``coredns`` ConfigMap) reads an object,
decides, and replaces it with the resourceVersion it read. Errors that may pass on their own (5xx,
429, timeouts, lost connections) are retried here with exponential backoff; a 404 or 409 on a
write means someone else changed the object since the read and becomes ``ConflictError``, so the
caller reads and decides again. Every other failure is one line naming the cluster, its context,
what was being done and the API server's own message, in the caller's error type.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from compiler.errors import one_line

from .client import KubeError, api_client, without_retries
from .conflict import ConflictError

T = TypeVar("T")
# 429 asks the client to come back later; 5xx are the API server's or etcd's passing troubles.
RETRYABLE = {429, 500, 502, 503, 504}
class ClusterCalls:
    def __init__(self, contexts: Mapping[str, str | None], kubeconfig: Path | None, error: type[Exception],
                 retries: int = 5, backoff: float = 0.2, timeout: float = 10):
        """``contexts``: each cluster's kubeContext (None: the current context, or in-cluster);
        ``error``: the exception type the caller reports its failures with."""
        self.contexts = dict(contexts)
        self.kubeconfig = kubeconfig
        self.error_type = error
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self._apis: dict[str | None, kubernetes.client.CoreV1Api] = {}

    def api(self, cluster: str) -> kubernetes.client.CoreV1Api:
        if cluster not in self.contexts:
            raise self.error_type(f"cluster {cluster}: no kubeContext is known for it")
        context = self.contexts[cluster]
        if context not in self._apis:
            try:
                configuration = api_client(self.kubeconfig, context).configuration
            except KubeError as exc:
                raise self.error_type(f"cluster {cluster}: {exc}") from None
            self._apis[context] = kubernetes.client.CoreV1Api(without_retries(configuration))
        return self._apis[context]

    def read(self, cluster: str, what: str, call: Callable[[float], T]) -> T | None:
        """``call(timeout)``'s object, or None when it does not exist (404)."""
        try:
            return self.call(cluster, what, call)
        except ApiException as exc:
            if exc.status != 404:
                raise self.error(cluster, what, status(exc)) from None
            return None

    def write(self, cluster: str, what: str, call: Callable[[float], object]) -> None:
        try:
            self.call(cluster, what, call)
        except ApiException as exc:
            # 409: a stale resourceVersion or uid, or an object created meanwhile; 404: deleted
            # meanwhile. Either way it is no longer what was read, so the decision is stale too. A
            # retry of a write that did happen (its answer timed out) lands here as well, and the
            # next read sees it.
            if exc.status in (404, 409):
                raise ConflictError(f"{self.where(cluster)}: {what}: {status(exc)}") from None
            raise self.error(cluster, what, status(exc)) from None

    def call(self, cluster: str, what: str, call: Callable[[float], T]) -> T:
        """``call(timeout)``, retried while it fails in a way that may pass; other API errors are raised."""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return call(self.timeout)
            except ApiException as exc:
                if exc.status not in RETRYABLE:
                    raise
                last = status(exc)
            except urllib3.exceptions.HTTPError as exc:  # timeouts, refused or dropped connections
                last = one_line(exc)
        raise self.error(cluster, what, f"failed {self.retries + 1} times, last: {last}")

    def where(self, cluster: str) -> str:
        return f"cluster {cluster} (context {self.contexts[cluster] or 'current'})"

    def error(self, cluster: str, what: str, why: str) -> Exception:
        return self.error_type(f"{self.where(cluster)}: {what}: {why}")


def status(exc: ApiException) -> str:
    """The API server's own one-line message (its Status), never the request: that may hold a key."""
    try:
        message = json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = exc.reason
    return one_line(f"HTTP {exc.status}: {message}")
