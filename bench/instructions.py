"""Count the CPU instructions of one pipeline stage, for comparing two versions of the code.

Wall-clock figures on a shared or virtualised machine move by 20-50 % from one run to the next,
more than most optimizations gain. The number of instructions a stage runs does not: this
script runs the stage under valgrind's callgrind, counting only while the stage runs, with a
fixed hash seed, and prints the count. Two runs of the same code differ by under 0.1 %.

The stages, on the mesh bench/compile.py generates (smaller by default: callgrind runs Python
about 50 times slower):

- parse: compiler.parse.parse of every file;
- validate: compiler.validate.validate_objects of the parsed objects;
- model: compiler.model.build_mesh of the valid objects;
- compile: compiler.xds.compile_view of the first sidecar view, on a freshly built mesh, after
  one compile of another mesh (so the per-process caches are warm, as in bench/compile.py's
  "one view, fresh mesh").

Compare counts of the same stage and mesh size taken with the same Python and packages: run
it in a worktree of the old commit and in the new one. Needs valgrind (Debian: apt-get install
valgrind); exits 1 without it.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # see bench/compile.py
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = ("parse", "validate", "model", "compile")
# callgrind counts only inside this C function: the stage runs in it, and nothing the stages call
# uses it (a nested call would switch counting off).
TOGGLE = "functools_reduce"


def run_stage(stage: str, services: int, clusters: int, endpoints: int) -> None:
    """The child: build the inputs (not counted), then run the stage inside functools.reduce."""
    from bench.compile import make_snapshot, views_of
    from compiler.model import build_mesh
    from compiler.parse import parse
    from compiler.validate import validate_objects
    from compiler.xds import compile_view

    snapshot, _ = make_snapshot(services, clusters, endpoints, gateway=True)
    once = lambda work: functools.reduce(lambda _, __: work(), [None], None)  # noqa: E731
    if stage == "parse":
        once(lambda: parse(snapshot))
        return
    parsed = parse(snapshot)
    if stage == "validate":
        once(lambda: validate_objects(parsed.objects))
        return
    valid, _ = validate_objects(parsed.objects)
    if stage == "model":
        once(lambda: build_mesh(valid, snapshot.revision))
        return
    warm = build_mesh(valid, snapshot.revision)
    view = views_of(warm)[0][1]
    compile_view(warm, view)
    mesh = build_mesh(valid, snapshot.revision)
    once(lambda: compile_view(mesh, view))


def count(stage: str, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--toggle-collect={TOGGLE}", f"--callgrind-out-file={out}",
                   sys.executable, __file__, "--child", stage, "--services", str(args.services),
                   "--clusters", str(args.clusters), "--endpoints", str(args.endpoints)]
        done = subprocess.run(command, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{stage}: the stage failed under valgrind:\n{done.stderr[-2000:]}")
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"{stage}: callgrind wrote no instruction count to {out}")
        return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="*", metavar="STAGE",
                        help=f"the stages to count: {', '.join(STAGES)} (default: all)")
    parser.add_argument("--services", type=int, default=150, help="services of the generated mesh (default 150)")
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service per cluster")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_stage(args.child, args.services, args.clusters, args.endpoints)
        return 0
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    if shutil.which("valgrind") is None:
        print("instructions.py: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    print(f"mesh: {args.services} services x {args.clusters} clusters x {args.endpoints} endpoints; "
          f"code: {ROOT}")
    for stage in args.stages or STAGES:
        print(f"  {stage:<9} {count(stage, args):>15,} instructions", flush=True)
    return 0


if __name__ == "__main__":
    from reconciler import runtime
    runtime.for_command()  # the runtime policy of the galleon command this measures
    sys.exit(main())
