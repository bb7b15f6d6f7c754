"""Follow the source: notice that it may have changed and turn those notices into reloads.

A notice comes from the source's files (a directory) or refs (a local repository) changing, its path
appearing (when it was missing at start), a poll coming due, SIGHUP, the webhook or the status API's
Sync. Notices are debounced: the reload starts once they have been quiet for ``debounce`` seconds,
and at the latest ``debounce_max`` seconds after the first one.

Threads: the event loop's, all of it; another thread hands a notice in with
``loop.call_soon_threadsafe(follower.changed, reason)``.
"""
from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Awaitable, Callable

import structlog
import watchfiles

from ..sources import DirectorySource, LocalGitSource, Source
from .options import ServeOptions

log = structlog.get_logger("galleon.serve")


class Follower:
    def __init__(self, options: ServeOptions, reload: Callable[[str], Awaitable[None]], stop: asyncio.Event) -> None:
        self.options, self.reload, self._stop = options, reload, stop
        self._changes = asyncio.Event()

    def changed(self, reason: str) -> None:
        log.debug("change noticed", reason=reason)
        self._changes.set()

    async def debounce(self) -> None:
        while True:
            await self._changes.wait()
            first = time.monotonic()
            while True:
                self._changes.clear()
                remaining = self.options.debounce_max - (time.monotonic() - first)
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changes.wait(), min(self.options.debounce, remaining))
                except asyncio.TimeoutError:
                    break  # quiet long enough
            await self.reload("change")

    async def watch(self, source: Source | None, appeared: Callable[[], Awaitable[Source]]) -> None:
        """A directory's files, or a local repository's refs (a commit moves HEAD's branch). A source
        whose path was missing at start (None) is waited for (``appeared``), then read at once."""
        if source is None:
            source = await appeared()
            self.changed("source appeared")
        if isinstance(source, DirectorySource):
            # The default filter skips editors' swap files and dot-folders, which snapshots skip too.
            path, wanted, only = source.root, None, watchfiles.DefaultFilter()
        elif isinstance(source, LocalGitSource):
            # Everything under .git is what the default filter skips, so no filter here.
            path, wanted, only = Path(source.repo.path), ("HEAD", "packed-refs", "refs"), None
        else:
            return
        async for changes in watchfiles.awatch(path, stop_event=self._stop, debounce=50, step=20,
                                               watch_filter=only):
            relevant = [p for _, p in changes
                        if wanted is None or Path(p).relative_to(path).parts[0] in wanted]
            if relevant and not all(Path(p).name.endswith(".lock") for p in relevant):
                self.changed("files changed" if wanted is None else "new commit")

    async def poll(self) -> None:
        jitter = random.Random()
        while True:
            await asyncio.sleep(self.options.poll * (1 + jitter.uniform(-1, 1) * self.options.poll_jitter))
            self.changed("poll")
