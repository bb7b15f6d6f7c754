"""galleon ca: the shared root CA (init-root, rotate-root) and each cluster's Istio intermediate in
istio-system/cacerts (reconcile)."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .common import EXIT_INVALID, EXIT_OK, UsageError, check_clusters, clusters_revision, one_of, valid_revision
from .options import add_clusters, add_kubeconfig, add_source

if TYPE_CHECKING:
    from compiler.revision import Revision

    from .. import ca


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser("ca", help="the shared root CA and each cluster's Istio intermediate (cacerts)",
                            description="Cross-cluster mTLS needs every cluster's Istio CA to be an intermediate "
                                        "under one shared root: the plug-in CA secret istio-system/cacerts.")
    ca_commands = p.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)
    q = ca_commands.add_parser("init-root", help="create the shared root CA in a directory (never in Git)",
                               description="Write DIR/root-cert.pem and DIR/root-key.pem (mode 0600): a self-signed "
                                           "root CA valid 10 years. Refuses to overwrite an existing root.")
    q.add_argument("directory", type=Path, metavar="DIR")
    q.add_argument("--algorithm", choices=("ecdsa-p256", "rsa-4096"), default="ecdsa-p256",
                   help="the root's key (default: ecdsa-p256)")
    q.set_defaults(subcommand=init_root)
    q = ca_commands.add_parser(
        "reconcile", help="issue or renew each cluster's intermediate into istio-system/cacerts",
        description="For each cluster, read its cacerts Secret from TARGET and write a new intermediate only when "
                    "it is missing, does not verify under the root, its key does not match, it expires within the "
                    "policy's renewBefore, or the CertificateAuthority policy changed; otherwise write nothing. A "
                    "cacerts not labelled app.kubernetes.io/managed-by: galleon is refused unless --adopt. "
                    "Exits 0, 1 when the revision has errors or a cluster was refused, 2 on bad input.")
    add_source(q)
    q.add_argument("--root-ca", type=Path, default=None, metavar="DIR",
                   help="the directory of root-cert.pem and root-key.pem (galleon ca init-root)")
    q.add_argument("--root-ca-secret", default=None, metavar="NAMESPACE/NAME",
                   help="or the root in a Kubernetes Secret (keys root-cert.pem and root-key.pem, or tls.crt and "
                        "tls.key), read through --kubeconfig and --root-ca-context")
    q.add_argument("--root-ca-context", default=None, metavar="NAME",
                   help="the kubeconfig context holding --root-ca-secret (default: the current one)")
    q.add_argument("--target", required=True, metavar="TARGET",
                   help="kube: istio-system/cacerts through the Kubernetes API, in each Cluster's spec.kubeContext "
                        "(read, then replaced with its resourceVersion; conflicts re-planned, 5xx retried); or "
                        "dir:PATH: Secret manifests at PATH/CLUSTER/istio-system/Secret/cacerts.yaml")
    add_clusters(q)
    q.add_argument("--dry-run", action="store_true", help="print the plan (fingerprints and dates, never keys); "
                                                          "write nothing")
    q.add_argument("--adopt", action="store_true", help="take over a cacerts Galleon did not write")
    q.set_defaults(subcommand=reconcile)
    q = ca_commands.add_parser(
        "rotate-root", help="move every cluster's cacerts to a new root, one phase per run",
        description="Rotate the shared root across every Cluster a CertificateAuthority policy covers, one phase "
                    "per run, the phase recorded in each cacerts' galleon.io/ca-rotation annotation: 1. trust both "
                    "(root-cert.pem holds the old and the new root), 2. switch (new intermediates under the new "
                    "root), 3. drop the old root. A phase starts only when every cluster has finished the one before. "
                    "While a rotation is under way, galleon ca reconcile writes nothing. Exits 0, 1 when the "
                    "revision has errors or a cluster's cacerts is not in a state the rotation can move from "
                    "(nothing is written then), 2 on bad input.")
    add_source(q)
    q.add_argument("--root-ca", type=Path, required=True, metavar="OLD",
                   help="the directory of the current root (root-cert.pem and root-key.pem)")
    q.add_argument("--new-root-ca", type=Path, required=True, metavar="NEW",
                   help="the directory of the new root (galleon ca init-root NEW)")
    q.add_argument("--target", required=True, metavar="TARGET", help="kube or dir:PATH, as for galleon ca reconcile")
    add_kubeconfig(q)
    q.add_argument("--dry-run", action="store_true", help="print every cluster's phase and the next phase "
                                                          "(fingerprints and dates, never keys); write nothing")
    q.set_defaults(subcommand=rotate_root)
    return p


def run(args) -> int:
    return args.subcommand(args)


def init_root(args) -> int:
    from .. import ca
    root = ca.init_root(args.directory, args.algorithm, datetime.now(timezone.utc))
    print(f"wrote {args.directory}/root-cert.pem and root-key.pem (mode 0600): {args.algorithm} root CA "
          f"sha256:{root.fingerprint}, valid until {root.not_after:%Y-%m-%d}; keep the key out of Git")
    return EXIT_OK


def _root_ca(args) -> ca.RootCA:
    from .. import ca
    one_of(bool(args.root_ca), bool(args.root_ca_secret),
           "give the root CA as --root-ca DIR or --root-ca-secret NAMESPACE/NAME")
    if args.root_ca:
        return ca.load_root(args.root_ca)
    from ..ca.kube import load_root_secret  # the Kubernetes client is slow to import: only when asked
    return load_root_secret(args.root_ca_secret, args.kubeconfig, args.root_ca_context)


def _contexts(result: Revision) -> dict[str, str | None]:
    """Each Cluster of the revision and its kubeconfig context (spec.kubeContext)."""
    return {o.name: o.spec.get("kubeContext") for o in result.objects if o.kind == "Cluster"}


def _policy(result: Revision, cluster: str) -> ca.Policy | None:
    """The CertificateAuthority policy that covers ``cluster``; None (said on stdout) when none does."""
    from .. import ca
    policy = ca.policy_for(result.objects, cluster)
    if policy is None:
        print(f"{cluster}: no CertificateAuthority policy covers it; its cacerts is left alone")
    return policy


def reconcile(args) -> int:
    from .. import ca
    result = clusters_revision(args, "no certificate issued")
    if result is None:
        return EXIT_INVALID
    root = _root_ca(args)
    contexts = _contexts(result)
    target = ca.target_from(args.target, contexts=contexts, kubeconfig=args.kubeconfig)
    known = sorted(contexts)
    check_clusters(args.cluster, known)
    failed = False
    now = datetime.now(timezone.utc)
    for cluster in sorted(set(args.cluster)) or known:
        policy = _policy(result, cluster)
        if policy is None:
            continue
        decided = ca.reconcile(target, root, cluster, policy, now, dry_run=args.dry_run, adopt=args.adopt)
        print(decided.describe())
        if decided.writes:
            print(f"  {'would write' if args.dry_run else 'written'}: {args.target} {cluster}")
        failed |= decided.action == "refuse"
    return EXIT_INVALID if failed else EXIT_OK


def rotate_root(args) -> int:
    from .. import ca
    result = valid_revision(args, "no certificate issued")
    if result is None:
        return EXIT_INVALID
    old, new = ca.load_root(args.root_ca), ca.load_root(args.new_root_ca)
    contexts = _contexts(result)
    policies = {cluster: policy for cluster in sorted(contexts) if (policy := _policy(result, cluster)) is not None}
    if not policies:
        raise UsageError("no CertificateAuthority policy covers a Cluster of this revision: nothing to rotate")
    target = ca.target_from(args.target, contexts=contexts, kubeconfig=args.kubeconfig)
    rotation = ca.rotate_root(target, old, new, policies, datetime.now(timezone.utc), dry_run=args.dry_run)
    print(rotation.describe(args.dry_run))
    return EXIT_INVALID if rotation.refused else EXIT_OK
