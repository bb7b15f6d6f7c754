"""sample-registry/ (the `dir:` registry `make run` serves) and sample-repo/ read together: every file
is read, the cluster is synced, and the Service hello in the repository gets its endpoints from the
pods there; ratings.bookinfo.global's workloadSelector picks the running pods of sample-repo/running/."""
from __future__ import annotations

from pathlib import Path

from compiler.revision import load, with_live
from compiler.snapshot import Snapshot
from reconciler.registry.directory import DirectoryFeed
from reconciler.registry.store import Registry
from tests.conftest import ROOT, sample_files

HELLO = "hello.demo.svc.cluster.local"


def read_registry() -> Registry:
    registry = Registry()
    assert DirectoryFeed(ROOT / "sample-registry", registry).read_all() == ["cluster-a"]
    return registry


def test_every_file_of_the_sample_registry_is_read():
    [cluster] = read_registry().status()
    assert cluster["synced"] and not cluster["stale"] and not cluster["unreadable"] and not cluster["errors"]
    files = sorted(p.relative_to(ROOT / "sample-registry").as_posix()
                   for p in (ROOT / "sample-registry").rglob("*.yaml"))
    assert len(files) == cluster["pods"] + cluster["endpoint_slices"] + cluster["nodes"] + cluster["services"] == 5


def test_hello_has_no_endpoints_but_those_the_registry_lists():
    revision = load(Snapshot("sample", sample_files()))
    assert revision.valid and not revision.findings
    assert revision.mesh.services[HELLO].endpoints == ()
    mesh = with_live(revision, read_registry().objects()).mesh
    found = sorted((ep.address, ep.ports["http"], ep.labels["version"], str(ep.locality), ep.cluster)
                   for ep in mesh.services[HELLO].endpoints)
    assert found == [("127.0.0.1", 18081, "v1", "us-east/us-east-1a", "cluster-a"),
                     ("127.0.0.1", 18082, "v2", "us-east/us-east-1a", "cluster-a")]


def test_the_global_name_selects_the_running_ratings_pods_at_the_addresses_their_slices_list():
    mesh = load(Snapshot("sample", sample_files())).mesh
    selected = sorted((ep.cluster, ep.address) for ep in mesh.services["ratings.bookinfo.global"].endpoints)
    listed = sorted((ep.cluster, ep.address) for ep in mesh.services["ratings.bookinfo.svc.cluster.local"].endpoints)
    assert selected == listed == [("cluster-a", "10.1.3.1"), ("cluster-a", "10.1.3.2"), ("cluster-b", "10.2.3.1"),
                                  ("cluster-c", "10.3.3.1")]


def test_the_sample_registry_readme_names_its_files():
    readme = (ROOT / "sample-registry" / "README.md").read_text()
    for path in Path(ROOT / "sample-registry").rglob("*.yaml"):
        assert path.name in readme, path
