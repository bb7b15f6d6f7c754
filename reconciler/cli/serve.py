"""galleon serve: the per-cluster reconcile daemon (ADS, status API, HTTP, CA and DNS reconcilers).

Its arguments are checked here, before the daemon (reconciler/daemon/) starts, so that a typo is an
error now and not a log line in an hour."""
from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from .. import defaults
from .common import UsageError, check_address, credentials
from .options import add_kubeconfig, add_source


# A change is acted on once it has been quiet for the first flag's time, or at the latest the second's
# after it came: each flag with its default.
QUIET_AND_CAPS = ((("--debounce", defaults.DEBOUNCE), ("--debounce-max", defaults.DEBOUNCE_MAX)),
                  (("--registry-quiet", defaults.REGISTRY_QUIET), ("--registry-max-wait", defaults.REGISTRY_MAX_WAIT)))
_DEFAULTS = dict(flag for pair in QUIET_AND_CAPS for flag in pair)


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "serve", help="serve one cluster's proxies over ADS, following the source",
        description="Read SOURCE, validate it and serve the compiled configuration to Envoy and gRPC proxies over "
                    "ADS (state of the world and delta). Reloads when a directory's files change, when a local "
                    "repository gets a commit, on SIGHUP, and every --poll seconds. A revision with errors is "
                    "reported and not served: proxies keep the last valid one. Stops cleanly on SIGTERM or "
                    "SIGINT. HTTP on --http: /healthz, /readyz, /metrics, /debug/configz, /debug/syncz, "
                    "/debug/config_dump?proxyID=NODE_ID, /debug/registryz (/debug/* to loopback peers, or with "
                    "--debug-token-file's token).")
    add_source(p)
    p.add_argument("--cluster", required=True, metavar="NAME",
                   help="the Cluster this daemon serves; proxies that do not say theirs are taken to be in it")
    p.add_argument("--ads", default="127.0.0.1:15010", metavar="HOST:PORT",
                   help="where to serve ADS (default: 127.0.0.1:15010; port 0 picks a free one)")
    p.add_argument("--http", default="127.0.0.1:15014", metavar="HOST:PORT",
                   help="where to serve health, metrics and debug pages (default: 127.0.0.1:15014)")
    p.add_argument("--debug-token-file", type=Path, default=None, metavar="FILE",
                   help="let /debug/* on --http answer any peer that sends Authorization: Bearer TOKEN, TOKEN "
                        "being FILE's one line (read at start; default: /debug/* answers loopback peers only)")
    p.add_argument("--http-max-body", type=int, default=1 << 20, metavar="BYTES",
                   help="refuse a request body over BYTES (413) without reading it (default: 1048576)")
    p.add_argument("--http-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="drop an HTTP client that takes longer than this to send its request's head, or then its "
                        "body (408), or to take the answer (default: 10)")
    p.add_argument("--http-max-connections", type=int, default=64, metavar="N",
                   help="keep at most N HTTP connections open, each holding a socket and at most its request, not "
                        "a thread: a newer one drops the one slowest to send its request, or gets 503 when all N "
                        "are being answered (default: 64)")
    p.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                   help="also read the source every SECONDS (for remote Git; default: only on changes and SIGHUP)")
    _add_quiet_and_cap(p, "--debounce", "wait until changes have been quiet this long before reloading",
                       "--debounce-max", "but reload at most this long after the first change")
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
    p.add_argument("--views-memory", type=int, default=1024, metavar="MB",
                   help="memory the compiled proxy views may hold, in MiB (default: 1024): each distinct view (cluster, "
                        "network, locality, role, namespace, labels) is compiled once and held; when a new one does not "
                        "fit, views no connected proxy holds are let go, least recently used first, else its proxy is "
                        "refused with RESOURCE_EXHAUSTED (galleon_xds_refused_total) and retries later")
    sec = p.add_argument_group("security (ADS and the status API; off loopback, TLS and authentication are required)")
    sec.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                     help="serve TLS with this PEM certificate (chain); read again when it changes")
    sec.add_argument("--tls-key", type=Path, default=None, metavar="FILE", help="its PEM private key")
    sec.add_argument("--client-ca", type=Path, default=None, metavar="FILE",
                     help="mutual TLS: a proxy presents a certificate issued under these roots (the mesh's: "
                          "galleon ca init-root); its identity is the SPIFFE ID spiffe://TD/ns/NS/sa/SA in it")
    sec.add_argument("--token-review", action="store_true",
                     help="accept a Kubernetes service-account token (authorization: Bearer) checked with the "
                          "TokenReview API of the cluster the proxy names")
    sec.add_argument("--token-audience", default="istio-ca", metavar="AUDIENCE",
                     help="the audience such a token must be for (default: istio-ca, as Istio)")
    sec.add_argument("--insecure", action="store_true",
                     help="serve plaintext or unauthenticated peers on a non-loopback --ads anyway (each "
                          "connection is logged as unauthenticated)")
    sec.add_argument("--admin-identity", action="append", default=[], metavar="SPIFFE_ID",
                     help="an identity that may call the status API's Sync and Preview (repeatable)")
    sec.add_argument("--preview-refs", action="append", default=[], metavar="PATTERN",
                     help="refs a Preview may read, as glob patterns (repeatable; default: refs/heads/*, "
                          "refs/pull/*, refs/merge-requests/*; a bare name is a branch)")
    live = p.add_argument_group("live registry (what runs in the clusters: Services, EndpointSlices, Pods, Nodes)")
    live.add_argument("--registry", action="append", default=[], metavar="kube|dir:PATH",
                      help="serve the endpoints of the pods that run, beside those the source writes: kube reads "
                           "this cluster's API server (in-cluster, or --kubeconfig and --kube-context), every "
                           "Cluster with a kubeContext, and the clusters of Istio's remote secrets (followed: a secret "
                           "created, changed or deleted adds, reconnects or removes its clusters); dir:PATH reads "
                           "manifests at "
                           "PATH/<cluster>/<namespace>/<Kind>/<name>.yaml (Nodes at PATH/<cluster>/Node/<name>.yaml), "
                           "watched. Repeatable. A cluster's endpoints are served once it is fully listed; one that "
                           "becomes unreachable keeps its last endpoints, marked stale (/debug/registryz)")
    _add_quiet_and_cap(live, "--registry-quiet", "publish an object's change once it has been quiet this long",
                       "--registry-max-wait", "but at most this long after its first change")
    live.add_argument("--registry-sync-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="at start, serve no proxy until every cluster the registry follows (and Istio's remote "
                           "secrets) is fully listed, "
                           "as Istio's istiod does (a proxy reconnecting after a restart would otherwise be sent "
                           "no endpoints of those clusters), but at most this long: then serve without the "
                           "clusters not listed yet, and add them once they are (default: 30; 0: do not wait)")
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
    add_kubeconfig(elect, "kubeconfig for the Lease, --registry kube, --ca-target kube and --dns-target kube "
                          "(default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    elect.add_argument("--kube-context", default=None, metavar="NAME", help="kubeconfig context (default: current)")
    p.add_argument("--log-level", choices=defaults.LOG_LEVELS, default="info",
                   help="least important log events shown (default: info); logs are JSON lines unless "
                        "stderr is a terminal")
    return p


def run(args) -> int:
    from .. import ca, dns, logs, webhook
    from ..daemon import CaOptions, DnsOptions, LeaseOptions, RegistryOptions, ServeOptions, serve
    from ..http import HttpLimits, load_token
    from ..kube.manifests import kube_or_dir
    from ..sources.signatures import SignatureError, SignaturePolicy
    logs.configure(args.log_level)
    for quiet, cap in QUIET_AND_CAPS:
        _check_quiet_and_cap(args, quiet, cap)
    if args.poll is not None and args.poll <= 0:
        raise UsageError("--poll must be a positive number of seconds")
    ads = check_address(args.ads, "--ads")
    if check_address(args.http, "--http") == ads and ads[1] != 0:
        raise UsageError(f"--ads and --http are both {args.ads}: give each its own address")
    _free(ads, "--ads")
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
    if args.registry_sync_timeout < 0:
        raise UsageError("--registry-sync-timeout must not be negative")
    security = _security(args)
    for registry in args.registry:
        try:
            folder = kube_or_dir(registry)
        except ValueError as exc:
            raise UsageError(f"--registry {registry}: {exc}") from None
        if folder is not None and not folder.is_dir():
            what = f"{folder} is a file, not a folder" if folder.exists() else f"no folder {folder}"
            raise UsageError(f"--registry {registry}: {what} (expected "
                             f"{folder}/<cluster>/<namespace>/<Kind>/<name>.yaml)")
    if args.max_connection_age is not None and args.max_connection_age <= 0:
        raise UsageError("--max-connection-age must be a positive number of seconds")
    for value, flag in ((args.http_max_body, "--http-max-body"), (args.http_timeout, "--http-timeout"),
                        (args.http_max_connections, "--http-max-connections")):
        if value <= 0:
            raise UsageError(f"{flag} must be positive")
    if args.views_memory <= 0:
        raise UsageError("--views-memory must be a positive number of MiB")
    try:
        secret = webhook.load_secret(args.webhook_secret_file) if args.webhook_secret_file else None
        debug_token = load_token(args.debug_token_file) if args.debug_token_file else None
        signatures = (SignaturePolicy.load(args.verify_ssh_key, args.verify_gpg_key)
                      if args.verify_ssh_key or args.verify_gpg_key else None)
    except (ValueError, SignatureError) as exc:
        raise UsageError(str(exc)) from None
    _check_state_dir(args.state_dir)
    options = ServeOptions(source=args.source, cluster=args.cluster, rev=args.rev, ads=args.ads, http=args.http,
                           poll=args.poll, state_dir=args.state_dir, parse_cache=not args.no_cache,
                           credentials=credentials(args, False),
                           debounce=args.debounce, debounce_max=args.debounce_max, webhook_secret=secret,
                           debug_token=debug_token,
                           http_limits=HttpLimits(args.http_max_body, args.http_timeout, args.http_max_connections),
                           signatures=signatures, max_connection_age=args.max_connection_age,
                           views_memory=args.views_memory,
                           lease=LeaseOptions(args.lease_namespace, args.lease_name or f"galleon-{args.cluster}",
                                              args.lease_identity, args.kubeconfig, args.kube_context)
                           if args.leader_elect else None,
                           ca=CaOptions(args.root_ca, args.ca_target, args.ca_interval, args.kubeconfig,
                                        args.kube_context) if args.root_ca else None,
                           dns=DnsOptions(args.dns_target, args.dns_interval, args.dns_ttl, args.dns_create,
                                          args.kubeconfig, args.kube_context) if args.dns_target else None,
                           security=security,
                           registry=RegistryOptions(tuple(dict.fromkeys(args.registry)), args.kubeconfig,
                                                    args.kube_context, args.registry_quiet, args.registry_max_wait,
                                                    args.registry_sync_timeout)
                           if args.registry else None)
    try:
        return serve(options)
    except OSError as exc:
        raise UsageError(str(exc)) from None


def _add_quiet_and_cap(group, quiet: str, quiet_help: str, cap: str, cap_help: str) -> None:
    group.add_argument(quiet, type=float, default=_DEFAULTS[quiet], metavar="SECONDS",
                       help=f"{quiet_help} (default: {_DEFAULTS[quiet]:g})")
    group.add_argument(cap, type=float, default=None, metavar="SECONDS",
                       help=f"{cap_help} (default: {_DEFAULTS[cap]:g}, or {quiet} when that is longer)")


def _check_quiet_and_cap(args, quiet: tuple[str, float], cap: tuple[str, float]) -> None:
    """A cap not given follows a longer quiet time (raising one alone is not an error); neither may be
    negative, nor a cap given shorter than its quiet time. Raises UsageError."""
    (quiet_flag, _), (cap_flag, cap_default) = quiet, cap
    quiet_attr, cap_attr = (flag.lstrip("-").replace("-", "_") for flag in (quiet_flag, cap_flag))
    if getattr(args, cap_attr) is None:
        setattr(args, cap_attr, max(cap_default, getattr(args, quiet_attr)))
    quiet_value, cap_value = getattr(args, quiet_attr), getattr(args, cap_attr)
    for value, flag in ((quiet_value, quiet_flag), (cap_value, cap_flag)):
        if value < 0:
            raise UsageError(f"{flag} must not be negative")
    if cap_value < quiet_value:
        raise UsageError(f"{cap_flag} {cap_value:g} is shorter than {quiet_flag} {quiet_value:g}, the quiet time it "
                         f"caps: give {cap_flag} at least {quiet_value:g}")


def _free(address: tuple[str, int], flag: str) -> None:
    """Refuse an address another process listens on, before gRPC tries it: gRPC would say so in a
    line of its own C core's log, beside Galleon's. (A race with another process stays possible; the
    daemon's own error then follows gRPC's line.)"""
    host, port = address
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (as gRPC binds: a TIME_WAIT is no use)
            probe.bind((host, port))
    except OSError as exc:
        raise UsageError(f"{flag}: cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                         "address") from None


def _check_state_dir(state_dir: Path) -> None:
    """Refuse a ``state_dir`` the last known good snapshot cannot be kept in: the daemon would run without
    it, and that would show only once the source is gone. Raises UsageError."""
    from ..state import FOLDER, check_writable
    try:
        check_writable(state_dir)
    except OSError as exc:
        raise UsageError(f"--state-dir {state_dir}: cannot keep the last known good snapshot in "
                         f"{state_dir / FOLDER} ({exc.strerror or exc}); give a folder galleon serve can create "
                         "and write") from None


def _security(args):
    """The security options, checked: TLS files usable, and off loopback both TLS and authentication
    (or --insecure). Raises UsageError."""
    from ..daemon.options import SecurityOptions
    from ..security.gate import is_loopback_host
    from ..security.tls import ReloadingCredentials, TlsError
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise UsageError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    if args.tls_cert:
        try:
            ReloadingCredentials(args.tls_cert, args.tls_key, args.client_ca)
        except TlsError as exc:
            raise UsageError(str(exc)) from None
    authenticated = bool(args.client_ca) or args.token_review
    if not is_loopback_host(args.ads.rpartition(":")[0]) and not (args.tls_cert and authenticated) and not args.insecure:
        missing = " and ".join(m for m, ok in (("--tls-cert/--tls-key", args.tls_cert),
                                                ("--client-ca or --token-review", authenticated)) if not ok)
        raise UsageError(f"--ads {args.ads} is not a loopback address: add {missing} (or --insecure to serve "
                         "every peer unauthenticated)")
    for admin in args.admin_identity:
        if not admin.startswith("spiffe://"):
            raise UsageError(f"--admin-identity {admin}: give a SPIFFE ID (spiffe://TRUST-DOMAIN/ns/NS/sa/SA)")
    return SecurityOptions(args.tls_cert, args.tls_key, args.client_ca, args.token_review, args.token_audience,
                           args.insecure, tuple(args.admin_identity), tuple(args.preview_refs), args.kubeconfig,
                           args.kube_context)
