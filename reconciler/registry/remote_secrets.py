"""Istio's remote secrets (``istioctl create-remote-secret``): the Secrets of ``istio-system``
labelled ``istio/multiCluster: "true"`` in this cluster, each data key a cluster id and its value a
kubeconfig for that cluster's API server. ``RemoteSecrets`` is the ``Sink`` of a ``KubeFeed`` of
``remote_secret_kind``, as Istio's multicluster controller follows them: a secret added, changed or
deleted adds, reconnects or removes its clusters."""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

import kubernetes.client
import kubernetes.config

from compiler.errors import one_line
from compiler.parse import UnreadableFile, read_document

from ..kube.client import KubeError, require_server, without_retries
from .kube import FeedKind

ISTIO_NAMESPACE = "istio-system"
REMOTE_SECRET_SELECTOR = "istio/multiCluster=true"
# What a remote secret's kubeconfig may not use, as Istio refuses them: running a command, or reading
# files on the daemon's machine. Client certificates too: the TLS layer takes them only from files,
# and a key from a Secret is not to be written to disk.
_REFUSED_USER_FIELDS = ("exec", "auth-provider", "tokenFile", "client-certificate", "client-key",
                        "client-certificate-data", "client-key-data")
_REFUSED_CLUSTER_FIELDS = ("certificate-authority",)


def remote_secret_kind(api: kubernetes.client.ApiClient) -> FeedKind:
    """What a feed of Istio's remote secrets reads: the Secrets of istio-system labelled
    ``istio/multiCluster: "true"`` (the label selector applies to the watch too: a secret that loses
    the label is DELETED from it)."""
    list_secrets = functools.partial(kubernetes.client.CoreV1Api(api).list_namespaced_secret, ISTIO_NAMESPACE,
                                     label_selector=REMOTE_SECRET_SELECTOR)
    return FeedKind("Secret", "v1", "secrets", list_secrets)


@dataclass(frozen=True)
class RemoteCluster:
    """A cluster one of Istio's remote secrets gives: the client its kubeconfig makes, the secret
    (``istio-system/NAME``), and a digest of the kubeconfig (a new one, a rotated token say, makes a
    new client)."""
    client: kubernetes.client.ApiClient
    secret: str
    digest: str


