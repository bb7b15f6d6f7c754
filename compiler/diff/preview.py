"""A pull-request preview: everything a change does, from two revisions' snapshots.

Pure: the reconciler reads the snapshots and renders the result (markdown or JSON). Each
proxy view is compiled at BASE and then at HEAD incrementally from BASE's (xds.compile_view's
``previous``), so the resources of services the change does not touch are taken back, and
every resource compares by its version before any is parsed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ..findings import Finding, counts
from ..fingerprints import changes
from ..gateways import destination_hosts
from ..hosts import fqdn, matches
from ..kinds import CLUSTER_LABEL
from ..kube import slice_addresses
from ..model import Mesh
from ..names import parse_eds_name
from ..parse import SourceObject, stopped_files
from ..revision import Revision
from ..view import SIDECAR, ProxyView
from ..xds import CompiledView, compile_view
from ..xds_types import ROUTE
from .objects import ACTIONS, MOVED, ObjectDiff, diff_objects
from .resources import ResourceChange, diff_views
from .traffic import NO_ENDPOINT, Destination, service_shares
from .views import DEFAULT_NAMESPACE, ViewSpec, caller_localities, proxy_specs


class Uncompilable(Exception):
    """A revision with errors that the compiler cannot make sense of (only ever for previews)."""


def _compile(revision: Revision, view: ProxyView, previous: CompiledView | None = None,
             only: frozenset[str] | None = None) -> CompiledView:
    try:
        return compile_view(revision.mesh, view, previous, only)
    except Exception as exc:  # noqa: BLE001 - as in load_revision
        if revision.valid:
            raise
        raise Uncompilable(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class ViewDiff:
    spec: ViewSpec
    changes: tuple[ResourceChange, ...]

    def counts(self) -> Counter:
        return Counter(c.action for c in self.changes)

    def to_dict(self) -> dict:
        return {"proxy": self.spec.label, "role": self.spec.role, "namespace": self.spec.namespace,
                "labels": dict(self.spec.labels), "changes": [c.to_dict() for c in self.changes]}


@dataclass(frozen=True)
class TrafficRow:
    """Percentages of requests to one destination; None where the destination gets none."""

    destination: Destination
    before: float | None
    after: float | None
    failover_before: float | None
    failover_after: float | None

    def to_dict(self) -> dict:
        return {"destination": self.destination.text(), "subset": self.destination.subset,
                "place": self.destination.place, "locality": self.destination.locality,
                "down": self.destination.down,
                "before": self.before, "after": self.after,
                "failover_before": self.failover_before, "failover_after": self.failover_after,
                "delta": round(abs((self.after or 0) - (self.before or 0)), 1)}


@dataclass(frozen=True)
class TrafficChange:
    """Requests from sidecars in ``cluster`` at ``locality`` to ``service`` (``host:port``)."""

    cluster: str
    locality: str
    service: str
    rows: tuple[TrafficRow, ...]

    @property
    def shift(self) -> float:
        """The largest change in any destination's share, in percentage points."""
        return max((abs((r.after or 0) - (r.before or 0)) for r in self.rows), default=0.0)

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "locality": self.locality, "service": self.service,
                "shift": self.shift, "rows": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True)
class ClusterDiff:
    name: str
    views: tuple[ViewDiff, ...]
    traffic: tuple[TrafficChange, ...]
    present: tuple[bool, bool] = (True, True)  # whether BASE and HEAD have this cluster
    notes: tuple[str, ...] = ()

    @property
    def touched(self) -> bool:
        return any(v.changes for v in self.views) or bool(self.traffic) or bool(self.notes)

    def counts(self) -> Counter:
        return sum((v.counts() for v in self.views), Counter())

    def to_dict(self) -> dict:
        return {"name": self.name, "at_base": self.present[0], "at_head": self.present[1], "touched": self.touched,
                "counts": dict(sorted(self.counts().items())),
                "proxies": [v.to_dict() for v in self.views if v.changes],
                "traffic": [t.to_dict() for t in self.traffic], "notes": list(self.notes)}


