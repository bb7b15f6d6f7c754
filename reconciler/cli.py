"""The ``galleon`` command line.

Exit codes follow DESIGN.md: 0 ok, 1 the configuration has errors, 2 the
source (or an argument) could not be used. Bad input never shows a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.names import ANY_ADDRESS
from compiler.snapshot import short_revision

from . import defaults, runtime
from .defaults import split_address
from .sources import GitCredentials, SourceError, open_source, open_sources

if TYPE_CHECKING:
    from compiler.model import Mesh
    from compiler.validate import Validation

    from . import ca
    from .api import reconciler_pb2
    from .parse_cache import ParseCache

# Every command imports what it runs, inside its function: the compiler, the Kubernetes client,
# cryptography, jinja2 and gRPC take half a second together, which `galleon status` or
# `galleon diff --server` should not wait for (reconciler/defaults.py holds what --help shows).

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
# galleon diff --exit-code, kubectl diff's convention: 0 no changes, 1 changes, above 1 trouble.
EXIT_CHANGES, EXIT_HEAD_INVALID_STRICT = 1, 3


class UsageError(Exception):
    pass


def default_state_dir() -> Path:
    if os.environ.get("GALLEON_STATE_DIR"):
        return Path(os.environ["GALLEON_STATE_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "galleon"


def _progress(received: int, total: int, _bytes: int) -> None:
    if total:
        end = "\n" if received == total else ""
        print(f"\rfetching: {received}/{total} objects", end=end, file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"galleon: warning: {message}", file=sys.stderr)


def parse_cache(args) -> ParseCache:
    """The cache of parsed files under --state-dir (none with --no-cache)."""
    from .parse_cache import ParseCache
    return ParseCache(None if args.no_cache else args.state_dir / "parses", _warn)


def load(args) -> Validation:
    """Read SOURCE at --rev and validate it; raises SourceError/UnreadableFile for exit 2."""
    from compiler.validate import validate
    locations = args.source if isinstance(args.source, list) else [args.source]
    source = open_sources(locations, args.state_dir, _credentials(args, True))
    source.refresh()
    snapshot, cache = source.snapshot(args.rev), parse_cache(args)
    result = validate(snapshot, stored=cache.stored(snapshot))
    cache.keep(result.parsed)
    return result


def cmd_validate(args) -> int:
    from compiler.findings import counts
    from compiler.model import build_mesh
    from compiler.summary import summarize
    result = load(args)
    found = counts(result.findings)
    if args.format == "json":
        json.dump({"source": result.snapshot.origin, "revision": result.snapshot.revision,
                   "valid": result.ok, "errors": found["error"], "warnings": found["warning"], "infos": found["info"],
                   "files": len(result.snapshot.files), "objects": len(result.objects),
                   "findings": [f.to_dict() for f in result.findings]}, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        for finding in result.findings:
            print(finding.text())
        if args.summary and result.ok:
            print(summarize(result.objects, build_mesh(result.objects, result.snapshot.revision)))
        verdict = "valid" if result.ok else "INVALID"
        print(f"{result.snapshot.origin} at {short_revision(result.snapshot.revision)}: {verdict}: "
              f"{len(result.objects)} objects in {len(result.snapshot.files)} files, "
              f"{found['error']} errors, {found['warning']} warnings, {found['info']} infos", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {pair!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def _valid_revision(args, consequence: str) -> Validation | None:
    """SOURCE at --rev, validated; None (its findings printed) when it has errors."""
    result = load(args)
    if not result.ok:
        for finding in result.findings:
            print(finding.text(), file=sys.stderr)
        print(f"galleon: {result.snapshot.origin} at {short_revision(result.snapshot.revision)} has errors; "
              f"{consequence}", file=sys.stderr)
        return None
    return result


def _clusters_revision(args, consequence: str) -> Validation | None:
    """As _valid_revision, for a command that writes to --cluster NAME ... or --all-clusters."""
    if bool(args.cluster) == args.all_clusters:
        raise UsageError("give --cluster NAME (repeatable) or --all-clusters")
    return _valid_revision(args, consequence)


def _check_clusters(wanted: list[str], known) -> None:
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise UsageError(f"--cluster {', '.join(unknown)}: not a Cluster of this revision (clusters: "
                         f"{', '.join(sorted(known)) or 'none'})")


def cmd_compile(args) -> int:
    from compiler.model import build_mesh
    from compiler.view import ViewError, make_view
    from compiler.xds import compile_view, config_dump, dump_json
    result = _valid_revision(args, "nothing compiled")
    if result is None:
        return EXIT_INVALID
    mesh = build_mesh(result.objects, result.snapshot.revision)
    try:
        view = make_view(mesh, args.cluster, args.node_id, _labels(args.label), args.locality, proxyless=args.grpc)
    except ViewError as exc:
        raise UsageError(str(exc)) from None
    dump = config_dump(compile_view(mesh, view))
    if args.output is None:
        sys.stdout.write(dump_json(dump))
        return EXIT_OK
    args.output.mkdir(parents=True, exist_ok=True)
    for key, resources in dump.items():
        (args.output / f"{key}.json").write_text(dump_json(resources))
    counts = ", ".join(f"{len(v)} {k}" for k, v in dump.items())
    print(f"wrote {counts} to {args.output}/ for {view.role} in {view.cluster} "
          f"({view.network}, {view.locality}) at {short_revision(result.snapshot.revision)}", file=sys.stderr)
    return EXIT_OK


def _say(message: str) -> None:
    """Progress for people on a terminal; silent in CI logs and pipes."""
    if sys.stderr.isatty():
        print(f"galleon: {message}", file=sys.stderr, flush=True)


def cmd_diff(args) -> int:
    if args.max_bytes < defaults.PREVIEW_MIN_MAX_BYTES:
        raise UsageError(f"--max-bytes must be at least {defaults.PREVIEW_MIN_MAX_BYTES}")
    source = open_source(args.source, args.state_dir, _credentials(args, True))
    source.refresh()
    answer = _preview_from_server(args, source) if args.server else None
    if answer is not None:
        text, head_revision, head_valid, has_changes = answer.body, answer.head_revision, answer.head_valid, \
            answer.has_changes
    else:
        from compiler.diff import load_revision
        from . import preview
        _say(f"reading {args.base} and {args.head}")
        cache = parse_cache(args)
        base_snapshot, head_snapshot = source.snapshot(args.base), source.snapshot(args.head)
        base = load_revision(base_snapshot, stored=cache.stored(base_snapshot))
        head = load_revision(head_snapshot, like=base, stored=cache.stored(head_snapshot, have=base.parsed.files))
        cache.keep(base.parsed)
        cache.keep(head.parsed)
        try:
            result = preview.preview_of(base, head, args.cluster, progress=_say)
        except ValueError as exc:
            raise UsageError(f"--cluster {exc}") from None
        text = (preview.render_json(result) if args.format == "json"
                else preview.render_markdown(result, args.max_bytes))
        head_revision, head_valid, has_changes = head.snapshot.revision, head.valid, result.has_changes
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        _say(f"wrote the preview to {args.output}")
    if not head_valid:
        print(f"galleon: HEAD ({short_revision(head_revision)}) has errors; see the preview's "
              "validation section", file=sys.stderr)
        return EXIT_HEAD_INVALID_STRICT if args.exit_code else EXIT_INVALID
    if args.exit_code:
        return EXIT_CHANGES if has_changes else EXIT_OK
    return EXIT_OK


def _preview_from_server(args, source) -> reconciler_pb2.PreviewResponse | None:
    """The preview from the `galleon serve` at --server, which holds BASE parsed and modelled when it
    serves it; None (said on stderr) when it cannot give this one, and the preview is made here."""
    import grpc
    from .api import reconciler_pb2, reconciler_pb2_grpc
    base, head = source.head(args.base), source.head(args.head)
    if base is None:
        raise UsageError("--server needs a Git SOURCE: a directory has no revisions to name")
    request = reconciler_pb2.PreviewRequest(rev=head, format=args.format, clusters=args.cluster,
                                            max_bytes=args.max_bytes)
    try:
        split_address(args.server, "--server")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with grpc.insecure_channel(args.server) as channel:
        try:
            answer = reconciler_pb2_grpc.ReconcilerStub(channel).Preview(request, timeout=args.server_timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # an unknown --cluster
                raise UsageError(f"galleon serve at {args.server}: {exc.details()}") from None
            print(f"galleon: galleon serve at {args.server} gave no preview ({exc.code().name}: {exc.details()}); "
                  "comparing here", file=sys.stderr)
            return None
    if answer.base_revision != base:
        print(f"galleon: galleon serve at {args.server} serves {short_revision(answer.base_revision)}, not BASE "
              f"{short_revision(base)}; comparing here", file=sys.stderr)
        return None
    return answer


def _credentials(args, progress: bool) -> GitCredentials:
    return GitCredentials(token_env=args.git_token_env, username=args.git_username, ssh_key=args.ssh_key,
                          known_hosts=args.known_hosts,
                          progress=_progress if progress and sys.stderr.isatty() else None)


def cmd_serve(args) -> int:
    import asyncio
    from . import ca, dns, logs, webhook
    from .serve import CaOptions, Daemon, DnsOptions, LeaseOptions, ServeOptions
    from .sources.signatures import SignatureError, SignaturePolicy
    logs.configure(args.log_level)
    for value, flag in ((args.debounce, "--debounce"), (args.debounce_max, "--debounce-max")):
        if value < 0:
            raise UsageError(f"{flag} must not be negative")
    if args.poll is not None and args.poll <= 0:
        raise UsageError("--poll must be a positive number of seconds")
    for address, flag in ((args.ads, "--ads"), (args.http, "--http")):
        try:
            split_address(address, flag)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if bool(args.root_ca) != bool(args.ca_target):
        raise UsageError("--root-ca and --ca-target go together (the CA reconciler needs both)")
    if args.root_ca:
        ca.load_root(args.root_ca)  # a typo here is an error now, not a log line in an hour
        ca.target_from(args.ca_target, contexts={args.cluster: args.kube_context}, kubeconfig=args.kubeconfig)
    if args.ca_interval <= 0:
        raise UsageError("--ca-interval must be a positive number of seconds")
    if args.dns_target:
        dns.target_from(args.dns_target, contexts={args.cluster: args.kube_context}, kubeconfig=args.kubeconfig)
    if args.dns_interval <= 0:
        raise UsageError("--dns-interval must be a positive number of seconds")
    if not 1 <= args.dns_ttl <= 65535:
        raise UsageError("--dns-ttl must be 1-65535 seconds")
    if args.max_connection_age is not None and args.max_connection_age <= 0:
        raise UsageError("--max-connection-age must be a positive number of seconds")
    try:
        secret = webhook.load_secret(args.webhook_secret_file) if args.webhook_secret_file else None
        signatures = (SignaturePolicy.load(args.verify_ssh_key, args.verify_gpg_key)
                      if args.verify_ssh_key or args.verify_gpg_key else None)
    except (ValueError, SignatureError) as exc:
        raise UsageError(str(exc)) from None
    options = ServeOptions(source=args.source, cluster=args.cluster, rev=args.rev, ads=args.ads, http=args.http,
                           poll=args.poll, state_dir=args.state_dir, parse_cache=not args.no_cache,
                           credentials=_credentials(args, False),
                           debounce=args.debounce, debounce_max=args.debounce_max, webhook_secret=secret,
                           signatures=signatures, max_connection_age=args.max_connection_age,
                           lease=LeaseOptions(args.lease_namespace, args.lease_name or f"galleon-{args.cluster}",
                                              args.lease_identity, args.kubeconfig, args.kube_context)
                           if args.leader_elect else None,
                           ca=CaOptions(args.root_ca, args.ca_target, args.ca_interval, args.kubeconfig,
                                        args.kube_context) if args.root_ca else None,
                           dns=DnsOptions(args.dns_target, args.dns_interval, args.dns_ttl, args.dns_create,
                                          args.kubeconfig, args.kube_context) if args.dns_target else None)
    try:
        return asyncio.run(Daemon(options).run())
    except OSError as exc:
        raise UsageError(str(exc)) from None


def _status_text(status) -> str:
    served = status.served_revision or "nothing"
    lines = [f"cluster {status.cluster}, source {status.source}",
             f"serving {served}" + (" (from the state directory: the source cannot be read)"
                                    if status.from_state_dir else ""),
             f"newest revision seen {status.last_revision_seen or '-'}: "
             + ("served" if status.last_revision_seen == status.served_revision and status.last_revision_valid
                else "valid" if status.last_revision_valid else f"REFUSED: {status.rejection}")]
    if status.source_error:
        lines.append(f"source error: {status.source_error}")
    lines += [f"  {f.file}:{f.line}: {f.level} {f.code} {f.kind} {f.namespace}/{f.name}: {f.message}"
              for f in status.findings]
    lines.append(f"{status.connected_proxies} proxies connected; " + ("leader" if status.leader else "not the leader"))
    return "\n".join(lines) + "\n"


def _show_status(status, fmt: str) -> int:
    from google.protobuf import json_format
    if fmt == "json":
        sys.stdout.write(json_format.MessageToJson(status, preserving_proto_field_name=True, sort_keys=True,
                                                   always_print_fields_with_no_presence=True) + "\n")
    else:
        sys.stdout.write(_status_text(status))
    sys.stdout.flush()
    return EXIT_OK if status.last_revision_valid and status.served_revision else EXIT_INVALID


def _status_call(args, call):
    import grpc
    from .api import reconciler_pb2_grpc
    try:
        split_address(args.server, "--server")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with grpc.insecure_channel(args.server) as channel:
        stub = reconciler_pb2_grpc.ReconcilerStub(channel)
        try:
            return call(stub)
        except grpc.RpcError as exc:
            raise UsageError(f"galleon serve at {args.server}: {exc.code().name}: {exc.details()}") from None


def cmd_status(args) -> int:
    from .api import reconciler_pb2
    if not args.watch:
        return _show_status(_status_call(args, lambda stub: stub.GetStatus(reconciler_pb2.GetStatusRequest(),
                                                                          timeout=args.timeout)), args.format)

    def watch(stub) -> int:
        for status in stub.WatchStatus(reconciler_pb2.WatchStatusRequest()):
            _show_status(status, args.format)
        return EXIT_OK
    return _status_call(args, watch)


def cmd_sync(args) -> int:
    from .api import reconciler_pb2
    response = _status_call(args, lambda stub: stub.Sync(reconciler_pb2.SyncRequest(wait=not args.no_wait),
                                                         timeout=args.timeout))
    return _show_status(response.status, args.format)


def cmd_ca_init_root(args) -> int:
    from . import ca
    root = ca.init_root(args.directory, args.algorithm, datetime.now(timezone.utc))
    print(f"wrote {args.directory}/root-cert.pem and root-key.pem (mode 0600): {args.algorithm} root CA "
          f"sha256:{root.fingerprint}, valid until {root.not_after:%Y-%m-%d}; keep the key out of Git")
    return EXIT_OK


def _root_ca(args) -> ca.RootCA:
    from . import ca
    if bool(args.root_ca) == bool(args.root_ca_secret):
        raise UsageError("give the root CA as --root-ca DIR or --root-ca-secret NAMESPACE/NAME")
    if args.root_ca:
        return ca.load_root(args.root_ca)
    from .ca.kube import load_root_secret  # the Kubernetes client is slow to import: only when asked
    return load_root_secret(args.root_ca_secret, args.kubeconfig, args.root_ca_context)


def cmd_ca_reconcile(args) -> int:
    from . import ca
    result = _clusters_revision(args, "no certificate issued")
    if result is None:
        return EXIT_INVALID
    root = _root_ca(args)
    contexts = {o.name: o.spec.get("kubeContext") for o in result.objects if o.kind == "Cluster"}
    target = ca.target_from(args.target, contexts=contexts, kubeconfig=args.kubeconfig)
    known = sorted(contexts)
    _check_clusters(args.cluster, known)
    failed = False
    now = datetime.now(timezone.utc)
    for cluster in sorted(set(args.cluster)) or known:
        policy = ca.policy_for(result.objects, cluster)
        if policy is None:
            print(f"{cluster}: no CertificateAuthority policy covers it; its cacerts is left alone")
            continue
        decided = ca.reconcile(target, root, cluster, policy, now, dry_run=args.dry_run, adopt=args.adopt)
        print(decided.describe())
        if decided.writes:
            print(f"  {'would write' if args.dry_run else 'written'}: {args.target} {cluster}")
        failed |= decided.action == "refuse"
    return EXIT_INVALID if failed else EXIT_OK


def cmd_ca_rotate_root(args) -> int:
    from . import ca
    result = _valid_revision(args, "no certificate issued")
    if result is None:
        return EXIT_INVALID
    old, new = ca.load_root(args.root_ca), ca.load_root(args.new_root_ca)
    contexts = {o.name: o.spec.get("kubeContext") for o in result.objects if o.kind == "Cluster"}
    policies = {}
    for cluster in sorted(contexts):
        policy = ca.policy_for(result.objects, cluster)
        if policy is None:
            print(f"{cluster}: no CertificateAuthority policy covers it; its cacerts is left alone")
        else:
            policies[cluster] = policy
    if not policies:
        raise UsageError("no CertificateAuthority policy covers a Cluster of this revision: nothing to rotate")
    target = ca.target_from(args.target, contexts=contexts, kubeconfig=args.kubeconfig)
    rotation = ca.rotate_root(target, old, new, policies, datetime.now(timezone.utc), dry_run=args.dry_run)
    print(rotation.describe(args.dry_run))
    return EXIT_INVALID if rotation.refused else EXIT_OK


def _dns_outcomes(args, mesh: Mesh, clusters: list[str], dry_run: bool):
    """(cluster, Outcome or DNSError) for ``clusters``, each read from and (unless dry_run) written to --target."""
    from . import dns
    contexts = {name: cluster.kube_context for name, cluster in mesh.clusters.items()}
    _check_clusters(clusters, contexts)
    if not 1 <= args.ttl <= 65535:
        raise UsageError(f"--ttl {args.ttl}: the answers' TTL is 1-65535 seconds")
    target = dns.target_from(args.target, contexts=contexts, kubeconfig=args.kubeconfig)
    return dns.reconcile_clusters(target, mesh.vips, mesh.settings.vip_cidr, sorted(set(clusters)) or sorted(contexts),
                                  sorted(contexts), suffix=mesh.settings.dns_suffix, ttl=args.ttl,
                                  create=getattr(args, "create", False), dry_run=dry_run)


def cmd_dns_reconcile(args) -> int:
    from compiler.model import build_mesh
    from . import dns
    result = _clusters_revision(args, "no DNS entry written")
    if result is None:
        return EXIT_INVALID
    failed = False
    report = []
    mesh = build_mesh(result.objects, result.snapshot.revision)
    for cluster, outcome in _dns_outcomes(args, mesh, args.cluster, args.dry_run):
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


def cmd_dns_render(args) -> int:
    from compiler.model import build_mesh
    from . import dns
    if bool(args.cluster) != bool(args.target):
        raise UsageError("--target and --cluster go together: the addresses that cluster's CoreDNS would answer")
    result = _valid_revision(args, "nothing rendered")
    if result is None:
        return EXIT_INVALID
    mesh = build_mesh(result.objects, result.snapshot.revision)
    entries = mesh.vips.addresses
    if args.target:
        (cluster, outcome), = _dns_outcomes(args, mesh, [args.cluster], dry_run=True)
        if isinstance(outcome, dns.DNSError):
            raise UsageError(str(outcome))
        entries = outcome.entries
    if mesh.vips.unassigned:
        print(f"galleon: warning: no VIP left in vipCidr for {', '.join(mesh.vips.unassigned)}", file=sys.stderr)
    try:
        sys.stdout.write(dns.render(entries, args.format, suffix=mesh.settings.dns_suffix, ttl=args.ttl,
                                    serial=args.serial, ns_address=args.ns_address))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_bootstrap(args) -> int:
    from compiler.view import ViewError
    from .bootstrap import BootstrapOptions, bootstrap_yaml, grpc_bootstrap_json
    options = BootstrapOptions(cluster=args.cluster, node_id=args.node_id, ads=args.ads, labels=_labels(args.label),
                               locality=args.locality, network=args.network, admin=args.admin,
                               listen_address=args.listen_address, delta=args.delta, sds_socket=args.sds_socket)
    try:
        sys.stdout.write(grpc_bootstrap_json(options, args.certificate_dir) if args.grpc else bootstrap_yaml(options))
    except (ValueError, ViewError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Which clusters a reconcile command writes to, and how the kube target reaches them."""
    parser.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE",
                        help="kubeconfig for --target kube (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    parser.add_argument("--cluster", action="append", default=[], metavar="NAME", help="this cluster (repeatable)")
    parser.add_argument("--all-clusters", action="store_true", help="every Cluster of the revision")


