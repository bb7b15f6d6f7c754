"""The Aggregated Discovery Service over gRPC (asyncio), both state of the world and delta.

Every proxy is a connection with a view; each distinct view is compiled and
serialized once (views.py) and the per-stream protocol (protocol.py) decides what
to send. A new mesh recompiles the views in use and wakes every stream, which
sends only what changed for it, types in make-before-break order.

Nothing a client sends grows the server without bound: the compiled views fit in a memory budget
(--views-memory; views no connected proxy holds are let go, least recently used first, and a new
view that does not fit is refused), new views are compiled one at a time, after the views proxies
already hold and behind a bounded queue, and a proxy's NACKs are logged at a bounded rate.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import AbstractSet, Iterable

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from compiler.snapshot import short_revision
from compiler.model import Mesh
from compiler.view import ProxyView, ViewError
from compiler.xds import updates_endpoints_in_part
from compiler.xds_types import TYPES

from ..metrics import Metrics, type_label
from ..security.gate import Denied, Gate
from .protocol import DeltaStream, Nack, SotwStream, Stream, Subscriptions
from .views import ServedView, node_identity, serve_view, view_of_node

log = structlog.get_logger("galleon.ads")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_UPDATE = object()  # queue marker: the stream's view has a new configuration
_CLOSED = object()  # queue marker: the proxy closed its side

MiB = 1 << 20
VIEWS_MEMORY = 1024 * MiB  # galleon serve --views-memory's default
# New views waiting to be compiled, one at a time (a view of a 1,000-service mesh takes about half a
# second): a stream of one more is refused at once, and its proxy retries (Envoy backs off).
COMPILE_QUEUE = 8
# An endpoint update of at most this many services is served on the event loop: it costs less than
# handing it to the compile thread and back while the loop is busy with streams.
INLINE_HOSTS = 64
LOG_INTERVAL = 10.0  # seconds: at most one NACK line per proxy, one refusal line per reason
LOGGED_CHARS = 512   # of a NACK's message or a node id, in a log line
ACCOUNT_DELAY = 1.0  # seconds: what streams ending within it let go is accounted once (galleon_xds_views_bytes)


class Refused(Exception):
    """A stream the server cannot take now (RESOURCE_EXHAUSTED); ``reason`` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Throttle:
    """Lets a log line through when it is the first of its key, or when none has been for LOG_INTERVAL;
    counts the others, for the next line to say. Keys: a few (xDS types, reasons)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.last = float("-inf")
        self.unlogged = 0

    def passes(self, key: str) -> dict | None:
        """None: not logged (but counted); else what the line adds: how many were not since the last."""
        now = time.monotonic()
        if key in self.keys and now - self.last < LOG_INTERVAL:
            self.unlogged += 1
            return None
        self.keys.add(key)
        self.last = now
        unlogged, self.unlogged = self.unlogged, 0
        return {"not_logged": unlogged} if unlogged else {}


def _amount(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB // 10 else f"{size / 1024:.1f} KiB"


def _clipped(text: str) -> str:
    return text if len(text) <= LOGGED_CHARS else f"{text[:LOGGED_CHARS]}... ({len(text)} characters)"


@dataclass(eq=False)
class Connection:
    id: int
    protocol_name: str
    node: base_pb2.Node
    view: ProxyView
    protocol: Stream
    peer: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    connected_at: float = field(default_factory=time.time)
    pinned: ServedView | None = None  # what it is held to while its view is not in the mesh
    update_pending: bool = False
    update_started: float = 0.0
    admitted: bool = False  # its view was served to it (AdsServer._admit); publishes then recompile it
    nacks: _Throttle = field(default_factory=_Throttle)  # which of its NACKs are logged
    # The clusters and networks of the mesh its view was found in: all a view reads of a mesh
    # (views.view_of_node), and what a registry's endpoint changes keep (AdsServer._view_in).
    found_in: tuple = ()

    def see(self, view: ProxyView, mesh: Mesh) -> None:
        self.view, self.found_in = view, (mesh.clusters, mesh.networks)

    def wake(self, started: float) -> bool:
        """Queue an update of this stream to its view's configuration; False if one is queued already."""
        if self.update_pending:
            return False
        self.update_pending, self.update_started = True, started
        self.queue.put_nowait(_UPDATE)
        return True

    def status(self) -> dict:
        v = self.view
        return {"node": self.node.id, "peer": self.peer, "protocol": self.protocol_name,
                "connected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_at)),
                "view": {"cluster": v.cluster, "network": v.network, "locality": str(v.locality), "role": v.role,
                         "namespace": v.namespace, "labels": dict(v.labels), "listen_address": v.listen_address},
                "types": self.protocol.status()}


