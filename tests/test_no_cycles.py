"""What the daemon freezes without a pass of the collector (reconciler/runtime.py: what ``bulk`` work
made) is a revision's mesh and its served views. Frozen objects are freed by reference counting
alone until the next full settle, so a cycle among them, once replaced, would be kept for as long:
these tests hold a revision's parse, mesh and every served view to making none, over every golden
mesh (one per feature) and the sample repository with its registry (what ``make run`` serves),
both compiled from nothing and from the revision before (as a new revision is published).

(Endpoint relists, which settle_recent freezes the same way, have their own test in
tests/test_live.py.) The same inputs hold the compiler's caches to keeping nothing of a replaced
revision."""
from __future__ import annotations

import gc
import weakref
from collections import Counter
from pathlib import Path

import pytest
import yaml

from compiler.revision import load, with_live
from compiler.snapshot import Snapshot
from compiler.view import make_view
from reconciler.ads.views import serve_view
from reconciler.registry.directory import DirectoryFeed
from reconciler.registry.store import Registry
from tests.conftest import ROOT, sample_files

GOLDEN = ROOT / "tests" / "golden"
SIDECAR = "sidecar~127.0.0.1~proxy.default~default.svc.cluster.local"


def golden(feature: Path) -> tuple[dict[str, bytes], list[dict]]:
    repo = feature / "repo"
    files = {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("*.y*ml"))}
    return files, yaml.safe_load((feature / "views.yaml").read_text()) or []


def sample() -> tuple[dict[str, bytes], list[dict]]:
    return sample_files(), [{"cluster": "cluster-a"},
                            {"cluster": "cluster-a", "node_id": "sidecar~10.1.1.1~web.demo~demo.svc.cluster.local",
                             "labels": {"app": "web"}},
                            {"cluster": "cluster-b", "node_id": "router~10.2.0.1~gw.istio-system~istio-system.svc."
                                                                "cluster.local", "labels": {"istio": "eastwestgateway"}}]


def cases():
    for feature in sorted(p for p in GOLDEN.iterdir() if (p / "views.yaml").is_file()):
        yield pytest.param(feature.name, id=feature.name)
    yield pytest.param("sample-repo", id="sample-repo+sample-registry")


def served(files: dict[str, bytes], views: list[dict], live: tuple, revision: str, before: dict | None) -> dict:
    """A revision's views as the daemon serves them: parsed, its mesh built with the registry's objects,
    each view compiled and its responses written (from ``before``'s, as a new revision is)."""
    loaded = with_live(load(Snapshot(revision, files)), live) if live else load(Snapshot(revision, files))
    mesh = loaded.mesh
    out = {}
    for number, view in enumerate(views):
        proxy = make_view(mesh, view["cluster"], view.get("node_id") or SIDECAR, view.get("labels") or {},
                          view.get("locality"))
        out[number] = serve_view(mesh, proxy, before[number] if before else None)
    return {"revision": loaded, "views": out}


def inputs(name: str) -> tuple[dict[str, bytes], dict[str, bytes], list[dict], tuple]:
    """A case's files, the same with a comment added to one (every object is then parsed again, as a
    new commit's), its views, and its registry's objects."""
    if name == "sample-repo":
        files, views = sample()
        registry = Registry()
        DirectoryFeed(ROOT / "sample-registry", registry).read_all()
        live = tuple(registry.objects())
    else:
        files, views = golden(GOLDEN / name)
        live = ()
    changed = dict(files)
    first = sorted(changed)[0]
    changed[first] = changed[first] + b"\n# a later revision\n"
    return files, changed, views, live


@pytest.mark.parametrize("name", list(cases()))
def test_a_revisions_mesh_and_served_views_make_no_cycles(name):
    files, changed, views, live = inputs(name)
    served(files, views, live, "zero", None)  # (what the first use imports: classes are cycles)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        held = served(files, views, live, "one", None)
        held = served(changed, views, live, "two", held["views"])  # the first replaced
        held = served(files, views, live, "three", held["views"])
        del held
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        (gc.enable if enabled else gc.disable)()
    assert found == 0, f"{name}: replaced revisions left {found} objects in reference cycles: {kinds.most_common(8)}"


@pytest.mark.parametrize("name", list(cases()))
def test_a_replaced_revision_leaves_nothing_of_its_own(name):
    """Once a revision is replaced (its views compiled again from its own, as a publish does), what the
    compiler keeps between compiles (compiler/cache.py: weakly by object, bounded in the process, in
    the views) must hold none of its parsed objects: a cache value that refers to the object it is
    cached for keeps both for ever, one more copy of every object a commit changes."""
    files, changed, views, live = inputs(name)
    held = served(files, views, live, "one", None)
    parsed = [weakref.ref(obj) for obj in held["revision"].objects]
    assert parsed
    held = served(changed, views, live, "two", held["views"])
    gc.collect()
    kept = Counter(f"{obj.kind}/{obj.name}" for obj in (ref() for ref in parsed) if obj is not None)
    assert not kept, f"{name}: the replaced revision's objects are still held: {kept.most_common(8)}"
