"""A ``dir:PATH`` registry: the live objects of each cluster as manifests, where no API server is
at hand (the demo, the tests, a cluster exported with kubectl).

``PATH/<cluster>/<namespace>/<Kind>/<name>.yaml`` (a Node, cluster-scoped, at
``PATH/<cluster>/Node/<name>.yaml``), one object per file, as ``kubectl get -o yaml`` prints it:
the same layout and rules as a ``dir:`` target. Each folder under PATH is a cluster. The folder is
read whole at start (each cluster then synced) and watched with watchfiles; a change re-reads the
clusters it touched and reports each kind as a complete list, which the store compares with what
it holds, so a file that cannot be read is reported and skipped, and a folder removed (a namespace
deleted) removes its objects.
"""
from __future__ import annotations

import stat
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol
from pathlib import Path

import structlog
import watchfiles

from compiler.errors import one_line
from compiler.parse import UnreadableFile, read_document

from .sink import CLUSTER_SCOPED, KIND_NAMES, Sink


class FolderSink(Sink, Protocol):
    """A sink that can also be told a cluster's folder is gone (it is no longer read), or new."""

    def expect(self, clusters: Iterable[str]) -> None: ...

    def forget(self, cluster: str) -> None: ...

log = structlog.get_logger("galleon.registry")

LOST_POLL = 1.0  # how often a registry folder that went is looked for (a folder deleted cannot be watched)

_KINDS_BY_SPELLING = {kind.lower(): kind for kind in KIND_NAMES}


class DirectoryError(Exception):
    """The folder cannot be a registry; the message says why."""


@dataclass(frozen=True)
class _File:
    kind: str
    where: str  # namespace/name, or a Node's name
    body: dict | None  # the object: read now, or, when it cannot be read now, when last read
    problem: str | None = None


class DirectoryFeed:
    """``others``: which other registry reads a cluster, if one does (its folder here is then left
    alone, said once: a cluster is read from one registry, or two would undo each other's lists).
    ``lock``: held while it takes or lets go of a cluster (``holds``), shared with the other
    registries' so that a cluster cannot be taken by two between one's check and its taking."""

    def __init__(self, root: Path, sink: FolderSink, others: Callable[[str], str | None] = lambda cluster: None,
                 lock: threading.Lock | None = None) -> None:
        # (absolute: the watch reports absolute paths, which a relative root would not contain)
        self.root, self.sink, self.others = root.absolute(), sink, others
        self.lock = lock or threading.Lock()
        self._ignored: set[str] = set()  # clusters' folders left alone, said once
        self._misplaced: set[Path] = set()  # folders of a kind misplaced or misspelt, said once
        # A file read before and unchanged since is not parsed again. Unchanged: the same inode, size,
        # and modification and change times (cp -p, rsync -a and tar keep the modification time of
        # what they write; the change time they cannot set).
        self._parsed: dict[Path, tuple[tuple[int, int, int, int], dict]] = {}
        self.holds: set[str] = set()  # the clusters whose folders it has read (their objects are its files)
        self._gone = False  # the folder went (its clusters are stale until it is back)

    def file_of(self, cluster: str, kind: str, namespace: str, name: str) -> str:
        """Where an object of this registry is (its findings and provenance name the file)."""
        folder = self.root / cluster
        return str(folder / namespace / kind / f"{name}.yaml" if namespace else folder / kind / f"{name}.yaml")

    def clusters(self) -> list[str]:
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise DirectoryError(f"registry folder {self.root} {what} (expected "
                                 f"{self.root}/<cluster>/<namespace>/<Kind>/<name>.yaml)")
        return self._folders()

    def _folders(self) -> list[str]:
        """The folders under the registry's, each a cluster's (none when it has gone meanwhile)."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return []

    def read_all(self) -> list[str]:
        """Read every cluster folder and report it; the clusters read."""
        return [cluster for cluster in self.clusters() if self.read_cluster(cluster)]

    def read_cluster(self, cluster: str) -> bool:
        """Report one cluster's objects, each kind as a complete list. A file that cannot be read now
        (half written, broken) keeps the object it held when last read, and is reported. A cluster
        whose folder was removed is no longer read: its objects go, as a cluster's whose remote secret
        is deleted. False when the cluster is not read (its folder gone, or another registry reads it)."""
        folder = self.root / cluster
        if not folder.is_dir():
            if cluster in self.holds and self.root.is_dir():
                with self.lock:
                    self.holds.discard(cluster)
                    self.sink.forget(cluster)
                self._parsed = {p: held for p, held in self._parsed.items() if not p.is_relative_to(folder)}
            return False
        if cluster not in self.holds:
            with self.lock:
                owner = self.others(cluster)
                if owner is None:
                    self.holds.add(cluster)
            if owner is not None:
                if cluster not in self._ignored:
                    self._ignored.add(cluster)
                    log.warning("registry folder ignored", folder=str(self.root / cluster), cluster=cluster,
                                reason=f"the cluster is read from {owner}; a cluster is read from one registry")
                return False
            self.sink.expect([cluster])
        by_kind: dict[str, list[dict]] = {kind: [] for kind in KIND_NAMES}
        problems: dict[str, dict[str, str]] = {kind: {} for kind in KIND_NAMES}
        seen: set[Path] = set()
        for path in self._files(folder):
            seen.add(path)
            found = self._read(folder, path)
            if found is None:
                continue
            if found.body is not None:
                by_kind[found.kind].append(found.body)
            if found.problem:
                problems[found.kind][found.where] = found.problem
        for gone in [p for p in self._parsed if p.is_relative_to(folder) and p not in seen]:
            del self._parsed[gone]
        for kind, objects in by_kind.items():
            self.sink.listed(cluster, kind, objects, problems[kind])
        return True

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        """The manifests under a cluster's folder; a folder removed while it is walked is walked again
        (the next attempt sees it gone)."""
        for _ in range(3):
            try:
                return sorted(path for path in folder.rglob("*") if path.suffix in (".yaml", ".yml")
                              and not any(part.startswith(".") for part in path.relative_to(folder).parts)
                              and path.is_file()) if folder.is_dir() else []
            except FileNotFoundError:
                continue
        return []

    def _read(self, folder: Path, path: Path) -> _File | None:
        """What a file holds; None when it is not a registry file, or was deleted meanwhile."""
        parts = path.relative_to(folder).parts
        name = path.stem
        if len(parts) == 3 and parts[1] not in CLUSTER_SCOPED:
            namespace, kind = parts[0], parts[1]
        elif len(parts) == 2 and parts[0] in CLUSTER_SCOPED:
            namespace, kind = "", parts[0]
        else:
            # another layout: not a registry file (a README, a kustomization...); but a kind it reads,
            # misplaced, is said (its objects would be missed without a word)
            misplaced = _meant(parts[-2]) if len(parts) in (2, 3) else None
            if misplaced in CLUSTER_SCOPED:
                self._say_once(path.parent, f"{misplaced} is cluster-scoped: <cluster>/{misplaced}/<name>.yaml")
            elif misplaced in KIND_NAMES:
                self._say_once(path.parent, f"{misplaced} is namespaced: <cluster>/<namespace>/{misplaced}/<name>.yaml")
            return None
        if kind not in KIND_NAMES:
            meant = _meant(kind)
            if meant is not None:  # Pods/, endpointslice/: a misspelt kind would miss every object in it
                self._say_once(path.parent, f"no kind {kind!r} is read; did you mean {meant}?")
            return None  # kinds a registry does not read (ConfigMaps, Secrets...) are left alone
        where = f"{namespace}/{name}" if namespace else name
        held = self._parsed.get(path)
        try:
            stat = path.stat()
            stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            if held is not None and held[0] == stamp:
                return _File(kind, where, held[1])
            body = _without_version(read_document(str(path), path.read_bytes()))
            why = _mismatch(body, kind, namespace, name)
        except FileNotFoundError:
            return None
        except UnreadableFile as exc:
            why = exc.message
        except OSError as exc:
            why = one_line(exc)
        if why:
            return _File(kind, where, held[1] if held is not None else None, f"{path}: {why}")
        assert isinstance(body, dict)
        self._parsed[path] = (stamp, body)
        return _File(kind, where, body)

    def watch(self, stop: threading.Event) -> None:
        """Report what changes until ``stop`` is set (run it on a thread of its own). Once the watch
        runs, every cluster folder is read again (what changed before it started is not lost). When the
        folder itself goes (deleted, unmounted, replaced), its clusters keep their objects, marked stale,
        until it is back, and are then read again: a registry that cannot be read is not one that lists
        nothing, and a watch of a folder deleted sees no more changes, so a new one is started."""
        while not stop.is_set():
            if not self.root.is_dir():
                self._lost("it is gone")
                stop.wait(LOST_POLL)
                continue
            try:
                self._follow(stop)
            except Exception as exc:  # noqa: BLE001 - the watch failed: said, and tried again
                if not isinstance(exc, OSError):  # a bug, not the system's refusal (inotify's limits): its traceback
                    log.exception("registry watch failed", folder=str(self.root))
                self._lost(f"its watch failed ({one_line(exc)}); trying again")
                stop.wait(LOST_POLL)

    def _follow(self, stop: threading.Event) -> None:
        """One watch of the folder, until ``stop`` is set or the folder goes (or another takes its path:
        a watch follows the folder it started on)."""
        running = False
        watched = _identity(self.root)
        for changes in watchfiles.watch(self.root, stop_event=stop, debounce=50, step=20, yield_on_timeout=True,
                                        rust_timeout=200):
            if _identity(self.root) != watched:
                return  # (its watch would see nothing more)
            touched: set[str] = set()
            if not running:  # the watch's first answer: it runs, and what changed before is read now
                running = True
                self._gone = False
                touched.update(self.holds, self._folders())
            for _, changed in changes:
                name = Path(changed).relative_to(self.root).parts[:1]
                # (a plain file beside the clusters' folders is no cluster)
                if name and not name[0].startswith(".") and (name[0] in self.holds or (self.root / name[0]).is_dir()):
                    touched.add(name[0])
            for cluster in sorted(touched):
                self._read_or_fail(cluster)

    def _read_or_fail(self, cluster: str) -> None:
        try:
            self.read_cluster(cluster)
        except OSError as exc:  # the folder went while being read: the next change reads it again
            self.sink.failed(cluster, None, f"{self.root / cluster}: {one_line(exc)}")

    def _say_once(self, folder: Path, why: str) -> None:
        if folder not in self._misplaced:
            self._misplaced.add(folder)
            log.warning("registry folder not read", folder=str(folder), reason=why)

    def _lost(self, why: str) -> None:
        """The folder cannot be followed now: its clusters keep their last objects, marked stale (said
        once, until it is followed again)."""
        if self._gone:
            return
        self._gone = True
        error = f"registry folder {self.root}: {why}; its clusters' last objects are kept until it can be read"
        log.warning("registry stale", folder=str(self.root), clusters=sorted(self.holds), error=error)
        for cluster in sorted(self.holds):
            self.sink.failed(cluster, None, error)


def _meant(folder: str) -> str | None:
    """The kind a registry reads that a folder's name is, or is a misspelling of (Pods, endpointslice)."""
    return _KINDS_BY_SPELLING.get(folder.lower().removesuffix("s"))


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at a path now (None: none is)."""
    try:
        found = folder.stat()
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None


def _mismatch(body: object, kind: str, namespace: str, name: str) -> str | None:
    """Why a file does not hold the object its path names (None: it does)."""
    if not isinstance(body, dict):
        return "not one Kubernetes object (one object per file)"
    found = body.get("metadata")
    metadata: dict = found if isinstance(found, dict) else {}
    if body.get("kind") != kind:
        return f"holds kind {body.get('kind')!r}, but its folder says {kind}"
    if not metadata.get("name"):
        return f"has no metadata.name (its file says {name!r})"
    if metadata.get("name") != name:
        return f"holds {metadata.get('name')!r}, but its file is named {name!r}"
    if namespace and (metadata.get("namespace") or "default") != namespace:
        return f"holds namespace {metadata.get('namespace') or 'default'!r}, but its folder says {namespace!r}"
    return None


def _without_version(body: object) -> object:
    """A file's object without its resourceVersion. The store takes an object whose resourceVersion
    is unchanged for unchanged, which an API server guarantees and a file does not: a manifest
    exported with kubectl and edited by hand keeps the version of its export, so here its content
    must decide."""
    if not isinstance(body, dict):
        return body
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "resourceVersion" not in metadata:
        return body
    return {**body, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}
