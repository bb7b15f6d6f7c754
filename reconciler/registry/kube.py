"""The ``kube`` registry feed: what runs in a cluster (``sink.KINDS``: Services, EndpointSlices,
Pods, Nodes), read from its API server into a ``Sink``, the way client-go's reflector reads it.

One ``KubeFeed`` per cluster runs one thread per kind:

- List every namespace's objects in pages (``limit``, following ``continue``; when the list's
  continue token has expired, 410, the list starts over, as a list must be one state), then hand
  the complete list to ``Sink.listed``, which replaces what was held: objects stay until a new
  list is in, so a relist never leaves a gap.
- Watch from the list's resourceVersion, with bookmarks, for a server-side ``timeoutSeconds``
  (WATCH_TIMEOUT, jittered so that the feeds of many clusters do not reconnect together).
  Each event goes to ``Sink.event``; events and bookmarks advance the version the next watch
  starts from. A watch that ends, or whose connection drops, is opened again from there.
- 410 Gone (the version fell out of the API server's watch window: an HTTP status or an ERROR
  event in the stream) lists again at once.
- Any other failure (unreachable, timeouts, 5xx, 401/403, an unreadable answer) is one line to
  ``Sink.failed`` naming the cluster, then attempts with jittered exponential backoff, each a new
  list: what is held stays, stale, until one succeeds.

Bodies are decoded with ``json.loads`` from the raw responses (``_preload_content=False``): the
client's models would build an object per field of every Pod, which a large cluster cannot afford.

Which API server: each Cluster's ``kubeContext`` in the kubeconfig (``cluster_clients``), or Istio's
remote secrets (remote_secrets.py), themselves read by a ``KubeFeed``.
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import kubernetes.client
import kubernetes.config
import structlog
import urllib3
from kubernetes.client.exceptions import ApiException

from compiler.errors import one_line

from ..kube.calls import status as api_status
from ..kube.client import KubeError, api_client, without_retries
from .sink import KINDS, Sink

log = structlog.get_logger("galleon.registry")

PAGE_SIZE = 1000
WATCH_TIMEOUT = 300.0  # seconds the API server keeps a watch open before it ends it cleanly
BACKOFF = (0.2, 30.0)  # the first wait after a failure and the longest, in seconds (each jittered)
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # for a list page; a watch waits for its own timeout plus this


class Clients(NamedTuple):
    """API clients by cluster name, and why each cluster that has none has none."""
    clients: dict[str, kubernetes.client.ApiClient]
    errors: dict[str, str]


@dataclass(frozen=True)
class FeedKind:
    """What one of a feed's threads lists and watches."""
    name: str
    api_version: str
    resource: str
    call: Callable[..., Any]  # the client's list of every namespace; with watch=True, its watch


def _registry_kinds(api: kubernetes.client.ApiClient) -> list[FeedKind]:
    core, discovery = kubernetes.client.CoreV1Api(api), kubernetes.client.DiscoveryV1Api(api)
    calls: dict[str, Callable[..., Any]] = {"Service": core.list_service_for_all_namespaces, "Pod": core.list_pod_for_all_namespaces,
             "EndpointSlice": discovery.list_endpoint_slice_for_all_namespaces, "Node": core.list_node}
    return [FeedKind(k.kind, k.api_version, k.resource, calls[k.kind]) for k in KINDS]


class _Gone(Exception):
    """410: the version held is older than the API server remembers; list again."""


class _Backoff:
    """Waits after failures: ``first``, doubling up to ``most``, each jittered so that feeds that
    failed together do not retry together."""

    def __init__(self, first: float, most: float) -> None:
        self._first, self._most = first, most
        self._next = first

    def reset(self) -> None:
        self._next = self._first

    def next(self) -> float:
        wait = self._next * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, self._most)
        return wait


