"""A human overview of a valid mesh: clusters, networks, services and where they run."""
from __future__ import annotations

from collections import Counter

from .model import Mesh
from .parse import SourceObject


def summarize(objects: list[SourceObject], mesh: Mesh) -> str:
    kinds = Counter(o.shown_kind for o in objects)
    lines = [f"Mesh of {len(objects)} objects: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))]
    lines.append("Clusters:")
    for cluster in sorted(mesh.clusters.values(), key=lambda c: c.name):
        lines.append(f"  {cluster.name:<20} network {cluster.network or '(none)':<12} locality {cluster.locality}")
    lines.append("Networks:")
    for network in sorted(mesh.networks.values(), key=lambda n: n.name):
        shown = ", ".join(f"{g.address}:{g.port}" for g in network.gateways) or "none"
        lines.append(f"  {network.name:<20} east-west gateways {shown}")
    lines.append("Services (endpoints per cluster):")
    for host, service in sorted(mesh.services.items()):
        per_cluster = Counter(ep.cluster or "?" for ep in service.endpoints)
        ports = ",".join(f"{p.number}/{p.protocol}" for p in service.ports)
        where = " ".join(f"{c}:{n}" for c, n in sorted(per_cluster.items())) or service.resolution
        lines.append(f"  {host:<45} {ports:<22} {where}")
    if mesh.vips.addresses or mesh.vips.unassigned:
        lines.append(f"Cross-cluster names (.{mesh.settings.dns_suffix}, VIPs as a fresh mesh gets them):")
        for name, address in mesh.vips.addresses.items():
            own = " (its own address)" if name in mesh.vips.explicit else ""
            lines.append(f"  {name:<45} {address}{own}")
        lines += [f"  {name:<45} none: vipCidr {mesh.settings.vip_cidr} is full" for name in mesh.vips.unassigned]
    return "\n".join(lines)
