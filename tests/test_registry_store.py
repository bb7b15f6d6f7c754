"""The registry's store (reconciler/registry/store.py) and the dir: feed (directory.py): what a
cluster's feed reports becomes objects of the mesh, a cluster counts only once synced, a failure
keeps what was held (stale), an unreadable object is skipped and reported, and each report hands
on exactly what changed."""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from pathlib import Path

import yaml

from reconciler.registry.directory import DirectoryFeed
from reconciler.registry.store import Registry
from tests.test_live import endpoint_slice, node, pod, service


def recording():
    changes = []
    return Registry(changes.append), changes


def list_all(registry, cluster, pods=(), services=(), slices=(), nodes=()):
    registry.listed(cluster, "Service", list(services))
    registry.listed(cluster, "EndpointSlice", list(slices))
    registry.listed(cluster, "Pod", list(pods))
    registry.listed(cluster, "Node", list(nodes))


def test_a_cluster_counts_once_every_kind_is_listed():
    registry, changes = recording()
    registry.listed("east", "Service", [service("east")])
    registry.listed("east", "Pod", [pod("web-1", "10.0.0.1")])
    assert registry.objects() == [] and changes == []
    assert registry.status()[0]["synced"] is False
    registry.listed("east", "EndpointSlice", [endpoint_slice("web-abc", [("web-1", "10.0.0.1", True)])])
    registry.listed("east", "Node", [])
    assert {o.kind for o in registry.objects()} == {"Service", "Pod", "EndpointSlice"}
    assert len(changes) == 1 and changes[0].whole  # synced: the mesh is built anew with it
    status = registry.status()[0]
    assert status["synced"] and status["endpoints"] == 1 and status["services"] == 1


def test_events_hand_on_what_changed_and_only_that():
    registry, changes = recording()
    list_all(registry, "east", pods=[pod("web-1", "10.0.0.1")])
    changes.clear()
    registry.event("east", "Pod", "ADDED", pod("web-2", "10.0.0.2"))
    registry.event("east", "Pod", "MODIFIED", pod("web-2", "10.0.0.2"))  # same resourceVersion: nothing new
    registry.event("east", "Pod", "DELETED", pod("web-1", "10.0.0.1"))
    assert [(tuple(o.name for o in c.changed), tuple(o.name for o in c.gone), c.whole) for c in changes] == [
        (("web-2",), (), False), ((), ("web-1",), False)]
    registry.event("east", "Service", "MODIFIED", {**service("east"), "metadata": {
        **service("east")["metadata"], "resourceVersion": "9"}})
    assert changes[-1].whole  # a Service change rebuilds what it affects


