"""galleon sync: make a running galleon serve fetch and read its source now, then show its status."""
from __future__ import annotations

import argparse

from . import status
from .options import add_status_api


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "sync", help="make a running galleon serve fetch and read its source now",
        description="Ask galleon serve to fetch and read its source now (as a webhook would), wait for it (unless "
                    "--no-wait) and print its status; exit codes as galleon status.")
    add_status_api(p)
    p.add_argument("--no-wait", action="store_true", help="return at once instead of after the read")
    return p


def run(args) -> int:
    from ..api import reconciler_pb2
    response = status.call(args, lambda stub: stub.Sync(reconciler_pb2.SyncRequest(wait=not args.no_wait),
                                                        timeout=args.timeout))
    return status.show(response.status, args.format)