@dataclass(frozen=True)
class PlanChange:
    """One thing a cluster reconciler (CA, DNS) would do, described without secrets."""

    cluster: str
    action: str
    subject: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "action": self.action, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True)
class PlanSection:
    """What one reconciler would change if HEAD were applied (see reconciler/preview.py PLANNERS)."""

    title: str
    changes: tuple[PlanChange, ...]

    def to_dict(self) -> dict:
        return {"title": self.title, "changes": [c.to_dict() for c in self.changes]}


@dataclass
class Preview:
    base: Revision
    head: Revision
    objects: ObjectDiff
    new_findings: list[Finding]
    old_findings: list[Finding]
    clusters: list[ClusterDiff]
    plans: list[PlanSection] = field(default_factory=list)
    # Said with the endpoints: the registries' clusters that cannot be read now, with their last error
    # (their endpoints are those last listed); or why a daemon's live endpoints were not used.
    stale: dict[str, str] = field(default_factory=dict)
    not_live: str | None = None

    @property
    def envoy_compared(self) -> bool:
        return self.base.mesh is not None and self.head.mesh is not None

    @property
    def has_changes(self) -> bool:
        """Whether the configuration changes (an object only moved to another file does not)."""
        moved_only = all(c.action == MOVED for c in self.objects.changes)
        return not moved_only or any(c.touched for c in self.clusters) or any(p.changes for p in self.plans)

    def biggest_shifts(self, limit: int = 5) -> list[TrafficChange]:
        moves = [t for c in self.clusters for t in c.traffic if t.shift > 0]
        return sorted(moves, key=lambda t: (-t.shift, t.cluster, t.locality, t.service))[:limit]

    def without_endpoints(self) -> list[str]:
        """The services whose traffic moved and of which some share goes to no endpoint at all."""
        return sorted({t.service for c in self.clusters for t in c.traffic
                       if any(r.destination.place == NO_ENDPOINT for r in t.rows)})

    def to_dict(self) -> dict:
        return {
            "base": _revision_dict(self.base), "head": _revision_dict(self.head),
            "has_changes": self.has_changes, "envoy_compared": self.envoy_compared,
            "without_endpoints": self.without_endpoints(),
            "objects": {"counts": {a: self.objects.count(a) for a in ACTIONS},
                        "changes": [c.to_dict() for c in self.objects.changes]},
            "findings": {"new": [_finding_dict(f) for f in self.new_findings],
                         "existing": [_finding_dict(f) for f in self.old_findings]},
            "clusters": [c.to_dict() for c in self.clusters],
            "biggest_shifts": [t.to_dict() for t in self.biggest_shifts()],
            "plans": [p.to_dict() for p in self.plans],
            "live": self.live(),
        }

    def live(self) -> dict | None:
        """What the live registries read, when the endpoints compared are theirs (the daemon's Preview):
        the clusters with endpoints, the endpoints their slices list, those stale; or, with ``not_live``,
        why they are not."""
        if self.not_live is not None:
            return {"not_live": self.not_live}
        objects = self.head.live or self.base.live
        if not objects:
            return None
        listed = [(obj.labels.get(CLUSTER_LABEL, ""), slice_addresses(obj.body)[0])
                  for obj in objects if obj.kind == "EndpointSlice"]
        clusters = sorted({cluster for cluster, count in listed if count} - {""})
        return {"clusters": clusters, "endpoints": sum(count for _, count in listed), "objects": len(objects),
                "stale": dict(sorted(self.stale.items()))}


def _finding_dict(finding: Finding) -> dict:
    return {**finding.to_dict(), "text": finding.text()}


def _revision_dict(revision: Revision) -> dict:
    found = counts(revision.findings)
    return {"revision": revision.snapshot.revision, "valid": revision.valid, "objects": len(revision.parsed.objects),
            "errors": found["error"], "warnings": found["warning"], "infos": found["info"]}


