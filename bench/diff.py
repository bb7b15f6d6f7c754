"""Benchmark: `galleon diff` of two revisions of a large mesh that differ in one file (prints figures).

Uses bench/compile.py's mesh (5,000 services x 3 clusters x 10 endpoints and an ingress
Gateway by default) and its one-line change (one ServiceEntry endpoint moved), then times each
stage of the preview as the command runs it: reading each revision (parse, validate, model),
comparing every proxy of every cluster (BASE compiled, HEAD compiled incrementally from it,
resources compared, traffic shares), and rendering markdown and JSON.

    .venv/bin/python bench/diff.py                  # the issue's size
    .venv/bin/python bench/diff.py --services 500   # quicker
    .venv/bin/python bench/diff.py --profile        # cProfile of the comparison stage
    .venv/bin/python bench/diff.py --server         # also: `galleon diff --server` against a galleon serve

With ``--server`` the two revisions are committed to a Git repository (BASE on main, HEAD on a
branch), ``galleon serve`` is started on it (so it serves BASE), and the wall time of the command
``galleon diff REPO BASE HEAD --server ADDR`` is measured as a user runs it (a new process each time).

See bench/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pygit2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # see bench/compile.py
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.compile import TARGET, make_snapshot, with_one_endpoint_moved  # noqa: E402
from compiler.revision import load  # noqa: E402
from reconciler.preview import preview_of, render_json, render_markdown  # noqa: E402

TARGET_SECONDS = 2.0


def timed(what: str, fn):
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"  {what:<52} {seconds:7.2f} s", flush=True)
    return result, seconds


def modelled(revision):
    """A loaded revision whose mesh is built (load builds it when first asked for)."""
    assert revision.mesh is not None
    return revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=TARGET[0])
    parser.add_argument("--clusters", type=int, default=TARGET[1])
    parser.add_argument("--endpoints", type=int, default=TARGET[2])
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the comparison stage")
    parser.add_argument("--command", action="store_true",
                        help="also time the command `galleon diff REPO BASE HEAD` on its own: without the parse "
                             "cache, with an empty one, and with the one that run left")
    parser.add_argument("--server", action="store_true",
                        help="also time `galleon diff --server` against a galleon serve that serves BASE")
    args = parser.parse_args(argv)

    base_snapshot, objects = make_snapshot(args.services, args.clusters, args.endpoints, gateway=True)
    base_for_edit = load(base_snapshot)
    head_snapshot, what = with_one_endpoint_moved(base_snapshot, base_for_edit.objects)
    del base_for_edit
    size = sum(len(d) for d in base_snapshot.files.values()) / 1e6
    print(f"mesh: {args.services} services x {args.clusters} clusters x {args.endpoints} endpoints, "
          f"{objects} objects, {size:.1f} MB of YAML in {len(base_snapshot.files)} files")
    print(f"change: {what}")

    total = 0.0
    base, seconds = timed("read BASE (parse, validate, model)", lambda: modelled(load(base_snapshot)))
    total += seconds
    read_base = seconds
    head, seconds = timed("read HEAD (the changed file parsed; validate, model)",
                          lambda: modelled(load(head_snapshot, base)))
    total += seconds
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    # As the command makes it: every cluster, with the CA and DNS plans, the collector paused.
    preview, seconds = timed("compare every proxy of every cluster", lambda: preview_of(base, head, []))
    if profiler:
        profiler.disable()
    compare = seconds
    total += seconds
    markdown, seconds = timed("render markdown", lambda: render_markdown(preview))
    total += seconds
    _, seconds = timed("render JSON", lambda: render_json(preview))
    total += seconds
    proxies = sum(len(c.views) for c in preview.clusters)
    changed = sum(len(v.changes) for c in preview.clusters for v in c.views)
    print(f"  {'total':<52} {total:7.2f} s  (target < {TARGET_SECONDS:.0f} s: "
          f"{'PASS' if total < TARGET_SECONDS else 'FAIL'})")
    # The status API's Preview holds BASE (the served snapshot) once read: only the rest is per preview.
    warm = total - read_base
    print(f"  {'without reading BASE (the daemon Preview, BASE held)':<52} {warm:7.2f} s  (target < "
          f"{TARGET_SECONDS:.0f} s: {'PASS' if warm < TARGET_SECONDS else 'FAIL'})")
    print(f"proxies compared: {proxies} ({compare / max(proxies, 1):.2f} s each), resources changed: {changed}, "
          f"traffic changes: {sum(len(c.traffic) for c in preview.clusters)}, markdown: {len(markdown):,} bytes")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    if args.command or args.server:
        del base, head, preview  # the commands below need the memory
    if args.command:
        time_command(base_snapshot, head_snapshot, markdown)
    if args.server:
        time_server(base_snapshot, head_snapshot, markdown)
    return 0


def _commit(repo: pygit2.Repository, files: dict[str, bytes], ref: str, parents: list) -> pygit2.Oid:
    index = pygit2.Index()
    for path, data in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    who = pygit2.Signature("bench", "bench@galleon.invalid", 1_700_000_000, 0)
    return repo.create_commit(ref, who, who, "bench", index.write_tree(repo), parents)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync(galleon: list[str], env: dict, ads: int, log: Path) -> None:
    """Have the daemon serve main's new head, and wait until it has made it ready for previews."""
    before = log.read_text().count('"ready for previews"')
    subprocess.run([*galleon, "sync", "--server", f"127.0.0.1:{ads}"], cwd=ROOT, env=env, capture_output=True,
                   check=True)
    deadline = time.perf_counter() + 120
    while log.read_text().count('"ready for previews"') == before:
        if time.perf_counter() > deadline:
            raise SystemExit(f"galleon serve did not publish the next revision; see {log}")
        time.sleep(0.1)


def _repository(work: Path, base_snapshot, head_snapshot) -> tuple[pygit2.Repository, pygit2.Oid, pygit2.Oid]:
    """BASE on main, HEAD on a branch pr, in a bare repository under ``work``."""
    repo = pygit2.init_repository(str(work / "mesh"), bare=True, initial_head="main")
    base = _commit(repo, dict(base_snapshot.files), "refs/heads/main", [])
    return repo, base, _commit(repo, dict(head_snapshot.files), "refs/heads/pr", [base])


def _same_preview(text: str, markdown: str) -> bool:
    """The revisions are named differently (commit ids here): compare all but the title."""
    untitled = [[line for line in t.splitlines() if "Galleon preview:" not in line] for t in (text, markdown)]
    return untitled[0] == untitled[1]


def time_command(base_snapshot, head_snapshot, markdown: str) -> None:
    """`galleon diff REPO BASE HEAD` as a user runs it, a new process each time: without the parse cache,
    then with an empty one (which the run fills), then with what that run left (one file changed since)."""
    work = Path(tempfile.mkdtemp(prefix="galleon-bench-diff-"))
    # As Python runs by default, with its bytecode cached: a sandbox's PYTHONDONTWRITEBYTECODE=1 would
    # have every run compile galleon's modules again (0.3 s), which no installed copy does.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        _, base, head = _repository(work, base_snapshot, head_snapshot)
        command = [sys.executable, "-m", "reconciler.cli", "diff", str(work / "mesh"), str(base), str(head),
                   "--state-dir", str(work / "state")]
        warm = []
        for label, extra in (("without the parse cache (--no-cache)", ["--no-cache"]),
                             ("with an empty parse cache (fills it)", []),
                             *((f"with the parse cache that run left (run {i})", []) for i in range(1, 6))):
            start = time.perf_counter()
            result = subprocess.run([*command, *extra], cwd=ROOT, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - start
            if "run " in label:
                warm.append(seconds)
            same = "same markdown as in-process" if _same_preview(result.stdout, markdown) else "DIFFERENT markdown"
            print(f"  {'galleon diff alone, ' + label:<64} {seconds:7.2f} s  (target < {TARGET_SECONDS:.0f} s: "
                  f"{'PASS' if seconds < TARGET_SECONDS else 'FAIL'}; exit {result.returncode}; {same})", flush=True)
        median = sorted(warm)[len(warm) // 2]
        print(f"  {'galleon diff alone, with the parse cache: median of 5':<64} {median:7.2f} s  (target < "
              f"{TARGET_SECONDS:.0f} s: {'PASS' if median < TARGET_SECONDS else 'FAIL'}; fastest {min(warm):.2f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def time_server(base_snapshot, head_snapshot, markdown: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="galleon-bench-diff-"))
    try:
        repo, base, head = _repository(work, base_snapshot, head_snapshot)
        ads, web = _free_port(), _free_port()
        galleon = [sys.executable, "-m", "reconciler.cli"]
        env = {**os.environ, "GALLEON_STATE_DIR": str(work / "state")}
        started = time.perf_counter()
        daemon = subprocess.Popen([*galleon, "serve", str(work / "mesh"), "--cluster", "cluster-0", "--ads",
                                   f"127.0.0.1:{ads}", "--http", f"127.0.0.1:{web}", "--state-dir", str(work / "state")],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(work / "serve.log").open("w"))
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{web}/readyz", timeout=1)
                    break
                except OSError:
                    if daemon.poll() is not None or time.perf_counter() - started > 300:
                        raise SystemExit(f"galleon serve did not get ready; see {work / 'serve.log'}")
                    time.sleep(0.2)
            print(f"galleon serve on the repository (serving BASE) ready in {time.perf_counter() - started:.1f} s")
            attempts = [("first", base, head), ("second", base, head)]
            for attempt, base_id, head_id in attempts:
                if attempt == "next BASE's first":
                    _sync(galleon, env, ads, work / "serve.log")
                start = time.perf_counter()
                result = subprocess.run([*galleon, "diff", str(work / "mesh"), str(base_id), str(head_id), "--server",
                                         f"127.0.0.1:{ads}"], cwd=ROOT, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                same = _same_preview(result.stdout, markdown)
                made = [json.loads(line) for line in (work / "serve.log").read_text().splitlines()
                        if '"preview made"' in line]
                inside = f"; {made[-1]['seconds']:.2f} s of it in the daemon" if made else ""
                print(f"  {'galleon diff --server, ' + attempt + ' run (command wall time)':<64} {seconds:7.2f} s  "
                      f"(target < {TARGET_SECONDS:.0f} s: {'PASS' if seconds < TARGET_SECONDS else 'FAIL'}{inside}; "
                      f"{'same markdown as in-process' if same else 'DIFFERENT markdown'}"
                      f"{'; ' + result.stderr.strip() if result.stderr.strip() else ''})", flush=True)
                if attempt == "second":
                    # The daemon has made a preview, so it makes each revision it serves from now on
                    # ready for previews when it publishes it: the steady state of a daemon in use. The
                    # next BASE and HEAD differ from these by a comment in another file.
                    files = dict(base_snapshot.files)
                    other = sorted(files)[-1]
                    touched = {other: files[other] + b"# the next revision\n"}
                    base = _commit(repo, {**files, **touched}, "refs/heads/main", [base])
                    head = _commit(repo, {**head_snapshot.files, **touched}, "refs/heads/pr-next", [base])
                    attempts.append(("next BASE's first", base, head))
        finally:
            daemon.terminate()
            daemon.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from reconciler import runtime
    runtime.for_command()  # the runtime policy of the galleon command this measures
    sys.exit(main())
