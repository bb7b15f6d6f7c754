"""One cluster's DNS reconcile: read its CoreDNS ConfigMap, put the cross-cluster names in the
marked ``global:53`` block, and replace the ConfigMap only when the Corefile changes.

The names' VIPs come from ``assign(current)``, given the entries the cluster's block holds now,
so a name keeps the address the cluster already answers (compiler/vips.py). When the write meets a
ConfigMap changed since the read (a 409 from the API, or the file edited meanwhile), everything
is done again on the new one: another manager's edit outside the markers is kept, never undone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from compiler.vips import Assignment
from reconciler.kube.conflict import CONFLICT_ATTEMPTS, CONFLICT_BACKOFF, ConflictError

from .corefile import CorefileError, apply_block, has_plugin, hosts_entries, remove_block
from .render import DEFAULT_TTL, render
from .configmap import CONFIGMAP, KEY, NAME, NAMESPACE, DNSError
from .targets import Target

CREATE, UPDATE, NONE = "create", "update", "none"
MANAGED_BLOCK_ANNOTATION = "galleon.io/managed-block"
MANAGED_BY, GALLEON = "app.kubernetes.io/managed-by", "galleon"

# What --create writes when a cluster has no CoreDNS ConfigMap: kubeadm's default server block, so
# the cluster's own names keep resolving; a Corefile of our block alone would answer nothing else.
MINIMAL_COREFILE = """.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
"""


@dataclass(frozen=True)
class Outcome:
    """What one cluster's reconcile did (or, with dry_run, would do)."""

    cluster: str
    action: str
    entries: dict[str, str]
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)
    unassigned: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "action": self.action, "entries": self.entries, "added": self.added,
                "removed": self.removed, "readdressed": {n: {"from": a, "to": b} for n, (a, b) in self.moved.items()},
                "unassigned": list(self.unassigned), "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        verb = {CREATE: "created", UPDATE: "updated", NONE: "unchanged"}[self.action]
        counts = f"{len(self.entries)} name{'' if len(self.entries) == 1 else 's'}" + "".join(
            f", {len(changed)} {what}" for what, changed in
            (("added", self.added), ("removed", self.removed), ("readdressed", self.moved)) if changed)
        out = [f"{self.cluster}: {CONFIGMAP} {verb} ({counts})"]
        out += [f"  + {name} {address}" for name, address in self.added.items()]
        out += [f"  - {name} {address}" for name, address in self.removed.items()]
        out += [f"  ~ {name} {old} → {new}" for name, (old, new) in self.moved.items()]
        if self.unassigned:
            count = len(self.unassigned)
            out.append(f"  ! no VIP left in vipCidr for {count} name{'' if count == 1 else 's'} "
                       f"({', '.join(self.unassigned[:5])}"
                       f"{', ...' if len(self.unassigned) > 5 else ''}): widen MeshConfig spec.vipCidr")
        out += [f"  ! {warning}" for warning in self.warnings]
        return out


_UNREAD = object()


def reconcile(target: Target, cluster: str, assign: Callable[[dict[str, str]], Assignment], *,
              suffix: str = "global", ttl: int = DEFAULT_TTL, create: bool = False, dry_run: bool = False,
              read: dict | None | object = _UNREAD) -> Outcome:
    """Bring ``cluster``'s Corefile block to ``assign(the entries it holds now)``. ``read``: the
    ConfigMap (or None) as the caller just read it from ``target``, so the first attempt need not
    read it again; a conflict reads anew."""
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:
            time.sleep(CONFLICT_BACKOFF * 2 ** (attempt - 1))
        configmap = target.read(cluster) if attempt or read is _UNREAD else read
        corefile = _corefile(cluster, configmap) if configmap is not None else None
        current = _entries(cluster, corefile, suffix) if corefile is not None else {}
        assignment = assign(current)
        entries = assignment.addresses
        block = render(entries, "corefile-block", suffix=suffix, ttl=ttl)
        if configmap is None and not create:
            raise DNSError(f"cluster {cluster}: there is no ConfigMap {CONFIGMAP} (is CoreDNS installed?); "
                           "galleon dns reconcile --create creates one with a minimal Corefile")
        edited = _edit(cluster, corefile if corefile is not None else MINIMAL_COREFILE, block, suffix,
                       _previous_zone(configmap))
        action = CREATE if configmap is None else UPDATE if edited != corefile else NONE
        outcome = _outcome(cluster, action, current, entries, assignment.unassigned, edited)
        if action == NONE or dry_run:
            return outcome
        try:
            target.write(cluster, _configmap(configmap, edited, suffix))
            return outcome
        except ConflictError as exc:
            last = exc
    raise DNSError(f"{cluster}: {CONFIGMAP} kept changing while it was written ({CONFLICT_ATTEMPTS} attempts), "
                   f"last: {last}")


def read_entries(target: Target, cluster: str, suffix: str = "global") -> dict[str, str]:
    """The names and VIPs ``cluster``'s managed block holds now ({} without a ConfigMap or block)."""
    return _held(cluster, target.read(cluster), suffix)


