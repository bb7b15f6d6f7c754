"""The daemon's life cycle: make the parts, start them in order, reload on each change, stop.

A reload reads the source (loader) and, for a servable revision, publishes it (publisher); reloads
run one at a time. Threads: everything here runs on the event loop, which owns the stop event, the
reload lock and the status board.
"""
from __future__ import annotations

import asyncio
import signal
from contextlib import contextmanager
from typing import Iterator

import structlog

from compiler.parse import UnreadableFile
from compiler.snapshot import short_revision

from .. import status
from ..ads.server import AdsServer
from ..metrics import Metrics
from ..sources import SourceError
from ..state import LastGood, source_identity
from ..security.tls import ReloadingCredentials
from .follow import Follower
from .live import Live
from .loader import Loader
from .options import ServeOptions
from .security import gate_of
from .previews import Previews
from .publisher import Publisher
from .reconcilers import Reconcilers
from .surface import Surface

log = structlog.get_logger("galleon.serve")

# How long a stopping daemon waits for its registry feeds' threads to end (a list the API server still
# holds is not cut: its thread ends once the list is answered, and may outlive the daemon).
FEEDS_END = 5.0  # seconds


@contextmanager
def _listening(flag: str) -> Iterator[None]:
    """An OSError of listening where ``flag`` says, as one line that names the flag and what to do."""
    try:
        yield
    except OSError as exc:
        raise OSError(f"{flag}: {exc}; choose another address") from None


def serve(options: ServeOptions) -> int:
    """Run the daemon in this thread until it is signalled (SIGTERM, SIGINT) or stopped; its exit
    status. Raises SourceError when it cannot start serving, OSError when it cannot listen."""
    return asyncio.run(Daemon(options).run())