class RemoteSecrets:
    """The clusters Istio's remote secrets give (``istioctl create-remote-secret``): a ``Sink`` for a
    ``KubeFeed`` of ``remote_secret_kind``, holding the secrets it lists and watches. Each data key
    of a secret is a cluster id, its value a kubeconfig; the first secret by name gives a cluster.

    ``on_change`` is called (from the feed's thread) when the clusters given change, when the
    secrets are first listed, and when they cannot be read; ``clusters()`` and ``status()`` then
    say what is known."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._secrets: dict[str, dict] = {}  # name -> the Secret as listed or watched
        self._clusters: dict[str, RemoteCluster] = {}
        self._errors: list[str] = []  # one line per kubeconfig not used
        self._listed = False
        self._failure: tuple[str, bool] | None = None  # (the last read error, whether it was refused)

    # --- the Sink ------------------------------------------------------------------------------------

    def listed(self, cluster: str, kind: str, objects: list[dict], unreadable: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._secrets = {_name(secret): secret for secret in objects}
            self._listed, self._failure = True, None
            self._update()
        self._on_change()

    def event(self, cluster: str, kind: str, type: str, obj: dict) -> None:
        with self._lock:
            if type == "DELETED":
                self._secrets.pop(_name(obj), None)
            else:
                self._secrets[_name(obj)] = obj
            changed = self._update()
        if changed:
            self._on_change()

    def failed(self, cluster: str, kind: str | None, error: str, refused: bool = False) -> None:
        with self._lock:
            self._failure = (error, refused)
        self._on_change()

    # --- readers -------------------------------------------------------------------------------------

    def clusters(self) -> dict[str, RemoteCluster]:
        with self._lock:
            return dict(self._clusters)

    @property
    def failing(self) -> bool:
        """Whether they cannot be read now (this cluster's API server unreachable, or refusing)."""
        with self._lock:
            return self._failure is not None

    @property
    def settled(self) -> bool:
        """Whether the daemon knows all it will learn of them at start: they were listed, or reading
        them was refused (401, 403: trying again will not help until someone grants it)."""
        with self._lock:
            return self._listed or (self._failure is not None and self._failure[1])

    def status(self) -> dict:
        with self._lock:
            return {"listed": self._listed, "secrets": sorted(self._secrets),
                    "clusters": {name: c.secret for name, c in sorted(self._clusters.items())},
                    "errors": list(self._errors), "last_error": self._failure[0] if self._failure else None}

    # --- inside the lock -----------------------------------------------------------------------------

    def _update(self) -> bool:
        """The clusters the secrets held give now; whether they (or the errors) changed."""
        clusters: dict[str, RemoteCluster] = {}
        errors: list[str] = []
        for name, secret in sorted(self._secrets.items()):
            data = secret.get("data")
            for cluster, value in sorted(data.items() if isinstance(data, dict) else ()):
                what = f"remote secret {name}, cluster {cluster}"
                if cluster in clusters:
                    errors.append(f"{what}: ignored, the cluster is already given by {clusters[cluster].secret}")
                    continue
                digest = hashlib.sha256(str(value).encode()).hexdigest()
                held = self._clusters.get(cluster)
                if held is not None and held.digest == digest:
                    clusters[cluster] = held if held.secret == name else RemoteCluster(held.client, name, digest)
                    continue
                try:
                    client = client_from_kubeconfig(base64.b64decode(str(value), validate=True).decode())
                except (KubeError, binascii.Error, UnicodeDecodeError) as exc:
                    errors.append(f"{what}: {one_line(exc)}")
                    continue
                clusters[cluster] = RemoteCluster(client, name, digest)
        changed = clusters != self._clusters or errors != self._errors
        self._clusters, self._errors = clusters, errors
        return changed


def _name(secret: dict) -> str:
    metadata = secret.get("metadata") or {}
    return f"{metadata.get('namespace') or ISTIO_NAMESPACE}/{metadata.get('name')}"


def client_from_kubeconfig(text: str) -> kubernetes.client.ApiClient:
    """An API client for the current context of a kubeconfig held in memory, which stays there: its
    CA certificate goes to the TLS layer as data, never to a file (the library would write one)."""
    try:
        config = read_document("kubeconfig", text.encode())
    except UnreadableFile as exc:
        raise KubeError(f"not a kubeconfig: {exc.message}") from None
    if not isinstance(config, dict):
        raise KubeError("not a kubeconfig (no mapping of clusters, users and contexts)")
    context = _entry(config, "contexts", config.get("current-context"))
    cluster, user = _entry(config, "clusters", context.get("cluster")), _entry(config, "users", context.get("user"))
    refused = [f for f in _REFUSED_USER_FIELDS if f in user] + [f for f in _REFUSED_CLUSTER_FIELDS if f in cluster]
    if refused:
        raise KubeError(f"kubeconfig uses {', '.join(refused)}, which a remote secret may not (use a token and "
                        "certificate-authority-data)")
    ca = cluster.pop("certificate-authority-data", None)
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config_from_dict(config, client_configuration=configuration,
                                                     persist_config=False)
        if ca:
            configuration.ca_cert_data = base64.b64decode(ca, validate=True).decode()
    except Exception as exc:  # a malformed kubeconfig fails in many ways inside the library; say which
        raise KubeError(f"kubeconfig: {one_line(exc)}") from None
    require_server(configuration, "kubeconfig")
    return without_retries(configuration)


def _entry(config: dict, section: str, name: object) -> dict:
    """The named entry's body in a kubeconfig section (``contexts``: ``{"name", "context"}``...)."""
    field = section[:-1]  # contexts -> context
    for entry in config.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(field), dict):
            return entry[field]
    if field == "context":
        raise KubeError(f"kubeconfig's current-context {name!r} is not one of its contexts")
    raise KubeError(f"kubeconfig has no {field} {name!r} (which its current context names)")
