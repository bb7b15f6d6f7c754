"""Keep this cluster's own state in line with the served revision, while this replica leads: the CA
reconciler (``istio-system/cacerts``), the DNS reconciler (the ``kube-system/coredns`` block), and
the Lease that elects the one replica that writes (every replica serves ADS).

Each reconciler runs after each new revision and every interval. Threads: the event loop owns
everything here (leadership, the served revision, the targets, the last outcomes); a reconcile runs
on a worker thread with what it needs as arguments and returns its outcome to the loop.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable, Coroutine

import structlog

from compiler.revision import Revision
from compiler.snapshot import short_revision

from .. import ca, dns
from ..metrics import Metrics
from ..sources import SourceError
from ..status import StatusBoard
from .options import CaOptions, DnsOptions, ServeOptions

log = structlog.get_logger("galleon.serve")

# How long the start waits for its cluster's CoreDNS VIPs before serving with the stored ones.
SEED_TIMEOUT = 5.0


class Reconcilers:
    def __init__(self, options: ServeOptions, metrics: Metrics, board: StatusBoard) -> None:
        self.options, self.metrics, self.board = options, metrics, board
        self.leader = options.lease is None
        self.metrics.leader.set(int(self.leader))
        self.served: Revision | None = None  # what the reconcilers make the cluster match
        self.ca_plan: str | None = None  # the last CA reconcile's plan, for /debug/configz
        self.dns_outcome: list[str] | None = None  # the last DNS reconcile's lines, for /debug/configz
        self._ca_due = asyncio.Event()
        self._dns_due = asyncio.Event()
        self._targets: dict[str, ca.Target | dns.Target] = {}  # by reconciler: see _target
        self._elector = None

    async def open_lease(self) -> None:
        """With --leader-elect, the Kubernetes client that holds the Lease. Raises SourceError."""
        lease = self.options.lease
        if lease is None:
            return
        # The Kubernetes client takes a fifth of a second to import: only for --leader-elect.
        from ..kube.client import KubeError, api_client
        from ..kube.lease import LeaderElector
        try:
            api = await asyncio.to_thread(api_client, lease.kubeconfig, lease.context)
        except KubeError as exc:
            raise SourceError(f"--leader-elect: {exc}") from None
        self._elector = LeaderElector(api, lease.namespace, lease.name, lease.identity)

    @property
    def electing(self) -> bool:
        return self._elector is not None

    async def elect(self, stop: asyncio.Event) -> None:
        """Hold the Lease when it is free, until ``stop`` (then release it)."""
        lease = self.options.lease

        def lead(leading: bool) -> None:
            self.leader = leading
            self.metrics.leader.set(int(leading))
            self.board.bump()
            log.info("became the leader" if leading else "no longer the leader",
                     lease=f"{lease.namespace}/{lease.name}", identity=lease.identity)

        await self._elector.run(stop, lambda: lead(True), lambda: lead(False))

    def due(self, revision: Revision) -> None:
        """A new revision is served: each reconciler runs for it (it may carry a new
        CertificateAuthority policy, new VIPs)."""
        self.served = revision
        self._ca_due.set()
        self._dns_due.set()

    def loops(self) -> list[Coroutine]:
        """The loops of the reconcilers asked for, to run as tasks until cancelled."""
        o, loops = self.options, []
        if o.ca is not None:
            loops.append(self._whenever_due(self._ca_due, o.ca.interval, lambda: self._reconcile_ca(o.ca)))
        if o.dns is not None:
            loops.append(self._whenever_due(self._dns_due, o.dns.interval, lambda: self._reconcile_dns(o.dns)))
        return loops

    async def answered_vips(self) -> dict[str, str]:
        """The VIPs this cluster's CoreDNS block answers now ({} without a DNS target, or when it
        cannot be read within SEED_TIMEOUT: an API server that does not answer must not keep proxies
        waiting for xDS)."""
        if self.options.dns is None:
            return {}
        try:
            target = await self._target("dns", self.options.dns)
            return await asyncio.wait_for(asyncio.to_thread(dns.read_entries, target, self.options.cluster),
                                          SEED_TIMEOUT)
        except (dns.DNSError, asyncio.TimeoutError) as exc:
            log.warning("cannot read this cluster's CoreDNS VIPs; keeping the stored ones",
                        error=str(exc) or f"no answer within {SEED_TIMEOUT} s")
            return {}

    async def _whenever_due(self, due: asyncio.Event, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` (a reconcile of this cluster) after each new revision (``due`` is set) and every
        ``interval``, when something is served and this replica leads (only the leader writes)."""
        while True:
            try:
                await asyncio.wait_for(due.wait(), interval)
            except asyncio.TimeoutError:
                pass
            due.clear()
            if self.leader and self.served is not None:
                await step()

    async def _reconcile_ca(self, options: CaOptions) -> None:
        """Keep this cluster's cacerts right."""
        served, cluster = self.served, self.options.cluster
        started = time.perf_counter()
        try:
            policy = await asyncio.to_thread(ca.policy_for, served.objects, cluster)
            if policy is None:
                return  # no CertificateAuthority covers this cluster: its CA is not Galleon's
            decided = await asyncio.to_thread(_ca_once, await self._target("ca", options), options.root, cluster,
                                              policy)
        except ca.CAError as exc:
            self.metrics.ca_reconciles.labels("failed").inc()
            log.error("CA reconcile failed", error=str(exc))
            return
        self.ca_plan = decided.describe()
        self.metrics.ca_reconciles.labels(decided.action).inc()
        log.info("CA reconciled", action=decided.action, reasons=list(decided.reasons),
                 revision=short_revision(self.served.mesh.revision), seconds=round(time.perf_counter() - started, 3))

    async def _reconcile_dns(self, options: DnsOptions) -> None:
        """Keep this cluster's CoreDNS answering the served VIPs."""
        mesh = self.served.mesh
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(
                dns.reconcile, await self._target("dns", options), self.options.cluster,
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

    async def _target(self, reconciler: str, options: CaOptions | DnsOptions):
        """One target per reconciler for the daemon's life: a kube one holds its API client, which
        would otherwise read the kubeconfig and connect again on every run. Made on a worker thread."""
        found = self._targets.get(reconciler)
        if found is None:
            found = self._targets[reconciler] = await asyncio.to_thread(options.target_of, self.options.cluster)
        return found


def _ca_once(target: ca.Target, root: Path, cluster: str, policy: ca.Policy):
    """On a worker thread: issue or renew this cluster's intermediate as ``policy`` says."""
    return ca.reconcile(target, ca.load_root(root), cluster, policy, datetime.now(timezone.utc))