class AdsServer:
    """Holds the served mesh, the compiled views and the open streams. Runs on one asyncio loop;
    compiles run on one worker thread so that streams keep being served meanwhile (but a small
    endpoint update's, which costs less than the hand-over: INLINE_HOSTS)."""

    def __init__(self, cluster: str, metrics: Metrics | None = None, max_connection_age: float | None = None,
                 gate: Gate | None = None, views_memory: int = VIEWS_MEMORY,
                 compile_queue: int = COMPILE_QUEUE) -> None:
        self.cluster = cluster
        # Who may ask for which view (reconciler/security/gate.py); without one, every proxy is believed.
        self.gate = gate or Gate(cluster)
        # A stream older than this (± 10 %, so replicas' proxies do not all reconnect at once) is ended
        # with OK: the proxy reconnects, maybe to another replica, which spreads proxies over replicas.
        self.max_connection_age = max_connection_age
        self.metrics = metrics or Metrics()
        self.views_memory = views_memory  # bytes the served views may hold (ServedView.held_bytes)
        self.compile_queue = compile_queue
        self.metrics.views_memory.set(views_memory)
        self.mesh: Mesh | None = None
        self.ready = asyncio.Event()
        # In the order they were last used (taken by a stream, or left by one): the first that no
        # connected proxy holds is the first let go.
        self.views: dict[ProxyView, ServedView] = {}
        self.connections: dict[int, Connection] = {}
        self._building: dict[ProxyView, tuple[Mesh, asyncio.Future]] = {}  # compiles under way
        self._previous: dict[ProxyView, ServedView] = {}  # while publishing: what the old mesh served
        self._subscriptions = Subscriptions()  # shared by the state-of-the-world streams
        self._admissions: dict[ProxyView, tuple[Mesh, asyncio.Future]] = {}  # new views queued or compiling
        self._new_view = asyncio.Lock()  # one new view compiles at a time...
        self._quiet = asyncio.Event()    # ...and none starts while a publish recompiles the views in use
        self._quiet.set()
        self._publishing = 0
        # The streams woken by publishes that have not yet written their update (delivered()).
        self._delivering: set[int] = set()
        self._all_delivered = asyncio.Event()
        self._all_delivered.set()
        self._refusals = _Throttle()
        self._accounting: asyncio.TimerHandle | None = None
        # While publishing a mesh that differs from the one before only in these services' endpoints
        # (model.relisted): views are updated from the old mesh's (serve_view's endpoints_of).
        self._endpoints_of: AbstractSet[str] | None = None
        self._ids = itertools.count(1)
        self._compiler = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="galleon-compile")
        self._grpc: grpc.aio.Server | None = None

    # --- configuration ------------------------------------------------------------------------------

    async def _compile(self, mesh: Mesh, view: ProxyView) -> ServedView:
        started = time.perf_counter()
        previous = self._previous.get(view)
        if previous is not None and self._endpoints_of is not None and len(self._endpoints_of) <= INLINE_HOSTS \
                and updates_endpoints_in_part(view):
            served = serve_view(mesh, view, previous, self._endpoints_of)
        else:
            served = await asyncio.get_running_loop().run_in_executor(self._compiler, serve_view, mesh, view,
                                                                      previous, self._endpoints_of)
        elapsed = time.perf_counter() - started
        self.metrics.compile_seconds.observe(elapsed)
        log.debug("view compiled", cluster=view.cluster, role=view.role, namespace=view.namespace,
                  network=view.network, locality=str(view.locality), revision=short_revision(mesh.revision),
                  seconds=round(elapsed, 3), changed=served.changed)
        return served

    async def _build(self, mesh: Mesh, view: ProxyView) -> ServedView:
        try:
            served = await self._compile(mesh, view)
            if mesh is self.mesh:  # else a newer mesh was published meanwhile and this is stale
                self.views[view] = served
                self.metrics.views.set(len(self.views))
            return served
        finally:
            if self._building.get(view, (None,))[0] is mesh:
                del self._building[view]

    async def served(self, view: ProxyView) -> ServedView:
        """The configuration of a view, compiled once however many proxies ask at the same time."""
        await self.ready.wait()
        while True:
            held = self.views.get(view)
            if held is not None:
                return held
            entry = self._building.get(view)
            if entry is None or entry[0] is not self.mesh:
                mesh = self.mesh
                entry = self._building[view] = (mesh, asyncio.ensure_future(self._build(mesh, view)))
            served = await asyncio.shield(entry[1])
            if entry[0] is self.mesh:
                return served

    async def publish(self, mesh: Mesh, endpoints_of: AbstractSet[str] | None = None) -> None:
        """Serve a new mesh: recompile the views proxies use now, waking each view's streams as soon as
        its configuration is ready (the first views need not wait for the last; the views of the
        proxies connected longest come first). No new view starts compiling meanwhile.

        ``endpoints_of``: the new mesh differs from the one served only in the endpoints of these
        services (model.relisted), so only their assignments are built again. Publishes must not
        overlap (the daemon runs them one at a time): a view is updated from the last mesh's."""
        self._publishing += 1
        self._quiet.clear()
        try:
            await self._publish(mesh, endpoints_of)
        finally:
            self._publishing -= 1
            if not self._publishing:
                self._quiet.set()
            self._account_soon()

    async def delivered(self, timeout: float) -> bool:
        """Wait until every stream a publish woke has written its update (True), or ``timeout`` seconds
        (False). The work that follows a publish in this process (the heap settled, the snapshot saved)
        waits for this, so that it does not hold up the proxies' pushes."""
        if self._all_delivered.is_set():
            return True
        try:
            await asyncio.wait_for(self._all_delivered.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _wake(self, connection: Connection, started: float) -> None:
        if connection.wake(started):
            self._delivering.add(connection.id)
            self._all_delivered.clear()

    def _delivered_to(self, connection: Connection) -> None:
        """``connection`` has written its update, or is gone."""
        self._delivering.discard(connection.id)
        if not self._delivering:
            self._all_delivered.set()

    def _view_in(self, mesh: Mesh, connection: Connection) -> ProxyView:
        """A connection's view of ``mesh``: the one it has when it was found in a mesh of the same
        clusters and networks (model.relisted's meshes share them), else found anew."""
        if connection.pinned is None and connection.found_in \
                and connection.found_in[0] is mesh.clusters and connection.found_in[1] is mesh.networks:
            return connection.view
        return view_of_node(mesh, connection.node, self.cluster)

    async def _publish(self, mesh: Mesh, endpoints_of: AbstractSet[str] | None) -> None:
        started = time.monotonic()
        by_view: dict[ProxyView, list[Connection]] = {}
        for connection in list(self.connections.values()):
            if not connection.admitted:
                continue  # its admission compiles its view, of the mesh it finds (_admit)
            try:
                by_view.setdefault(self._view_in(mesh, connection), []).append(connection)
            except ViewError as exc:
                # Its cluster or network is gone from the mesh: it keeps what it has, until it reconnects
                # (and is refused) or a later revision brings its cluster back.
                connection.pinned = connection.pinned or self.views.get(connection.view)
                log.warning("proxy keeps its configuration", node=connection.node.id, reason=str(exc))
        # What each view in use served so far: unchanged resources keep their bytes (see serve_view).
        old_mesh, old_views, old_previous = self.mesh, self.views, self._previous
        self._previous = {view: served for view, served in {**self._previous, **self.views}.items()
                          if view in by_view} if self.mesh is not None else {}
        self._endpoints_of = endpoints_of if self.mesh is not None else None
        self.mesh, self.views = mesh, {}
        self._let_go([*old_previous.values(), *old_views.values()])  # those no stream's view needs now
        self.ready.set()
        try:
            for view, connections in by_view.items():
                served = await self.served(view)
                if self.mesh is not mesh:
                    return  # a newer mesh is being published: it wakes everyone
                # A view the change did not touch (a registry's endpoints of services it does not see)
                # has nothing new for the streams that held it.
                before = self._previous.get(view)
                same = before is not None and before.versions == served.versions
                for connection in connections:
                    held = connection.view == view and connection.pinned is None
                    connection.see(view, mesh)
                    connection.pinned = None
                    if not (same and held):
                        self._wake(connection, started)
        except Exception:
            # A view of this revision cannot be compiled (a bug, surely): serve the previous revision
            # again, to every proxy, those already woken included, rather than half of each.
            failed = self.views
            self.mesh, self.views, self._previous, self._endpoints_of = old_mesh, old_views, {}, None
            self._let_go(failed.values())
            if old_mesh is None:
                self.ready.clear()
            for connections in by_view.values():
                for connection in connections:
                    self._wake(connection, started)
            raise
        superseded, self._previous, self._endpoints_of = self._previous, {}, None
        self._let_go(superseded.values())
        self.metrics.views.set(len(self.views))
        # Endpoint updates come many a second: a debug line each.
        (log.info if endpoints_of is None else log.debug)(
            "configuration published" if endpoints_of is None else "endpoints published",
            revision=short_revision(mesh.revision), views=len(by_view), proxies=sum(map(len, by_view.values())),
            seconds=round(time.monotonic() - started, 3))

    # --- new views and the memory budget -------------------------------------------------------------

    async def _admit(self, connection: Connection) -> None:
        """Serve a new stream its view: at once when it is served or being compiled already; else compiled
        within --views-memory, after the views proxies hold (a publish's) and behind at most
        ``compile_queue`` other new views. Raises Refused, or ViewError when a revision published
        meanwhile lacks what its node names."""
        while True:
            await self.ready.wait()  # (a first revision that failed to compile leaves none)
            mesh = self.mesh
            view = self._view_in(mesh, connection)  # (a revision may have been published since it was found)
            connection.see(view, mesh)
            if view not in self.views:
                building = self._building.get(view)
                await asyncio.shield(building[1] if building is not None and building[0] is mesh
                                     else self._admission(mesh, view))
            if mesh is self.mesh and view in self.views:
                break
        self._touch(view)
        connection.admitted = True

    def _admission(self, mesh: Mesh, view: ProxyView) -> asyncio.Future:
        """The compile of a view no proxy holds, queued (once however many of its proxies ask)."""
        entry = self._admissions.get(view)
        if entry is None or entry[0] is not mesh:
            if len(self._admissions) >= self.compile_queue:
                raise Refused("compile-queue", f"{len(self._admissions)} new proxy views are waiting to be compiled "
                                               "already; retry shortly (proxies already served go first)")
            entry = self._admissions[view] = (mesh, asyncio.ensure_future(self._compile_new(mesh, view)))
            entry[1].add_done_callback(functools.partial(self._admission_done, view, entry))
        return entry[1]

    def _admission_done(self, view: ProxyView, entry: tuple, task: asyncio.Future) -> None:
        if self._admissions.get(view) is entry:
            del self._admissions[view]
        if not task.cancelled():
            task.exception()  # its streams were told; a compile nobody waits for any more is not an error

    async def _compile_new(self, mesh: Mesh, view: ProxyView) -> None:
        async with self._new_view:
            await self._quiet.wait()
            if mesh is not self.mesh or view in self.views:
                return  # a publish came first: the stream looks again
            self._make_room(self._estimate())
            served = await self._compile(mesh, view)
            if mesh is self.mesh and view not in self.views:
                self._make_room(served.held_bytes())
                self.views[view] = served
                self.metrics.views.set(len(self.views))
                self._account()

    def _estimate(self) -> int:
        """What a new view will likely hold: as much as the mesh's views do on average (0 for the first)."""
        return sum(s.held_bytes() for s in self.views.values()) // len(self.views) if self.views else 0

    def _touch(self, view: ProxyView) -> None:
        self.views[view] = self.views.pop(view)

    def _held_by_streams(self) -> dict[int, ServedView]:
        """The served views streams hold, by identity: those proxies are held to, and those they were sent
        (a stream keeps what it was sent until it ACKs the next)."""
        held = {}
        for connection in self.connections.values():
            if connection.pinned is not None:
                held[id(connection.pinned)] = connection.pinned
            for state in connection.protocol.types.values():
                for sent in (state.holds, state.acked):
                    if sent is not None:
                        held[id(sent[0])] = sent[0]
        return held

    def held_bytes(self) -> int:
        """What the served views hold (ServedView.held_bytes), the figure --views-memory bounds: the mesh's,
        those a publish compiles from, and those streams hold."""
        held = self._held_by_streams()
        held.update((id(s), s) for s in (*self.views.values(), *self._previous.values()))
        return sum(s.held_bytes() for s in held.values())

    def _account(self) -> int:
        if self._accounting is not None:  # (this is it, or it would count the same)
            self._accounting.cancel()
            self._accounting = None
        total = self.held_bytes()
        self.metrics.views_bytes.set(total)
        return total

    def _account_soon(self) -> None:
        """Account once for what many streams ending, or a publish, let go (each costs a walk of every stream)."""
        if self._accounting is None:
            self._accounting = asyncio.get_running_loop().call_later(ACCOUNT_DELAY, self._account)

    def _let_go(self, views: Iterable[ServedView]) -> None:
        """Of ``views``, those the server no longer keeps (neither served nor compiled from by the
        publish under way) are superseded: streams may hold them for long, and must not keep the
        meshes they were compiled from (ServedView.superseded)."""
        kept = {id(served) for held in (self.views, self._previous) for served in held.values()}
        for served in views:
            if id(served) not in kept:
                served.superseded()

    def _make_room(self, need: int) -> None:
        """Let go of views no connected proxy holds, least recently used first (those a publish compiles
        from before the mesh's), until ``need`` more bytes fit in --views-memory; else Refused, and none
        is let go (a flood of claims must not flush the views of proxies that may come back)."""
        total = self._account()
        if total + need <= self.views_memory:
            return
        in_use = {c.view for c in self.connections.values()}
        streams_hold = self._held_by_streams()
        # (where it is, the view, what letting it go gives back: nothing while a stream holds it)
        idle = [(views, view, 0 if id(views[view]) in streams_hold else views[view].held_bytes())
                for views in (self._previous, self.views) for view in views if view not in in_use]
        held = total - sum(freed for _, _, freed in idle)
        if held + need > self.views_memory:
            what = f"the views connected proxies hold take {_amount(held)} and one more" if held else "a view"
            raise Refused("views-memory", f"{what} takes about {_amount(need)}: more than the "
                                          f"{_amount(self.views_memory)} --views-memory allows; raise it to serve "
                                          "more distinct proxy views")
        for views, view, freed in idle:
            if total + need <= self.views_memory:
                break
            self._let_go([views.pop(view)])
            total -= freed
            self.metrics.view_evictions.inc()
        self.metrics.views.set(len(self.views))
        self.metrics.views_bytes.set(total)

    # --- streams ------------------------------------------------------------------------------------

    async def _stream(self, protocol: Stream, name: str, requests, context: grpc.aio.ServicerContext) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    queue.put_nowait(request)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                queue.put_nowait(_CLOSED)

        reader = asyncio.create_task(read())
        connection = None
        try:
            first = await queue.get()
            if first is _CLOSED:
                return
            await self.ready.wait()
            mesh = self.mesh
            try:
                view = view_of_node(mesh, first.node, self.cluster)
            except ViewError as exc:
                log.warning("proxy refused", node=first.node.id, reason=str(exc))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"galleon: {exc}")
                return
            try:
                identity = await self.gate.admit_proxy(context, first.node.id, view.namespace, view.cluster)
            except Denied as exc:
                self.metrics.denied.labels(exc.reason).inc()
                log.warning("proxy refused", node=first.node.id, peer=context.peer(), reason=exc.message)
                await context.abort(exc.code, exc.message)
                return
            connection = Connection(next(self._ids), name, node_identity(first.node), view, protocol,
                                    context.peer(), queue)
            connection.see(view, mesh)
            del mesh  # (a stream lives for hours: it must not keep the mesh it came in under alive)
            self.connections[connection.id] = connection
            self.metrics.connected.labels(name).inc()
            if identity is None and self.gate.insecure:
                log.warning("proxy connected unauthenticated (--insecure)", node=first.node.id, protocol=name,
                            peer=connection.peer)
            else:
                log.info("proxy connected", node=first.node.id, protocol=name, peer=connection.peer,
                         identity=str(identity) if identity else None)
            if self.max_connection_age:
                age = self.max_connection_age * random.uniform(0.9, 1.1)
                asyncio.get_running_loop().call_later(age, queue.put_nowait, _CLOSED)
            initial, first = [first], None  # _serve drops it once handled
            await self._serve(connection, initial, context)
        finally:
            reader.cancel()
            if connection is not None:
                del self.connections[connection.id]
                self.metrics.connected.labels(name).dec()
                log.info("proxy disconnected", node=connection.node.id, protocol=name)

    async def _serve(self, connection: Connection, initial: list, context: grpc.aio.ServicerContext) -> None:
        try:
            try:
                await self._admit(connection)
            except Refused as exc:
                self.metrics.refused.labels(exc.reason).inc()
                counts = self._refusals.passes(exc.reason)
                if counts is not None:
                    log.warning("proxy refused", node=_clipped(connection.node.id), reason=exc.reason, error=str(exc),
                                **counts)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"galleon: {exc}")
                return
            except ViewError as exc:  # the revision published while it waited lacks what its node names
                log.warning("proxy refused", node=_clipped(connection.node.id), reason=str(exc))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"galleon: {exc}")
                return
            await self._stream_to(connection, initial, context)
        finally:
            self._release(connection)

    async def _stream_to(self, connection: Connection, initial: list, context: grpc.aio.ServicerContext) -> None:
        item = initial.pop()
        while item is not _CLOSED:
            served = connection.pinned or await self.served(connection.view)
            started = None
            if item is _UPDATE:
                connection.update_pending = False
                started = connection.update_started
                types = [t.url for t in TYPES if connection.protocol.subscribed(t.url)]
            else:
                current, nack = connection.protocol.on_request(item)
                if nack is not None:
                    self.metrics.nacks.labels(type_label(item.type_url)).inc()
                    self._log_nack(connection, item.type_url, nack)
                types = [item.type_url] if current and item.type_url in served.resources else []
            for type_url in types:
                response = connection.protocol.respond(type_url, served)
                if response is None:
                    continue
                await context.write(response)
                self.metrics.pushed(type_url, None if started is None else time.monotonic() - started)
            if started is not None and not connection.update_pending:  # (a later publish may have woken it again)
                self._delivered_to(connection)
            # An idle stream must not hold on to its last request (an EDS ACK names every cluster) or to
            # a view that a newer one replaced.
            item = served = response = None
            item = await connection.queue.get()

    def _log_nack(self, connection: Connection, type_url: str, nack: Nack) -> None:
        """A proxy rejecting in a loop must not fill the disk: each type's first NACK, then at most a line
        per LOG_INTERVAL (galleon_xds_nacks_total counts them all, /debug/syncz shows each type's last)."""
        counts = connection.nacks.passes(type_url)
        if counts is not None:
            log.warning("proxy rejected configuration", node=_clipped(connection.node.id), type=type_label(type_url),
                        version=nack.version, error=_clipped(nack.message), **counts)

    def _release(self, connection: Connection) -> None:
        """A stream ends: what it held goes now, its view becomes the most recently used."""
        connection.protocol.close()
        self._delivered_to(connection)
        if connection.view in self.views:
            self._touch(connection.view)
        if connection.nacks.unlogged:  # as it leaves: how many of its NACKs the log has not said
            log.warning("proxy rejected configuration", node=_clipped(connection.node.id),
                        not_logged=connection.nacks.unlogged)
        self._account_soon()

    async def _sotw(self, requests, context):
        await self._stream(SotwStream(self._subscriptions), "sotw", requests, context)

    async def _delta(self, requests, context):
        await self._stream(DeltaStream(), "delta", requests, context)

    def handler(self) -> grpc.GenericRpcHandler:
        # Responses are written as bytes assembled from pre-serialized pieces (wire.py).
        def passthrough(data: bytes) -> bytes:
            return data

        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=passthrough),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=passthrough),
        })

    async def start(self, address: str, others: list | None = None,
                    credentials: grpc.ServerCredentials | None = None) -> int:
        """Listen on HOST:PORT (port 0 picks one), with ``others`` (more gRPC services' generic handlers)
        beside ADS, over TLS with ``credentials``; returns the port."""
        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20),
                                              ("grpc.so_reuseport", 0)])
        self._grpc.add_generic_rpc_handlers([self.handler(), *(others or [])])
        try:
            port = (self._grpc.add_secure_port(address, credentials) if credentials is not None
                    else self._grpc.add_insecure_port(address))
        except RuntimeError:  # grpc's way of saying the address is taken or not ours
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {address}: the address is in use or not on this host")
        await self._grpc.start()
        return port

    async def stop(self, grace: float) -> None:
        """End every stream with OK (proxies reconnect, to another replica if there is one), then stop."""
        for connection in self.connections.values():
            connection.queue.put_nowait(_CLOSED)
        if self._grpc is not None:
            await self._grpc.stop(grace)
        self._compiler.shutdown(wait=False, cancel_futures=True)

    def syncz(self) -> list[dict]:
        return [c.status() for c in sorted(self.connections.values(), key=lambda c: (c.node.id, c.id))]

    def connection_of(self, node_id: str) -> Connection | None:
        for connection in self.connections.values():
            if connection.node.id == node_id:
                return connection
        return None
