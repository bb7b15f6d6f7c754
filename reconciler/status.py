"""The status API (proto/galleon/v1/reconciler.proto, service galleon.v1.Reconciler) of `galleon serve`.

Served on the ADS port. The daemon bumps a ``StatusBoard`` whenever what GetStatus answers may
have changed; WatchStatus sends the status again after each bump. What the API needs of the daemon
is ``Serving``, defined here so that this module imports nothing of the daemon (reconciler/daemon/
implements it).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from compiler.findings import Finding

from .api import reconciler_pb2 as pb
from .api import reconciler_pb2_grpc as pb_grpc

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

    async def preview(self, rev: str | None, fmt: str, clusters: list[str],
                      max_bytes: int | None) -> pb.PreviewResponse: ...


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
                                     last_error=c["last_error"] or "") for c in s.registry])


class ReconcilerService(pb_grpc.ReconcilerServicer):
    def __init__(self, daemon: Serving) -> None:
        self.daemon = daemon

    async def GetStatus(self, request, context):  # noqa: N802 (gRPC's method names)
        return status_message(self.daemon)

    async def WatchStatus(self, request, context):  # noqa: N802
        while not self.daemon.stopping:
            message = status_message(self.daemon)
            yield message
            stopped = asyncio.ensure_future(self.daemon.stopped())
            changed = asyncio.ensure_future(self.daemon.board.after(message.generation))
            await asyncio.wait((stopped, changed), return_when=asyncio.FIRST_COMPLETED)
            for waiter in (stopped, changed):
                waiter.cancel()

    async def Sync(self, request, context):  # noqa: N802
        if request.wait:
            await self.daemon.reload("sync")
        else:
            self.daemon.changed("sync")
        return pb.SyncResponse(status=status_message(self.daemon))

    async def Preview(self, request, context):  # noqa: N802
        if request.format not in ("", "markdown", "json"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "format must be markdown or json")
        try:
            return await self.daemon.preview(request.rev or None, request.format or "markdown",
                                             list(request.clusters), request.max_bytes or None)
        except LookupError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def handlers(daemon: Serving) -> list:
    """The generic handlers to add to the daemon's gRPC server."""
    server = _Collector()
    pb_grpc.add_ReconcilerServicer_to_server(ReconcilerService(daemon), server)
    return server.handlers


class _Collector:
    """Takes what add_ReconcilerServicer_to_server registers, for a server that is made elsewhere."""

    def __init__(self) -> None:
        self.handlers: list = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service, handlers) -> None:
        self.handlers.append(grpc.method_handlers_generic_handler(service, handlers))
