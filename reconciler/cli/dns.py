"""galleon dns: the cross-cluster names (NAME.NAMESPACE.global) and their VIPs, written into each
cluster's CoreDNS Corefile (reconcile) or printed for other DNS servers (render)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from .. import defaults
from .common import EXIT_INVALID, EXIT_OK, UsageError, check_clusters, clusters_revision, valid_revision, warn
from .options import add_clusters, add_kubeconfig, add_source

if TYPE_CHECKING:
    from compiler.model import Mesh


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser("dns", help="cross-cluster names (NAME.NAMESPACE.global) and their VIPs in CoreDNS",
                            description="Every ServiceEntry host under MeshConfig spec.dnsSuffix (default global) "
                                        "gets a VIP: its own addresses, else one from spec.vipCidr (default "
                                        "240.0.0.0/16) that it keeps once given. CoreDNS answers the names from a "
                                        "marked global:53 server block Galleon keeps in kube-system/coredns.")
    dns_commands = p.add_subparsers(dest="dns_command", metavar="COMMAND", required=True)
    q = dns_commands.add_parser(
        "reconcile", help="write the names and VIPs into each cluster's CoreDNS Corefile",
        description="For each cluster, read kube-system/coredns from TARGET, insert or replace the marked global:53 "
                    "block (a hosts plugin with every name, sorted) and write the ConfigMap back only when the "
                    "Corefile changed; every byte outside the markers is kept. A name keeps the VIP the cluster "
                    "answers now; a new name takes the one other clusters answer, else a free one no cluster "
                    "holds. Refused (exit 1): a Corefile that does not parse, has no braces, or already serves "
                    "global:53 outside the markers. Exits 0, 1 when the revision has errors or a cluster failed, "
                    "2 on bad input.")
    add_source(q)
    q.add_argument("--target", required=True, metavar="TARGET",
                   help="kube: kube-system/coredns through the Kubernetes API, in each Cluster's spec.kubeContext "
                        "(replaced with its resourceVersion; conflicts re-read and re-edited, 5xx retried); or "
                        "dir:PATH: ConfigMap manifests at PATH/CLUSTER/kube-system/ConfigMap/coredns.yaml")
    add_clusters(q)
    q.add_argument("--ttl", type=int, default=defaults.DNS_TTL, metavar="SECONDS",
                   help=f"the answers' TTL, 1-65535 (default: {defaults.DNS_TTL})")
    q.add_argument("--create", action="store_true",
                   help="create a missing kube-system/coredns with a minimal Corefile (kubeadm's default server "
                        "block plus ours); without it a missing ConfigMap is an error")
    q.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    q.add_argument("--format", choices=("text", "json"), default="text",
                   help="text, a paragraph per cluster as it is done (default), or JSON for bots: per cluster its "
                        "action, every entry, the names added, removed and readdressed, or its error")
    q.set_defaults(subcommand=reconcile)
    q = dns_commands.add_parser(
        "render", help="print the names and VIPs as a hosts file, a zone file or the Corefile block",
        description="Print the revision's cross-cluster names and VIPs for other DNS servers: hosts (dnsmasq "
                    "--addn-hosts, CoreDNS hosts FILE), zone (an RFC 1035 zone file for Knot, NSD, BIND, CoreDNS "
                    "file) or corefile-block (the server block galleon dns reconcile writes, without markers). "
                    "The VIPs are those a fresh mesh gets; with --target and --cluster, those that cluster "
                    "answers (what galleon dns reconcile would write).")
    add_source(q)
    q.add_argument("--format", choices=defaults.DNS_FORMATS, default="hosts", help="the output format (default: hosts)")
    q.add_argument("--ttl", type=int, default=defaults.DNS_TTL, metavar="SECONDS",
                   help=f"the records' TTL, 1-65535 (default: {defaults.DNS_TTL})")
    q.add_argument("--serial", type=int, default=None, metavar="N",
                   help="the zone's SOA serial (default: derived from the entries; give an increasing one for "
                        "secondaries that transfer the zone)")
    q.add_argument("--ns-address", default=defaults.DNS_NS_ADDRESS, metavar="IP",
                   help=f"the address of the zone's name server record (default: {defaults.DNS_NS_ADDRESS})")
    q.add_argument("--target", default=None, metavar="TARGET", help="kube or dir:PATH, as for galleon dns reconcile")
    q.add_argument("--cluster", default=None, metavar="NAME", help="the cluster whose addresses to render")
    add_kubeconfig(q, "kubeconfig for --target kube")
    q.set_defaults(subcommand=render, create=False)
    return p


def run(args) -> int:
    return args.subcommand(args)


def _outcomes(args, mesh: Mesh, clusters: list[str], dry_run: bool):
    """(cluster, Outcome or DNSError) for ``clusters``, each read from and (unless dry_run) written to --target."""
    from .. import dns
    contexts = {name: cluster.kube_context for name, cluster in mesh.clusters.items()}
    check_clusters(clusters, contexts)
    if not 1 <= args.ttl <= 65535:
        raise UsageError(f"--ttl {args.ttl}: the answers' TTL is 1-65535 seconds")
    target = dns.target_from(args.target, contexts=contexts, kubeconfig=args.kubeconfig)
    return dns.reconcile_clusters(target, mesh.vips, mesh.settings.vip_cidr, sorted(set(clusters)) or sorted(contexts),
                                  sorted(contexts), suffix=mesh.settings.dns_suffix, ttl=args.ttl,
                                  create=args.create, dry_run=dry_run)


def reconcile(args) -> int:

    from .. import dns
    result = clusters_revision(args, "no DNS entry written")
    if result is None:
        return EXIT_INVALID
    failed = False
    report = []
    mesh = result.mesh
    for cluster, outcome in _outcomes(args, mesh, args.cluster, args.dry_run):
        if isinstance(outcome, dns.DNSError):
            report.append({"cluster": cluster, "error": str(outcome)})
            failed = True
            if args.format == "text":
                print(f"error: {outcome}")
            continue
        failed |= bool(outcome.unassigned)
        report.append(outcome.to_dict())
        if args.format == "text":
            lines = outcome.lines()
            if args.dry_run and outcome.action != dns.NONE:
                lines[0] += " [dry run: nothing written]"
            print("\n".join(lines), flush=True)
    if args.format == "json":
        json.dump({"revision": result.snapshot.revision, "dry_run": args.dry_run, "clusters": report}, sys.stdout,
                  indent=2, sort_keys=True)
        print()
    return EXIT_INVALID if failed else EXIT_OK


def render(args) -> int:

    from .. import dns
    if bool(args.cluster) != bool(args.target):
        raise UsageError("--target and --cluster go together: the addresses that cluster's CoreDNS would answer")
    result = valid_revision(args, "nothing rendered")
    if result is None:
        return EXIT_INVALID
    mesh = result.mesh
    entries = mesh.vips.addresses
    if args.target:
        (cluster, outcome), = _outcomes(args, mesh, [args.cluster], dry_run=True)
        if isinstance(outcome, dns.DNSError):
            raise UsageError(str(outcome))
        entries = outcome.entries
    if mesh.vips.unassigned:
        warn(f"no VIP left in vipCidr for {', '.join(mesh.vips.unassigned)}")
    try:
        sys.stdout.write(dns.render(entries, args.format, suffix=mesh.settings.dns_suffix, ttl=args.ttl,
                                    serial=args.serial, ns_address=args.ns_address))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK
