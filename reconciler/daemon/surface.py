"""What the daemon answers to the outside: HTTP on ``--http`` (/healthz, /readyz, /metrics, the
/debug pages, ``POST /hook``) and the status API (reconciler/status.py's ``Serving``, served on the
ADS port).

Threads: every answer is computed on the event loop (HttpServer runs each GET route there; gRPC's
handlers run there) and only reads the parts' state; the webhook, on the HTTP server's thread, only
hands a change notice to the loop.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Awaitable, Callable

import structlog

from .. import webhook
from ..ads.server import AdsServer
from ..api import reconciler_pb2 as pb
from ..http import HttpServer, Throttled, error_body, json_body, text_body
from ..metrics import Metrics
from ..status import StatusBoard, StatusFacts
from .live import Live
from .loader import Loader
from .options import ServeOptions
from .previews import Previews
from .reconcilers import Reconcilers

log = structlog.get_logger("galleon.serve")


class Surface:
    def __init__(self, options: ServeOptions, metrics: Metrics, ads: AdsServer, loader: Loader, live: Live,
                 reconcilers: Reconcilers, previews: Previews, board: StatusBoard,
                 reload: Callable[[str], Awaitable[None]], changed: Callable[[str], None],
                 stop: asyncio.Event) -> None:
        self.options, self.metrics, self.ads = options, metrics, ads
        self.loader, self.live, self.reconcilers, self.previews = loader, live, reconcilers, previews
        self.board = board
        self._reload, self._changed, self._stop = reload, changed, stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: HttpServer | None = None
        self._refused = Throttled(log, "warning", "webhook refused")  # anyone who reaches /hook can make one

    # --- the status API (status.Serving) -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def stopped(self) -> None:
        await self._stop.wait()

    async def reload(self, reason: str) -> None:
        await self._reload(reason)

    def changed(self, reason: str) -> None:
        self._changed(reason)

    async def preview(self, rev: str | None, fmt: str, clusters: list[str], max_bytes: int | None,
                      allowed=None) -> pb.PreviewResponse:
        return await self.previews.preview(rev, fmt, clusters, max_bytes, allowed)

    def facts(self) -> StatusFacts:
        s = self.loader.state
        return StatusFacts(
            cluster=self.options.cluster, source=self.options.source, served_revision=s.served_revision,
            served_at=s.served_at, from_state_dir=s.from_state_dir, seen_revision=s.seen_revision,
            rejection=s.rejection, error=s.error, findings=s.findings, connected_proxies=len(self.ads.connections),
            leader=self.reconcilers.leader, registry=self.live.status() if self.live.on else [])

    # --- HTTP ----------------------------------------------------------------------------------------

    def start_http(self, loop: asyncio.AbstractEventLoop, address: str) -> int:
        """Listen on ``address``; the port. Raises OSError."""
        self._loop = loop
        self._http = HttpServer(self._routes(), loop, {"/hook": self._hook}, self.options.debug_token,
                                self.options.http_limits)
        return self._http.start(address)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.stop()

    def _routes(self):
        def healthz(_):
            return text_body(200, "ok\n")

        def readyz(_):
            s = self.loader.state
            if self.live.awaiting is not None:
                clusters, until = self.live.awaiting
                return text_body(503, f"not ready: waiting for the registry's first complete list of "
                                      f"{', '.join(clusters)} (at most {max(0.0, until - time.monotonic()):.0f} s "
                                      f"more; --registry-sync-timeout) before serving proxies\n"
                                      + self._registry_line())
            if s.served_revision is None:
                why = s.error or ("the source has errors; see /debug/configz" if s.findings
                                  else "no revision loaded yet")
                return text_body(503, f"not ready: {why}\n")
            clusters = self._registry_line()
            if s.from_state_dir:
                return text_body(200, f"ready: serving {s.served_revision} from the state directory "
                                      f"(last known good); the source cannot be read: {s.error}\n{clusters}")
            return text_body(200, f"ready: serving {s.served_revision}\n{clusters}")

        def registryz(_):
            if not self.live.on:
                return json_body(404, {"error": "no live registry; start galleon serve with --registry kube or "
                                                "--registry dir:PATH"})
            return json_body(200, {"registries": list(self.options.registry.sources),
                                   "clusters": self.live.status(),
                                   "remote_secrets": self.live.secrets_status()})

        def configz(_):
            s = self.loader.state
            return json_body(200, {
                "source": self.options.source, "cluster": self.options.cluster,
                "served_revision": s.served_revision, "last_revision_seen": s.seen_revision,
                "served_at": s.served_at, "source_error": s.error, "from_state_dir": s.from_state_dir,
                "signature": asdict(s.signature) if s.signature else None, "ca_plan": self.reconcilers.ca_plan,
                "dns": self.reconcilers.dns_outcome, "vips": self.loader.vips,
                "findings": [f.to_dict() for f in s.findings]})

        def syncz(_):
            return json_body(200, self.ads.syncz())

        def config_dump(query):
            node_id = (query.get("proxyID") or [None])[0]
            if not node_id:
                return json_body(400, {"error": "give ?proxyID=NODE_ID",
                                       "proxies": sorted({c.node.id for c in self.ads.connections.values()})})
            connection = self.ads.connection_of(node_id)
            served = connection and self.ads.views.get(connection.view)
            if not served:
                return json_body(404, {"error": f"no connected proxy {node_id!r} with a served configuration"})
            return json_body(200, {"node": node_id, "revision": served.revision, **served.config_dump()})

        def metrics(_):
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.exposition()

        return {"/healthz": healthz, "/readyz": readyz, "/debug/configz": configz, "/debug/syncz": syncz,
                "/debug/config_dump": config_dump, "/debug/registryz": registryz, "/metrics": metrics}

    def _registry_line(self) -> str:
        """For /readyz: each registry cluster, synced or not (its endpoints are served once it is)."""
        if not self.live.on:
            return ""
        said = []
        for c in self.live.registry.states():
            if c["synced"]:
                state = "stale: " + (c["last_error"] or "") if c["stale"] else "synced"
            elif c["refused"]:
                state = f"refused (not waited for): {c['last_error']}"
            else:
                state = "not synced yet" + (f" ({c['last_error']})" if c["last_error"] else "")
            said.append(f"registry {c['cluster']}: {state}")
        return "".join(line + "\n" for line in said)

    def _hook(self, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        """POST /hook (on the HTTP server's thread): a verified notice from the Git host fetches now."""
        if self.options.webhook_secret is None:
            return error_body(404, "the webhook is off; start galleon serve with --webhook-secret-file")
        try:
            sender = webhook.verify(self.options.webhook_secret, headers, body)
        except webhook.WebhookRejected as exc:
            self._refused(reason=str(exc))
            return error_body(exc.status, str(exc))
        self._loop.call_soon_threadsafe(self._changed, f"webhook ({sender})")
        return json_body(202, {"accepted": sender})