class KubeFeed:
    """Lists then watches one cluster's ``sink.KINDS`` (or ``kinds``) into ``sink``, one thread per
    kind, from ``start()`` until ``stop`` is set; once it is set, nothing more reaches ``sink``.

    ``api`` should not retry on its own (``kube.client.without_retries``, as ``cluster_clients``
    and ``client_from_kubeconfig`` make them): the feed retries, and reports each failure.
    """

    def __init__(self, cluster: str, api: kubernetes.client.ApiClient, sink: Sink, stop: threading.Event, *,
                 kinds: list[FeedKind] | None = None, page_size: int = PAGE_SIZE, watch_timeout: float = WATCH_TIMEOUT,
                 backoff: tuple[float, float] = BACKOFF,
                 timeouts: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)) -> None:
        self.cluster = cluster
        self._sink, self._stop = sink, stop
        self._host = api.configuration.host
        self._kinds = _registry_kinds(api) if kinds is None else kinds
        self._page_size, self._watch_timeout, self._backoff = page_size, watch_timeout, backoff
        self._connect_timeout, self._read_timeout = timeouts
        # The resourceVersion each kind's next watch starts from (the last list, event or bookmark).
        self.versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._reading: set[urllib3.BaseHTTPResponse] = set()  # watch responses, cut when stop is set
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(kind,), name=f"kube-{self.cluster}-{kind.name}",
                                          daemon=True) for kind in self._kinds]
        self._threads.append(threading.Thread(target=self._cut_on_stop, name=f"kube-{self.cluster}-stop",
                                              daemon=True))
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to end (after ``stop`` is set); whether they all did within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self, kind: FeedKind) -> None:
        backoff = _Backoff(*self._backoff)
        listed = False
        said = None  # the failure last logged (a retry failing the same way is logged at debug)
        while not self._stop.is_set():
            try:
                if not listed:
                    listed = self._list(kind)
                    backoff.reset()
                    said = None
                elif self._watch(kind):
                    backoff.reset()
                else:  # dropped before it said anything: do not hammer a server that keeps doing that
                    self._stop.wait(backoff.next())
            except _Gone as gone:
                log.info("registry watch expired, listing again", cluster=self.cluster, kind=kind.name,
                         reason=str(gone))
                listed = False
            except Exception as exc:
                if self._stop.is_set():
                    return
                problem = self._problem(kind, exc)
                (log.debug if problem == said else log.warning)("registry read failed", cluster=self.cluster,
                                                                 kind=kind.name, error=problem)
                said = problem
                self._sink.failed(self.cluster, kind.name, problem,
                                  refused=isinstance(exc, ApiException) and exc.status in (401, 403))
                listed = False
                self._stop.wait(backoff.next())

    def _list(self, kind: FeedKind) -> bool:
        """One complete list into the sink; False when stopped before it was complete."""
        items: list[dict] = []
        token = None
        while not self._stop.is_set():
            try:
                page = self._get(kind, limit=self._page_size, _continue=token)
            except ApiException as exc:
                if exc.status != 410 or token is None:
                    raise
                items, token = [], None  # the first page's state is gone: start over
                continue
            for item in page.get("items") or ():  # list items carry no kind or apiVersion
                item["apiVersion"], item["kind"] = kind.api_version, kind.name
                items.append(item)
            token = page["metadata"].get("continue")
            if not token:
                if self._stop.is_set():  # (a feed replaced meanwhile must not undo its successor's list)
                    return False
                self.versions[kind.name] = page["metadata"]["resourceVersion"]
                self._sink.listed(self.cluster, kind.name, items)
                return True
        return False

    def _get(self, kind: FeedKind, **params: Any) -> dict:
        resp = kind.call(_preload_content=False, _request_timeout=(self._connect_timeout, self._read_timeout),
                         **params)
        try:
            return json.loads(resp.data)
        finally:
            resp.release_conn()

    def _watch(self, kind: FeedKind) -> bool:
        """One watch from the last version seen, until it ends or its connection drops. True when the
        next may start at once: it ended as the server ends watches, or it delivered something."""
        timeout = max(1, round(self._watch_timeout * random.uniform(0.9, 1.1)))
        try:
            resp = kind.call(watch=True, allow_watch_bookmarks=True, resource_version=self.versions[kind.name],
                             timeout_seconds=timeout, _preload_content=False,
                             _request_timeout=(self._connect_timeout, timeout + self._read_timeout))
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone(api_status(exc)) from None
            raise
        delivered = False
        with self._cut_when_stopped(resp):
            try:
                for line in _lines(resp):
                    if self._stop.is_set():
                        break
                    self._apply(kind, json.loads(line))
                    delivered = True
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, OSError) as exc:
                if not self._stop.is_set():
                    log.debug("registry watch connection lost", cluster=self.cluster, kind=kind.name,
                              error=one_line(exc))
                return delivered
        return True

    def _apply(self, kind: FeedKind, event: dict) -> None:
        type, obj = event.get("type"), event.get("object") or {}
        if type in ("ADDED", "MODIFIED", "DELETED"):
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.name
            self.versions[kind.name] = obj["metadata"]["resourceVersion"]
            self._sink.event(self.cluster, kind.name, type, obj)
        elif type == "BOOKMARK":
            self.versions[kind.name] = obj["metadata"]["resourceVersion"]
        elif type == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(obj.get("message", "410 Gone"))
            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
        else:  # a type added after this was written: what it means is unknown, so it changes nothing
            log.warning("unknown watch event type skipped", cluster=self.cluster, kind=kind.name, type=type)

    @contextlib.contextmanager
    def _cut_when_stopped(self, resp: urllib3.BaseHTTPResponse) -> Iterator[None]:
        """Make ``resp`` one that setting ``stop`` interrupts (a watch may be silent for minutes)."""
        with self._lock:
            self._reading.add(resp)
        if self._stop.is_set():  # set before _cut_on_stop could see this response
            _interrupt(resp)
        try:
            yield
        finally:
            with self._lock:
                self._reading.discard(resp)
            resp.close()
            resp.release_conn()

    def _cut_on_stop(self) -> None:
        self._stop.wait()
        with self._lock:
            reading = list(self._reading)
        for resp in reading:
            _interrupt(resp)

    def _problem(self, kind: FeedKind, exc: Exception) -> str:
        """What went wrong, on one line naming the cluster."""
        server = f"{self.cluster}: API server {self._host}"
        if isinstance(exc, ApiException):
            if exc.status == 401:
                return f"{self.cluster}: credentials refused (401 Unauthorized) by API server {self._host}"
            if exc.status == 403:
                return f"{self.cluster}: not allowed to list and watch {kind.resource}: {api_status(exc)}"
            if not exc.status:  # the client's own: a TLS failure
                return f"{server} unreachable: {one_line(exc.reason)}"
            return f"{server}: {kind.resource}: {api_status(exc)}"
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            return f"{server} unreachable: {_network_problem(exc)}"
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return f"{server}: {kind.resource}: an answer that cannot be read: {one_line(exc)}"
        log.exception("registry feed failed unexpectedly", cluster=self.cluster, kind=kind.name)
        return f"{self.cluster}: reading {kind.resource} failed: {type(exc).__name__}: {one_line(exc)}"


