"""Read the source and judge each revision it holds: what ``galleon serve`` may serve, and the record
of what it read (``LoadState``, for /readyz, /debug/configz and the status API).

A read (refresh, head, signature, snapshot, parse, validate, model) runs on a worker thread and
changes nothing the event loop reads: it is given what it needs and returns a ``Reading``, which
the loop applies to the record, the metrics and the log in one step, so no reader ever sees half
of it. A revision is judged servable when it has no errors, holds the Cluster ``--cluster``, and
(with ``--verify-*-key``) its commit is signed. The names of the mesh keep the VIPs served, and a
VIP given up is held back from new names for ``VIP_QUARANTINE``.

A local source path missing at start (not there, or not readable) is not fatal when the state
directory holds a last good snapshot: the daemon serves that, and the path is looked for every
``APPEAR_POLL`` seconds and opened once it is there.

Threads: the event loop owns the record, the served revision and the VIPs, and opens the source;
the one read in progress owns the parse cache; the source is used under ``_source_lock`` (reads and
previews).
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import structlog

from compiler.revision import Revision, load
from compiler.findings import Finding, Level
from compiler.snapshot import Snapshot, short_revision

from ..metrics import Metrics
from ..parse_cache import ParseCache
from ..sources import DirectorySource, FilesSource, Source, SourceError, SourceMissing, open_source
from ..sources.signatures import Verdict
from ..state import LastGood, remove_temporaries
from .options import ServeOptions

log = structlog.get_logger("galleon.serve")

# How long a released VIP is not given again: well beyond a DNS TTL plus CoreDNS's reload (30 s) and the
# kubelet's ConfigMap refresh (about a minute).
VIP_QUARANTINE = 600.0
APPEAR_POLL = 1.0  # how often a source path missing at start is looked for


@dataclass
class LoadState:
    """What the daemon has read and what it serves, for /readyz and /debug/configz."""
    served_revision: str | None = None
    served_at: float | None = None
    seen_revision: str | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    unknown_cluster: str | None = None
    from_state_dir: bool = False  # serving the last known good snapshot, the source unreadable
    signature: Verdict | None = None  # of the newest commit seen, when signatures are verified
    rejection: str | None = None  # why the newest revision seen is not served, in one line


@dataclass(frozen=True)
class Rejection:
    revision: str  # short
    reason: str  # one line
    outcome: str = "invalid"  # galleon_source_loads_total's label
    details: dict = field(default_factory=dict)  # more fields for the log line


@dataclass
class Reading:
    """What one read found: made on a worker thread, applied on the loop (``Loader._apply``)."""
    known: str | None = None  # the source is at this revision, read before: nothing new
    signature: Verdict | None = None  # of the head, when signatures are verified
    seen: str | None = None  # the revision read; what follows is about it
    findings: list[Finding] | None = None
    unknown_cluster: str | None = None
    rejection: Rejection | None = None
    accepted: Revision | None = None  # parsed, validated and modelled: to publish
    files_cached: int = 0
    seconds: float = 0.0
    failure: Exception | None = None  # raised again on the loop, once the rest is applied


@dataclass(frozen=True)
class _Given:
    """What a read needs of the loop's state, taken on the loop when it starts."""
    seen: str | None
    served: str | None
    base: Revision | None
    vips: dict[str, str]
    released: dict[str, float]

    def knows(self, revision: str) -> bool:
        return revision in (self.seen, self.served)


