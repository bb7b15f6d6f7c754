"""``galleon serve``: read the source, validate, serve ADS, and follow changes.

A change (directory edit, new commit, SIGHUP, poll tick) is debounced: the
reload starts once changes have been quiet for ``debounce`` seconds, and at the
latest ``debounce_max`` seconds after the first one. A revision with errors is
reported and not served; proxies keep the previous one.
"""
from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import structlog
import watchfiles

from compiler.findings import Finding, Level
from compiler.snapshot import short_revision
from compiler.model import Mesh
from compiler.parse import UnreadableFile
from compiler.snapshot import Snapshot

from compiler.diff import Revision, load_revision

from . import ca, dns, runtime, status, webhook
from .ads.server import AdsServer
from .api import reconciler_pb2 as pb
from .preview import DEFAULT_MAX_BYTES, preview_of, render_json, render_markdown
from .http import HttpServer, json_body, text_body
from .metrics import Metrics
from .parse_cache import ParseCache
from .sources import (DirectorySource, FilesSource, GitCredentials, LocalGitSource, Source, SourceError,
                      open_source)
from .sources.signatures import SignaturePolicy, Verdict
from .state import LastGood
from .status import StatusBoard

log = structlog.get_logger("galleon.serve")


@dataclass
class ServeOptions:
    source: str
    cluster: str
    rev: str | None = None
    ads: str = "127.0.0.1:15010"
    http: str = "127.0.0.1:15014"
    poll: float | None = None
    state_dir: Path | None = None
    parse_cache: bool = True  # keep parsed files in STATE_DIR/parses (reconciler/parse_cache.py)
    credentials: GitCredentials = field(default_factory=GitCredentials)
    debounce: float = 0.1
    debounce_max: float = 10.0
    grace: float = 5.0
    poll_jitter: float = 0.1  # each poll waits poll x (1 ± this), so replicas do not fetch in step
    webhook_secret: bytes | None = None
    signatures: SignaturePolicy | None = None  # a Git head must be signed by one of these keys
    max_connection_age: float | None = None
    # With a Lease, only the replica holding it writes to the cluster (the CA and DNS reconcilers);
    # every replica serves ADS. None: this daemon is the only one, and the leader.
    lease: LeaseOptions | None = None
    ca: CaOptions | None = None  # reconcile this cluster's cacerts (the leader only)
    dns: DnsOptions | None = None  # reconcile this cluster's CoreDNS global:53 block (the leader only)


def _ready_for_previews(base: Revision) -> None:
    """Compute what every preview against ``base`` computes of it (its digests, each cluster's caller
    localities, its views' listeners and gateway routes): a preview of it against itself. A second
    of work after a publish instead of in the first preview a reviewer waits for."""
    preview_of(base, base, [])


@dataclass
class CaOptions:
    root: Path  # the root CA's directory (galleon ca init-root)
    target: str  # kube or dir:PATH
    interval: float = 3600.0
    kubeconfig: Path | None = None
    context: str | None = None

    def target_of(self, cluster: str) -> ca.Target:
        return ca.target_from(self.target, contexts={cluster: self.context}, kubeconfig=self.kubeconfig)


# How long a released VIP is not given again: well beyond a DNS TTL plus CoreDNS's reload (30 s) and the
# kubelet's ConfigMap refresh (about a minute).
VIP_QUARANTINE = 600.0
# How long the start waits for its cluster's CoreDNS VIPs before serving with the stored ones.
SEED_TIMEOUT = 5.0


@dataclass
class DnsOptions:
    target: str  # kube or dir:PATH
    interval: float = 300.0
    ttl: int = dns.DEFAULT_TTL
    create: bool = False
    kubeconfig: Path | None = None
    context: str | None = None

    def target_of(self, cluster: str) -> dns.Target:
        return dns.target_from(self.target, contexts={cluster: self.context}, kubeconfig=self.kubeconfig)


@dataclass
class LeaseOptions:
    namespace: str
    name: str
    identity: str
    kubeconfig: Path | None = None
    context: str | None = None


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


