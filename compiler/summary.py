"""A human overview of a valid mesh: clusters, networks, services and where they run."""
from __future__ import annotations

from collections import Counter, defaultdict

from .hosts import fqdn
from .parse import SourceObject
from .validate.index import CLUSTER_LABEL


def _endpoints(se: SourceObject, workload_entries: list[SourceObject]) -> list[dict]:
    if "workloadSelector" in se.spec:
        selector = se.spec["workloadSelector"].get("labels", {}).items()
        return [we.spec for we in workload_entries
                if we.namespace == se.namespace and selector <= we.spec.get("labels", {}).items()]
    return se.spec.get("endpoints", [])


def summarize(objects: list[SourceObject]) -> str:
    by_kind = defaultdict(list)
    for obj in objects:
        by_kind[obj.kind].append(obj)
    lines = [f"Mesh of {len(objects)} objects: "
             + ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(o.kind for o in objects).items()))]
    gateways = {name: spec.get("gateways", []) for mn in by_kind["MeshNetworks"]
                for name, spec in mn.spec["networks"].items()}
    lines.append("Clusters:")
    for cluster in sorted(by_kind["Cluster"], key=lambda c: c.name):
        lines.append(f"  {cluster.name:<20} network {cluster.spec['network']:<12} "
                     f"locality {cluster.spec['locality']}")
    lines.append("Networks:")
    for name, gws in sorted(gateways.items()):
        shown = ", ".join(f"{g.get('address') or g.get('registryServiceName')}:{g['port']}" for g in gws) or "none"
        lines.append(f"  {name:<20} east-west gateways {shown}")
    lines.append("Services (endpoints per cluster):")
    for se in sorted(by_kind["ServiceEntry"], key=lambda s: (s.namespace, s.name)):
        per_cluster = Counter((ep.get("labels") or {}).get(CLUSTER_LABEL, "?")
                              for ep in _endpoints(se, by_kind["WorkloadEntry"]))
        ports = ",".join(f"{p['number']}/{p.get('protocol', 'TCP')}" for p in se.spec.get("ports", []))
        where = " ".join(f"{c}:{n}" for c, n in sorted(per_cluster.items())) or se.spec.get("resolution", "NONE")
        for host in se.spec.get("hosts", []):
            lines.append(f"  {fqdn(host, se.namespace):<45} {ports:<22} {where}")
    return "\n".join(lines)
