"""The daemon's loader (reconciler/daemon/loader.py): a read on a worker thread changes nothing the
event loop reads; the loop applies what it found in one step."""
from __future__ import annotations

import asyncio
import copy
import shutil

import pytest

from compiler.snapshot import Snapshot
from reconciler.daemon import ServeOptions
from reconciler.daemon import loader as loader_module
from reconciler.daemon.loader import Loader
from reconciler.metrics import Metrics
from reconciler.sources import DirectorySource, SourceError, SourceMissing
from reconciler.state import LastGood, source_identity
from tests.conftest import SAMPLE_REPO


def loader_of(tmp_path, cluster: str = "cluster-a") -> Loader:
    shutil.copytree(SAMPLE_REPO, tmp_path / "repo")
    loader = Loader(ServeOptions(source=str(tmp_path / "repo"), cluster=cluster), Metrics(), None)
    asyncio.run(loader.open())
    return loader


def observed(loader: Loader) -> tuple:
    return (copy.deepcopy(loader.state), dict(loader.vips), dict(loader.released_vips), loader.served,
            loader.metrics.exposition())


def test_a_read_changes_nothing_until_the_loop_applies_it(tmp_path):
    loader = loader_of(tmp_path)
    before = observed(loader)
    reading = loader._read(loader._given())  # what asyncio.to_thread runs
    assert reading.failure is None and reading.accepted is not None
    assert observed(loader) == before
    loader._apply(reading)
    assert loader.state.seen_revision == reading.accepted.snapshot.revision
    assert loader.state.rejection is None and loader.state.served_revision is None


def test_a_rejected_revision_is_recorded_by_the_loop(tmp_path):
    loader = loader_of(tmp_path, cluster="cluster-x")
    before = observed(loader)
    reading = loader._read(loader._given())
    assert reading.accepted is None and "cluster-x" in reading.rejection.reason
    assert observed(loader) == before
    loader._apply(reading)
    assert loader.state.unknown_cluster == loader.state.rejection == reading.rejection.reason
    assert loader.state.seen_revision == reading.seen


def test_a_rev_the_source_can_never_have_is_refused_when_it_is_opened(tmp_path):
    """Not reported on each read as a source unreadable for now: galleon serve exits 2, as validate does."""
    shutil.copytree(SAMPLE_REPO, tmp_path / "repo")
    options = ServeOptions(source=str(tmp_path / "repo"), cluster="cluster-a", rev="main")
    with pytest.raises(SourceError, match="--rev main needs a Git repository") as refused:
        asyncio.run(Loader(options, Metrics(), None).open())
    assert not isinstance(refused.value, SourceMissing)


def test_opening_removes_what_a_killed_write_left_in_the_state_directory(tmp_path):
    shutil.copytree(SAMPLE_REPO, tmp_path / "repo")
    store = LastGood(tmp_path / "state", "cluster-a", source_identity(str(tmp_path / "repo"), None))
    store.path.parent.mkdir(parents=True)
    stray = store.path.with_name(f".{store.path.name}.k1ll3d00.tmp")  # as write_atomic names it
    stray.write_bytes(b"{\"torn")
    options = ServeOptions(source=str(tmp_path / "repo"), cluster="cluster-a", state_dir=tmp_path / "state")
    asyncio.run(Loader(options, Metrics(), store).open())
    assert not stray.exists()


def test_a_source_missing_at_start_is_opened_once_it_appears_as_something_to_follow(tmp_path, monkeypatch):
    """A file in its place is reported once and looked at again; the directory then put there is opened."""
    monkeypatch.setattr(loader_module, "APPEAR_POLL", 0.01)
    path = tmp_path / "repo"
    store = LastGood(tmp_path / "state", "cluster-a", source_identity(str(path), None))
    options = ServeOptions(source=str(path), cluster="cluster-a", state_dir=tmp_path / "state")
    with pytest.raises(SourceMissing, match="no last known good snapshot of cluster-a"):
        asyncio.run(Loader(options, Metrics(), store).open())
    store.save(Snapshot("sha256:0", {}, str(path)))
    loader = Loader(options, Metrics(), store)

    async def appearing():
        await loader.open()
        assert loader.source is None and "the source path is missing" in loader.missing
        waiting = asyncio.create_task(loader.appeared())
        path.write_text("kind: Service\n")
        while "not a file" not in (loader.state.error or ""):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # looked at several times, said once
        path.unlink()
        shutil.copytree(SAMPLE_REPO, path)
        return await asyncio.wait_for(waiting, 5)

    source = asyncio.run(appearing())
    assert isinstance(source, DirectorySource) and loader.source is source and loader.missing is None
    assert b'galleon_source_loads_total{outcome="unreadable"} 1.0' in loader.metrics.exposition()
