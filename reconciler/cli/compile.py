"""galleon compile: one proxy's Envoy (or gRPC) configuration, in Envoy's config_dump shape."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import EXIT_INVALID, EXIT_OK, UsageError, labels, locality, valid_revision, writing_output
from .options import add_proxy, add_source


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "compile", help="print one proxy's Envoy configuration (clusters, endpoints, listeners, routes)",
        description="Compile SOURCE at REV into the Envoy v3 configuration one proxy would get, in Envoy's "
                    "config_dump shape: {clusters, endpoints, listeners, routes}, each resource as proto3 "
                    "JSON with its @type. The proxy is described as Istio does: its cluster, node id "
                    "(sidecar~IP~POD.NS~NS.svc.cluster.local or router~...), labels and locality; its "
                    "network and locality default to its cluster's. Exits 1 without output when the "
                    "revision has errors.")
    add_source(p, files=True)
    add_proxy(p, node_id_default="sidecar~10.0.0.1~proxy.default~default.svc.cluster.local")
    p.add_argument("--grpc", action="store_true",
                   help="the configuration of a proxyless gRPC client (node metadata GENERATOR=grpc) instead of "
                        "an Envoy's: listeners HOST:PORT with an api_listener, as gRPC asks for them")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                   help="write clusters.json, endpoints.json, listeners.json and routes.json into DIR "
                        "instead of one document to stdout")
    return p


def run(args) -> int:
    from compiler.snapshot import short_revision
    from compiler.view import ViewError, make_view
    from compiler.xds import compile_view, config_dump, dump_json
    result = valid_revision(args, "nothing compiled")
    if result is None:
        return EXIT_INVALID
    mesh = result.mesh
    try:
        view = make_view(mesh, args.cluster, args.node_id, labels(args.label), locality(args.locality),
                         proxyless=args.grpc)
    except ViewError as exc:
        raise UsageError(str(exc)) from None
    dump = config_dump(compile_view(mesh, view))
    if args.output is None:
        sys.stdout.write(dump_json(dump))
        return EXIT_OK
    with writing_output(args.output):
        args.output.mkdir(parents=True, exist_ok=True)
        for key, resources in dump.items():
            (args.output / f"{key}.json").write_text(dump_json(resources))
    counts = ", ".join(f"{len(v)} {k}" for k, v in dump.items())
    print(f"wrote {counts} to {args.output}/ for {view.role} in {view.cluster} "
          f"({view.network}, {view.locality}) at {short_revision(result.snapshot.revision)}", file=sys.stderr)
    return EXIT_OK
