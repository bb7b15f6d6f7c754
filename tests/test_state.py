"""The last known good snapshot on disk (reconciler/state.py): round trip, corruption, torn writes."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs

from compiler.snapshot import Snapshot
from reconciler.parse_cache import STALE_TEMPORARY_SECONDS
from reconciler.state import LastGood, check_writable, remove_temporaries, source_identity
from tests.conftest import ROOT

SOURCE = "/srv/mesh"  # as source_identity names a local path


def snapshot(revision: str, size: int = 10) -> Snapshot:
    return Snapshot(revision, {"mesh/a.yaml": b"kind: A\n" * size, "b.yml": bytes(range(256))}, "origin")


def test_a_saved_snapshot_reads_back_byte_for_byte(tmp_path):
    store = LastGood(tmp_path, "cluster-a", SOURCE)
    assert store.load() is None
    store.save(snapshot("r1"))
    store.save(snapshot("r2"))
    loaded = store.load()
    assert (loaded.revision, loaded.files, loaded.origin) == ("r2", snapshot("r2").files, "origin")
    assert [p.name for p in store.path.parent.iterdir()] == ["cluster-a.json"]  # no temporary files left
    assert LastGood(tmp_path, "cluster-b", SOURCE).load() is None


def test_a_corrupt_file_is_set_aside_never_trusted(tmp_path):
    store = LastGood(tmp_path, "cluster-a", SOURCE)
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
    LastGood(tmp_path, "cluster-b", SOURCE).save(snapshot("rb"))
    (tmp_path / "last-good" / "cluster-b.json").replace(store.path)
    assert store.load() is None


def test_a_snapshot_of_another_source_is_not_used(tmp_path):
    """Daemons of one cluster name share the state directory (the default one): each serves only a
    snapshot of its own source, and leaves another's in place."""
    LastGood(tmp_path, "cluster-a", SOURCE).save(snapshot("r1"))
    for other in ("/srv/other", f"{SOURCE} --rev main"):
        with capture_logs() as logs:
            assert LastGood(tmp_path, "cluster-a", other).load() is None
        assert [(e["event"], e["snapshot_of"], e["source"]) for e in logs] == [
            ("last known good snapshot is of another source; not used", SOURCE, other)]
    assert LastGood(tmp_path, "cluster-a", SOURCE).load().revision == "r1"


def test_a_snapshot_an_older_galleon_wrote_is_named_by_its_origin(tmp_path):
    """An older galleon wrote no source: its origin (the source as it was given) names it, at the default
    --rev; a snapshot of another origin is not served (nor set aside: the first revision read replaces it)."""
    def older(origin: str) -> LastGood:
        store = LastGood(tmp_path, "cluster-a", SOURCE)
        store.save(Snapshot("r1", {"a.yaml": b"kind: A\n"}, origin))
        document = json.loads(store.path.read_bytes())
        del document["snapshot"]["source"]
        document["sha256"] = hashlib.sha256(json.dumps(document["snapshot"], sort_keys=True).encode()).hexdigest()
        store.path.write_text(json.dumps(document))
        return store

    assert older(SOURCE).load().revision == "r1"
    assert LastGood(tmp_path, "cluster-a", source_identity(SOURCE, "main")).load() is None  # another --rev
    store = older("/srv/other-mesh")
    with capture_logs() as logs:
        assert store.load() is None
    assert [(e["event"], e["snapshot_of"]) for e in logs] == [
        ("last known good snapshot is of another source; not used", "/srv/other-mesh")]
    assert store.path.exists()


def test_a_source_is_named_the_same_from_anywhere_and_without_credentials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert source_identity("repo", None) == source_identity(str(tmp_path / "repo"), "HEAD") == str(tmp_path / "repo")
    assert source_identity("./repo/", "main") == f"{tmp_path / 'repo'} --rev main"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert source_identity("repo", None) == str(tmp_path / "elsewhere" / "repo")
    assert source_identity("https://x-access-token:s3cret@git.example.com/mesh.git", "v2") == (
        "https://***@git.example.com/mesh.git --rev v2")


def test_a_state_directory_is_checked_by_writing_in_it(tmp_path):
    check_writable(tmp_path / "state")
    assert [p.name for p in (tmp_path / "state").rglob("*")] == ["last-good"]  # nothing else left
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        check_writable(tmp_path / "file")


WRITER = """
import sys
from compiler.snapshot import Snapshot
from reconciler.state import LastGood
store = LastGood(sys.argv[1], "cluster-a", "/srv/mesh")
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
    store = LastGood(tmp_path, "cluster-a", SOURCE)
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


KILLED_WRITER = """
import os, signal, sys
from compiler.snapshot import Snapshot
from reconciler.state import LastGood
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed as the temporary file is complete
store = LastGood(sys.argv[1], sys.argv[2], "/srv/mesh")
if sys.argv[3] == "vips":
    store.save_vips({"a.global": "240.0.0.1"})
else:
    store.save(Snapshot("r", {}, "o"))
"""


def test_the_temporary_files_killed_writes_left_are_removed_at_start(tmp_path):
    for cluster, what in (("cluster-a", "snapshot"), ("cluster-a", "vips"), ("cluster-b", "snapshot")):
        killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, tmp_path, cluster, what], cwd=ROOT)
        assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "last-good"
    assert [len(list(folder.glob(f".{name}.*.tmp"))) for name in ("cluster-a.json", "cluster-a.vips.json",
                                                                   "cluster-b.json")] == [1, 1, 1]
    others = [p.name for p in folder.glob(".cluster-b.json.*.tmp")]
    records = tmp_path / "parses" / "salt" / "ab"
    records.mkdir(parents=True)
    old, recent = records / ".ab12.x1y2z3w4.tmp", records / ".ab34.q1w2e3r4.tmp"
    old.write_bytes(b"torn")
    recent.write_bytes(b"being written by another galleon")
    os.utime(old, (time.time() - STALE_TEMPORARY_SECONDS - 60,) * 2)
    with capture_logs() as logs:
        remove_temporaries(LastGood(tmp_path, "cluster-a", SOURCE), tmp_path / "parses")
    assert [p.name for p in folder.iterdir()] == others  # cluster-b's daemon's own to remove
    assert sorted(p.name for p in records.iterdir()) == [recent.name]
    assert [(e["event"], e["files"]) for e in logs] == [
        ("removed temporary files interrupted writes left in the state directory", 3)]