def _held(cluster: str, configmap: dict | None, suffix: str) -> dict[str, str]:
    return _entries(cluster, _corefile(cluster, configmap), suffix) if configmap is not None else {}


def _corefile(cluster: str, configmap: dict) -> str:
    corefile = (configmap.get("data") or {}).get(KEY)
    if not isinstance(corefile, str):
        raise DNSError(f"cluster {cluster}: ConfigMap {CONFIGMAP} has no {KEY} key; is it CoreDNS's?")
    return corefile


def _entries(cluster: str, corefile: str, suffix: str) -> dict[str, str]:
    try:
        return hosts_entries(corefile, suffix)
    except CorefileError as exc:
        raise DNSError(f"cluster {cluster}: {CONFIGMAP}: {exc}") from None


def _previous_zone(configmap: dict | None) -> str | None:
    """The zone of the block Galleon wrote last (its annotation says), when the suffix may have changed."""
    annotation = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    zone, _, port = str(annotation.get(MANAGED_BLOCK_ANNOTATION, "")).rpartition(":")
    return zone if zone and port == "53" else None


def _edit(cluster: str, corefile: str, block: str, suffix: str, previous_zone: str | None = None) -> str:
    """``corefile`` with our block for ``suffix``; the block of a previous suffix (MeshConfig dnsSuffix
    changed) is removed, so the old names stop resolving instead of lingering unmanaged."""
    try:
        if previous_zone is not None and previous_zone != suffix:
            corefile = remove_block(corefile, previous_zone)
        return apply_block(corefile, block, suffix)
    except CorefileError as exc:
        raise DNSError(f"cluster {cluster}: {CONFIGMAP}: {exc}") from None


def _outcome(cluster: str, action: str, current: dict[str, str], entries: dict[str, str],
             unassigned: tuple[str, ...], corefile: str) -> Outcome:
    added = {n: a for n, a in entries.items() if n not in current}
    removed = {n: a for n, a in current.items() if n not in entries}
    moved = {n: (current[n], a) for n, a in entries.items() if n in current and current[n] != a}
    warnings = ()
    if not has_plugin(corefile, "reload"):
        warnings = ("the Corefile has no reload plugin: CoreDNS reads the change only when restarted",)
    return Outcome(cluster, action, entries, added, removed, moved, unassigned, warnings)


def _configmap(read: dict | None, corefile: str, suffix: str) -> dict:
    """The ConfigMap to write: the one read with only its Corefile changed (and our annotation), so
    labels, other keys and the resourceVersion it was read at go back as they were."""
    if read is None:
        read = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {MANAGED_BY: GALLEON}}, "data": {}}
    metadata = {"name": NAME, "namespace": NAMESPACE, **(read.get("metadata") or {})}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), MANAGED_BLOCK_ANNOTATION: f"{suffix}:53"}
    return {**read, "metadata": metadata, "data": {**read.get("data", {}), KEY: corefile}}


def reconcile_clusters(target: Target, assignment: Assignment, cidr: str, clusters: list[str], every: list[str], *,
                       suffix: str = "global", ttl: int = DEFAULT_TTL, create: bool = False,
                       dry_run: bool = False) -> Iterator[tuple[str, Outcome | DNSError]]:
    """Reconcile ``clusters`` (each of ``every`` cluster of the mesh is read first), one at a time.

    A cluster keeps what its block holds; a name new to it takes the address other clusters
    already answer for it, else a fresh one that no cluster holds under any name. Each outcome
    feeds the next cluster's decision, so one run gives every cluster the same addresses.
    """
    configmaps: dict[str, dict | None] = {}
    blocks: dict[str, dict[str, str]] = {}
    unreadable: dict[str, DNSError] = {}
    for cluster in every:
        try:
            configmaps[cluster] = target.read(cluster)
            blocks[cluster] = _held(cluster, configmaps[cluster], suffix)
        except DNSError as exc:
            unreadable[cluster] = exc
    for cluster in clusters:
        if cluster in unreadable:
            yield cluster, unreadable[cluster]
            continue
        others = [blocks[c] for c in sorted(blocks) if c != cluster]
        prefer: dict[str, str] = {}
        for entries in others:
            for name, address in entries.items():
                prefer.setdefault(name, address)
        held = {address for entries in others for address in entries.values()}

        def assign(current: dict[str, str]) -> Assignment:
            return assignment.again(cidr, keep=current, prefer=prefer, held=held)

        try:
            outcome = reconcile(target, cluster, assign, suffix=suffix, ttl=ttl, create=create, dry_run=dry_run,
                                read=configmaps.get(cluster, _UNREAD))
        except DNSError as exc:
            yield cluster, exc
            continue
        blocks[cluster] = outcome.entries
        if unreadable:
            outcome = replace(outcome, warnings=outcome.warnings + (
                f"could not read {', '.join(sorted(unreadable))}: an address held there only may be given again",))
        yield cluster, outcome
