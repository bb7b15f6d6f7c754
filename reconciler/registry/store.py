"""The store of what runs: every cluster's objects as its feed last reported them, whether each
cluster is synced (every kind listed once: Istio's HasSynced) and fresh, and the changes, handed
to whoever follows them (the daemon: reconciler/daemon/live.py).

Feeds call the ``Sink`` methods from their own threads; one lock guards the store, and a change is
handed on (``on_change``) after the store holds it, outside the lock.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import structlog

from compiler.kube import slice_addresses
from compiler.live import Unreadable, kube_file, live_object
from compiler.parse import SourceObject

from .. import runtime
from .sink import CLUSTER_SCOPED, KIND_NAMES

log = structlog.get_logger("galleon.registry")

# What names an object in a cluster: (kind, namespace, name); a Node's namespace is "".
Key = tuple[str, str, str]
# Where the objects read from a cluster are said to be: given the cluster, the file of (kind,
# namespace, name). Asked once per list or watch event, not per object of a list.
Files = Callable[[str], Callable[[str, str, str], str]]
# Kinds whose change may change more than the endpoints of the services they feed.
WHOLE_KINDS = frozenset({"Service", "Node"})


def kube_files(cluster: str) -> Callable[[str, str, str], str]:
    """Objects read from ``cluster``'s API server: ``kube:CLUSTER/NS/KIND/NAME``."""
    return functools.partial(kube_file, cluster)


@dataclass(frozen=True)
class Change:
    """What one report changed in one cluster: objects new or edited, and objects gone (as last held).
    ``whole``: the mesh must be built anew (a Service or Node changed, or the cluster was just synced)."""
    cluster: str
    changed: tuple[SourceObject, ...] = ()
    gone: tuple[SourceObject, ...] = ()
    whole: bool = False


@dataclass
class ClusterRecord:
    name: str
    objects: dict[Key, SourceObject] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # kinds listed at least once
    stale: dict[str, str] = field(default_factory=dict)  # kind ("" for all) -> the error that made it stale
    refused: bool = False  # the last failure was a refusal (credentials, permissions, configuration)
    last_event: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    events: dict[str, int] = field(default_factory=dict)  # by kind
    errors: dict[str, int] = field(default_factory=dict)  # by kind ("" when not about one kind)
    unreadable: dict[Key, str] = field(default_factory=dict)  # objects skipped, and why

    @property
    def synced(self) -> bool:
        return self.listed.issuperset(KIND_NAMES)

    def state(self) -> dict:
        """Whether it is synced, stale or refused, and its last error: what readiness asks, without
        counting every object as ``status`` does."""
        return {"cluster": self.name, "synced": self.synced, "stale": bool(self.stale) and self.synced,
                "refused": bool(self.stale) and self.refused, "last_error": self.last_error}

    def status(self) -> dict:
        counts: dict[str, int] = {}
        endpoints = not_ready = 0
        for (kind, _, _), obj in self.objects.items():
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "EndpointSlice":
                listed, not_listening = slice_addresses(obj.body)
                endpoints, not_ready = endpoints + listed, not_ready + not_listening
        return {**self.state(),
                "services": counts.get("Service", 0), "endpoints": endpoints, "not_ready": not_ready,
                "pods": counts.get("Pod", 0),
                "nodes": counts.get("Node", 0), "endpoint_slices": counts.get("EndpointSlice", 0),
                "last_event": _when(self.last_event), "last_error_at": _when(self.last_error_at), "events": dict(self.events),
                "errors": dict(self.errors),
                "unreadable": [f"{kind} {ns + '/' if ns else ''}{name}: {why}"
                               for (kind, ns, name), why in sorted(self.unreadable.items())][:20]}


def _when(at: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at is not None else None


class Registry:
    """Every cluster's live objects (a ``Sink`` for the feeds). ``files`` names where an object is
    said to be (default: ``kube:CLUSTER/NS/KIND/NAME``); ``on_change`` is called with each
    ``Change`` that touches a synced cluster, from the feed's thread."""

    def __init__(self, on_change: Callable[[Change], None] = lambda change: None,
                 files: Files = kube_files,
                 on_state: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.Lock()
        self._clusters: dict[str, ClusterRecord] = {}
        # Clusters forgotten and not expected since: what a feed stopped a moment too late still
        # reports of them is dropped, so that it cannot bring them back.
        self._forgotten: set[str] = set()
        self._on_change = on_change
        self._files = files
        self._on_state = on_state  # called when a cluster turns synced, stale or fresh again

    # --- the Sink ------------------------------------------------------------------------------------

    def listed(self, cluster: str, kind: str, objects: list[dict], unreadable: Mapping[str, str] | None = None) -> None:
        with runtime.bulk():
            read, skipped = self._read_all(cluster, kind, objects)
        for where, why in (unreadable or {}).items():
            namespace, _, name = where.rpartition("/")
            skipped[(kind, namespace, name)] = why
        with self._lock:
            if cluster in self._forgotten:
                return
            record = self._record(cluster)
            was_synced = record.synced
            held = {key: obj for key, obj in record.objects.items() if key[0] == kind}
            # An object listed again unchanged stays the one held: a relist replaces nothing it need not.
            new = {key: obj for key, obj in read.items() if held.get(key) is None or held[key].digest != obj.digest}
            changed = list(new.values())
            gone = [obj for key, obj in held.items() if key not in read]
            for key in held.keys() - read.keys():
                del record.objects[key]
            record.objects.update(new)
            before = {k: why for k, why in record.unreadable.items() if k[0] == kind}
            for key, why in skipped.items():
                self._skip(record, key, why)
            for key in before.keys() - skipped.keys():
                del record.unreadable[key]
            was_stale = bool(record.stale)
            if kind in record.listed and (changed or gone):  # (a list after the first: what it changed happened)
                record.events[kind] = record.events.get(kind, 0) + len(changed) + len(gone)
            record.listed.add(kind)
            record.stale.pop(kind, None)
            record.stale.pop("", None)
            state_changed = record.synced != was_synced or bool(record.stale) != was_stale or before != skipped
            fresh_again = was_synced and was_stale and not record.stale
            record.last_event = time.time()
            change = Change(cluster, tuple(changed), tuple(gone), whole=kind in WHOLE_KINDS or not was_synced)
            deliver = record.synced and (change.changed or change.gone or not was_synced)
        log.debug("listed", cluster=cluster, kind=kind, objects=len(read), changed=len(changed), gone=len(gone))
        if fresh_again:
            log.info("registry listed again", cluster=cluster)
        if deliver:
            self._on_change(change)
        if state_changed:
            self._on_state()

    def event(self, cluster: str, kind: str, type: str, obj: dict) -> None:
        key = _key(kind, obj)
        with self._lock:
            if cluster in self._forgotten:
                return
            record = self._record(cluster)
            record.last_event = time.time()
            record.events[kind] = record.events.get(kind, 0) + 1
            if key is None:
                return
            if type == "DELETED":
                old = record.objects.pop(key, None)
                state_changed = record.unreadable.pop(key, None) is not None
                change = Change(cluster, gone=(old,) if old is not None else (), whole=kind in WHOLE_KINDS)
            else:
                try:
                    new = live_object(cluster, obj, self._files(cluster)(kind, key[1], key[2]))
                except Unreadable as exc:
                    state_changed = self._skip(record, key, str(exc))
                    old = record.objects.pop(key, None)  # what it was is no longer what runs
                    change = Change(cluster, gone=(old,) if old is not None else (), whole=kind in WHOLE_KINDS)
                else:
                    state_changed = record.unreadable.pop(key, None) is not None
                    old = record.objects.get(key)
                    if old is not None and old.digest == new.digest:
                        change = Change(cluster)
                    else:
                        record.objects[key] = new
                        change = Change(cluster, changed=(new,), whole=kind in WHOLE_KINDS)
            deliver = record.synced and (change.changed or change.gone)
        if deliver:
            self._on_change(change)
        if state_changed:
            self._on_state()

    def failed(self, cluster: str, kind: str | None, error: str, refused: bool = False) -> None:
        with self._lock:
            if cluster in self._forgotten:
                return
            record = self._record(cluster)
            first, said = not record.stale, record.last_error
            record.stale[kind or ""] = error
            record.refused = refused
            record.last_error, record.last_error_at = error, time.time()
            record.errors[kind or ""] = record.errors.get(kind or "", 0) + 1
            synced = record.synced
        if first:
            if synced:
                log.warning("registry stale: keeping the last endpoints", cluster=cluster, kind=kind, error=error)
            else:
                log.warning("registry cannot list the cluster", cluster=cluster, kind=kind, error=error)
        if first or error != said:  # (galleon status --watch shows the last error)
            self._on_state()

    # --- readers -------------------------------------------------------------------------------------

    def objects(self) -> list[SourceObject]:
        """The objects of every synced cluster (a stale one's as last held)."""
        with self._lock:
            return [obj for record in self._clusters.values() if record.synced for obj in record.objects.values()]

    def syncing(self) -> bool:
        """Whether a cluster is being listed for the first time: some of its kinds listed, none failed."""
        with self._lock:
            return any(record.listed and not record.synced and not record.stale for record in self._clusters.values())

    def status(self) -> list[dict]:
        with self._lock:
            return [record.status() for _, record in sorted(self._clusters.items())]

    def states(self) -> list[dict]:
        """Each cluster's ``ClusterRecord.state``: cheap, as readiness is asked often."""
        with self._lock:
            return [record.state() for _, record in sorted(self._clusters.items())]

    def last_error(self, cluster: str) -> str | None:
        with self._lock:
            record = self._clusters.get(cluster)
            return record.last_error if record is not None else None

    def waited_for(self) -> list[str]:
        """The clusters a first publish waits for: not synced, and not refused (only a change of
        configuration or credentials mends a refusal)."""
        return [c["cluster"] for c in self.states() if not c["synced"] and not c["refused"]]

    def expect(self, clusters: Iterable[str]) -> None:
        """Clusters the registry is to read: reported (not synced) before their first report."""
        with self._lock:
            for cluster in clusters:
                self._forgotten.discard(cluster)
                self._record(cluster)

    def forget(self, cluster: str) -> None:
        """A cluster no longer read (its remote secret deleted): its objects go, and with them its
        endpoints from what is served, as Istio removes a cluster whose secret is deleted."""
        with self._lock:
            self._forgotten.add(cluster)
            record = self._clusters.pop(cluster, None)
        if record is None:
            return
        log.info("registry cluster removed", cluster=cluster, objects=len(record.objects))
        if record.synced and record.objects:
            self._on_change(Change(cluster, gone=tuple(record.objects.values()), whole=True))
        self._on_state()

    # --- inside the lock -----------------------------------------------------------------------------

    def _record(self, cluster: str) -> ClusterRecord:
        record = self._clusters.get(cluster)
        if record is None:
            record = self._clusters[cluster] = ClusterRecord(cluster)
        return record

    def _skip(self, record: ClusterRecord, key: Key, reason: str) -> bool:
        """An object skipped; logged and counted once until its reason changes (a file still broken at
        the next read is not a new error). Whether it was news."""
        said = record.unreadable.get(key)
        record.unreadable[key] = reason
        if said == reason:
            return False
        kind, namespace, name = key
        log.warning("object skipped", cluster=record.name, kind=kind, namespace=namespace or None, name=name,
                    reason=reason)
        record.errors[kind] = record.errors.get(kind, 0) + 1
        record.last_error, record.last_error_at = f"{kind} {namespace + '/' if namespace else ''}{name}: {reason}", \
            time.time()
        return True

    def _read_all(self, cluster: str, kind: str, objects: list[dict]) -> tuple[dict[Key, SourceObject], dict[Key, str]]:
        """(outside the lock) The objects of a list, and those skipped with why."""
        read: dict[Key, SourceObject] = {}
        skipped: dict[Key, str] = {}
        file_of = self._files(cluster)
        for body in objects:
            key = _key(kind, body)
            if key is None:
                continue
            try:
                read[key] = live_object(cluster, body, file_of(kind, key[1], key[2]))
            except Unreadable as exc:
                skipped[key] = str(exc)
        return read, skipped


def _key(kind: str, obj: dict) -> Key | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return None
    return kind, "" if kind in CLUSTER_SCOPED else str(metadata.get("namespace") or "default"), metadata["name"]
