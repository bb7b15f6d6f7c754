"""Make an accepted revision the one served, with what the live registries read: hand it to the ADS
server, tell the parts that follow
the served revision (the loader's record, the reconcilers), then a publish's after-work: previews
made ready, the heap settled when due (reconciler/runtime.py), the VIPs and the last known good snapshot
saved to the state directory.

Threads: runs on the event loop; its worker-thread steps get values nothing changes afterwards.
"""
from __future__ import annotations

import asyncio
import time

import structlog

from compiler.revision import Revision

from .. import runtime
from ..ads.server import AdsServer
from ..metrics import Metrics
from ..state import LastGood
from .live import Live, publish_anew
from .loader import Loader
from .previews import Previews
from .reconcilers import Reconcilers

log = structlog.get_logger("galleon.serve")



class Publisher:
    def __init__(self, ads: AdsServer, metrics: Metrics, loader: Loader, live: Live, reconcilers: Reconcilers,
                 previews: Previews, last_good: LastGood | None) -> None:
        self.ads, self.metrics, self.last_good = ads, metrics, last_good
        self.loader, self.live, self.reconcilers, self.previews = loader, live, reconcilers, previews

    async def publish(self, revision: Revision, from_state_dir: bool = False) -> None:
        if not await self.live.ready_to_publish(revision):
            return  # stopping
        revision = self.live.to_publish(revision)  # what runs in the clusters, beside what the source writes
        mesh = await publish_anew(self.ads, revision)
        vips_moved = self.loader.record_served(revision, from_state_dir)
        self.reconcilers.due(revision)
        self.metrics.revision_info.clear()
        self.metrics.revision_info.labels(mesh.revision).set(1)
        started = time.perf_counter()
        if not await self.ads.delivered(runtime.DELIVERY_WAIT):
            log.debug("streams still being updated; the after-work of the publish goes on",
                      seconds=runtime.DELIVERY_WAIT)
        await self.previews.make_ready(revision, started)
        if runtime.settle_due():
            await asyncio.to_thread(runtime.settle)
            log.debug("heap settled", seconds=round(time.perf_counter() - started, 3))
        if runtime.release_due():
            await asyncio.to_thread(runtime.release_freed)
        if self.last_good is not None and vips_moved:
            try:
                await asyncio.to_thread(self.last_good.save_vips, dict(self.loader.vips))
            except OSError as exc:
                log.error("cannot save the VIPs", path=str(self.last_good.vips_path), error=str(exc))
        if self.last_good is not None and not from_state_dir:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.last_good.save, revision.snapshot)
            except OSError as exc:
                log.error("cannot save the last known good snapshot", path=str(self.last_good.path), error=str(exc))
                return
            log.debug("last known good snapshot saved", path=str(self.last_good.path),
                      seconds=round(time.perf_counter() - started, 3))
