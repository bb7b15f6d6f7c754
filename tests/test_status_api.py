"""The status API of `galleon serve` (galleon.v1.Reconciler on the ADS port) and `galleon status`/`sync`,
against a real daemon process following a real Git remote (file://, no polling: only Sync fetches)."""
from __future__ import annotations

import json
import threading
import time

import grpc
import pytest

from reconciler.api import reconciler_pb2 as pb
from reconciler.api import reconciler_pb2_grpc as pb_grpc
from tests import gitutil
from tests.conftest import sample_files
from tests.e2e.daemon import Galleon
from tests.test_cli import galleon

REVIEWS = "bookinfo/reviews.yaml"


@pytest.fixture
def remote(tmp_path):
    repo = gitutil.init(tmp_path / "origin", bare=True)
    files = sample_files()
    gitutil.commit(repo, files)
    return repo, files


def push(repo, files, path, old: bytes, new: bytes):
    files[path] = files[path].replace(old, new, 1)
    return str(gitutil.commit(repo, files))


def test_status_sync_watch_and_preview(remote, tmp_path):
    repo, files = remote
    first = str(repo.references["refs/heads/main"].target)
    with Galleon(f"file://{tmp_path / 'origin'}", "cluster-a", state_dir=tmp_path / "state") as daemon:
        with grpc.insecure_channel(daemon.ads) as channel:
            stub = pb_grpc.ReconcilerStub(channel)
            status = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
            assert (status.served_revision, status.last_revision_valid, status.leader) == (first, True, True)

            watched = []
            stream = stub.WatchStatus(pb.WatchStatusRequest())
            def read():
                try:
                    watched.extend(stream)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.CANCELLED  # by the test, below

            reader = threading.Thread(target=read, daemon=True)
            reader.start()

            # Preview: the remote's new head against what is served, before anything applies it
            second = push(repo, files, REVIEWS, b"weight: 50", b"weight: 20")
            preview = stub.Preview(pb.PreviewRequest(clusters=["cluster-b"], format="json"), timeout=60)
            assert (preview.base_revision, preview.head_revision, preview.has_changes) == (first, second, True)
            data = json.loads(preview.body)
            assert [c["name"] for c in data["clusters"]] == ["cluster-b"] and data["biggest_shifts"]
            assert stub.GetStatus(pb.GetStatusRequest()).served_revision == first  # a preview applies nothing

            synced = stub.Sync(pb.SyncRequest(wait=True), timeout=60).status
            assert synced.served_revision == second and synced.generation > status.generation
            # Previews were asked for, so the revision now served was made ready for them on publishing
            # (a preview of it against itself), and what that left behind gives the same preview.
            assert daemon.event("ready for previews") is not None, daemon.log()
            assert daemon.count("cannot make the served revision ready for previews") == 0
            # A commit no allowed ref points at is not previewed (any fetched commit is not a branch)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Preview(pb.PreviewRequest(rev=first, format="json"), timeout=60)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
            repo.references.create("refs/heads/old", first)
            again = stub.Preview(pb.PreviewRequest(rev="old", format="json"), timeout=60)
            assert (again.base_revision, again.head_revision) == (second, first)
            assert json.loads(again.body)["biggest_shifts"]
            here = galleon("diff", tmp_path / "origin", second, first, "--format", "json")
            assert again.body == here.stdout

            third = push(repo, files, REVIEWS, b"subset: v3", b"subset: v9")  # a dangling subset
            refused = stub.Sync(pb.SyncRequest(wait=True), timeout=60).status
            assert (refused.served_revision, refused.last_revision_seen) == (second, third)
            assert not refused.last_revision_valid and "IST0101" in refused.rejection
            assert [(f.code, f.file) for f in refused.findings if f.level == "error"] == [("IST0101", REVIEWS)]

            with pytest.raises(grpc.RpcError) as bad:
                stub.Preview(pb.PreviewRequest(clusters=["cluster-z"]), timeout=60)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cluster-z" in bad.value.details()

            # (WatchStatus sends at most one status each WATCH_INTERVAL: the refusal comes that late at most)
            deadline = time.monotonic() + 5
            while third not in [s.last_revision_seen for s in watched] and time.monotonic() < deadline:
                time.sleep(0.05)
            stream.cancel()
            reader.join(5)
        assert [s.served_revision for s in watched][:1] == [first]
        assert second in [s.served_revision for s in watched]
        assert third in [s.last_revision_seen for s in watched]

        # the command line reads the same API
        text = galleon("status", "--server", daemon.ads)
        assert text.returncode == 1 and "REFUSED: 1 error\n" in text.stdout and "IST0101" in text.stdout
        assert text.stdout.count("IST0101") == 1, text.stdout  # (the finding listed once, under the refusal)
        push(repo, files, REVIEWS, b"subset: v9", b"subset: v3")
        synced = galleon("sync", "--server", daemon.ads, "--format", "json")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert json.loads(synced.stdout)["last_revision_valid"] is True


@pytest.mark.parametrize("command", ["status", "sync"])
def test_status_of_a_daemon_that_is_not_there(command):
    result = galleon(command, "--server", "127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("galleon: error: cannot reach galleon serve at 127.0.0.1:1 (is it running? "
                                    "--server is its --ads address): ")
    assert "Connection refused" in result.stderr and "failed to connect to all addresses" not in result.stderr


def test_galleon_diff_asks_the_daemon_that_serves_base_and_says_when_it_cannot(remote, tmp_path):
    repo, files = remote
    origin = tmp_path / "origin"
    base = str(repo.references["refs/heads/main"].target)
    with Galleon(f"file://{origin}", "cluster-a", state_dir=tmp_path / "state") as daemon:
        head = push(repo, files, REVIEWS, b"weight: 50", b"weight: 20")
        here = galleon("diff", origin, base, head, "--format", "json")
        there = galleon("diff", origin, base, head, "--format", "json", "--server", daemon.ads)
        assert there.returncode == here.returncode == 0, there.stderr
        assert there.stdout == here.stdout and json.loads(there.stdout)["biggest_shifts"]
        assert "comparing here" not in there.stderr  # the daemon made it

        # BASE is not what the daemon serves: made here, and said so
        other = galleon("diff", origin, head, head, "--server", daemon.ads)
        assert other.returncode == 0 and "not BASE" in other.stderr and "comparing here" in other.stderr
        assert "Galleon preview" in other.stdout

        bad = galleon("diff", origin, base, head, "--server", daemon.ads, "--cluster", "cluster-z")
        assert bad.returncode == 2 and "cluster-z" in bad.stderr and "Traceback" not in bad.stderr
    gone = galleon("diff", origin, base, head, "--server", daemon.ads, "--server-timeout", "2")
    assert gone.returncode == 0 and "gave no preview (UNAVAILABLE" in gone.stderr and "comparing here" in gone.stderr


def test_status_watch_says_when_the_daemon_stops(tmp_path):
    import subprocess

    from tests.conftest import SAMPLE_REPO
    from tests.e2e.daemon import GALLEON
    with Galleon(SAMPLE_REPO, "cluster-a", state_dir=tmp_path / "state") as daemon:
        watch = subprocess.Popen([*GALLEON, "status", "--server", daemon.ads, "--watch"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert watch.stdout.readline().startswith("cluster cluster-a, source ")
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 2 and err == f"galleon: error: galleon serve at {daemon.ads} stopped\n", (out, err)
