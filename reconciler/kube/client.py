"""An API client for one cluster, from a kubeconfig context or the pod's service account.

Every way this can fail becomes a ``KubeError`` with one line a person can act on (which
kubeconfig, which context, which contexts exist), never the library's traceback.
"""
from __future__ import annotations

import os
from pathlib import Path

import kubernetes.client
import kubernetes.config
from kubernetes.config.config_exception import ConfigException

from compiler.errors import one_line
from compiler.parse import UnreadableFile, read_document


class KubeError(Exception):
    """The cluster cannot be reached as configured; the message says why in one line."""


def _default_kubeconfig() -> str:
    # Read at call time: the library computes its default once, at import.
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def api_client(kubeconfig: Path | None = None, context: str | None = None) -> kubernetes.client.ApiClient:
    """An ApiClient for ``context`` (default: the current context) of ``kubeconfig``.

    Without ``kubeconfig``, the kubectl rules: ``$KUBECONFIG`` (a ``:``-separated list), else
    ``~/.kube/config``; when neither exists and ``KUBERNETES_SERVICE_HOST`` is set, the pod's
    in-cluster service account.
    """
    location = str(kubeconfig) if kubeconfig is not None else _default_kubeconfig()
    files = [f for f in location.split(os.pathsep) if f]
    if kubeconfig is None and not any(Path(f).expanduser().exists() for f in files):
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster(context)
        raise KubeError(f"no kubeconfig at {location} and not running in a cluster (KUBERNETES_SERVICE_HOST "
                        "is not set); pass --kubeconfig")
    missing = [f for f in files if not Path(f).expanduser().exists()]
    if kubeconfig is not None and missing:
        raise KubeError(f"kubeconfig {location}: no such file")
    known, current = _contexts(files)
    if context is None and not current:
        raise KubeError(f"kubeconfig {location} sets no current context; name one (known contexts: "
                        f"{', '.join(known) or 'none'})")
    if context is not None and context not in known:
        raise KubeError(f"kubeconfig {location} has no context {context!r} (known contexts: "
                        f"{', '.join(known) or 'none'})")
    try:
        # persist_config=False: never rewrite the user's kubeconfig (token refreshes stay in memory).
        client = kubernetes.config.new_client_from_config(location, context=context, persist_config=False)
    except Exception as exc:  # a malformed kubeconfig fails in many ways inside the library; say which
        raise KubeError(f"kubeconfig {location}, context {context or current!r}: {one_line(exc)}") from None
    require_server(client.configuration, f"kubeconfig {location}, context {context or current!r}")
    return client


def without_retries(configuration: kubernetes.client.Configuration) -> kubernetes.client.ApiClient:
    """An ApiClient of ``configuration`` that makes each request once: urllib3 would otherwise retry
    refused and timed-out connections itself, silently, so that a caller's timeout or backoff would
    not bound the whole call."""
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)


def require_server(configuration: kubernetes.client.Configuration, where: str) -> None:
    """A kubeconfig's cluster without a ``server`` gives the library an empty host, which it would try
    (and fail) to reach for ever: refused when read."""
    if configuration.host.rstrip("/") in ("", "http:", "https:"):
        raise KubeError(f"{where}: its cluster has no server (the API server's https:// address)")


def _contexts(files: list[str]) -> tuple[list[str], str | None]:
    """The context names in the kubeconfig files and the current one (the first file that sets it
    wins, as in kubectl), read here because the library refuses a file without a current context
    even when a context is named."""
    names: list[str] = []
    current = None
    for file in files:
        path = Path(file).expanduser()
        if not path.exists():
            continue
        try:
            doc = read_document(str(path), path.read_bytes())
        except UnreadableFile as exc:
            raise KubeError(f"kubeconfig {path}: {exc.message}") from None
        except OSError as exc:
            raise KubeError(f"kubeconfig {path}: {one_line(exc)}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise KubeError(f"kubeconfig {path}: not a kubeconfig (no mapping of clusters, users, contexts)")
        names += [c["name"] for c in doc.get("contexts") or [] if isinstance(c, dict) and c.get("name")]
        current = current or doc.get("current-context") or None
    return sorted(set(names)), current


def _in_cluster(context: str | None) -> kubernetes.client.ApiClient:
    if context is not None:
        raise KubeError(f"context {context!r} asked for, but there is no kubeconfig (running in a cluster: "
                        "its own service account is the only choice)")
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise KubeError(f"in-cluster configuration: {one_line(exc)}") from None
    return kubernetes.client.ApiClient(configuration)