class Loader:
    def __init__(self, options: ServeOptions, metrics: Metrics, last_good: LastGood | None) -> None:
        self.options, self.metrics, self.last_good = options, metrics, last_good
        self.state = LoadState()
        self.source: Source | None = None  # None: its path was missing at start (``missing``)
        self.missing: str | None = None
        # The served revision, parsed and modelled: the next read reuses its parses, and it is the BASE
        # of every preview (the status API's Preview) while it is served.
        self.served: Revision | None = None
        # The VIPs of the cross-cluster names as served (or, before the first revision, as this cluster's
        # CoreDNS or the state directory has them): the next revision keeps them (compiler/vips.py).
        self.vips: dict[str, str] = {}
        # VIPs of names gone from the mesh, with when they went: not given to a new name for a while,
        # so that a client still holding the old answer (DNS TTL, CoreDNS reload, kubelet's ConfigMap
        # refresh) never reaches another service.
        self.released_vips: dict[str, float] = {}
        self._served_checks: tuple = ([], None)  # the served revision's findings and signature verdict
        self.parses = ParseCache(options.state_dir / "parses" if options.state_dir and options.parse_cache else None,
                                 lambda message: log.warning("parse cache off", reason=message))
        self._source_lock = threading.Lock()
        self._one_read = threading.Lock()

    # --- on the event loop ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the source (a clone for a remote), once the state directory is rid of what a killed
        write left. A local path that is missing waits for ``appeared`` when there is a last good
        snapshot to serve meanwhile. Raises SourceError."""
        if self.last_good is not None:
            await asyncio.to_thread(remove_temporaries, self.last_good, self.parses.root if self.parses.enabled
                                    else None)
        try:
            self.source = await asyncio.to_thread(self._open)
        except SourceMissing as exc:
            if self.last_good is None:
                raise
            if not await asyncio.to_thread(self.last_good.path.exists):
                raise SourceMissing(f"{exc}; the state directory holds no last known good snapshot of "
                                    f"{self.options.cluster} to serve until it appears") from None
            self.missing = f"the source path is missing ({exc}); it is read once it appears"

    async def appeared(self) -> Source:
        """The source, once its path, missing at start, is there (looked for every APPEAR_POLL seconds)."""
        while self.source is None:
            await asyncio.sleep(APPEAR_POLL)
            try:
                self.source = await asyncio.to_thread(self._open)
            except SourceMissing:
                continue
            except SourceError as exc:  # there, but nothing galleon serve follows: said once, looked at again
                if self.missing != str(exc):
                    self.missing = str(exc)
                    self.unreadable(exc)
                continue
            self.missing = None
            log.info("the source path appeared", source=self.options.source)
        return self.source

    def _open(self) -> Source:
        o = self.options
        source = open_source(o.source, o.state_dir, o.credentials)
        if isinstance(source, FilesSource):
            raise SourceError(f"{o.source}: galleon serve follows a repository or a directory, not a file")
        if o.signatures is not None and isinstance(source, DirectorySource):
            raise SourceError(f"{o.source}: commit signatures need a Git source; a directory has no commits")
        source.check_rev(o.rev)  # a --rev it can never have: an error now, not a source unreadable forever
        return source

    async def seed_vips(self, answered: Callable[[], Awaitable[dict[str, str]]]) -> None:
        """Before the first revision: the VIPs this cluster already answers (``answered``: its CoreDNS
        block), else what the state directory kept, so a restart gives no name another address."""
        vips = await asyncio.to_thread(self.last_good.load_vips) if self.last_good is not None else {}
        vips.update(await answered())
        self.vips = vips

    async def read(self) -> Revision | None:
        """Read the source's newest revision: the revision to publish, or None (nothing new, or not
        servable: reported). Raises SourceError, UnreadableFile, or what a bug raises."""
        reading = await asyncio.to_thread(self._read, self._given())
        self._apply(reading)
        if reading.failure is not None:
            raise reading.failure
        return reading.accepted

    async def read_last_good(self) -> Revision | None:
        """The snapshot served before (the state directory's), judged as a read is; None when there
        is none or it is not servable."""
        snapshot = await asyncio.to_thread(self.last_good.load)
        if snapshot is None:
            return None
        reading = await asyncio.to_thread(self._judged, snapshot, self._given())
        self._apply(reading)
        if reading.failure is not None:
            raise reading.failure
        return reading.accepted

    def record_served(self, revision: Revision, from_state_dir: bool) -> bool:
        """``revision`` is served now; whether that moved any VIP."""
        s, mesh = self.state, revision.mesh
        self.served = revision
        vips_moved = self.vips != mesh.vips.addresses
        for address in set(self.vips.values()) - set(mesh.vips.addresses.values()):
            self.released_vips[address] = time.monotonic()
        self.vips = dict(mesh.vips.addresses)
        self._served_checks = (s.findings, s.signature)
        s.served_revision, s.served_at = mesh.revision, time.time()
        s.from_state_dir = from_state_dir
        if not from_state_dir:
            s.error = None  # read from the source just now: say so before the state file is written
        return vips_moved

    def read_through(self) -> None:
        """A reload ended without error."""
        self.state.error = None
        self.state.from_state_dir = False
        if self.state.seen_revision == self.state.served_revision:
            self.metrics.last_success.set(time.time())

    def unreadable(self, exc: Exception) -> None:
        self.state.error = str(exc)
        self.metrics.loads.labels("unreadable").inc()
        log.error("source unreadable; serving what was served before", error=str(exc), served=self.served_short())

    def failed(self, exc: Exception) -> None:
        """A bug while loading (called in its ``except`` block, for the traceback)."""
        self.state.error = f"internal error: {type(exc).__name__}: {exc}"
        self.metrics.loads.labels("failed").inc()
        log.exception("internal error while loading; serving what was served before", served=self.served_short())

    def served_short(self) -> str:
        return short_revision(self.state.served_revision or "nothing")

    def _given(self) -> _Given:
        now = time.monotonic()
        self.released_vips = {a: t for a, t in self.released_vips.items() if now - t < VIP_QUARANTINE}
        return _Given(self.state.seen_revision, self.state.served_revision, self.served, dict(self.vips),
                      dict(self.released_vips))

    def _apply(self, reading: Reading) -> None:
        s = self.state
        if reading.signature is not None:
            s.signature = reading.signature
        if reading.known is not None:
            self._back_at(reading.known)
        if reading.findings is not None:
            s.findings = reading.findings
        if reading.unknown_cluster is not None:
            s.unknown_cluster = reading.unknown_cluster
        if reading.rejection is not None:
            self._reject(reading.rejection)
        elif reading.accepted is not None:
            s.unknown_cluster = s.rejection = None
            self.metrics.loads.labels("valid").inc()
            self.metrics.snapshot_valid.set(1)
            log.info("revision validated", revision=short_revision(reading.accepted.snapshot.revision),
                     objects=len(reading.accepted.objects), files_cached=reading.files_cached,
                     seconds=reading.seconds)
        if reading.seen is not None:
            # Seen once its findings are in the status, not before: a reader that waits for the
            # revision must not get the previous one's findings (nor read it again when unreadable).
            s.seen_revision = reading.seen

    def _back_at(self, revision: str) -> None:
        """Back at the served revision (a branch forced back after a refused commit): what the refused
        one left in the status is forgotten, the served one holds."""
        s = self.state
        if revision == s.served_revision and s.seen_revision != revision:
            s.seen_revision, s.rejection = revision, None
            s.findings, s.signature = self._served_checks
            self.metrics.snapshot_valid.set(1)
            log.info("back at the revision served", revision=short_revision(revision))

    def _reject(self, rejection: Rejection) -> None:
        self.state.rejection = rejection.reason
        self.metrics.loads.labels(rejection.outcome).inc()
        self.metrics.snapshot_valid.set(0)
        log.error("revision rejected", revision=rejection.revision, reason=rejection.reason,
                  served=self.served_short(), **rejection.details)

    # --- on worker threads ---------------------------------------------------------------------------

    def snapshot_of(self, rev: str | None,
                    allowed: Callable[[Callable[[str], list[str]]], None] | None = None) -> Snapshot:
        """The source's files at ``rev`` (default: the one followed), fetched first (for previews).
        ``allowed`` is asked, once fetched, with the lookup of the refs that point at a commit; it
        raises what refuses ``rev``."""
        with self._source_lock:
            source = self._opened()
            source.refresh()
            if allowed is not None:
                allowed(self._refs_at)
            return source.snapshot(rev or self.options.rev)

    def _refs_at(self, commit: str) -> list[str]:
        """The names of the source's refs that point at ``commit`` (none for a directory); under the
        source lock."""
        repo = getattr(self.source, "repo", None)
        found = []
        for name in repo.references if repo is not None else ():
            try:
                target = repo.references[name].resolve().target
            except (KeyError, ValueError):  # a dangling symbolic ref
                continue
            if str(target) == commit:
                found.append(name)
        return found

    def _read(self, given: _Given) -> Reading:
        """Refresh, read, validate, build; checked against what was read before without reading any
        file when the source can tell."""
        reading = Reading()
        try:
            with self._one_read:
                with self._source_lock:
                    snapshot = self._fetch(given, reading)
                if snapshot is None:
                    return reading
                if given.knows(snapshot.revision):
                    reading.known = snapshot.revision
                    return reading
                reading.seen = snapshot.revision
                self._judge(snapshot, given, reading)
        except Exception as exc:  # noqa: BLE001 - handed to the loop, which raises it once the rest is applied
            reading.failure = exc
        return reading

    def _opened(self) -> Source:
        if self.source is None:
            raise SourceMissing(self.missing)
        return self.source

    def _fetch(self, given: _Given, reading: Reading) -> Snapshot | None:
        source = self._opened()
        source.refresh()
        head = source.head(self.options.rev)
        if head is not None and given.knows(head):
            reading.known = head
            return None
        if self.options.signatures is not None:
            verdict = reading.signature = self.options.signatures.verify(source.repo, head)
            if not verdict.ok:
                reading.seen, reading.findings = head, []
                reading.rejection = Rejection(short_revision(head), f"unverified commit: {verdict.reason}",
                                              "unverified")
                return None
        started = time.perf_counter()
        # The commit whose signature was checked, not whatever the branch names by now.
        snapshot = source.snapshot(head or self.options.rev)
        if not given.knows(snapshot.revision):
            log.info("revision seen", revision=short_revision(snapshot.revision), files=len(snapshot.files),
                     seconds=round(time.perf_counter() - started, 3))
        return snapshot

    def _judged(self, snapshot: Snapshot, given: _Given) -> Reading:
        """A snapshot read from elsewhere (the state directory), judged; seen only when servable."""
        reading = Reading()
        try:
            with self._one_read:
                self._judge(snapshot, given, reading)
            if reading.accepted is not None:
                reading.seen = snapshot.revision
        except Exception as exc:  # noqa: BLE001 - as in _read
            reading.failure = exc
        return reading

    def _judge(self, snapshot: Snapshot, given: _Given, reading: Reading) -> None:
        """Validate a snapshot for serving: accepted, or rejected with why. Files unchanged since the
        served revision are not parsed again, and the revision is kept whole."""
        started = time.perf_counter()
        now = time.monotonic()
        held = {a for a, t in given.released.items() if now - t < VIP_QUARANTINE}
        base = given.base
        stored = self.parses.stored(snapshot, have=base.parsed.files if base else None)
        loaded = load(snapshot, base, vips=given.vips, held_vips=held, stored=stored)
        self.parses.keep(loaded.parsed)
        reading.findings = loaded.findings
        revision = short_revision(snapshot.revision)
        if not loaded.valid:
            errors = [f for f in loaded.findings if f.level is Level.ERROR]
            reading.rejection = Rejection(
                revision, f"{len(errors)} error{'s' if len(errors) > 1 else ''}, the first: {errors[0].text()}",
                details={"errors": len(errors), "first": [f.text() for f in errors[:5]]})
            return
        mesh = loaded.mesh
        if self.options.cluster not in mesh.clusters:
            reading.unknown_cluster = (f"{snapshot.origin} at {revision} has no Cluster named "
                                       f"{self.options.cluster!r} (clusters: "
                                       f"{', '.join(sorted(mesh.clusters)) or 'none'})")
            reading.rejection = Rejection(revision, reading.unknown_cluster)
            return
        reading.accepted, reading.files_cached = loaded, len(stored)
        reading.seconds = round(time.perf_counter() - started, 3)
