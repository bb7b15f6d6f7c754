"""The Aggregated Discovery Service over gRPC (asyncio), both state of the world and delta.

Every proxy is a connection with a view; each distinct view is compiled and
serialized once (views.py) and the per-stream protocol (protocol.py) decides what
to send. A new mesh recompiles the views in use and wakes every stream, which
sends only what changed for it, types in make-before-break order.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import AbstractSet

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from compiler.snapshot import short_revision
from compiler.model import Mesh
from compiler.view import ProxyView, ViewError
from compiler.xds_types import TYPES

from ..metrics import Metrics, type_label
from ..security.gate import Denied, Gate
from .protocol import DeltaStream, SotwStream, Stream
from .views import ServedView, node_identity, serve_view, view_of_node

log = structlog.get_logger("galleon.ads")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_UPDATE = object()  # queue marker: the stream's view has a new configuration
_CLOSED = object()  # queue marker: the proxy closed its side


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

    def wake(self, started: float) -> None:
        if not self.update_pending:
            self.update_pending, self.update_started = True, started
            self.queue.put_nowait(_UPDATE)

    def status(self) -> dict:
        v = self.view
        return {"node": self.node.id, "peer": self.peer, "protocol": self.protocol_name,
                "connected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_at)),
                "view": {"cluster": v.cluster, "network": v.network, "locality": str(v.locality), "role": v.role,
                         "namespace": v.namespace, "labels": dict(v.labels), "listen_address": v.listen_address},
                "types": self.protocol.status()}


class AdsServer:
    """Holds the served mesh, the compiled views and the open streams. Runs on one asyncio loop;
    compiles run on one worker thread so that streams keep being served meanwhile."""

    def __init__(self, cluster: str, metrics: Metrics | None = None, max_connection_age: float | None = None,
                 gate: Gate | None = None) -> None:
        self.cluster = cluster
        # Who may ask for which view (reconciler/security/gate.py); without one, every proxy is believed.
        self.gate = gate or Gate(cluster)
        # A stream older than this (± 10 %, so replicas' proxies do not all reconnect at once) is ended
        # with OK: the proxy reconnects, maybe to another replica, which spreads proxies over replicas.
        self.max_connection_age = max_connection_age
        self.metrics = metrics or Metrics()
        self.mesh: Mesh | None = None
        self.ready = asyncio.Event()
        self.views: dict[ProxyView, ServedView] = {}
        self.connections: dict[int, Connection] = {}
        self._building: dict[ProxyView, tuple[Mesh, asyncio.Future]] = {}  # compiles under way
        self._previous: dict[ProxyView, ServedView] = {}  # while publishing: what the old mesh served
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
        served = await asyncio.get_running_loop().run_in_executor(self._compiler, serve_view, mesh, view, previous,
                                                                  self._endpoints_of)
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
        its configuration is ready (the first views need not wait for the last).

        ``endpoints_of``: the new mesh differs from the one served only in the endpoints of these
        services (model.relisted), so only their assignments are built again. Publishes must not
        overlap (the daemon runs them one at a time): a view is updated from the last mesh's."""
        started = time.monotonic()
        by_view: dict[ProxyView, list[Connection]] = {}
        for connection in list(self.connections.values()):
            try:
                by_view.setdefault(view_of_node(mesh, connection.node, self.cluster), []).append(connection)
            except ViewError as exc:
                # Its cluster or network is gone from the mesh: it keeps what it has, until it reconnects
                # (and is refused) or a later revision brings its cluster back.
                connection.pinned = connection.pinned or self.views.get(connection.view)
                log.warning("proxy keeps its configuration", node=connection.node.id, reason=str(exc))
        # What each view served so far: unchanged resources keep their bytes (see serve_view).
        old_mesh, old_views = self.mesh, self.views
        self._previous = {**self._previous, **self.views} if self.mesh is not None else {}
        self._endpoints_of = endpoints_of if self.mesh is not None else None
        self.mesh, self.views = mesh, {}
        self.ready.set()
        try:
            for view, connections in by_view.items():
                await self.served(view)
                if self.mesh is not mesh:
                    return  # a newer mesh is being published: it wakes everyone
                for connection in connections:
                    connection.view, connection.pinned = view, None
                    connection.wake(started)
        except Exception:
            # A view of this revision cannot be compiled (a bug, surely): serve the previous revision
            # again, to every proxy, those already woken included, rather than half of each.
            self.mesh, self.views, self._previous, self._endpoints_of = old_mesh, old_views, {}, None
            if old_mesh is None:
                self.ready.clear()
            for connections in by_view.values():
                for connection in connections:
                    connection.wake(started)
            raise
        self._previous, self._endpoints_of = {}, None
        self.metrics.views.set(len(self.views))
        # Endpoint updates come many a second: a debug line each.
        (log.info if endpoints_of is None else log.debug)(
            "configuration published" if endpoints_of is None else "endpoints published",
            revision=short_revision(mesh.revision), views=len(by_view), proxies=sum(map(len, by_view.values())),
            seconds=round(time.monotonic() - started, 3))

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
            try:
                view = view_of_node(self.mesh, first.node, self.cluster)
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
                    log.warning("proxy rejected configuration", node=connection.node.id,
                                type=type_label(item.type_url), version=nack.version, error=nack.message)
                types = [item.type_url] if current and item.type_url in served.resources else []
            for type_url in types:
                response = connection.protocol.respond(type_url, served)
                if response is None:
                    continue
                await context.write(response)
                label = type_label(type_url)
                self.metrics.pushes.labels(label).inc()
                if started is not None:
                    self.metrics.push_latency.labels(label).observe(time.monotonic() - started)
            # An idle stream must not hold on to its last request (an EDS ACK names every cluster) or to
            # a view that a newer one replaced.
            item = served = response = None
            item = await connection.queue.get()

    async def _sotw(self, requests, context):
        await self._stream(SotwStream(), "sotw", requests, context)

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
            raise OSError(f"cannot listen on {address} for ADS: the address is in use or not on this host")
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