def _interrupt(resp: urllib3.BaseHTTPResponse) -> None:
    try:
        resp.shutdown()  # the reading thread's next read ends, as if the connection were lost
    except (ValueError, RuntimeError, OSError):
        pass  # already released or closed: nothing is reading it


def _lines(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The non-empty lines of a streamed body, each as soon as it is complete."""
    rest = b""
    for chunk in resp.stream(None):  # None: each chunk as it arrives, not a fixed size
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def _network_problem(exc: BaseException) -> str:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return "its host name does not resolve"
    if isinstance(exc, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
        cause = exc if isinstance(exc, ConnectionRefusedError) else exc.__cause__ or exc.__context__
        return "connection refused" if isinstance(cause, ConnectionRefusedError) else \
            f"cannot connect: {one_line(cause or exc)}"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer in time (read timed out)"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"TLS: {one_line(exc)}"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection lost"
    return one_line(exc)


def cluster_clients(contexts: Mapping[str, str | None], kubeconfig: Path | None = None) -> Clients:
    """An API client for each cluster from its ``kubeContext`` (None: the current context, or the
    pod's service account), found as every Galleon command finds it (``reconciler/kube/client.py``)."""
    clients, errors = {}, {}
    for cluster, context in sorted(contexts.items()):
        try:
            clients[cluster] = without_retries(api_client(kubeconfig, context).configuration)
        except KubeError as exc:
            errors[cluster] = str(exc)
    return Clients(clients, errors)
