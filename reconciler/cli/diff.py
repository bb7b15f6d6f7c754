"""galleon diff: the pull-request preview of a change between two revisions."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import defaults
from .common import (EXIT_CHANGES, EXIT_HEAD_INVALID_STRICT, EXIT_INVALID, EXIT_OK, UsageError, channel_to,
                     check_address, credentials, parse_cache, say, writing_output)
from .options import add_server_tls, add_source

if TYPE_CHECKING:
    from ..api import reconciler_pb2


def register(commands) -> argparse.ArgumentParser:
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
    add_source(p, rev=False)
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
    add_server_tls(p)
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="ask the galleon serve whose ADS port this is (its status API): when it serves BASE it "
                        "holds it parsed and modelled, and the preview takes about a second on a large mesh; "
                        "otherwise (another revision, unreachable, HEAD unknown to it) it is made here")
    p.add_argument("--server-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for --server (default: 120)")
    return p


def run(args) -> int:
    from compiler.snapshot import short_revision

    from ..sources import DirectorySource, FilesSource, open_source
    if args.max_bytes < defaults.PREVIEW_MIN_MAX_BYTES:
        raise UsageError(f"--max-bytes must be at least {defaults.PREVIEW_MIN_MAX_BYTES}")
    source = open_source(args.source, args.state_dir, credentials(args, True))
    if isinstance(source, (DirectorySource, FilesSource)):
        raise UsageError(f"{args.source}: not a Git repository; galleon diff compares two revisions of one (BASE "
                         "and HEAD: branches, tags, commit ids), so give its folder or URL")
    source.refresh()
    answer, not_live = _preview_from_server(args, source) if args.server else (None, None)
    if answer is not None:
        text, head_revision, head_valid, has_changes = answer.body, answer.head_revision, answer.head_valid, \
            answer.has_changes
    else:
        from compiler.revision import load

        from .. import preview
        say(f"reading {args.base} and {args.head}")
        cache = parse_cache(args)
        base_snapshot, head_snapshot = source.snapshot(args.base), source.snapshot(args.head)
        base = load(base_snapshot, stored=cache.stored(base_snapshot))
        head = load(head_snapshot, base, stored=cache.stored(head_snapshot, have=base.parsed.files))
        cache.keep(base.parsed)
        cache.keep(head.parsed)
        try:
            result = preview.preview_of(base, head, args.cluster, progress=say)
        except ValueError as exc:
            raise UsageError(f"--cluster {exc}") from None
        result.not_live = not_live
        text = (preview.render_json(result) if args.format == "json"
                else preview.render_markdown(result, args.max_bytes))
        head_revision, head_valid, has_changes = head.snapshot.revision, head.valid, result.has_changes
    if args.output is None:
        sys.stdout.write(text)
    else:
        with writing_output(args.output):
            args.output.write_text(text, encoding="utf-8")
        say(f"wrote the preview to {args.output}")
    if not head_valid:
        print(f"galleon: HEAD ({short_revision(head_revision)}) has errors; see the preview's "
              "validation section", file=sys.stderr)
        return EXIT_HEAD_INVALID_STRICT if args.exit_code else EXIT_INVALID
    if args.exit_code:
        return EXIT_CHANGES if has_changes else EXIT_OK
    return EXIT_OK


def _preview_from_server(args, source) -> tuple[reconciler_pb2.PreviewResponse | None, str | None]:
    """The preview from the `galleon serve` at --server, which holds BASE parsed and modelled when it
    serves it; else (None, why), said on stderr and in the preview, which is then made here."""
    import grpc
    from compiler.snapshot import short_revision

    from ..api import reconciler_pb2, reconciler_pb2_grpc
    base, head = source.head(args.base), source.head(args.head)
    request = reconciler_pb2.PreviewRequest(rev=head, format=args.format, clusters=args.cluster,
                                            max_bytes=args.max_bytes)
    check_address(args.server, "--server")
    with channel_to(args) as channel:
        try:
            answer = reconciler_pb2_grpc.ReconcilerStub(channel).Preview(request, timeout=args.server_timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # an unknown --cluster
                raise UsageError(f"galleon serve at {args.server}: {exc.details()}") from None
            why = f"galleon serve at {args.server} gave no preview ({exc.code().name}: {exc.details()})"
            print(f"galleon: {why}; comparing here", file=sys.stderr)
            return None, why
    if answer.base_revision != base:
        why = f"galleon serve at {args.server} serves {short_revision(answer.base_revision)}, not BASE {short_revision(base)}"
        print(f"galleon: {why}; comparing here", file=sys.stderr)
        return None, why
    return answer, None
