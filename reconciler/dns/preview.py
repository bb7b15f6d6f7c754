"""The DNS section of `galleon diff`: the cross-cluster names and VIPs each cluster's CoreDNS would
gain, lose or see readdressed.

HEAD's VIPs are allocated keeping BASE's (compiler/revision.load), as the reconciler keeps
what a cluster answers, so only real changes show: a new or removed name, a name given its own
address, or a vipCidr that no longer holds an old VIP. Clusters with the same changes share a row.
"""
from __future__ import annotations

from compiler.diff import PlanChange, PlanSection
from compiler.revision import Revision

TITLE = "DNS: .global names and VIPs in CoreDNS"


def dns_plan(base: Revision, head: Revision, clusters: list[str]) -> PlanSection:
    by_changes: dict[tuple, list[str]] = {}
    for cluster in clusters:
        by_changes.setdefault(_changes(base, head, cluster), []).append(cluster)
    rows = []
    for changes, named in by_changes.items():
        rows += [PlanChange(", ".join(named), action, subject, detail) for action, subject, detail in changes]
    return PlanSection(TITLE, tuple(rows))


def _vips(revision: Revision, cluster: str) -> dict[str, str] | None:
    mesh = revision.mesh
    return None if mesh is None or cluster not in mesh.clusters else mesh.vips.addresses


def _changes(base: Revision, head: Revision, cluster: str) -> tuple[tuple[str, str, str], ...]:
    before, after = _vips(base, cluster) or {}, _vips(head, cluster)
    if after is None:
        return (("leave", "global:53 block", "the cluster is no longer in the mesh: its CoreDNS is left as it is"),
                ) if before else ()
    changes = [("add", f"{name} → {address}", "new cross-cluster name")
               for name, address in after.items() if name not in before]
    changes += [("remove", f"{name} ({address})", "no ServiceEntry declares it any more")
                for name, address in before.items() if name not in after]
    explicit = head.mesh.vips.explicit
    changes += [("readdress", f"{name}: {before[name]} → {address}",
                 "its ServiceEntry's own address" if name in explicit else "its VIP is outside vipCidr now")
                for name, address in after.items() if name in before and before[name] != address]
    changes += [("none", name, "no address left in vipCidr: not answered; widen MeshConfig spec.vipCidr")
                for name in head.mesh.vips.unassigned]
    return tuple(sorted(changes, key=lambda change: (change[1], change[0])))
