"""The status API (proto/galleon/v1/reconciler.proto, service galleon.v1.Reconciler) of `galleon serve`.

Served on the ADS port. The daemon bumps a ``StatusBoard`` whenever what GetStatus answers may
have changed; WatchStatus sends the status again after each bump. What the API needs of the daemon
is ``Serving``, defined here so that this module imports nothing of the daemon (reconciler/daemon/
implements it).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import grpc
import structlog

from compiler.findings import Finding

from .api import reconciler_pb2 as pb
from .api import reconciler_pb2_grpc as pb_grpc
from .metrics import Metrics
from .security.gate import Denied, Gate

log = structlog.get_logger("galleon.status")

WATCH_INTERVAL = 0.5  # WatchStatus sends at most one status this often

SERVICE = "galleon.v1.Reconciler"


class StatusBoard:
    """A generation number that grows with every change, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.generation = 0
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def after(self, generation: int) -> None:
        """Return once the generation is past ``generation``."""
        while self.generation <= generation:
            await self._changed.wait()


@dataclass(frozen=True)
class StatusFacts:
    """What GetStatus reports, as the daemon sees it at one moment."""
    cluster: str
    source: str
    served_revision: str | None
    served_at: float | None
    from_state_dir: bool
    seen_revision: str | None
    rejection: str | None  # why the newest revision seen is not served; None when it is valid
    error: str | None  # the source's, if it cannot be read
    findings: list[Finding]
    connected_proxies: int
    leader: bool
    registry: list[dict] = field(default_factory=list)  # registry/store.py's status of each cluster


class Serving(Protocol):
    """What the status API asks of the daemon it serves."""
    board: StatusBoard

    @property
    def stopping(self) -> bool: ...

    async def stopped(self) -> None: ...

    def facts(self) -> StatusFacts: ...

    async def reload(self, reason: str) -> None: ...

    def changed(self, reason: str) -> None: ...

    async def preview(self, rev: str | None, fmt: str, clusters: list[str], max_bytes: int | None,
                      allowed: Callable[[Callable[[str], list[str]]], None] | None = None) -> pb.PreviewResponse:
        """``allowed``: asked with the source's refs at a commit once it is fetched; raises to refuse."""


def status_message(daemon: Serving) -> pb.Status:
    s = daemon.facts()
    return pb.Status(
        cluster=s.cluster, source=s.source,
        served_revision=s.served_revision or "", served_at=s.served_at or 0.0, from_state_dir=s.from_state_dir,
        last_revision_seen=s.seen_revision or "", last_revision_valid=s.rejection is None,
        rejection=s.rejection or "", source_error=s.error or "",
        findings=[pb.Finding(file=f.file, line=f.line, level=f.level.value, code=f.code, kind=f.kind,
                             namespace=f.namespace, name=f.name, message=f.message) for f in s.findings],
        connected_proxies=s.connected_proxies, leader=s.leader, generation=daemon.board.generation,
        registry=[pb.RegistryCluster(cluster=c["cluster"], synced=c["synced"], stale=c["stale"], services=c["services"],
                                     endpoints=c["endpoints"], last_event=c["last_event"] or "",
                                     last_error=c["last_error"] or "", last_error_at=c["last_error_at"] or "",
                                     not_in_mesh=c.get("not_in_mesh") or "", refused=c["refused"],
                                     not_ready=c["not_ready"], pods=c["pods"]) for c in s.registry])


class ReconcilerService(pb_grpc.ReconcilerServicer):
    def __init__(self, daemon: Serving, gate: Gate, metrics: Metrics | None = None) -> None:
        self.daemon, self.gate, self.metrics = daemon, gate, metrics
        # Sync waits for one reload; callers that come while one waits to start share it.
        self._queued: asyncio.Future | None = None
        self._syncing = asyncio.Lock()

    async def _admit(self, context, admit) -> None:
        try:
            await admit(context)
        except Denied as exc:
            await self._refuse(context, exc)

    async def _refuse(self, context, denied: Denied) -> None:
        if self.metrics is not None:
            self.metrics.denied.labels(denied.reason).inc()
        log.warning("status API request refused", peer=context.peer(), reason=denied.message)
        await context.abort(denied.code, denied.message)

    async def GetStatus(self, request, context):  # noqa: N802 (gRPC's method names)
        await self._admit(context, self.gate.admit_reader)
        return status_message(self.daemon)

    async def WatchStatus(self, request, context):  # noqa: N802
        await self._admit(context, self.gate.admit_reader)
        while not self.daemon.stopping:
            message = status_message(self.daemon)
            yield message
            sent = time.monotonic()
            stopped = asyncio.ensure_future(self.daemon.stopped())
            changed = asyncio.ensure_future(self.daemon.board.after(message.generation))
            await asyncio.wait((stopped, changed), return_when=asyncio.FIRST_COMPLETED)
            for waiter in (stopped, changed):
                waiter.cancel()
            # Changes that come faster (a registry's endpoints under churn) are sent together.
            await asyncio.sleep(max(0.0, sent + WATCH_INTERVAL - time.monotonic()))

    async def Sync(self, request, context):  # noqa: N802
        await self._admit(context, self.gate.admit_admin)
        if request.wait:
            await self._sync_once()
        else:
            self.daemon.changed("sync")  # debounced with every other notice
        return pb.SyncResponse(status=status_message(self.daemon))

    async def _sync_once(self) -> None:
        """A reload that starts after this call: one already waiting to start is shared."""
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._sync())
        await asyncio.shield(self._queued)

    async def _sync(self) -> None:
        async with self._syncing:
            self._queued = None  # from now on, a new caller needs a reload that starts after this one
            await self.daemon.reload("sync")

    async def Preview(self, request, context):  # noqa: N802
        await self._admit(context, self.gate.admit_admin)
        if request.format not in ("", "markdown", "json"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "format must be markdown or json")
        rev = request.rev or None
        try:
            # The ref is checked once the source is fetched: a commit counts by the refs at it then.
            return await self.daemon.preview(rev, request.format or "markdown", list(request.clusters),
                                             request.max_bytes or None,
                                             lambda refs_at: self.gate.check_ref(rev, refs_at))
        except Denied as exc:
            await self._refuse(context, exc)
        except LookupError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def handlers(daemon: Serving, gate: Gate | None = None, metrics: Metrics | None = None) -> list:
    """The generic handlers to add to the daemon's gRPC server."""
    server = _Collector()
    pb_grpc.add_ReconcilerServicer_to_server(ReconcilerService(daemon, gate or Gate(""), metrics), server)
    return server.handlers


class _Collector:
    """Takes what add_ReconcilerServicer_to_server registers, for a server that is made elsewhere."""

    def __init__(self) -> None:
        self.handlers: list = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service, handlers) -> None:
        self.handlers.append(grpc.method_handlers_generic_handler(service, handlers))
