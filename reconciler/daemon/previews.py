"""The status API's Preview: `galleon diff` from the revision served to the source's head (or a
given revision), without reading the served one again; once a reviewer has asked for one, each
revision served is made ready for the next (what every preview computes of its BASE).

Threads: ``asked`` is the event loop's; a preview is built on a worker thread from the revision
served when it was asked (taken on the loop) and files the loader reads under its source lock.
"""
from __future__ import annotations

import asyncio
import time

import structlog

from compiler.revision import Revision, load, with_live
from compiler.parse import UnreadableFile
from compiler.snapshot import short_revision

from ..api import reconciler_pb2 as pb
from ..preview import DEFAULT_MAX_BYTES, preview_of, render_json, render_markdown
from ..sources import SourceError
from .live import Live
from .loader import Loader

log = structlog.get_logger("galleon.serve")


def _ready_for_previews(base: Revision) -> None:
    """Compute what every preview against ``base`` computes of it (its digests, each cluster's caller
    localities, its views' listeners and gateway routes): a preview of it against itself. A second
    of work after a publish instead of in the first preview a reviewer waits for."""
    preview_of(base, base, [])


class Previews:
    def __init__(self, loader: Loader, live: Live) -> None:
        self.loader, self.live = loader, live
        self.asked = False  # once a preview is, each revision served is made ready for previews

    async def make_ready(self, revision: Revision, started: float) -> None:
        """After ``revision`` is published (``started``: when), before the heap is frozen, so that what
        this computes is frozen with the revision."""
        if not self.asked:
            return
        try:
            await asyncio.to_thread(_ready_for_previews, revision)
            log.info("ready for previews", revision=short_revision(revision.mesh.revision),
                     seconds=round(time.perf_counter() - started, 3))
        except Exception:  # noqa: BLE001 - a preview then computes it, or says what is wrong
            log.exception("cannot make the served revision ready for previews")

    async def preview(self, rev: str | None, fmt: str, clusters: list[str], max_bytes: int | None,
                      allowed=None) -> pb.PreviewResponse:
        """From what is served to the source's head (or ``rev``; ``allowed``: Loader.snapshot_of's).
        Raises LookupError when nothing is served or the source cannot be read, ValueError for an
        unknown cluster, and what ``allowed`` raises."""
        served = self.loader.served
        if served is None:
            raise LookupError("nothing is served yet, so there is nothing to compare with")
        base = self.live.live(served)
        self.asked = True

        def build() -> pb.PreviewResponse:
            started = time.perf_counter()
            # Both over the same live endpoints (the registries' now): the change is the source's alone.
            head = with_live(load(self.loader.snapshot_of(rev, allowed), base), base.live)
            result = preview_of(base, head, clusters)  # raises ValueError for an unknown cluster
            result.stale = {c["cluster"]: c["last_error"] or "stale" for c in self.live.registry.states() if c["stale"]}
            body = (render_json(result) if fmt == "json"
                    else render_markdown(result, max_bytes or DEFAULT_MAX_BYTES))
            log.info("preview made", base=short_revision(base.snapshot.revision),
                     head=short_revision(head.snapshot.revision), seconds=round(time.perf_counter() - started, 3))
            return pb.PreviewResponse(base_revision=base.snapshot.revision, head_revision=head.snapshot.revision,
                                      has_changes=result.has_changes, head_valid=head.valid, body=body)

        try:
            return await asyncio.to_thread(build)
        except (SourceError, UnreadableFile) as exc:
            raise LookupError(f"the source cannot be read: {exc}") from None
