"""Golden-file tests: one small mesh repository per feature, compiled for a few proxy views.

Layout, one folder per feature::

    tests/golden/<feature>/repo/*.yaml         the mesh (a complete, valid config repository)
    tests/golden/<feature>/views.yaml          the proxy views: a list of
                                               {name, cluster, node_id, labels, locality}
    tests/golden/<feature>/expected/<view>.json
        dump_json(config_dump(compile_view(mesh, view))) with the revision fixed to "golden"

Each expected file is compared byte for byte with what the compiler produces now.

To regenerate the expected files after an intended change, run

    GALLEON_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py -q

then READ the diff of tests/golden/ before committing it: a golden file is only worth
something if it was checked against Istio's behaviour (NOTES.md "Istio semantics to match", Istio's docs
and sources), not just blessed.

A view may carry ``known_issue: "..."``: the compiler's output for it is believed wrong,
so it has no expected file, is never written by the update mode, and the test is an
expected failure (xfail) that names the discrepancy until the compiler is fixed and the
view is re-checked and blessed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from compiler.findings import Level
from compiler.model import build_mesh
from compiler.snapshot import Snapshot
from compiler.revision import load
from compiler.view import make_view
from compiler.xds import compile_view, config_dump, dump_json

GOLDEN = Path(__file__).resolve().parent / "golden"
REVISION = "golden"
UPDATE = os.environ.get("GALLEON_UPDATE_GOLDEN") == "1"


def features() -> list[Path]:
    return sorted(p for p in GOLDEN.iterdir() if (p / "views.yaml").is_file())


def snapshot_of(feature: Path) -> Snapshot:
    repo = feature / "repo"
    files = {p.relative_to(repo).as_posix(): p.read_bytes()
             for p in sorted(repo.rglob("*")) if p.is_file() and p.suffix in (".yaml", ".yml")}
    return Snapshot(REVISION, files)


def views_of(feature: Path) -> list[dict]:
    return yaml.safe_load((feature / "views.yaml").read_text()) or []


def cases():
    for feature in features():
        for view in views_of(feature):
            yield pytest.param(feature, view, id=f"{feature.name}/{view['name']}")


def compile_golden(feature: Path, view: dict, incremental: bool = False) -> str:
    """The view's config dump; ``incremental``: compiled with a previous compile of a separate parse of
    the same repository, so every service's clusters and assignments are reused from it."""
    def compiled(previous=None):
        result = load(snapshot_of(feature))
        mesh = build_mesh(result.objects, result.snapshot.revision)
        proxy = make_view(mesh, view["cluster"], view.get("node_id") or
                          "sidecar~127.0.0.1~proxy.default~default.svc.cluster.local",
                          view.get("labels") or {}, view.get("locality"))
        return compile_view(mesh, proxy, previous=previous)
    return dump_json(config_dump(compiled(compiled() if incremental else None)))


def test_golden_features_exist():
    assert len(features()) >= 10, "every feature folder needs a views.yaml"


@pytest.mark.parametrize("feature", features(), ids=lambda p: p.name)
def test_no_stray_expected_files(feature):
    """Every expected file belongs to a view of its feature that is not marked as a known issue."""
    blessed = {f"{view['name']}.json" for view in views_of(feature) if not view.get("known_issue")}
    present = {p.name for p in (feature / "expected").glob("*.json")}
    assert present <= blessed, f"expected files without a (blessable) view: {sorted(present - blessed)}"


@pytest.mark.parametrize("feature", features(), ids=lambda p: p.name)
def test_repo_validates(feature):
    result = load(snapshot_of(feature))
    errors = [f for f in result.findings if f.level == Level.ERROR]
    assert not errors, "\n".join(f.text() for f in errors)
    assert result.objects, "the repository holds no objects"


@pytest.mark.parametrize("feature, view", list(cases()))
def test_golden(feature, view):
    expected = feature / "expected" / f"{view['name']}.json"
    if view.get("known_issue"):
        assert not expected.exists(), f"{expected} blesses output marked as a known issue"
        pytest.xfail(f"known discrepancy, not blessed: {view['known_issue']}")
    actual = compile_golden(feature, view)
    if UPDATE:
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(actual)
        return
    assert expected.exists(), f"missing {expected}; run with GALLEON_UPDATE_GOLDEN=1 and check the output"
    assert actual == expected.read_text(), (
        f"{feature.name}/{view['name']} differs from {expected.relative_to(GOLDEN.parent.parent)}; "
        "if the change is intended, regenerate with GALLEON_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("feature, view", [c for c in cases() if not c.values[1].get("known_issue")])
def test_golden_through_an_incremental_compile(feature, view):
    assert compile_golden(feature, view, incremental=True) == (feature / "expected" / f"{view['name']}.json").read_text()


def _variants(view: dict) -> list[dict]:
    """The view, and the same proxy in another namespace (a sidecar), with other labels, in another
    locality: what a mesh's views differ in."""
    node = view.get("node_id") or "sidecar~127.0.0.1~proxy.default~default.svc.cluster.local"
    base = {"cluster": view["cluster"], "node_id": node, "labels": view.get("labels") or {},
            "locality": view.get("locality")}
    found = [base, {**base, "labels": {**base["labels"], "app": "other", "version": "v9"}},
             {**base, "locality": "far-region/far-zone"}]
    role, address, pod, _ = node.split("~")
    if role == "sidecar":
        found.append({**base, "node_id": f"{role}~{address}~{pod.split('.')[0]}.other~other.svc.cluster.local"})
    return found


@pytest.mark.parametrize("feature", features(), ids=lambda feature: feature.name)
def test_views_compiled_on_one_mesh_are_what_each_is_alone(feature):
    """A mesh keeps what its views have alike (an assignment per what it reads of a view: cache.py's
    ASSIGNMENTS), so every view compiled after others on one mesh is byte for byte what it is alone, on
    a mesh of its own: each golden view, and each in another namespace, locality, with other labels."""
    def mesh():
        result = load(snapshot_of(feature))
        return build_mesh(result.objects, result.snapshot.revision)

    def dump(on, proxy: dict) -> str:
        return dump_json(config_dump(compile_view(on, make_view(on, proxy["cluster"], proxy["node_id"],
                                                                proxy["labels"], proxy["locality"]))))
    shared = mesh()
    proxies = [proxy for view in views_of(feature) for proxy in _variants(view)]
    together = [dump(shared, proxy) for proxy in proxies]
    assert together == [dump(mesh(), proxy) for proxy in proxies]
