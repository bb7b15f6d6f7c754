"""galleon validate: schema and semantic checks, one line per finding."""
from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_INVALID, EXIT_OK, print_findings, read
from .options import add_source


def register(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "validate", help="check a revision against the schemas and semantic analyzers",
        description="Check every object of SOURCE at REV against its JSON Schema and the semantic "
                    "analyzers. Prints one line per finding, FILE:LINE: LEVEL CODE KIND NS/NAME: message, "
                    "sorted; exits 0 when there are no errors (warnings allowed), 1 on errors, "
                    "2 when the source cannot be read.")
    add_source(p, files=True)
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text lines (default) or one JSON document with the same fields")
    p.add_argument("--summary", action="store_true",
                   help="after the findings, print an overview of the mesh (clusters, networks, services)")
    return p


def run(args) -> int:
    from compiler.findings import counts
    from compiler.snapshot import short_revision
    from compiler.summary import summarize
    result = read(args)
    found = counts(result.findings)
    if args.format == "json":
        json.dump({"source": result.snapshot.origin, "revision": result.snapshot.revision,
                   "valid": result.valid, "errors": found["error"], "warnings": found["warning"], "infos": found["info"],
                   "files": len(result.snapshot.files), "objects": len(result.objects),
                   "findings": [f.to_dict() for f in result.findings]}, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print_findings(result.findings)
        if args.summary and result.valid:
            print(summarize(result.objects, result.mesh))
        verdict = "valid" if result.valid else "INVALID"
        print(f"{result.snapshot.origin} at {short_revision(result.snapshot.revision)}: {verdict}: "
              f"{len(result.objects)} objects in {len(result.snapshot.files)} files, "
              f"{found['error']} errors, {found['warning']} warnings, {found['info']} infos", file=sys.stderr)
    return EXIT_OK if result.valid else EXIT_INVALID
