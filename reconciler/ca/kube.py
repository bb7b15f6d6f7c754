"""The ``kube`` target: each cluster's ``istio-system/cacerts`` Secret through the official client.

Writes are optimistic, as the API server expects: the Secret is replaced with the resourceVersion
it was read at, or created when it was missing. When someone else changed it meanwhile (409, or a
404 on a Secret that was there), the target raises ``ConflictError`` and ``reconcile`` reads and
plans again (reconciler/kube/calls.py retries the errors that may pass on their own). Every create or replace carries the whole Secret, so istiod never
sees some of its keys new and others old.
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Mapping

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from reconciler.kube.calls import ClusterCalls, status
from compiler.errors import one_line
from reconciler.kube.client import KubeError, api_client

from .errors import CAError
from .root import RootCA, root_from_pem
from .planning import NAME, NAMESPACE, SECRET


class KubeTarget:
    def __init__(self, contexts: Mapping[str, str | None], kubeconfig: Path | None = None, retries: int = 5,
                 backoff: float = 0.2, timeout: float = 10):
        """``contexts``: each cluster's kubeContext (None: the current context, or in-cluster)."""
        self.calls = ClusterCalls(contexts, kubeconfig, CAError, retries, backoff, timeout)
        # What each cluster's last read found (None: no Secret): the next write is conditional on it.
        self._read: dict[str, dict | None] = {}

    def read(self, cluster: str) -> dict | None:
        api = self.calls.api(cluster)
        secret = self.calls.read(cluster, f"reading {SECRET}", lambda timeout: api.read_namespaced_secret(
            NAME, NAMESPACE, _request_timeout=timeout))
        if secret is not None:
            secret = api.api_client.sanitize_for_serialization(secret)
        self._read[cluster] = secret
        return secret

    def write(self, cluster: str, secret: dict) -> None:
        # pop: a read allows one write; another write must read again, or it would undo this one.
        previous = self._read.pop(cluster)
        api = self.calls.api(cluster)
        if previous is not None and _replaceable(previous, secret):
            body = {**secret, "metadata": {**secret["metadata"],
                                           "resourceVersion": previous["metadata"]["resourceVersion"]}}
            self.calls.write(cluster, f"replacing {SECRET}", lambda timeout: api.replace_namespaced_secret(
                NAME, NAMESPACE, body, _request_timeout=timeout))
            return
        if previous is not None:
            # The Secret can only be recreated; the preconditions make sure the one deleted is the one read.
            meta = previous["metadata"]
            options = {"preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}}
            self.calls.write(cluster, f"deleting {SECRET} to recreate it",
                             lambda timeout: api.delete_namespaced_secret(NAME, NAMESPACE, body=options,
                                                                          _request_timeout=timeout))
        self.calls.write(cluster, f"creating {SECRET}", lambda timeout: api.create_namespaced_secret(
            NAMESPACE, secret, _request_timeout=timeout))


def _replaceable(previous: dict, secret: dict) -> bool:
    """Whether the API server lets ``previous`` be updated into ``secret`` in place: a Secret's type
    cannot change, and an immutable Secret cannot change at all."""
    return previous.get("type", "Opaque") == secret.get("type", "Opaque") and not previous.get("immutable")


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
        why = "no such Secret" if exc.status == 404 else status(exc)
        raise CAError(f"--root-ca-secret {ref}: {why}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise CAError(f"--root-ca-secret {ref}: {one_line(exc)}") from None
    data = secret.data or {}
    for cert_key, key_key in ROOT_KEYS:
        if cert_key in data and key_key in data:
            try:
                cert, key = (base64.b64decode(data[k], validate=True) for k in (cert_key, key_key))
            except (binascii.Error, ValueError):
                raise CAError(f"Secret {ref}: {cert_key} or {key_key} is not base64") from None
            return root_from_pem(cert, key, f"Secret {ref} {cert_key}", f"Secret {ref} {key_key}")
    raise CAError(f"Secret {ref} holds neither root-cert.pem and root-key.pem nor tls.crt and tls.key")
