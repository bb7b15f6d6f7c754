"""The last known good snapshot on disk (reconciler/state.py): round trip, corruption, torn writes."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

from compiler.snapshot import Snapshot
from reconciler.state import LastGood
from tests.conftest import ROOT


def snapshot(revision: str, size: int = 10) -> Snapshot:
    return Snapshot(revision, {"mesh/a.yaml": b"kind: A\n" * size, "b.yml": bytes(range(256))}, "origin")


def test_a_saved_snapshot_reads_back_byte_for_byte(tmp_path):
    store = LastGood(tmp_path, "cluster-a")
    assert store.load() is None
    store.save(snapshot("r1"))
    store.save(snapshot("r2"))
    loaded = store.load()
    assert (loaded.revision, loaded.files, loaded.origin) == ("r2", snapshot("r2").files, "origin")
    assert [p.name for p in store.path.parent.iterdir()] == ["cluster-a.json"]  # no temporary files left
    assert LastGood(tmp_path, "cluster-b").load() is None


def test_a_corrupt_file_is_set_aside_never_trusted(tmp_path):
    store = LastGood(tmp_path, "cluster-a")
    corruptions = [
        lambda data: data[: len(data) // 2],  # torn
        lambda data: data.replace(b"r1", b"r9"),  # edited: the checksum no longer matches
        lambda data: b"\x00garbage",
        lambda data: json.dumps({"sha256": "x", "snapshot": {}}).encode(),
    ]
    for corrupt in corruptions:
        store.save(snapshot("r1"))
        store.path.write_bytes(corrupt(store.path.read_bytes()))
        assert store.load() is None
        assert not store.path.exists()
    assert len(list(store.path.parent.glob("cluster-a.json.corrupt-*"))) >= 1
    # another cluster's snapshot copied over is not served either
    LastGood(tmp_path, "cluster-b").save(snapshot("rb"))
    (tmp_path / "last-good" / "cluster-b.json").replace(store.path)
    assert store.load() is None


WRITER = """
import sys
from compiler.snapshot import Snapshot
from reconciler.state import LastGood
store = LastGood(sys.argv[1], "cluster-a")
snapshots = [Snapshot(r, {"a.yaml": r.encode() * 200_000}, "o") for r in ("old", "new")]
print("ready", flush=True)
i = 0
while True:
    store.save(snapshots[i % 2])
    i += 1
"""


def test_a_writer_killed_at_any_moment_leaves_the_old_or_the_new_snapshot(tmp_path):
    """SIGKILL a process that rewrites the snapshot (600 KB each time) in a loop, 25 times at random
    moments: what is on disk always reads back whole, as one of the two revisions."""
    store = LastGood(tmp_path, "cluster-a")
    store.save(Snapshot("old", {"a.yaml": b"old" * 200_000}, "o"))  # as the writer saves it; a kill may come first
    seen = set()
    chance = random.Random(7)
    for _ in range(25):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(chance.uniform(0.0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        loaded = store.load()
        assert loaded is not None and loaded.revision in ("old", "new")
        assert loaded.files["a.yaml"] == loaded.revision.encode() * 200_000
        seen.add(loaded.revision)
    assert not list(store.path.parent.glob("*.corrupt-*"))
    assert seen == {"old", "new"}  # the kills did land at different moments
