"""Follow the live registries: what runs in each cluster (reconciler/registry/), merged into what
is served.

Feeds report to the store from their own threads; each change is handed to the event loop, where
it waits until it has been quiet for ``quiet`` seconds (an object changing again restarts its wait;
other objects' changes do not), and at most ``max_wait`` seconds. Then, one at a time with the
source's reloads (``lock``): EndpointSlice and Pod changes make a mesh with those services'
endpoints relisted (model.relisted) and, when nothing but their assignments can differ, the views
are updated in EDS alone; a Service or Node changed, or a cluster synced, builds the mesh anew from
the served revision and every synced cluster's objects, as a new revision does.

Threads: the pending changes, the tasks and the publishing are the loop's; the store is
thread-safe; feed threads end when ``close`` sets their stop event. Which registry reads a cluster
is asked from both sides (a ``dir:`` watch thread claims a folder, the loop follows an API server):
``_claims`` makes each check-and-take one step, and what reads it (``_kube``, a feed's ``holds``) is
changed only under it.
"""
from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog
from kubernetes.client import ApiClient

from compiler.model import Mesh, kube_context, relisted
from compiler.parse import SourceObject
from compiler.revision import Revision, with_live

from .. import runtime
from ..ads.server import AdsServer
from ..metrics import Metrics
from ..registry.directory import DirectoryError, DirectoryFeed
from ..registry.kube import KubeFeed, cluster_clients
from ..registry.remote_secrets import RemoteSecrets, remote_secret_kind
from ..registry.store import Change, Registry, kube_files
from ..sources import SourceError
from ..status import StatusBoard
from .loader import Loader
from .options import RegistryOptions

log = structlog.get_logger("galleon.serve")

# What /readyz and the log call the remote secrets while the first publish waits for their list.
REMOTE_SECRETS = "Istio's remote secrets (istio-system)"
# How long a cluster just synced waits for the others being listed before its endpoints are published.
SYNC_WAIT = 10.0
# A batch of at most this many objects is relisted on the event loop: it costs less than handing it
# to a worker thread and back while the loop is busy with streams.
INLINE_OBJECTS = 64


async def publish_anew(ads: AdsServer, revision: Revision) -> Mesh:
    """Build a revision's mesh (on a worker thread) and publish it: every view in use compiled anew,
    with the collector paused meanwhile and what was made frozen after (runtime.bulk). Whoever calls
    it settles the heap after, when due."""
    with runtime.bulk():
        mesh = await asyncio.to_thread(lambda: revision.mesh)
        await ads.publish(mesh)
    return mesh


@dataclass
class _Waiting:
    """Changes of one object not yet published: its newest version (None: deleted) and, when it was
    held before they began, that version (what ``relisted`` removes)."""
    now: SourceObject | None
    before: SourceObject | None
    first: float
    last: float


@dataclass(frozen=True)
class _Followed:
    """A cluster read from its API server: the client, what stops its feed, and the remote secret that
    gave it (None: this cluster, or a Cluster's kubeContext). ``provisional``: followed through its
    kubeContext before the remote secrets could be read (this cluster's API server away), so a remote
    secret that gives it takes it over, as it would have at start."""
    client: ApiClient
    stop: threading.Event
    secret: str | None = None
    provisional: bool = False


@dataclass
class _Batch:
    changed: list[SourceObject] = field(default_factory=list)
    gone: list[SourceObject] = field(default_factory=list)
    whole: bool = False
    oldest: float = 0.0