def _source_arguments(parser: argparse.ArgumentParser, rev: bool = True, files: bool = False) -> None:
    if files:
        parser.add_argument("source", metavar="SOURCE", nargs="+",
                            help="a local Git repository, a remote Git URL (file://, https://, ssh://, "
                                 "user@host:path) or a plain directory of YAML files; or one or more YAML files, "
                                 "- for standard input (findings name each file as given)")
    else:
        parser.add_argument("source", metavar="SOURCE",
                            help="a local Git repository, a remote Git URL (file://, https://, ssh://, "
                                 "user@host:path) or a plain directory of YAML files")
    if rev:
        parser.add_argument("--rev", default=None, metavar="REV",
                            help="Git revision to read: branch, tag, commit id (full or short), HEAD~2... "
                                 "(default: HEAD; a directory has only its working files)")
    parser.add_argument("--state-dir", type=Path, default=default_state_dir(), metavar="DIR",
                        help="where remote repositories are mirrored, parsed files are cached (parses/), and "
                             "galleon serve keeps the last snapshot it served (default: $GALLEON_STATE_DIR "
                             "or ~/.cache/galleon)")
    parser.add_argument("--no-cache", action="store_true",
                        help="parse every file, neither reading nor writing the cache of parsed files "
                             "(unchanged files are otherwise parsed and checked only once)")
    git = parser.add_argument_group("remote Git sources")
    git.add_argument("--git-token-env", default="GALLEON_GIT_TOKEN", metavar="VAR",
                     help="environment variable holding an HTTPS token (default: GALLEON_GIT_TOKEN)")
    git.add_argument("--git-username", default=None, metavar="USER",
                     help="user name sent with the token or SSH key (default: from the URL, else "
                          "x-access-token for HTTPS and git for SSH)")
    git.add_argument("--ssh-key", type=Path, default=None, metavar="FILE",
                     help="private key for ssh:// and user@host:path URLs; its passphrase, if any, "
                          "in $GALLEON_GIT_SSH_PASSPHRASE")
    git.add_argument("--known-hosts", type=Path, default=None, metavar="FILE",
                     help="known_hosts file to check the SSH server's key against (default: "
                          "~/.ssh/known_hosts); unknown hosts are refused")