def split_findings(base: list[Finding], head: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """HEAD's findings as (new, already at BASE). Lines move with unrelated edits, so a finding is
    the same one when its code, level, object and message are."""
    def same(f: Finding) -> tuple:
        return (f.code, f.level, f.kind, f.namespace, f.name, f.message)

    known = Counter(same(f) for f in base)
    new, old = [], []
    for finding in head:
        if known[same(finding)] > 0:
            known[same(finding)] -= 1
            old.append(finding)
        else:
            new.append(finding)
    return new, old


def affected_hosts(base: Mesh, head: Mesh) -> frozenset[str] | None:
    """The hosts whose configuration may differ between two meshes, plus the hosts their routes send
    to (their traffic shares need those); None when a mesh-wide object changed (then any may).

    A host may differ when an object feeding it is new, edited or gone (fingerprints.changes, both
    ways), or when its VirtualService sends traffic to such a host (a virtual host names the
    subsets and ports of its destinations).
    """
    if base.digest != head.digest:
        return None
    hosts = set(changes(head, base.per_service_objects).hosts | changes(base, head.per_service_objects).hosts)
    # A VirtualService shared by both revisions (parse's ``previous``) is read once, unless a wildcard
    # of its hosts covers services that differ between the meshes.
    by_object: dict[int, tuple[set[str], list[str]]] = {}
    for mesh in (base, head):
        for vs in mesh.virtual_services:
            known = by_object.get(id(vs))
            if known is None or any("*" in h for h in vs.spec.get("hosts", [])):
                services = _services_of(mesh, vs) | (known[0] if known else set())
                by_object[id(vs)] = (services, destination_hosts(vs))
    routing = list(by_object.values())
    for services, destinations in routing:
        if hosts.intersection(destinations):
            hosts.update(services)
    return frozenset(hosts.union(*(destinations for services, destinations in routing
                                   if hosts.intersection(services))))


def _services_of(mesh: Mesh, vs: SourceObject) -> set[str]:
    """The hosts a VirtualService names, and the mesh's services its wildcards cover."""
    patterns = {fqdn(h, vs.namespace) for h in vs.spec.get("hosts", [])}
    found = {p for p in patterns if "*" not in p}
    wildcards = patterns - found
    if wildcards:
        found.update(h for h in mesh.services for p in wildcards if matches(p, h))
    return found


def build_preview(base: Revision, head: Revision, clusters: list[str] | None = None,
                  plans: list[PlanSection] | None = None,
                  progress: Callable[[str], None] | None = None, narrow: bool = True) -> Preview:
    """The preview of going from ``base`` to ``head``; ``clusters`` limits the Envoy part to those.
    ``narrow``: compile only the services the change may touch (affected_hosts); False compiles
    every service, for the same result."""
    new, old = split_findings(base.findings, head.findings)
    unreadable = stopped_files(head.findings)
    preview = Preview(base, head, diff_objects(base.parsed.objects, head.parsed.objects, unreadable), new, old, [],
                      plans or [])
    if not preview.envoy_compared:
        return preview
    names = clusters if clusters is not None else sorted(base.mesh.clusters.keys() | head.mesh.clusters.keys())
    context = _Context(base, head, affected_hosts(base.mesh, head.mesh) if narrow else None)
    for name in names:
        if progress:
            progress(f"comparing the proxies of cluster {name}")
        preview.clusters.append(context.cluster_diff(name))
    return preview


class _Context:
    """What every cluster's comparison shares: the two revisions and the names of addresses."""

    def __init__(self, base: Revision, head: Revision, only: frozenset[str] | None):
        self.base, self.head, self.only = base, head, only
        self.specs = proxy_specs(base.mesh, head.mesh)
        self.places: dict[str, str] = {}  # an address's cluster, network or gateway, for traffic shares
        self.gateways: dict[str, str] = {}
        for mesh in (head.mesh, base.mesh):
            for network in mesh.networks.values():
                for gateway in network.gateways:
                    self.gateways.setdefault(gateway.address, network.name)
                    self.places.setdefault(gateway.address, f"{network.name} gateway")
            hosts = mesh.services.keys() if only is None else only & mesh.services.keys()
            for service in map(mesh.services.get, sorted(hosts)):
                for ep in service.endpoints:
                    self.places.setdefault(ep.address, ep.cluster or (ep.network and f"network {ep.network}")
                                           or "outside the mesh")

    def compile_pair(self, spec: ViewSpec, cluster: str) -> tuple[CompiledView | None, CompiledView | None]:
        """The proxy's configuration at BASE and HEAD (None where the revision has no such proxy)."""
        before_view, after_view = spec.view(self.base.mesh, cluster), spec.view(self.head.mesh, cluster)
        if self.only is not None:
            return (_compile(self.base, before_view, only=self.only) if before_view else None,
                    _compile(self.head, after_view, only=self.only) if after_view else None)
        before = _compile(self.base, before_view) if before_view else None
        after = _compile(self.head, after_view, previous=before) if after_view else None
        return before, after

    def cluster_diff(self, cluster: str) -> ClusterDiff:
        views, traffic, notes = [], [], []
        for spec in self.specs:
            try:
                before, after = self.compile_pair(spec, cluster)
                changes = diff_views(before, after, self.gateways)
                views.append(ViewDiff(spec, tuple(changes)))
                if spec == ViewSpec(SIDECAR, DEFAULT_NAMESPACE) and changes and before and after:
                    traffic += self.traffic(cluster, (before, after), _services_touched(changes, before, after))
            except Uncompilable as exc:
                notes.append(f"{spec.label}: not compared, a revision with errors does not compile ({exc})")
        present = (cluster in self.base.mesh.clusters, cluster in self.head.mesh.clusters)
        return ClusterDiff(cluster, tuple(views), tuple(traffic), present, tuple(notes))

    def traffic(self, cluster: str, home: tuple[CompiledView, CompiledView],
                services: list[tuple[str, int]]) -> list[TrafficChange]:
        if not services:
            return []
        changes = []
        for i, locality in enumerate(caller_localities(cluster, self.base.mesh, self.head.mesh)):
            before, after = home if i == 0 else self.compile_pair(ViewSpec(SIDECAR, DEFAULT_NAMESPACE,
                                                                             locality=locality), cluster)
            for host, port in services:
                rows = _rows(before, after, host, port, locality, self.places)
                if rows:
                    changes.append(TrafficChange(cluster, locality, f"{host}:{port}", rows))
        return changes


def _services_touched(changes: list[ResourceChange], before: CompiledView, after: CompiledView) -> list[tuple[str, int]]:
    """The (host, port) whose routing or endpoints a view's changes may move."""
    touched = set()
    for change in changes:
        if change.kind in ("cluster", "endpoints") and change.name.startswith("outbound"):
            port, _, host = parse_eds_name(change.name)
            touched.add((host, port))
        elif change.kind == "route":
            names = {f.path[1][1:] for f in change.fields if len(f.path) > 1 and f.path[0] == "virtual_hosts"}
            for config in (before.message(ROUTE, change.name), after.message(ROUTE, change.name)):
                for vhost in config.virtual_hosts if config else ():
                    if change.action != "changed" or vhost.name in names:
                        host, _, port = vhost.name.rpartition(":")
                        touched.add((host, int(port)))
    return sorted(touched)


def _percent(shares: dict | None, destination: Destination) -> float | None:
    share = (shares or {}).get(destination)
    return round(share * 100, 1) if share else None


def _rows(before: CompiledView, after: CompiledView, host: str, port: int, locality: str,
          places: dict[str, str]) -> tuple[TrafficRow, ...]:
    """The destinations of requests to host:port before and after, when anything moved."""
    normal = (service_shares(before, host, port, None, places), service_shares(after, host, port, None, places))
    failover = (service_shares(before, host, port, locality, places),
                service_shares(after, host, port, locality, places))
    destinations = sorted(set().union(*(s or {} for s in normal + failover)))
    rows = tuple(TrafficRow(d, _percent(normal[0], d), _percent(normal[1], d),
                            _percent(failover[0], d), _percent(failover[1], d)) for d in destinations)
    moved = any(r.before != r.after or r.failover_before != r.failover_after for r in rows)
    return rows if moved else ()