class Live:
    def __init__(self, options: RegistryOptions | None, cluster: str, metrics: Metrics, ads: AdsServer,
                 loader: Loader, lock: asyncio.Lock, board: StatusBoard) -> None:
        self.options, self.cluster, self.metrics, self.ads, self.loader = options, cluster, metrics, ads, loader
        self._lock = lock
        self.registry = Registry(self._from_feed, files=self._files_of, on_state=self._state_changed)
        self._board = board
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[tuple, _Waiting] = {}
        self._whole: tuple[float, float] | None = None  # (first, last) whole change waiting
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kube_feeds: list[KubeFeed] = []  # every feed of an API server started (ended with the daemon)
        self._dir_feeds: list[DirectoryFeed] = []
        self._kube: dict[str, _Followed] = {}  # clusters read from their API servers
        # Istio's remote secrets in this cluster (with --registry kube), followed as they change, and
        # whether what they said at start has been acted on (their clusters followed).
        self.secrets: RemoteSecrets | None = None
        self._secrets_settled = False
        self._said: set[str] = set()  # errors logged once
        self._states = asyncio.Event()  # a cluster turned synced, stale or fresh
        # Until the first revision is published: the clusters not listed yet, and when that wait ends.
        self.awaiting: tuple[list[str], float] | None = None
        self._first_synced = False
        self._mesh_clusters: frozenset[str] = frozenset()  # the Clusters of the revision served
        self._own_context_checked: str | None = None  # this cluster's Cluster's kubeContext, once compared
        self._unfollowable: set[str] = set()  # Clusters whose kubeContext the kubeconfig cannot give
        # Held while a registry takes a cluster: a dir: registry's folder appearing (on its watch thread)
        # and an API server followed (on the loop) cannot both find the cluster free.
        self._claims = threading.Lock()

    @property
    def on(self) -> bool:
        return self.options is not None and bool(self.options.sources)

    def objects(self) -> tuple[SourceObject, ...]:
        return tuple(self.registry.objects()) if self.on else ()

    def live(self, revision: Revision) -> Revision:
        """``revision`` with what the registries read now (itself when there are none)."""
        return with_live(revision, self.objects()) if self.on else revision

    def to_publish(self, revision: Revision) -> Revision:
        """``live``, for a revision about to be published: the changes noted so far are in it (the
        store held each before it was noted), so they need not be published again."""
        self._waiting.clear()
        self._whole = None
        self._mesh_clusters = frozenset(o.name for o in revision.objects if o.kind == "Cluster")
        self._say_not_in_mesh()
        return self.live(revision)

    # --- on the event loop ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Read every ``dir:`` registry once (so the first revision served has its endpoints) and start
        following them. Raises SourceError when a registry cannot be used."""
        self._loop = asyncio.get_running_loop()
        if not self.on:
            return
        assert self.options is not None
        for source in self.options.sources:
            if source.startswith("dir:"):
                feed = DirectoryFeed(Path(source[4:]), self.registry, lock=self._claims)
                feed.others = functools.partial(self._other_reader, feed)
                try:
                    twice = [c for c in feed.clusters() if self._other_reader(feed, c) is not None]
                    if twice:
                        raise DirectoryError(f"cluster {twice[0]} is read from {self._other_reader(feed, twice[0])} "
                                             "too; a cluster is read from one registry: remove one of its folders")
                    self._dir_feeds.append(feed)
                    clusters = await asyncio.to_thread(feed.read_all)
                except DirectoryError as exc:
                    raise SourceError(f"--registry {source}: {exc}") from None
                self._thread(f"registry {source}", feed.watch)
                log.info("registry read", registry=source, clusters=clusters)
            elif source == "kube":
                await self._open_kube()
            else:
                raise SourceError(f"--registry {source}: not a registry (give kube or dir:PATH)")

    async def _open_kube(self) -> None:
        """Follow this cluster's API server, and Istio's remote secrets there: each cluster they give is
        followed, reconnected when its kubeconfig changes, and removed when its secret is deleted.
        Raises SourceError when this cluster's API server cannot be configured."""
        o = self.options
        assert o is not None
        elsewhere = self._other_reader(None, self.cluster)
        if elsewhere is not None:
            raise SourceError(f"--registry kube: this cluster, {self.cluster}, is read from {elsewhere} too; a "
                              "cluster is read from one registry")
        found = await asyncio.to_thread(cluster_clients, {self.cluster: o.context}, o.kubeconfig)
        if found.errors:
            raise SourceError(f"--registry kube: {self.cluster}: {found.errors[self.cluster]}")
        client = found.clients[self.cluster]
        with self._claims:
            elsewhere = self._other_reader(None, self.cluster)  # (a dir: folder may have come meanwhile)
            if elsewhere is None:
                self._follow_cluster(self.cluster, _Followed(client, threading.Event()))
        if elsewhere is not None:
            raise SourceError(f"--registry kube: this cluster, {self.cluster}, is read from {elsewhere} too; a "
                              "cluster is read from one registry")
        self.secrets = RemoteSecrets(self._secrets_changed)
        self._start(KubeFeed(self.cluster, client, self.secrets, self._stop, kinds=[remote_secret_kind(client)]))

    def _follow_cluster(self, cluster: str, followed: _Followed) -> None:
        self._kube[cluster] = followed
        self.registry.expect([cluster])
        self._start(KubeFeed(cluster, followed.client, self.registry, followed.stop))
        log.info("registry following", cluster=cluster, api_server=followed.client.configuration.host,
                 remote_secret=followed.secret)

    def _secrets_changed(self) -> None:
        """(On the secrets feed's thread.)"""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._follow_secrets)

    def _follow_secrets(self) -> None:
        """The clusters Istio's remote secrets give, followed as they say now: a cluster new to them is
        followed, one whose kubeconfig changed (a rotated token) is read again with the new one (what
        is held stays until the new list replaces it), one no secret gives any more is removed. A
        cluster this daemon reads otherwise (itself, a ``dir:`` registry, a Cluster's kubeContext) is
        not taken over."""
        assert self.secrets is not None
        if self._stop.is_set():  # (closing: no feed is to start)
            return
        for error in self.secrets.status()["errors"]:
            self._say_once("remote secret not used", error)
        settled = self.secrets.settled  # (before the clusters are read: they are then at least as new)
        given = self.secrets.clusters()
        for cluster, remote in given.items():
            with self._claims:
                followed = self._kube.get(cluster)
                if self._read_without_secret(cluster):
                    self._say_once("remote secret ignored", self._ignored_secret(cluster, remote.secret))
                elif followed is None or followed.client is not remote.client:
                    if followed is not None:
                        followed.stop.set()
                        log.info("remote secret changed: reading the cluster with its new kubeconfig"
                                 if followed.secret is not None else
                                 "remote secret gives the cluster read through its kubeContext: reading it through "
                                 "the secret", cluster=cluster, remote_secret=remote.secret)
                    self._follow_cluster(cluster, _Followed(remote.client, threading.Event(), remote.secret))
        for cluster, followed in list(self._kube.items()):
            if followed.secret is not None and cluster not in given:
                followed.stop.set()
                log.info("remote secret deleted: the cluster is no longer read", cluster=cluster,
                         remote_secret=followed.secret)
                with self._claims:  # (a dir: folder for it, claimed once it is let go, is not forgotten)
                    del self._kube[cluster]
                    self.registry.forget(cluster)
        self._secrets_settled = self._secrets_settled or settled
        self._states_changed()

    def _read_without_secret(self, cluster: str) -> bool:
        """Whether ``cluster`` is read otherwise than through a remote secret."""
        followed = self._kube.get(cluster)
        return (followed is not None and followed.secret is None and not followed.provisional) \
            or self._dir_feed_of(cluster) is not None

    @staticmethod
    def _ignored_secret(cluster: str, secret: str) -> str:
        return (f"remote secret {secret}, cluster {cluster}: ignored, the cluster is read otherwise (--cluster, a "
                "dir: registry or its kubeContext)")

    def secrets_status(self) -> dict | None:
        """What Istio's remote secrets give (None without --registry kube): ``clusters`` those read
        through them; ``errors`` every kubeconfig of theirs not used, and why."""
        if self.secrets is None:
            return None
        status = self.secrets.status()
        for cluster, secret in list(status["clusters"].items()):
            if self._read_without_secret(cluster):
                del status["clusters"][cluster]
                status["errors"].append(self._ignored_secret(cluster, secret))
        return status

    def _say_once(self, event: str, error: str) -> None:
        if error not in self._said:
            self._said.add(error)
            log.warning(event, error=error)

    async def _follow_contexts(self, revision: Revision) -> None:
        """With --registry kube: the revision's Clusters with a kubeContext that no registry follows yet are
        followed from now on."""
        if not self.on or "kube" not in self.options.sources:  # type: ignore[union-attr]
            return
        contexts = {c.name: context for c in revision.objects if c.kind == "Cluster" if (context := kube_context(c))}
        await self._check_own_context(contexts.get(self.cluster))
        wanted = {name: context for name, context in contexts.items() if self._other_reader(None, name) is None}
        for cluster in self._unfollowable - wanted.keys():  # (its Cluster gone, or read otherwise now)
            self._unfollowable.discard(cluster)
            with self._claims:
                if self._other_reader(None, cluster) is None:
                    self.registry.forget(cluster)
        if not wanted:
            return
        found = await asyncio.to_thread(cluster_clients, wanted, self.options.kubeconfig)  # type: ignore[union-attr]
        for cluster, error in found.errors.items():
            # Shown as the other clusters are (registryz, galleon status, /readyz), and not waited for:
            # only a changed kubeconfig or Cluster mends it, tried at the next revision.
            error = f"cannot follow it through its kubeContext: {error}"
            if self.registry.last_error(cluster) != error:
                self._unfollowable.add(cluster)
                self.registry.expect([cluster])
                self.registry.failed(cluster, None, error, refused=True)
        for cluster, client in found.clients.items():
            with self._claims:
                if self._other_reader(None, cluster) is None:  # (a remote secret or a dir: registry may have meanwhile)
                    self._unfollowable.discard(cluster)
                    provisional = self.secrets is not None and not self._secrets_settled
                    self._follow_cluster(cluster, _Followed(client, threading.Event(), provisional=provisional))

    async def _check_own_context(self, context: str | None) -> None:
        """This cluster is read through --kube-context (or the kubeconfig's current context, or the pod's
        service account), whatever its Cluster's kubeContext says: said once when the two lead to
        different API servers (every proxy would be sent another cluster's pods as this one's)."""
        own = self._kube.get(self.cluster)
        if context is None or own is None or context in (self.options.context, self._own_context_checked):  # type: ignore[union-attr]
            return
        self._own_context_checked = context
        found = await asyncio.to_thread(cluster_clients, {self.cluster: context},
                                        self.options.kubeconfig)  # type: ignore[union-attr]
        named = found.clients.get(self.cluster)
        if named is not None and named.configuration.host != own.client.configuration.host:
            self._say_once("registry reads this cluster from another API server than its Cluster names",
                           f"cluster {self.cluster} is read from {own.client.configuration.host}, but its Cluster's "
                           f"kubeContext {context!r} is {named.configuration.host}; give --kube-context {context}")

    def client_of(self, cluster: str):
        """The API client the registry reads ``cluster`` with (for TokenReview), if any."""
        followed = self._kube.get(cluster)
        return followed.client if followed is not None else None

    def _thread(self, name: str, run) -> None:
        thread = threading.Thread(target=run, args=(self._stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start(self, feed: KubeFeed) -> None:
        self._kube_feeds = [f for f in self._kube_feeds if not f.join(0)]  # (those of clusters removed)
        self._kube_feeds.append(feed)
        feed.start()

    def close(self) -> None:
        """Stop following (on the loop): the feeds' threads end, a first publish waiting gives up."""
        self._stop.set()
        for followed in self._kube.values():
            followed.stop.set()
        self._states.set()

    async def ended(self, timeout: float) -> list[str]:
        """(after ``close``) Wait at most ``timeout`` seconds for the feeds' threads to end, so that
        nothing of this daemon runs on once it has stopped; the names of those still running."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        for feed in self._kube_feeds:
            await asyncio.to_thread(feed.join, max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self._threads if thread.is_alive()] + \
            [f"registry kube {feed.cluster}" for feed in self._kube_feeds if not feed.join(0)]

    def _files_of(self, cluster: str) -> Callable[[str, str, str], str]:
        """Where ``cluster``'s objects are said to be: its folder's files when a ``dir:`` registry holds
        it, else its API server's names. (Asked for every watch event: the feeds say what they hold, so
        that no file system call is made.)"""
        feed = self._dir_feed_of(cluster)
        return functools.partial(feed.file_of, cluster) if feed is not None else kube_files(cluster)

    def _dir_feed_of(self, cluster: str) -> DirectoryFeed | None:
        return next((f for f in self._dir_feeds if cluster in f.holds), None)

    def _other_reader(self, asking: DirectoryFeed | None, cluster: str) -> str | None:
        """The registry other than ``asking`` that reads ``cluster``, if any."""
        feed = self._dir_feed_of(cluster)
        if feed is not None and feed is not asking:
            return f"--registry dir:{feed.root}"
        return "--registry kube" if cluster in self._kube else None

    def _state_changed(self) -> None:
        """A cluster turned synced, stale or fresh (on a feed's thread): WatchStatus says so."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._states_changed)

    def _states_changed(self) -> None:
        self._board.bump()
        self._states.set()
        self._say_not_in_mesh()

    def _say_not_in_mesh(self) -> None:
        for c in self.registry.states():
            if c["synced"] and self._mesh_clusters and c["cluster"] not in self._mesh_clusters:
                self._say_once("registry cluster not in the mesh", self._not_in_mesh(c["cluster"]))

    def status(self) -> list[dict]:
        """The store's status of each cluster, with ``not_in_mesh``: why a cluster the registries read
        is no Cluster of the revision served (its endpoints then have no network or locality; a
        ``dir:`` registry's folder named wrongly, or a Cluster missing), else None."""
        clusters = self._mesh_clusters
        out = self.registry.status()
        for c in out:
            c["not_in_mesh"] = None if not clusters or c["cluster"] in clusters else self._not_in_mesh(c["cluster"])
        return out

    def _not_in_mesh(self, cluster: str) -> str:
        return (f"registry cluster {cluster} is no Cluster of the repository ({', '.join(sorted(self._mesh_clusters))}): "
                "its endpoints are served without a network or locality; name its folder (or remote secret) after a "
                "Cluster, or add the Cluster")

    async def ready_to_publish(self, revision: Revision) -> bool:
        """Before a revision is published: the Clusters it names with a kubeContext are followed; before
        the first, wait until every cluster followed, and Istio's remote secrets, have been listed
        completely, at most ``sync_timeout`` seconds. Istio's istiod serves no proxy until its caches
        have synced: a proxy reconnecting after a restart would otherwise be sent a mesh without those
        clusters' endpoints, and drop them. New streams wait meanwhile (the ADS server holds them until
        the first publish), and /readyz says why. False when the daemon is stopping."""
        if self._first_synced or not self.on:
            await self._follow_contexts(revision)
            return not self._stop.is_set()
        assert self.options is not None
        started = time.monotonic()
        deadline = started + self.options.sync_timeout
        contexts_followed = False
        while True:
            self._states.clear()
            if self._stop.is_set():
                self.awaiting = None
                return False
            secrets_waited = self.secrets is not None and not self._secrets_settled
            if not contexts_followed and (not secrets_waited or self.secrets.failing):  # type: ignore[union-attr]
                # After the remote secrets: a cluster one gives is read through it, not its kubeContext;
                # but while they cannot be read (this cluster's API server down), not waiting for them.
                await self._follow_contexts(revision)
                contexts_followed = True
            clusters = self.registry.waited_for()
            waiting = clusters + ([REMOTE_SECRETS] if secrets_waited else [])
            secrets = {"remote_secrets": "not listed"} if secrets_waited else {}
            if not waiting:
                if self.awaiting is not None:
                    log.info("registry listed; serving", seconds=round(time.monotonic() - started, 3))
                break
            if time.monotonic() >= deadline:
                log.warning("registry clusters not listed in time; serving without their endpoints until they are",
                            clusters=clusters, seconds=self.options.sync_timeout, **secrets)
                break
            if self.awaiting is None:
                log.info("waiting for the registry's first list before serving", clusters=clusters,
                         at_most=self.options.sync_timeout, **secrets)
            self.awaiting = (waiting, deadline)
            try:
                await asyncio.wait_for(self._states.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                pass
        if not contexts_followed:
            await self._follow_contexts(revision)
        self.awaiting = None
        self._first_synced = True
        return True

    def _from_feed(self, change: Change) -> None:
        """A feed's change (on its thread): handed to the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._note, change)

    def _note(self, change: Change) -> None:
        now = time.monotonic()
        if change.whole:
            # The rebuild reads every object from the store, which holds this change's already.
            self._whole = (self._whole[0] if self._whole else now, now)
            self._wake.set()
            return
        for obj, deleted in [(o, False) for o in change.changed] + [(o, True) for o in change.gone]:
            key = obj.key
            waiting = self._waiting.get(key)
            if waiting is None:
                waiting = self._waiting[key] = _Waiting(None, obj if deleted else None, now, now)
            waiting.now, waiting.last = (None if deleted else obj), now
            if deleted and waiting.before is None:
                waiting.before = obj
        self._wake.set()

    def _due(self, now: float) -> tuple[_Batch | None, float | None]:
        """The changes due now, and when the next ones will be."""
        quiet, longest = self.options.quiet, self.options.max_wait  # type: ignore[union-attr]
        batch = _Batch()
        upcoming: float | None = None
        if self._whole is not None:
            first, last = self._whole
            due = min(last + quiet, first + longest)
            if self.registry.syncing():
                # Another cluster is being listed: one rebuild with it rather than one now and one after
                # (each rebuild is the whole mesh), unless it takes longer than SYNC_WAIT.
                due = max(due, min(now + quiet, first + SYNC_WAIT))
            if due <= now:
                # Anew from every object: whatever else waits is in it.
                batch.whole, batch.oldest = True, min([first] + [w.first for w in self._waiting.values()])
                self._whole = None
                self._waiting.clear()
                return batch, None
            upcoming = due
        for key, waiting in list(self._waiting.items()):
            due = min(waiting.last + quiet, waiting.first + longest)
            if due <= now:
                del self._waiting[key]
                if waiting.before is not None:
                    batch.gone.append(waiting.before)
                if waiting.now is not None:
                    batch.changed.append(waiting.now)
                batch.oldest = min(batch.oldest or waiting.first, waiting.first)
            else:
                upcoming = due if upcoming is None else min(upcoming, due)
        return (batch if batch.changed or batch.gone else None), upcoming

    async def follow(self) -> None:
        """Publish the registries' changes, each once it is due (run as a task)."""
        if not self.on:
            return
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                batch, upcoming = self._due(time.monotonic())
                if batch is not None:
                    await self._publish(batch)
                if upcoming is None:
                    break
                # A new change only waits longer than those already waiting: no need to wake for it.
                await asyncio.sleep(max(0.0, upcoming - time.monotonic()))

    async def _publish(self, batch: _Batch) -> None:
        async with self._lock:
            served = self.loader.served
            if served is None or self.ads.mesh is None:
                return  # the first revision published will hold every synced cluster's objects
            started = time.perf_counter()
            try:
                if batch.whole:
                    await publish_anew(self.ads, self.live(served))
                    # As after a revision: the heap settled when due, once the streams are sent it
                    # (the mesh replaced is freed by then).
                    await self.ads.delivered(runtime.DELIVERY_WAIT)
                    if runtime.settle_due():
                        await asyncio.to_thread(runtime.settle)
                else:
                    if len(batch.changed) + len(batch.gone) <= INLINE_OBJECTS:
                        found = relisted(self.ads.mesh, batch.changed, batch.gone)
                    else:
                        found = await asyncio.to_thread(relisted, self.ads.mesh, batch.changed, batch.gone)
                    await self.ads.publish(found.mesh, found.hosts if found.endpoints_only else None)
                    if runtime.settle_recent():  # (after its streams were woken: they need the CPU first)
                        await self.ads.delivered(runtime.DELIVERY_WAIT)
                        await asyncio.to_thread(runtime.settle)
            except Exception:  # noqa: BLE001 - a bug must not stop following the registries
                log.exception("cannot publish the registries' changes; the next change tries again")
                return
            self.metrics.registry_push_seconds.observe(time.perf_counter() - started)
            self._board.bump()  # (galleon status --watch: the endpoints it shows changed)
            log.debug("registry changes published", whole=batch.whole, changed=len(batch.changed),
                      gone=len(batch.gone), waited=round(time.monotonic() - batch.oldest, 3),
                      seconds=round(time.perf_counter() - started, 3))
        if runtime.release_due():  # (outside the publish lock, and not counted in the push's seconds)
            await asyncio.to_thread(runtime.release_freed)