class Daemon:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.board = status.StatusBoard()
        # TokenReview of another cluster's proxy goes through the registry's client of that cluster.
        self.gate = gate_of(options, lambda cluster: self.live.client_of(cluster))
        self.ads = AdsServer(options.cluster, self.metrics, options.max_connection_age, self.gate,
                             views_memory=options.views_memory << 20)
        self.last_good = (LastGood(options.state_dir, options.cluster, source_identity(options.source, options.rev))
                          if options.state_dir else None)
        self._reloading = asyncio.Lock()
        self._stop = asyncio.Event()
        self.loader = Loader(options, self.metrics, self.last_good)
        self.live = Live(options.registry, options.cluster, self.metrics, self.ads, self.loader, self._reloading,
                         self.board)
        self.metrics.follow_registry(self.live.registry.status)
        self.reconcilers = Reconcilers(options, self.metrics, self.board)
        self.previews = Previews(self.loader, self.live)
        self.publisher = Publisher(self.ads, self.metrics, self.loader, self.live, self.reconcilers, self.previews,
                                   self.last_good)
        self.follower = Follower(options, self.reload, self._stop)
        self.surface = Surface(options, self.metrics, self.ads, self.loader, self.live, self.reconcilers,
                               self.previews, self.board, self.reload, self.changed, self._stop)
        self.ads_port = self.http_port = 0

    def changed(self, reason: str) -> None:
        """The source may have changed: reload once the notices are quiet (follow.py)."""
        self.follower.changed(reason)

    def stop(self, reason: str = "asked") -> None:
        log.info("stopping", reason=reason)
        self._stop.set()
        self.live.close()  # (its feeds stop, and a first publish still waiting for them gives up)

    async def reload(self, reason: str) -> None:
        async with self._reloading:
            try:
                await self._reload(reason)
            finally:
                self.board.bump()

    async def _reload(self, reason: str) -> None:
        log.debug("reading source", reason=reason, source=self.options.source)
        try:
            revision = await self.loader.read()
            if revision is not None:
                await self.publisher.publish(revision)
        except (SourceError, UnreadableFile) as exc:
            self.loader.unreadable(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not take down what proxies are served
            self.loader.failed(exc)
            return
        self.loader.read_through()

    async def _serve_last_good(self) -> None:
        """At start-up, when the source cannot be read: serve the snapshot served before, if any."""
        async with self._reloading:
            revision = await self.loader.read_last_good()
            if revision is None:
                return
            await self.publisher.publish(revision, from_state_dir=True)
            if self.loader.state.served_revision is None:
                return  # stopped while it waited for the registry
            log.warning("serving the last known good snapshot from the state directory; the source cannot be read",
                        revision=short_revision(revision.snapshot.revision), path=str(self.last_good.path),
                        source_error=self.loader.state.error)

    def _refused(self) -> str | None:
        """After the first read: why nothing is served nor will be until someone acts, in one line."""
        state = self.loader.state
        if state.served_revision is not None:
            return None
        if state.unknown_cluster:
            return state.unknown_cluster  # most likely a typo in --cluster: say so now, not serve nothing forever
        if self.loader.source is None:
            return (f"{self.options.source}: the source path is missing and the last known good snapshot in the "
                    "state directory cannot be served either (the log says why)")
        return None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        o = self.options
        await self.loader.open()
        try:  # (what has started by a failure here is stopped: the registries' feeds, the ADS server)
            await self.live.open()
            await self.reconcilers.open_lease()
            tls = o.security
            credentials = (ReloadingCredentials(tls.tls_cert, tls.tls_key, tls.client_ca).server_credentials()
                           if tls.tls_cert and tls.tls_key else None)
            with _listening("--ads"):
                self.ads_port = await self.ads.start(o.ads, status.handlers(self.surface, self.gate, self.metrics),
                                                     credentials)
            with _listening("--http"):
                self.http_port = self.surface.start_http(loop, o.http)
        except Exception:
            await self._shut_down([], 0)
            raise
        log.info("serving", cluster=o.cluster, source=o.source, ads=f"{o.ads.rpartition(':')[0]}:{self.ads_port}",
                 http=f"{o.http.rpartition(':')[0]}:{self.http_port}", tls=bool(o.security.tls_cert),
                 authentication=("mtls " if self.gate.mtls else "") + ("token-review" if self.gate.reviewer else "")
                 or ("none (--insecure)" if self.gate.insecure else "none (loopback)"),
                 views_memory_mb=o.views_memory)
        for signum, handler in ((signal.SIGHUP, lambda: self.changed("SIGHUP")),
                                (signal.SIGTERM, lambda: self.stop("SIGTERM")),
                                (signal.SIGINT, lambda: self.stop("SIGINT"))):
            try:
                loop.add_signal_handler(signum, handler)
            except (RuntimeError, ValueError):
                pass  # not the main thread (tests run the daemon on a thread): signals stay default
        await self.loader.seed_vips(self.reconcilers.answered_vips)
        # Watching starts before the first read, so that an edit made while it runs is not missed.
        tasks = [asyncio.create_task(t) for t in (self.follower.debounce(),
                                                  self.follower.watch(self.loader.source, self.loader.appeared),
                                                  self.live.follow())]
        await self.reload("start")
        state = self.loader.state
        if state.served_revision is None and state.error and self.last_good is not None:
            await self._serve_last_good()
        refused = self._refused()
        if refused:
            await self._shut_down(tasks, 0)
            raise SourceError(refused)
        election = asyncio.create_task(self.reconcilers.elect(self._stop)) if self.reconcilers.electing else None
        tasks += [asyncio.create_task(reconciling) for reconciling in self.reconcilers.loops()]
        if o.poll:
            tasks.append(asyncio.create_task(self.follower.poll()))
        try:
            await self._stop.wait()
        finally:
            if election is not None:  # it releases the lease on stop, so that another replica leads at once
                await asyncio.wait({election}, timeout=5)
            await self._shut_down(tasks + ([election] if election else []), o.grace)
            log.info("stopped")
        return 0

    async def _shut_down(self, tasks: list[asyncio.Task], grace: float) -> None:
        """Stop what runs: ``tasks``, the registries' feeds, the ADS server (its streams given ``grace``
        seconds) and the HTTP server; the feeds' threads waited for at most FEEDS_END."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.live.close()
        await self.ads.stop(grace)
        self.surface.stop_http()
        lingering = await self.live.ended(FEEDS_END)
        if lingering:
            log.warning("registry feeds still running as the daemon stops", threads=lingering, waited=FEEDS_END)
