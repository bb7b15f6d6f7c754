"""galleon status: what a running galleon serve serves, through its status API; and how the status
API is called and its answer shown, which galleon sync shares."""
from __future__ import annotations

import argparse
import re
import sys

from .common import EXIT_INVALID, EXIT_OK, UsageError, channel_to, check_address
from .options import add_status_api


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "status", help="show what a running galleon serve serves, and why it refused what it refused",
        description="Ask galleon serve (its status API, on the ADS port) what it serves: the revision, whether it "
                    "came from the state directory, the newest revision seen and why it was refused (with its "
                    "findings), source errors, connected proxies, leadership. Exits 0 when the newest revision is "
                    "served, 1 when it was refused or nothing is served, 2 when the daemon cannot be reached (with "
                    "--watch: once it stops).")
    add_status_api(p)
    p.add_argument("--watch", action="store_true", help="print the status again each time it changes")
    return p


def run(args) -> int:
    from ..api import reconciler_pb2
    if not args.watch:
        return show(call(args, lambda stub: stub.GetStatus(reconciler_pb2.GetStatusRequest(), timeout=args.timeout)),
                    args.format)

    def watch(stub) -> int:
        for status in stub.WatchStatus(reconciler_pb2.WatchStatusRequest()):
            show(status, args.format)
        # (the daemon ends the stream when it stops)
        raise UsageError(f"galleon serve at {args.server} stopped")
    return call(args, watch)


def call(args, method):
    """``method(stub)`` on the status API at --server; a UsageError when the daemon does not answer."""
    import grpc

    from ..api import reconciler_pb2_grpc
    check_address(args.server, "--server")
    with channel_to(args) as channel:
        stub = reconciler_pb2_grpc.ReconcilerStub(channel)
        try:
            return method(stub)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                why = _unreachable(exc.details())
                hint = ("is it running? --server is its --ads address" if "refused" in why.lower()
                        else "if it serves TLS, give --server-ca" if args.server_ca is None
                        else "is --server its --ads address?")
                raise UsageError(f"cannot reach galleon serve at {args.server} ({hint}): {why}") from None
            raise UsageError(f"galleon serve at {args.server}: {exc.code().name}: {exc.details()}") from None


def _unreachable(details: str) -> str:
    """gRPC's reason for not reaching a server without its preamble ("failed to connect to all
    addresses; last error: UNKNOWN: ipv4:127.0.0.1:15010: "): "Failed to connect to remote host:
    Connection refused"."""
    return re.sub(r"^[A-Z_]+: \S+: ", "", details.rpartition("last error: ")[2])


def show(status, fmt: str) -> int:
    """Print a daemon's status (text or json); exit 0 when its newest revision is served, else 1."""
    from google.protobuf import json_format
    if fmt == "json":
        sys.stdout.write(json_format.MessageToJson(status, preserving_proto_field_name=True, sort_keys=True,
                                                   always_print_fields_with_no_presence=True) + "\n")
    else:
        sys.stdout.write(_text(status))
    sys.stdout.flush()
    return EXIT_OK if status.last_revision_valid and status.served_revision else EXIT_INVALID


def _text(status) -> str:
    served = status.served_revision or "nothing"
    lines = [f"cluster {status.cluster}, source {status.source}",
             f"serving {served}" + (" (from the state directory: the source cannot be read)"
                                    if status.from_state_dir else ""),
             f"newest revision seen {status.last_revision_seen or '-'}: "
             + ("served" if status.last_revision_seen == status.served_revision and status.last_revision_valid
                else "valid" if status.last_revision_valid else f"REFUSED: {_reason(status)}")]
    if status.source_error:
        lines.append(f"source error: {status.source_error}")
    lines += [f"  {f.file}:{f.line}: {f.level} {f.code} {f.kind} {f.namespace}/{f.name}: {f.message}"
              for f in status.findings]
    proxies = status.connected_proxies
    lines.append(f"{proxies} prox{'y' if proxies == 1 else 'ies'} connected; "
                 + ("leader" if status.leader else "not the leader"))
    for c in status.registry:
        state = ("STALE" if c.stale else "synced") if c.synced else "REFUSED" if c.refused else "not synced yet"
        lines.append(f"registry {c.cluster}: {state}, lists {c.services} Services, {c.pods} pods, "
                     f"{c.endpoints} endpoints ({c.not_ready} not ready), "
                     f"last event {c.last_event or '-'}"
                     + (f", last error at {c.last_error_at}: {c.last_error}" if c.last_error else ""))
        if c.not_in_mesh:
            lines.append(f"  warning: {c.not_in_mesh}")
    return "\n".join(lines) + "\n"


def _reason(status) -> str:
    """Why the newest revision is refused; when its findings follow, without the first of them again."""
    return status.rejection.split(", the first: ")[0] if status.findings else status.rejection