class Daemon:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.ads = AdsServer(options.cluster, self.metrics, options.max_connection_age)
        self.board = StatusBoard()
        self.leader = options.lease is None
        self.metrics.leader.set(int(self.leader))
        self.served_snapshot: Snapshot | None = None
        self.served_objects: list = []  # the served revision's validated objects
        self._accepted: Revision | None = None  # the revision _accept just let through
        self._ca_due = asyncio.Event()
        self.ca_plan: str | None = None  # the last CA reconcile's plan, for /debug/configz
        # The VIPs of the cross-cluster names as served (or, before the first revision, as this cluster's
        # CoreDNS or the state directory has them): the next revision keeps them (compiler/vips.py).
        self.vips: dict[str, str] = {}
        # VIPs of names gone from the mesh, with when they went: not given to a new name for a while,
        # so that a client still holding the old answer (DNS TTL, CoreDNS reload, kubelet's ConfigMap
        # refresh) never reaches another service.
        self.released_vips: dict[str, float] = {}
        self.served_mesh: Mesh | None = None
        self._dns_due = asyncio.Event()
        self.dns_outcome: list[str] | None = None  # the last DNS reconcile's lines, for /debug/configz
        self._targets: dict[str, ca.Target | dns.Target] = {}  # by reconciler: see _target
        self._served_checks: tuple = ([], None)  # the served revision's findings and signature verdict
        self._base: Revision | None = None  # the served revision, parsed and modelled: every preview's BASE
        self._previews_asked = False  # once one is, each revision served is made ready for previews
        self._reloading = asyncio.Lock()
        self.state = LoadState()
        self.source: Source | None = None
        self.last_good = LastGood(options.state_dir, options.cluster) if options.state_dir else None
        self.parses = ParseCache(options.state_dir / "parses" if options.state_dir and options.parse_cache else None,
                                 lambda message: log.warning("parse cache off", reason=message))
        self.ads_port = self.http_port = 0
        self._changes = asyncio.Event()
        self._stop = asyncio.Event()

    # --- loading ------------------------------------------------------------------------------------

    def _read(self) -> tuple[Snapshot, Mesh] | None:
        """Runs on a worker thread: refresh, read, validate, build. Returns what to publish, or None
        when the source has nothing new (checked before reading any file when it can tell)."""
        source = self.source
        source.refresh()
        head = source.head(self.options.rev)
        if head is not None and self._known(head):
            return None
        if self.options.signatures is not None:
            verdict = self.options.signatures.verify(source.repo, head)
            self.state.signature = verdict
            if not verdict.ok:
                self.state.seen_revision, self.state.findings = head, []
                return self._reject(short_revision(head), f"unverified commit: {verdict.reason}", "unverified")
        started = time.perf_counter()
        # The commit whose signature was checked, not whatever the branch names by now.
        snapshot = source.snapshot(head or self.options.rev)
        if self._known(snapshot.revision):
            return None
        log.info("revision seen", revision=short_revision(snapshot.revision), files=len(snapshot.files),
                 seconds=round(time.perf_counter() - started, 3))
        try:
            mesh = self._accept(snapshot)
        finally:
            # Seen once its findings are in the status, not before: a reader that waits for the
            # revision must not get the previous one's findings (nor read it again when unreadable).
            self.state.seen_revision = snapshot.revision
        return (snapshot, mesh) if mesh is not None else None

    def _known(self, revision: str) -> bool:
        """Whether ``revision`` was read before. Back at the served one (a branch forced back after a
        refused commit), what the refused one left in the status is forgotten: the served one holds."""
        if revision == self.state.served_revision and self.state.seen_revision != revision:
            self.state.seen_revision, self.state.rejection = revision, None
            self.state.findings, self.state.signature = self._served_checks
            self.metrics.snapshot_valid.set(1)
            log.info("back at the revision served", revision=short_revision(revision))
        return revision in (self.state.seen_revision, self.state.served_revision)

    def _accept(self, snapshot: Snapshot) -> Mesh | None:
        """Validate a snapshot for serving: the mesh, or None (reported) when it must not be served.
        Files unchanged since the served revision are not parsed again, and the revision is kept
        whole: it is the BASE of every preview (the status API's Preview) while it is served."""
        started = time.perf_counter()
        now = time.monotonic()
        self.released_vips = {a: t for a, t in self.released_vips.items() if now - t < VIP_QUARANTINE}
        stored = self.parses.stored(snapshot, have=self._base.parsed.files if self._base else None)
        loaded = load_revision(snapshot, like=self._base, vips=self.vips, held_vips=set(self.released_vips),
                               model_invalid=False, stored=stored)
        self.parses.keep(loaded.parsed)
        self.state.findings = loaded.findings
        revision = short_revision(snapshot.revision)
        if not loaded.valid:
            errors = [f for f in loaded.findings if f.level is Level.ERROR]
            return self._reject(revision, f"{len(errors)} error{'s' if len(errors) > 1 else ''}, the first: "
                                          f"{errors[0].text()}",
                                errors=len(errors), first=[f.text() for f in errors[:5]])
        mesh = loaded.mesh
        if self.options.cluster not in mesh.clusters:
            self.state.unknown_cluster = (f"{snapshot.origin} at {revision} has no Cluster named "
                                          f"{self.options.cluster!r} (clusters: "
                                          f"{', '.join(sorted(mesh.clusters)) or 'none'})")
            return self._reject(revision, self.state.unknown_cluster)
        self.state.unknown_cluster = self.state.rejection = None
        self._accepted = loaded
        self.metrics.loads.labels("valid").inc()
        self.metrics.snapshot_valid.set(1)
        log.info("revision validated", revision=revision, objects=len(loaded.objects), files_cached=len(stored),
                 seconds=round(time.perf_counter() - started, 3))
        return mesh

    def _reject(self, revision: str, rejection: str, outcome: str = "invalid", **details) -> None:
        self.state.rejection = rejection
        self.metrics.loads.labels(outcome).inc()
        self.metrics.snapshot_valid.set(0)
        log.error("revision rejected", revision=revision, reason=rejection, served=self._served(), **details)

    def _served(self) -> str:
        return short_revision(self.state.served_revision or "nothing")

    async def reload(self, reason: str) -> None:
        async with self._reloading:
            try:
                await self._reload(reason)
            finally:
                self.board.bump()

    async def _reload(self, reason: str) -> None:
        log.debug("reading source", reason=reason, source=self.options.source)
        try:
            read = await asyncio.to_thread(self._read)
            if read is not None:
                await self._publish(*read)
        except (SourceError, UnreadableFile) as exc:
            self.state.error = str(exc)
            self.metrics.loads.labels("unreadable").inc()
            log.error("source unreadable; serving what was served before", error=str(exc), served=self._served())
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not take down what proxies are served
            self.state.error = f"internal error: {type(exc).__name__}: {exc}"
            self.metrics.loads.labels("failed").inc()
            log.exception("internal error while loading; serving what was served before", served=self._served())
            return
        self.state.error = None
        self.state.from_state_dir = False
        if self.state.seen_revision == self.state.served_revision:
            self.metrics.last_success.set(time.time())

    async def _publish(self, snapshot: Snapshot, mesh: Mesh, from_state_dir: bool = False) -> None:
        await self.ads.publish(mesh)
        self.served_snapshot, self._base = snapshot, self._accepted
        self.served_objects = self._accepted.objects
        self.served_mesh = mesh
        self._ca_due.set()  # a new revision may carry a new CertificateAuthority policy
        self._dns_due.set()
        vips_moved = self.vips != mesh.vips.addresses
        for address in set(self.vips.values()) - set(mesh.vips.addresses.values()):
            self.released_vips[address] = time.monotonic()
        self.vips = dict(mesh.vips.addresses)
        self._served_checks = (self.state.findings, self.state.signature)
        self.state.served_revision, self.state.served_at = mesh.revision, time.time()
        self.state.from_state_dir = from_state_dir
        if not from_state_dir:
            self.state.error = None  # read from the source just now: say so before the state file is written
        self.metrics.revision_info.clear()
        self.metrics.revision_info.labels(mesh.revision).set(1)
        started = time.perf_counter()
        if self._previews_asked:
            # Before the heap is frozen, so what it computes is frozen with the revision.
            try:
                await asyncio.to_thread(_ready_for_previews, self._base)
                log.info("ready for previews", revision=short_revision(mesh.revision),
                         seconds=round(time.perf_counter() - started, 3))
            except Exception:  # noqa: BLE001 - a preview then computes it, or says what is wrong
                log.exception("cannot make the served revision ready for previews")
        await asyncio.to_thread(runtime.settle)
        log.debug("heap settled", seconds=round(time.perf_counter() - started, 3))
        if self.last_good is not None and vips_moved:
            try:
                await asyncio.to_thread(self.last_good.save_vips, self.vips)
            except OSError as exc:
                log.error("cannot save the VIPs", path=str(self.last_good.vips_path), error=str(exc))
        if self.last_good is not None and not from_state_dir:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.last_good.save, snapshot)
            except OSError as exc:
                log.error("cannot save the last known good snapshot", path=str(self.last_good.path), error=str(exc))
                return
            log.debug("last known good snapshot saved", path=str(self.last_good.path),
                      seconds=round(time.perf_counter() - started, 3))

    async def _serve_last_good(self) -> None:
        """At start-up, when the source cannot be read: serve the snapshot served before, if any."""
        snapshot = await asyncio.to_thread(self.last_good.load)
        if snapshot is None:
            return
        mesh = await asyncio.to_thread(self._accept, snapshot)
        if mesh is None:
            return
        self.state.seen_revision = snapshot.revision
        await self._publish(snapshot, mesh, from_state_dir=True)
        log.warning("serving the last known good snapshot from the state directory; the source cannot be read",
                    revision=short_revision(snapshot.revision), path=str(self.last_good.path),
                    source_error=self.state.error)

    async def preview(self, rev: str | None, fmt: str, clusters: list[str],
                      max_bytes: int | None) -> pb.PreviewResponse:
        """`galleon diff` from what is served to the source's head (or ``rev``): the status API's Preview."""
        if self.served_snapshot is None:
            raise LookupError("nothing is served yet, so there is nothing to compare with")
        self._previews_asked = True

        def build() -> pb.PreviewResponse:
            started = time.perf_counter()
            base = self._base
            self.source.refresh()
            head = load_revision(self.source.snapshot(rev or self.options.rev), like=base)
            result = preview_of(base, head, clusters)  # raises ValueError for an unknown cluster
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

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def stopped(self) -> None:
        await self._stop.wait()

    def changed(self, reason: str) -> None:
        log.debug("change noticed", reason=reason)
        self._changes.set()

    async def _debounce(self) -> None:
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

    async def _watch(self) -> None:
        """A directory's files, or a local repository's refs (a commit moves HEAD's branch)."""
        if isinstance(self.source, DirectorySource):
            # The default filter skips editors' swap files and dot-folders, which snapshots skip too.
            path, wanted, only = self.source.root, None, watchfiles.DefaultFilter()
        elif isinstance(self.source, LocalGitSource):
            # Everything under .git is what the default filter skips, so no filter here.
            path, wanted, only = Path(self.source.repo.path), ("HEAD", "packed-refs", "refs"), None
        else:
            return
        async for changes in watchfiles.awatch(path, stop_event=self._stop, debounce=50, step=20,
                                               watch_filter=only):
            relevant = [p for _, p in changes
                        if wanted is None or Path(p).relative_to(path).parts[0] in wanted]
            if relevant and not all(Path(p).name.endswith(".lock") for p in relevant):
                self.changed("files changed" if wanted is None else "new commit")

    async def _poll(self) -> None:
        jitter = random.Random()
        while True:
            await asyncio.sleep(self.options.poll * (1 + jitter.uniform(-1, 1) * self.options.poll_jitter))
            self.changed("poll")

    async def _whenever_due(self, due: asyncio.Event, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` (a reconcile of this cluster) after each new revision (``due`` is set) and every
        ``interval``, when something is served and this replica leads (only the leader writes)."""
        while True:
            try:
                await asyncio.wait_for(due.wait(), interval)
            except asyncio.TimeoutError:
                pass
            due.clear()
            if self.leader and self.served_mesh is not None:
                await step()

    async def _reconcile_ca(self, options: CaOptions) -> None:
        """Keep this cluster's cacerts right."""
        started = time.perf_counter()
        try:
            decided = await asyncio.to_thread(self._ca_once, options)
        except ca.CAError as exc:
            self.metrics.ca_reconciles.labels("failed").inc()
            log.error("CA reconcile failed", error=str(exc))
            return
        if decided is None:
            return
        self.ca_plan = decided.describe()
        self.metrics.ca_reconciles.labels(decided.action).inc()
        log.info("CA reconciled", action=decided.action, reasons=list(decided.reasons),
                 revision=short_revision(self.state.served_revision), seconds=round(time.perf_counter() - started, 3))

    def _ca_once(self, options: CaOptions):
        policy = ca.policy_for(self.served_objects, self.options.cluster)
        if policy is None:
            return None  # no CertificateAuthority covers this cluster: its CA is not Galleon's
        return ca.reconcile(self._target("ca", options), ca.load_root(options.root), self.options.cluster, policy,
                            datetime.now(timezone.utc))

    async def _reconcile_dns(self, options: DnsOptions) -> None:
        """Keep this cluster's CoreDNS answering the served VIPs."""
        mesh = self.served_mesh
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(
                dns.reconcile, self._target("dns", options), self.options.cluster,
                lambda current: mesh.vips, suffix=mesh.settings.dns_suffix, ttl=options.ttl,
                create=options.create)
        except dns.DNSError as exc:
            self.metrics.dns_reconciles.labels("failed").inc()
            log.error("DNS reconcile failed", error=str(exc))
            return
        self.dns_outcome = outcome.lines()
        self.metrics.dns_reconciles.labels(outcome.action).inc()
        (log.warning if outcome.moved else log.info)(
            "DNS reconciled", action=outcome.action, names=len(outcome.entries), added=len(outcome.added),
            removed=len(outcome.removed), readdressed=sorted(outcome.moved), warnings=list(outcome.warnings),
            revision=short_revision(mesh.revision), seconds=round(time.perf_counter() - started, 3))

    async def _seed_vips(self) -> None:
        """Before the first revision: the VIPs this cluster already answers (its CoreDNS block, else
        what the state directory kept), so a restart gives no name another address."""
        vips = await asyncio.to_thread(self.last_good.load_vips) if self.last_good is not None else {}
        if self.options.dns is not None:
            try:
                # Bounded: an API server that does not answer must not keep proxies waiting for xDS.
                vips.update(await asyncio.wait_for(asyncio.to_thread(
                    dns.read_entries, self._target("dns", self.options.dns), self.options.cluster), SEED_TIMEOUT))
            except (dns.DNSError, asyncio.TimeoutError) as exc:
                log.warning("cannot read this cluster's CoreDNS VIPs; keeping the stored ones",
                            error=str(exc) or f"no answer within {SEED_TIMEOUT} s")
        self.vips = vips

    def _target(self, reconciler: str, options: CaOptions | DnsOptions):
        """One target per reconciler for the daemon's life: a kube one holds its API client, which
        would otherwise read the kubeconfig and connect again on every run."""
        found = self._targets.get(reconciler)
        if found is None:
            found = self._targets[reconciler] = options.target_of(self.options.cluster)
        return found

    async def _elect(self, elector, lease: LeaseOptions) -> None:
        def lead(leading: bool) -> None:
            self.leader = leading
            self.metrics.leader.set(int(leading))
            self.board.bump()
            log.info("became the leader" if leading else "no longer the leader",
                     lease=f"{lease.namespace}/{lease.name}", identity=lease.identity)

        await elector.run(self._stop, lambda: lead(True), lambda: lead(False))

    # --- HTTP ---------------------------------------------------------------------------------------

    def _routes(self):
        def healthz(_):
            return text_body(200, "ok\n")

        def readyz(_):
            if self.state.served_revision is None:
                why = self.state.error or ("the source has errors; see /debug/configz" if self.state.findings
                                           else "no revision loaded yet")
                return text_body(503, f"not ready: {why}\n")
            if self.state.from_state_dir:
                return text_body(200, f"ready: serving {self.state.served_revision} from the state directory "
                                      f"(last known good); the source cannot be read: {self.state.error}\n")
            return text_body(200, f"ready: serving {self.state.served_revision}\n")

        def configz(_):
            s = self.state
            return json_body(200, {
                "source": self.options.source, "cluster": self.options.cluster,
                "served_revision": s.served_revision, "last_revision_seen": s.seen_revision,
                "served_at": s.served_at, "source_error": s.error, "from_state_dir": s.from_state_dir,
                "signature": asdict(s.signature) if s.signature else None, "ca_plan": self.ca_plan,
                "dns": self.dns_outcome, "vips": self.vips,
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
                "/debug/config_dump": config_dump, "/metrics": metrics}

    def _hook(self, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        """POST /hook (on the HTTP server's thread): a verified notice from the Git host fetches now."""
        if self.options.webhook_secret is None:
            return json_body(404, {"error": "the webhook is off; start galleon serve with --webhook-secret-file"})
        try:
            sender = webhook.verify(self.options.webhook_secret, headers, body)
        except webhook.WebhookRejected as exc:
            log.warning("webhook refused", reason=str(exc))
            return json_body(exc.status, {"error": str(exc)})
        self._loop.call_soon_threadsafe(self.changed, f"webhook ({sender})")
        return json_body(202, {"accepted": sender})

    # --- life cycle ---------------------------------------------------------------------------------

    def stop(self, reason: str = "asked") -> None:
        log.info("stopping", reason=reason)
        self._stop.set()

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        o = self.options
        self.source = await asyncio.to_thread(open_source, o.source, o.state_dir, o.credentials)
        if isinstance(self.source, FilesSource):
            raise SourceError(f"{o.source}: galleon serve follows a repository or a directory, not a file")
        elector = None
        if o.lease is not None:
            # The Kubernetes client takes a fifth of a second to import: only for --leader-elect.
            from .kube.client import KubeError, api_client
            from .kube.lease import LeaderElector
            try:
                api = await asyncio.to_thread(api_client, o.lease.kubeconfig, o.lease.context)
            except KubeError as exc:
                raise SourceError(f"--leader-elect: {exc}") from None
            elector = LeaderElector(api, o.lease.namespace, o.lease.name, o.lease.identity)
        if o.signatures is not None and isinstance(self.source, DirectorySource):
            raise SourceError(f"{o.source}: commit signatures need a Git source; a directory has no commits")
        http = HttpServer(self._routes(), loop, {"/hook": self._hook})
        try:
            self.ads_port = await self.ads.start(o.ads, status.handlers(self))
            self.http_port = http.start(o.http)
        except OSError:
            await self.ads.stop(0)
            raise
        log.info("serving", cluster=o.cluster, source=o.source, ads=f"{o.ads.rpartition(':')[0]}:{self.ads_port}",
                 http=f"{o.http.rpartition(':')[0]}:{self.http_port}")
        for signum, handler in ((signal.SIGHUP, lambda: self.changed("SIGHUP")),
                                (signal.SIGTERM, lambda: self.stop("SIGTERM")),
                                (signal.SIGINT, lambda: self.stop("SIGINT"))):
            try:
                loop.add_signal_handler(signum, handler)
            except (RuntimeError, ValueError):
                pass  # not the main thread (tests run the daemon on a thread): signals stay default
        await self._seed_vips()
        # Watching starts before the first read, so that an edit made while it runs is not missed.
        tasks = [asyncio.create_task(t) for t in (self._debounce(), self._watch())]
        await self.reload("start")
        if self.state.served_revision is None and self.state.error and self.last_good is not None:
            await self._serve_last_good()
        if self.state.unknown_cluster and self.state.served_revision is None:
            # Most likely a typo in --cluster: say so now rather than serve nothing forever.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.ads.stop(0)
            http.stop()
            raise SourceError(self.state.unknown_cluster)
        election = asyncio.create_task(self._elect(elector, o.lease)) if elector else None
        if o.ca is not None:
            tasks.append(asyncio.create_task(self._whenever_due(self._ca_due, o.ca.interval,
                                                                lambda: self._reconcile_ca(o.ca))))
        if o.dns is not None:
            tasks.append(asyncio.create_task(self._whenever_due(self._dns_due, o.dns.interval,
                                                                lambda: self._reconcile_dns(o.dns))))
        if o.poll:
            tasks.append(asyncio.create_task(self._poll()))
        try:
            await self._stop.wait()
        finally:
            if election is not None:  # it releases the lease on stop, so that another replica leads at once
                await asyncio.wait({election}, timeout=5)
            for task in tasks + ([election] if election else []):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.ads.stop(o.grace)
            http.stop()
            log.info("stopped")
        return 0
