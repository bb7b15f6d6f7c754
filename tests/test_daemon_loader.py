"""The daemon's loader (reconciler/daemon/loader.py): a read on a worker thread changes nothing the
event loop reads; the loop applies what it found in one step."""
from __future__ import annotations

import asyncio
import copy
import shutil

from reconciler.daemon import ServeOptions
from reconciler.daemon.loader import Loader
from reconciler.metrics import Metrics
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