def test_a_relist_replaces_without_a_gap_and_reports_the_difference():
    registry, changes = recording()
    list_all(registry, "east", pods=[pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")])
    changes.clear()
    registry.listed("east", "Pod", [pod("web-2", "10.0.0.2"), pod("web-3", "10.0.0.3")])
    assert [o.name for o in changes[0].changed] == ["web-3"] and [o.name for o in changes[0].gone] == ["web-1"]
    assert sorted(o.name for o in registry.objects() if o.kind == "Pod") == ["web-2", "web-3"]


def test_an_object_listed_again_unchanged_stays_the_one_held():
    # (a relist after a watch expired lists every object again: holding new copies of the same
    # objects would only churn the heap the daemon froze)
    registry, _ = recording()
    list_all(registry, "east", pods=[pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")])
    held = {o.name: o for o in registry.objects() if o.kind == "Pod"}
    registry.listed("east", "Pod", [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.9", rv="2")])
    now = {o.name: o for o in registry.objects() if o.kind == "Pod"}
    assert now["web-1"] is held["web-1"]
    assert now["web-2"] is not held["web-2"] and now["web-2"].body["status"]["podIP"] == "10.0.0.9"


def test_a_failure_keeps_what_was_held_marked_stale_until_listed_again():
    registry, _ = recording()
    list_all(registry, "east", pods=[pod("web-1", "10.0.0.1")])
    registry.failed("east", None, "east: API server https://10.0.0.1 unreachable: connection refused")
    status = registry.status()[0]
    assert status["stale"] and "unreachable" in status["last_error"] and status["synced"]
    assert [o.name for o in registry.objects() if o.kind == "Pod"] == ["web-1"]
    from structlog.testing import capture_logs
    with capture_logs() as logs:
        registry.listed("east", "Pod", [pod("web-1", "10.0.0.1")])
        registry.listed("east", "Pod", [pod("web-1", "10.0.0.1")])  # (fresh already: nothing to say)
    assert registry.status()[0]["stale"] is False
    # the log that said it failed says it is back
    assert [e["cluster"] for e in logs if e["event"] == "registry listed again"] == ["east"]


def test_each_new_failure_is_said_and_a_cluster_never_listed_is_not_stale():
    """galleon status --watch is woken by a failure, and by each new error after it (not by a retry
    failing the same way); a cluster that holds nothing is not "stale", but refused or not synced."""
    states = []
    registry = Registry(on_state=lambda: states.append(1))
    registry.expect(["east"])
    registry.failed("east", "Pod", "east: credentials refused (401)", refused=True)
    registry.failed("east", "Pod", "east: credentials refused (401)", refused=True)
    assert len(states) == 1
    status = registry.status()[0]
    assert (status["synced"], status["stale"], status["refused"]) == (False, False, True)
    registry.failed("east", "Pod", "east: API server https://10.0.0.1 unreachable: connection refused")
    assert len(states) == 2 and registry.status()[0]["refused"] is False


def test_a_cluster_forgotten_takes_its_objects_with_it():
    """Its remote secret deleted: the cluster's objects leave what is served (a whole rebuild without
    them), and it is no longer reported."""
    states = []
    changes = []
    registry = Registry(changes.append, on_state=lambda: states.append(1))
    list_all(registry, "east", pods=[pod("web-1", "10.0.0.1")])
    list_all(registry, "west", pods=[pod("web-2", "10.1.0.1")], services=[service("west")])
    changes.clear()
    states.clear()
    registry.forget("west")
    assert [(c.cluster, sorted(o.name for o in c.gone), c.whole) for c in changes] == [("west", ["web", "web-2"], True)]
    assert [c["cluster"] for c in registry.status()] == ["east"] and states == [1]
    assert {o.name for o in registry.objects()} == {"web-1"}
    registry.expect(["north"])
    registry.forget("north")  # never synced: nothing was served of it
    registry.forget("nowhere")
    assert len(changes) == 1 and [c["cluster"] for c in registry.status()] == ["east"]
    # Its feed, stopped a moment too late, cannot bring it back; expected again, it is read anew.
    registry.event("west", "Pod", "ADDED", pod("web-3", "10.1.0.3"))
    registry.failed("west", "Pod", "connection lost")
    assert [c["cluster"] for c in registry.status()] == ["east"] and len(changes) == 1
    registry.expect(["west"])
    list_all(registry, "west", pods=[pod("web-2", "10.1.0.1")])
    assert {o.name for o in registry.objects()} == {"web-1", "web-2"}


def test_an_unreadable_object_is_skipped_and_reported_with_its_cluster_kind_and_name():
    registry, _ = recording()
    broken = {**service("east"), "spec": {"ports": "eighty"}}
    list_all(registry, "east", services=[broken], pods=[pod("web-1", "10.0.0.1")])
    status = registry.status()[0]
    assert [o.kind for o in registry.objects()] == ["Pod"]
    assert status["unreadable"] and status["unreadable"][0].startswith("Service shop/web: ")
    assert status["errors"]["Service"] == 1


def test_an_object_still_unreadable_is_counted_and_said_once_until_its_reason_changes():
    states = []
    registry = Registry(on_state=lambda: states.append(1))
    broken = {**service("east"), "spec": {"ports": "eighty"}}
    list_all(registry, "east", services=[broken], pods=[pod("web-1", "10.0.0.1")])
    states.clear()
    for _ in range(3):  # listed again (a relist; a dir: registry reads a cluster's folder at each change)
        registry.listed("east", "Service", [broken])
        registry.event("east", "Service", "MODIFIED", broken)
    assert registry.status()[0]["errors"] == {"Service": 1} and states == []
    registry.listed("east", "Service", [{**broken, "spec": {"ports": [{"port": "eighty"}]}}])
    assert registry.status()[0]["errors"] == {"Service": 2} and len(states) == 1  # a new reason: said
    registry.listed("east", "Service", [service("east")])
    status = registry.status()[0]
    assert status["unreadable"] == [] and len(states) == 2  # mended: said too (galleon status --watch)
    # a file's problem, reported with the list by a feed of files, the same way
    registry.listed("east", "Pod", [pod("web-1", "10.0.0.1")], {"shop/web-2": "web-2.yaml: invalid YAML at line 3"})
    registry.listed("east", "Pod", [pod("web-1", "10.0.0.1")], {"shop/web-2": "web-2.yaml: invalid YAML at line 3"})
    status = registry.status()[0]
    assert status["unreadable"] == ["Pod shop/web-2: web-2.yaml: invalid YAML at line 3"]
    assert status["errors"] == {"Service": 2, "Pod": 1} and len(states) == 3


def write(root: Path, cluster: str, body: dict, name: str | None = None) -> Path:
    meta = body["metadata"]
    folder = root / cluster / (meta["namespace"] if "namespace" in meta else "") / body["kind"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or meta['name']}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_directory_registry_reads_each_cluster_folder(tmp_path):
    write(tmp_path, "east", service("east"))
    write(tmp_path, "east", pod("web-1", "10.0.0.1"))
    write(tmp_path, "east", endpoint_slice("web-abc", [("web-1", "10.0.0.1", True)]))
    write(tmp_path, "east", node("node-1", "us-east", "us-east-1c"))
    (tmp_path / "east" / "shop" / "Pod" / "bad.yaml").write_text("kind: Pod\nmetadata: {name: other}\n")
    registry = Registry()
    feed = DirectoryFeed(tmp_path, registry)
    registry = feed.sink = Registry(files=lambda cluster: functools.partial(feed.file_of, cluster))
    assert feed.read_all() == ["east"]
    objects = {o.key: o for o in registry.objects()}
    assert ("", "Node", "", "node-1", "east") in objects
    assert objects[("", "Pod", "shop", "web-1", "east")].file.endswith("east/shop/Pod/web-1.yaml")
    assert "its file is named 'bad'" in registry.status()[0]["unreadable"][0]


def test_a_directory_registry_follows_its_files(tmp_path):
    write(tmp_path, "east", service("east"))
    write(tmp_path, "east", pod("web-1", "10.0.0.1"))
    registry, changes = recording()
    feed = DirectoryFeed(tmp_path, registry)
    feed.read_all()
    changes.clear()
    with watching(feed):
        time.sleep(0.3)
        write(tmp_path, "east", pod("web-2", "10.0.0.2"))
        assert until(lambda: changes)
        assert [o.name for o in changes[0].changed] == ["web-2"]
        changes.clear()
        for path in (tmp_path / "east" / "shop").rglob("*.yaml"):  # the namespace deleted
            path.unlink()
        assert until(lambda: any(c.gone for c in changes))
        assert sorted(o.name for c in changes for o in c.gone) == ["web", "web-1", "web-2"]


@contextlib.contextmanager
def watching(feed: DirectoryFeed):
    """The feed's watch running on a thread of its own, as the daemon runs it, and ended after."""
    stop = threading.Event()
    watcher = threading.Thread(target=feed.watch, args=(stop,), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive()


def until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_folder_is_taken_under_the_lock_another_registry_takes_its_clusters_under(tmp_path):
    """A cluster is read from one registry: a dir: folder appearing while an API server is being
    followed for the same cluster waits for that check-and-take, then finds the cluster taken."""
    import threading
    write(tmp_path, "east", pod("web-1", "10.0.0.1"))
    registry, lock, taken = Registry(), threading.Lock(), {}
    feed = DirectoryFeed(tmp_path, registry, others=taken.get, lock=lock)
    with lock:  # (the other registry checks that east is free, and takes it)
        reading = threading.Thread(target=feed.read_cluster, args=("east",))
        reading.start()
        reading.join(0.3)
        assert reading.is_alive()
        taken["east"] = "--registry kube"
    reading.join(5)
    assert "east" not in feed.holds and registry.status() == []


def test_a_registry_folder_given_relative_is_followed(tmp_path, monkeypatch):
    """--registry dir:sample-registry, as the sample's README gives it: the watch reports absolute
    paths, and each change is read as it comes, the cluster never marked stale."""
    from structlog.testing import capture_logs
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "registry", "east", pod("web-1", "10.0.0.1"))
    registry = Registry()
    feed = DirectoryFeed(Path("registry"), registry)
    feed.read_all()
    with capture_logs() as logs, watching(feed):
        time.sleep(0.5)
        write(tmp_path / "registry", "east", pod("web-2", "10.0.0.2"))
        assert until(lambda: "web-2" in {o.name for o in registry.objects()})
    assert registry.status()[0]["errors"] == {} and not registry.status()[0]["stale"]
    assert not [e for e in logs if e["log_level"] in ("warning", "error")], logs


def test_a_directory_registry_whose_folder_goes_keeps_its_objects_stale_until_it_is_back(tmp_path):
    """A folder deleted (or unmounted) is a registry that cannot be read, not one that lists nothing;
    and the watch of a folder deleted sees nothing more, so one is started on the folder once it is
    back. A plain file beside the clusters' folders is no cluster."""
    import shutil
    root = tmp_path / "registry"
    write(root, "east", service("east"))
    write(root, "east", pod("web-1", "10.0.0.1"))
    registry = Registry()
    feed = DirectoryFeed(root, registry)
    feed.read_all()
    with watching(feed):
        time.sleep(0.5)
        (root / "README.md").write_text("what runs where\n")
        time.sleep(0.5)
        assert [c["cluster"] for c in registry.status()] == ["east"]  # README.md made no cluster
        shutil.rmtree(root)
        assert until(lambda: registry.status()[0]["stale"])
        assert sorted(o.name for o in registry.objects()) == ["web", "web-1"]  # kept
        assert "is gone" in registry.status()[0]["last_error"]
        write(root, "east", service("east"))
        write(root, "east", pod("web-2", "10.0.0.2"))
        assert until(lambda: not registry.status()[0]["stale"])
        assert until(lambda: sorted(o.name for o in registry.objects()) == ["web", "web-2"])
        write(root, "east", pod("web-3", "10.0.0.3"))  # followed again
        assert until(lambda: "web-3" in {o.name for o in registry.objects()})
        # another folder moved to its path (a deploy's rename): followed, not the one it replaced
        staged = tmp_path / "staged"
        write(staged, "east", service("east"))
        write(staged, "east", pod("web-4", "10.0.0.4"))
        root.rename(tmp_path / "old")
        staged.rename(root)
        assert until(lambda: sorted(o.name for o in registry.objects()) == ["web", "web-4"])
        write(root, "east", pod("web-5", "10.0.0.5"))
        assert until(lambda: "web-5" in {o.name for o in registry.objects()})
        # a cluster's folder removed: the cluster is no longer read, as a remote secret deleted
        write(root, "west", pod("web-6", "10.0.0.6"))
        assert until(lambda: [c["cluster"] for c in registry.status()] == ["east", "west"])
        shutil.rmtree(root / "west")
        assert until(lambda: [c["cluster"] for c in registry.status()] == ["east"])
        write(root, "west", pod("web-7", "10.0.0.7"))  # and back
        assert until(lambda: "web-7" in {o.name for o in registry.objects()})


def test_a_directory_registry_sees_an_edit_that_keeps_the_resource_version(tmp_path):
    """A manifest exported with kubectl carries the resourceVersion of its export, and keeps it when
    edited by hand: its content, not that, says it changed."""
    exported = pod("web-1", "10.0.0.1")
    write(tmp_path, "east", exported)
    registry, changes = recording()
    feed = DirectoryFeed(tmp_path, registry)
    feed.read_all()
    changes.clear()
    exported["metadata"]["labels"]["version"] = "v2"
    write(tmp_path, "east", exported)
    feed.read_cluster("east")
    assert [o.labels["version"] for c in changes for o in c.changed] == ["v2"]


def test_a_file_replaced_by_one_of_the_same_size_and_time_is_read_again(tmp_path):
    """cp -p, rsync -a and tar write a file with the modification time of its source: a replacement of
    the same size and time is a new inode, or a new change time, which the cache of parsed files sees."""
    import os
    path = write(tmp_path, "east", pod("web-1", "10.7.0.1"))
    registry = Registry()
    feed = DirectoryFeed(tmp_path, registry)
    feed.read_all()
    stamp = path.stat()
    for how in ("replaced", "overwritten"):
        ip = "10.7.0.2" if how == "replaced" else "10.7.0.3"
        text = yaml.safe_dump(pod("web-1", ip))
        if how == "replaced":  # a new file moved over it
            other = path.with_suffix(".tmp")
            other.write_text(text)
            os.utime(other, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            other.rename(path)
        else:  # written in place, its time set back (as cp -p does)
            path.write_text(text)
            os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (stamp.st_size, stamp.st_mtime_ns)
        feed.read_cluster("east")
        assert [o.body["status"]["podIP"] for o in registry.objects() if o.kind == "Pod"] == [ip], how


def test_a_file_that_cannot_be_read_now_keeps_the_object_it_held(tmp_path):
    path = write(tmp_path, "east", pod("web-1", "10.0.0.1"))
    write(tmp_path, "east", service("east"))
    registry = Registry()
    feed = DirectoryFeed(tmp_path, registry)
    feed.read_all()
    path.write_text("kind: Pod\nmetadata: {name: web-1\n")  # half written
    feed.read_cluster("east")
    assert [o.name for o in registry.objects() if o.kind == "Pod"] == ["web-1"]
    reported = registry.status()[0]["unreadable"][0]
    # where to look (the brace left open on line 2), without the parser's quoting of "<byte string>"
    assert reported.startswith("Pod shop/web-1: ") and "web-1.yaml: invalid YAML at line 2, column 11: " in reported
    assert "byte string" not in reported
    path.unlink()
    feed.read_cluster("east")
    assert [o.name for o in registry.objects() if o.kind == "Pod"] == []


def test_a_misplaced_or_misspelt_kind_folder_is_said_once(tmp_path):
    """Files in a folder the layout does not read are left alone (a README, a kustomization), but a
    kind the registry reads, misplaced or misspelt, would lose every object in it without a word."""
    from structlog.testing import capture_logs
    for relative in ("east/shop/Pods/web-1.yaml", "east/shop/Pods/web-2.yaml", "east/shop/endpointslice/web.yaml",
                     "east/Pod/web-3.yaml", "east/shop/Node/node-1.yaml", "east/shop/ConfigMap/settings.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("kind: Pod\n")
    write(tmp_path, "east", {**pod("web-9", "10.0.0.9"), "metadata": {"namespace": "shop", "labels": {}}}, "web-9")
    registry = Registry()
    feed = DirectoryFeed(tmp_path, registry)
    with capture_logs() as logs:
        feed.read_all()
        feed.read_cluster("east")  # (said once)
    said = sorted((Path(e["folder"]).relative_to(tmp_path).as_posix(), e["reason"]) for e in logs
                  if e["event"] == "registry folder not read")
    assert said == [("east/Pod", "Pod is namespaced: <cluster>/<namespace>/Pod/<name>.yaml"),
                    ("east/shop/Node", "Node is cluster-scoped: <cluster>/Node/<name>.yaml"),
                    ("east/shop/Pods", "no kind 'Pods' is read; did you mean Pod?"),
                    ("east/shop/endpointslice", "no kind 'endpointslice' is read; did you mean EndpointSlice?")]
    assert registry.status()[0]["unreadable"][0].endswith("web-9.yaml: has no metadata.name (its file says 'web-9')")


def test_a_list_after_the_first_counts_what_it_changed_as_events(tmp_path):
    write(tmp_path, "east", pod("web-1", "10.0.0.1"))
    registry = Registry()
    feed = DirectoryFeed(tmp_path, registry)
    feed.read_all()
    assert registry.status()[0]["events"] == {}  # the first list is no event
    write(tmp_path, "east", pod("web-2", "10.0.0.2"))
    (tmp_path / "east" / "shop" / "Pod" / "web-1.yaml").unlink()
    feed.read_cluster("east")
    assert registry.status()[0]["events"] == {"Pod": 2}


def test_a_file_that_would_take_the_daemons_memory_is_unreadable(tmp_path):
    """A file is read by the repository's rules: 500 bytes of nested aliases (a billion-item
    expansion: PyYAML's own loader would try to build it) are refused at once, as are a key given
    twice and bytes that are not UTF-8, each said with its line."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "apiVersion: v1\nkind: Pod\nmetadata: {name: bomb, namespace: shop}\nstatus:\n" + \
        "".join(f"  {level}\n" for level in levels)
    folder = tmp_path / "east" / "shop" / "Pod"
    folder.mkdir(parents=True)
    (folder / "bomb.yaml").write_text(bomb)
    (folder / "twice.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: twice, namespace: shop}\n"
                                       "spec: {nodeName: a}\nspec: {nodeName: b}\n")
    (folder / "latin.yaml").write_bytes(b"apiVersion: v1\nkind: Pod\nmetadata: {name: latin}\n# caf\xe9\n")
    registry = Registry()
    started = time.perf_counter()
    DirectoryFeed(tmp_path, registry).read_all()
    assert time.perf_counter() - started < 2
    reported = registry.status()[0]["unreadable"]
    assert len(reported) == 3 and not registry.objects()
    assert reported[0].startswith("Pod shop/bomb: ") and "bomb.yaml: line 1: anchors and aliases expand it far beyond" in reported[0]
    assert "latin.yaml: line 4: not valid UTF-8 (byte 0xe9" in reported[1]
    assert "twice.yaml: line 5: key .spec is given twice in one mapping" in reported[2]


def test_a_cluster_being_listed_is_syncing_until_it_is_synced_or_fails():
    registry, _ = recording()
    assert not registry.syncing()
    registry.listed("east", "Service", [])
    assert registry.syncing()
    registry.failed("east", "Pod", "east: API server unreachable")
    assert not registry.syncing()  # a cluster that cannot be read is not waited for
    list_all(registry, "west")
    assert not registry.syncing()