def _proxy_arguments(parser: argparse.ArgumentParser, node_id_default: str | None) -> None:
    """How a proxy is described, the way Istio identifies one (compile and bootstrap)."""
    parser.add_argument("--cluster", required=True, metavar="NAME", help="the Cluster the proxy runs in")
    default = f" (default: {node_id_default}, a sidecar in namespace default)" if node_id_default else ""
    parser.add_argument("--node-id", required=node_id_default is None, default=node_id_default, metavar="ID",
                        help="Istio node id: sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local, or router~... "
                             "for a gateway; its first part is the proxy's role and its last the namespace" + default)
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the proxy's workload, matched by Gateway and Sidecar selectors (repeatable)")
    parser.add_argument("--locality", default=None, metavar="R/Z/S",
                        help="the proxy's locality (default: its cluster's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleon",
        description="Galleon turns a Git repository of Istio-style mesh configuration into validated, "
                    "per-cluster Envoy configuration and cluster state for a federation of clusters.",
        epilog="Exit codes: 0 ok, 1 the configuration has errors, 2 the source or arguments cannot be used. "
               "Run 'galleon COMMAND --help' for a command's options.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "validate", help="check a revision against the schemas and semantic analyzers",
        description="Check every object of SOURCE at REV against its JSON Schema and the semantic "
                    "analyzers. Prints one line per finding, FILE:LINE: LEVEL CODE KIND NS/NAME: message, "
                    "sorted; exits 0 when there are no errors (warnings allowed), 1 on errors, "
                    "2 when the source cannot be read.")
    _source_arguments(p, files=True)
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text lines (default) or one JSON document with the same fields")
    p.add_argument("--summary", action="store_true",
                   help="after the findings, print an overview of the mesh (clusters, networks, services)")
    p.set_defaults(run=cmd_validate)

    p = commands.add_parser(
        "compile", help="print one proxy's Envoy configuration (clusters, endpoints, listeners, routes)",
        description="Compile SOURCE at REV into the Envoy v3 configuration one proxy would get, in Envoy's "
                    "config_dump shape: {clusters, endpoints, listeners, routes}, each resource as proto3 "
                    "JSON with its @type. The proxy is described as Istio does: its cluster, node id "
                    "(sidecar~IP~POD.NS~NS.svc.cluster.local or router~...), labels and locality; its "
                    "network and locality default to its cluster's. Exits 1 without output when the "
                    "revision has errors.")
    _source_arguments(p, files=True)
    _proxy_arguments(p, node_id_default="sidecar~10.0.0.1~proxy.default~default.svc.cluster.local")
    p.add_argument("--grpc", action="store_true",
                   help="the configuration of a proxyless gRPC client (node metadata GENERATOR=grpc) instead of "
                        "an Envoy's: listeners HOST:PORT with an api_listener, as gRPC asks for them")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                   help="write clusters.json, endpoints.json, listeners.json and routes.json into DIR "
                        "instead of one document to stdout")
    p.set_defaults(run=cmd_compile)

    p = commands.add_parser(
        "diff", help="preview a change: objects, every cluster's Envoy configuration, traffic shares",
        description="Compare two revisions of SOURCE (a Git repository) for a pull-request preview: the objects "
                    "added, removed and changed (field by field, with HEAD's file:line); HEAD's validation "
                    "findings, new or already at BASE; for every cluster and every kind of proxy in it "
                    "(sidecars, one per Sidecar resource, gateways), the Envoy resources added, removed and "
                    "changed; and for every service whose routing or endpoints change, the traffic shares: of requests "
                    "from each cluster and locality, the share to each destination before and after, and when the "
                    "caller's own locality is down. Markdown (for a PR comment, cut to --max-bytes) or JSON.",
        epilog="Exit codes: 0 (changes or not), 1 HEAD has errors, 2 the source or a revision cannot be read. "
               "With --exit-code, kubectl diff's convention: 0 no changes, 1 changes, 2 cannot read, "
               "3 HEAD has errors.")
    _source_arguments(p, rev=False)
    p.add_argument("base", metavar="BASE", help="the revision the change starts from (a PR's target branch, "
                                                "origin/main, a commit id...)")
    p.add_argument("head", metavar="HEAD", help="the revision with the change (the PR's head commit)")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown",
                   help="markdown for a PR comment (default) or JSON with the same content, uncut")
    p.add_argument("--cluster", action="append", default=[], metavar="NAME",
                   help="compare only this cluster's proxies (repeatable; default: every cluster)")
    p.add_argument("--max-bytes", type=int, default=defaults.PREVIEW_MAX_BYTES, metavar="N",
                   help=f"cut the markdown to N bytes, keeping the summary whole and naming what was cut "
                        f"(default: {defaults.PREVIEW_MAX_BYTES:,}; GitHub's comment limit is 65,535)")
    p.add_argument("--exit-code", action="store_true",
                   help="exit 1 when there are changes and 0 when there are none (as kubectl diff)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="write the preview to FILE instead of stdout")
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="ask the galleon serve whose ADS port this is (its status API): when it serves BASE it "
                        "holds it parsed and modelled, and the preview takes about a second on a large mesh; "
                        "otherwise (another revision, unreachable, HEAD unknown to it) it is made here")
    p.add_argument("--server-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for --server (default: 120)")
    p.set_defaults(run=cmd_diff)

    p = commands.add_parser(
        "serve", help="serve one cluster's proxies over ADS, following the source",
        description="Read SOURCE, validate it and serve the compiled configuration to Envoy and gRPC proxies over "
                    "ADS (state of the world and delta). Reloads when a directory's files change, when a local "
                    "repository gets a commit, on SIGHUP, and every --poll seconds. A revision with errors is "
                    "reported and not served: proxies keep the last valid one. Stops cleanly on SIGTERM or "
                    "SIGINT. HTTP on --http: /healthz, /readyz, /metrics, /debug/configz, /debug/syncz, "
                    "/debug/config_dump?proxyID=NODE_ID.")
    _source_arguments(p)
    p.add_argument("--cluster", required=True, metavar="NAME",
                   help="the Cluster this daemon serves; proxies that do not say theirs are taken to be in it")
    p.add_argument("--ads", default="127.0.0.1:15010", metavar="HOST:PORT",
                   help="where to serve ADS (default: 127.0.0.1:15010; port 0 picks a free one)")
    p.add_argument("--http", default="127.0.0.1:15014", metavar="HOST:PORT",
                   help="where to serve health, metrics and debug pages (default: 127.0.0.1:15014)")
    p.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                   help="also read the source every SECONDS (for remote Git; default: only on changes and SIGHUP)")
    p.add_argument("--debounce", type=float, default=0.1, metavar="SECONDS",
                   help="wait until changes have been quiet this long before reloading (default: 0.1)")
    p.add_argument("--debounce-max", type=float, default=10.0, metavar="SECONDS",
                   help="but reload at most this long after the first change (default: 10)")
    p.add_argument("--webhook-secret-file", type=Path, default=None, metavar="FILE",
                   help="turn on POST /hook on --http: a push notice signed with the secret in FILE (GitHub's "
                        "X-Hub-Signature-256, GitLab's X-Gitlab-Token, or X-Galleon-Signature: sha256=HMAC) "
                        "fetches at once")
    p.add_argument("--verify-ssh-key", type=Path, action="append", default=[], metavar="FILE",
                   help="serve only commits signed by one of the SSH public keys in FILE (public key or "
                        "allowed_signers lines; repeatable); an unsigned or unverified head is reported, not served")
    p.add_argument("--verify-gpg-key", type=Path, action="append", default=[], metavar="FILE",
                   help="likewise for OpenPGP signatures, by the ASCII-armored public keys in FILE (repeatable)")
    p.add_argument("--max-connection-age", type=float, default=None, metavar="SECONDS",
                   help="end each xDS stream (with OK) after about SECONDS, so proxies reconnect and spread over "
                        "replicas behind a load balancer (default: never)")
    cas = p.add_argument_group("CA reconciler (galleon ca reconcile, for this cluster, by the leader)")
    cas.add_argument("--root-ca", type=Path, default=None, metavar="DIR",
                     help="the shared root CA (galleon ca init-root); with --ca-target, keep this cluster's "
                          "istio-system/cacerts right after each new revision and every --ca-interval")
    cas.add_argument("--ca-target", default=None, metavar="TARGET",
                     help="where cacerts lives: kube (this cluster's API server: in-cluster, or --kubeconfig and "
                          "--kube-context) or dir:PATH")
    cas.add_argument("--ca-interval", type=float, default=3600.0, metavar="SECONDS",
                     help="also check it this often (default: 3600)")
    names = p.add_argument_group("DNS reconciler (galleon dns reconcile, for this cluster, by the leader)")
    names.add_argument("--dns-target", default=None, metavar="TARGET",
                       help="keep this cluster's kube-system/coredns global:53 block answering the served VIPs, "
                            "after each new revision and every --dns-interval: kube (this cluster's API server) or "
                            "dir:PATH. At start the block's VIPs are kept, so a restart moves no name")
    names.add_argument("--dns-interval", type=float, default=300.0, metavar="SECONDS",
                       help="also check it this often (default: 300)")
    names.add_argument("--dns-ttl", type=int, default=defaults.DNS_TTL, metavar="SECONDS",
                       help=f"the answers' TTL (default: {defaults.DNS_TTL})")
    names.add_argument("--dns-create", action="store_true",
                       help="create a missing kube-system/coredns with a minimal Corefile")
    elect = p.add_argument_group("replicas")
    elect.add_argument("--leader-elect", action="store_true",
                       help="run as one of several replicas: all serve ADS, only the one holding a "
                            "coordination.k8s.io/v1 Lease writes to the cluster")
    elect.add_argument("--lease-namespace", default="istio-system", metavar="NS",
                       help="the Lease's namespace (default: istio-system)")
    elect.add_argument("--lease-name", default=None, metavar="NAME", help="the Lease's name (default: galleon-CLUSTER)")
    elect.add_argument("--lease-identity",
                       default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                       metavar="ID", help="this replica's name in the Lease (default: $POD_NAME, else HOST-PID)")
    elect.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE",
                       help="kubeconfig for the Lease, --ca-target kube and --dns-target kube (default: $KUBECONFIG, ~/.kube/config, "
                            "else in-cluster)")
    elect.add_argument("--kube-context", default=None, metavar="NAME", help="kubeconfig context (default: current)")
    p.add_argument("--log-level", choices=defaults.LOG_LEVELS, default="info",
                   help="least important log events shown (default: info); logs are JSON lines unless "
                        "stderr is a terminal")
    p.set_defaults(run=cmd_serve)

    for name, summary, description in (
            ("status", "show what a running galleon serve serves, and why it refused what it refused",
             "Ask galleon serve (its status API, on the ADS port) what it serves: the revision, whether it came "
             "from the state directory, the newest revision seen and why it was refused (with its findings), "
             "source errors, connected proxies, leadership. Exits 0 when the newest revision is served, 1 when "
             "it was refused or nothing is served, 2 when the daemon cannot be reached."),
            ("sync", "make a running galleon serve fetch and read its source now",
             "Ask galleon serve to fetch and read its source now (as a webhook would), wait for it (unless "
             "--no-wait) and print its status; exit codes as galleon status.")):
        p = commands.add_parser(name, help=summary, description=description)
        p.add_argument("--server", default="127.0.0.1:15010", metavar="HOST:PORT",
                       help="galleon serve's ADS address, where the status API is served (default: 127.0.0.1:15010)")
        p.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or JSON")
        p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="give up after SECONDS (default: 60)")
        if name == "status":
            p.add_argument("--watch", action="store_true", help="print the status again each time it changes")
            p.set_defaults(run=cmd_status)
        else:
            p.add_argument("--no-wait", action="store_true", help="return at once instead of after the read")
            p.set_defaults(run=cmd_sync)

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
    q.set_defaults(run=cmd_ca_init_root)
    q = ca_commands.add_parser(
        "reconcile", help="issue or renew each cluster's intermediate into istio-system/cacerts",
        description="For each cluster, read its cacerts Secret from TARGET and write a new intermediate only when "
                    "it is missing, does not verify under the root, its key does not match, it expires within the "
                    "policy's renewBefore, or the CertificateAuthority policy changed; otherwise write nothing. A "
                    "cacerts not labelled app.kubernetes.io/managed-by: galleon is refused unless --adopt. "
                    "Exits 0, 1 when the revision has errors or a cluster was refused, 2 on bad input.")
    _source_arguments(q)
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
    _cluster_arguments(q)
    q.add_argument("--dry-run", action="store_true", help="print the plan (fingerprints and dates, never keys); "
                                                          "write nothing")
    q.add_argument("--adopt", action="store_true", help="take over a cacerts Galleon did not write")
    q.set_defaults(run=cmd_ca_reconcile)
    q = ca_commands.add_parser(
        "rotate-root", help="move every cluster's cacerts to a new root, one phase per run",
        description="Rotate the shared root across every Cluster a CertificateAuthority policy covers, one phase "
                    "per run, the phase recorded in each cacerts' galleon.io/ca-rotation annotation: 1. trust both "
                    "(root-cert.pem holds the old and the new root), 2. switch (new intermediates under the new "
                    "root), 3. drop the old root. A phase starts only when every cluster has finished the one before. "
                    "While a rotation is under way, galleon ca reconcile writes nothing. Exits 0, 1 when the "
                    "revision has errors or a cluster's cacerts is not in a state the rotation can move from "
                    "(nothing is written then), 2 on bad input.")
    _source_arguments(q)
    q.add_argument("--root-ca", type=Path, required=True, metavar="OLD",
                   help="the directory of the current root (root-cert.pem and root-key.pem)")
    q.add_argument("--new-root-ca", type=Path, required=True, metavar="NEW",
                   help="the directory of the new root (galleon ca init-root NEW)")
    q.add_argument("--target", required=True, metavar="TARGET", help="kube or dir:PATH, as for galleon ca reconcile")
    q.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE",
                   help="kubeconfig for --target kube (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    q.add_argument("--dry-run", action="store_true", help="print every cluster's phase and the next phase "
                                                          "(fingerprints and dates, never keys); write nothing")
    q.set_defaults(run=cmd_ca_rotate_root)

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
    _source_arguments(q)
    q.add_argument("--target", required=True, metavar="TARGET",
                   help="kube: kube-system/coredns through the Kubernetes API, in each Cluster's spec.kubeContext "
                        "(replaced with its resourceVersion; conflicts re-read and re-edited, 5xx retried); or "
                        "dir:PATH: ConfigMap manifests at PATH/CLUSTER/kube-system/ConfigMap/coredns.yaml")
    _cluster_arguments(q)
    q.add_argument("--ttl", type=int, default=defaults.DNS_TTL, metavar="SECONDS",
                   help=f"the answers' TTL, 1-65535 (default: {defaults.DNS_TTL})")
    q.add_argument("--create", action="store_true",
                   help="create a missing kube-system/coredns with a minimal Corefile (kubeadm's default server "
                        "block plus ours); without it a missing ConfigMap is an error")
    q.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    q.add_argument("--format", choices=("text", "json"), default="text",
                   help="text, a paragraph per cluster as it is done (default), or JSON for bots: per cluster its "
                        "action, every entry, the names added, removed and readdressed, or its error")
    q.set_defaults(run=cmd_dns_reconcile)
    q = dns_commands.add_parser(
        "render", help="print the names and VIPs as a hosts file, a zone file or the Corefile block",
        description="Print the revision's cross-cluster names and VIPs for other DNS servers: hosts (dnsmasq "
                    "--addn-hosts, CoreDNS hosts FILE), zone (an RFC 1035 zone file for Knot, NSD, BIND, CoreDNS "
                    "file) or corefile-block (the server block galleon dns reconcile writes, without markers). "
                    "The VIPs are those a fresh mesh gets; with --target and --cluster, those that cluster "
                    "answers (what galleon dns reconcile would write).")
    _source_arguments(q)
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
    q.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE", help="kubeconfig for --target kube")
    q.set_defaults(run=cmd_dns_render, create=False)

    p = commands.add_parser(
        "bootstrap", help="print an Envoy (or gRPC) bootstrap that connects a proxy to galleon serve",
        description="Print an Envoy bootstrap (YAML, for envoy -c) for one proxy: its node identity as Istio "
                    "writes it (id, CLUSTER_ID, NETWORK, LABELS, locality), ADS over HTTP/2 to galleon serve, "
                    "the SDS socket of Istio's agent, and the admin interface on loopback. With --grpc, gRPC's "
                    "own xDS bootstrap (JSON) for a proxyless gRPC client instead.")
    _proxy_arguments(p, node_id_default=None)
    p.add_argument("--network", default=None, metavar="NAME", help="the proxy's network (default: its cluster's)")
    p.add_argument("--ads", default="127.0.0.1:15010", metavar="HOST:PORT",
                   help="where galleon serve listens for ADS (default: 127.0.0.1:15010)")
    p.add_argument("--delta", action="store_true", help="use incremental (delta) xDS instead of state of the world")
    p.add_argument("--admin", default="127.0.0.1:15000", metavar="HOST:PORT",
                   help="Envoy's admin interface (default: 127.0.0.1:15000)")
    p.add_argument("--listen-address", default=ANY_ADDRESS, metavar="IP",
                   help="the address the proxy's listeners bind (default: 0.0.0.0, as with iptables capture; "
                        "127.0.0.1 for a proxy that applications call directly)")
    p.add_argument("--sds-socket", default=defaults.SDS_SOCKET, metavar="PATH",
                   help=f"Unix socket of the SDS server with workload certificates (default: {defaults.SDS_SOCKET})")
    p.add_argument("--grpc", action="store_true",
                   help="print gRPC's xDS bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) for a proxyless gRPC client "
                        "instead: node metadata GENERATOR=grpc, state of the world only")
    p.add_argument("--certificate-dir", default=defaults.GRPC_CERTIFICATE_DIR, metavar="DIR",
                   help="with --grpc: where the workload's cert-chain.pem, key.pem and root-cert.pem are "
                        f"(default: {defaults.GRPC_CERTIFICATE_DIR}, where Istio's agent writes them)")
    p.set_defaults(run=cmd_bootstrap)
    return parser


# The errors that mean bad input or an unusable source or cluster: one line, exit 2. A command that
# raised one of them imported its module, so only modules already imported are looked in.
_USER_ERRORS = (("compiler.parse", "UnreadableFile"), ("reconciler.ca.errors", "CAError"),
                ("reconciler.dns.configmap", "DNSError"))


def _user_errors() -> tuple[type[Exception], ...]:
    return (UsageError, SourceError, *(getattr(sys.modules[module], name) for module, name in _USER_ERRORS
                                       if module in sys.modules))


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process (the tests' way): the process's runtime policy is its own."""
    return _run(build_parser().parse_args(argv))


def run() -> None:
    """The `galleon` program (pyproject's script): the runtime policy (reconciler/runtime.py) is
    chosen here, once, for the command it runs."""
    args = build_parser().parse_args()
    if args.run is cmd_serve:
        runtime.for_daemon()
        sys.exit(_run(args))  # the daemon's threads are stopped and joined as the interpreter exits
    runtime.for_command()
    runtime.leave(_run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (| head): not an error worth a traceback
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - only the errors that mean bad input; the rest re-raised
        if not isinstance(exc, _user_errors()):
            raise
        print(f"galleon: error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE


if __name__ == "__main__":
    run()
