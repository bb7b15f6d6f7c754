"""galleon bootstrap: an Envoy (or proxyless gRPC) bootstrap that connects one proxy to galleon serve."""
from __future__ import annotations

import argparse
import sys

from compiler.names import ANY_ADDRESS

from .. import defaults
from .common import EXIT_OK, UsageError, labels, locality
from .options import add_proxy


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "bootstrap", help="print an Envoy (or gRPC) bootstrap that connects a proxy to galleon serve",
        description="Print an Envoy bootstrap (YAML, for envoy -c) for one proxy: its node identity as Istio "
                    "writes it (id, CLUSTER_ID, NETWORK, LABELS, locality), ADS over HTTP/2 to galleon serve, "
                    "the SDS socket of Istio's agent, and the admin interface on loopback. With --grpc, gRPC's "
                    "own xDS bootstrap (JSON) for a proxyless gRPC client instead.")
    add_proxy(p, node_id_default=None)
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
    tls = p.add_argument_group("TLS to galleon serve (when it serves --tls-cert)")
    tls.add_argument("--xds-ca", default=None, metavar="FILE",
                     help="PEM roots that sign galleon serve's certificate (turns TLS on)")
    tls.add_argument("--xds-cert", default=None, metavar="FILE",
                     help="the proxy's PEM certificate for mutual TLS (its SPIFFE ID names it to galleon serve)")
    tls.add_argument("--xds-key", default=None, metavar="FILE", help="its PEM private key")
    tls.add_argument("--xds-sds", action="store_true",
                     help="Envoy only: take the proxy's certificate and roots from the SDS socket (Istio's "
                          "agent: 'default' and 'ROOTCA') instead of files")
    p.add_argument("--grpc", action="store_true",
                   help="print gRPC's xDS bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) for a proxyless gRPC client "
                        "instead: node metadata GENERATOR=grpc, state of the world only")
    p.add_argument("--certificate-dir", default=defaults.GRPC_CERTIFICATE_DIR, metavar="DIR",
                   help="with --grpc: where the workload's cert-chain.pem, key.pem and root-cert.pem are "
                        f"(default: {defaults.GRPC_CERTIFICATE_DIR}, where Istio's agent writes them)")
    return p


def run(args) -> int:
    from compiler.view import ViewError

    from ..bootstrap import BootstrapOptions, XdsTls, bootstrap_yaml, grpc_bootstrap_json
    tls = (XdsTls(args.xds_ca, args.xds_cert, args.xds_key, args.xds_sds)
           if args.xds_ca or args.xds_cert or args.xds_key or args.xds_sds else None)
    options = BootstrapOptions(cluster=args.cluster, node_id=args.node_id, ads=args.ads, labels=labels(args.label),
                               locality=locality(args.locality), network=args.network, admin=args.admin,
                               listen_address=args.listen_address, delta=args.delta, sds_socket=args.sds_socket,
                               xds_tls=tls)
    try:
        sys.stdout.write(grpc_bootstrap_json(options, args.certificate_dir) if args.grpc else bootstrap_yaml(options))
    except (ValueError, ViewError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK
