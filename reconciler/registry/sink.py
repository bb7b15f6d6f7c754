"""What a registry feed tells the registry: the contract between a feed (one cluster's API server,
or a ``dir:`` folder) and the store of what runs (store.py).

A feed calls these from any thread. Objects are plain dicts as the API server returns them (JSON
decoded, ``apiVersion`` and ``kind`` set, ``status`` kept); the kinds read are ``KINDS``.
"""
from __future__ import annotations

from typing import Mapping, Protocol

from compiler.live import REGISTRY_KINDS as KINDS

KIND_NAMES = tuple(k.kind for k in KINDS)
CLUSTER_SCOPED = frozenset(k.kind for k in KINDS if not k.namespaced)


class Sink(Protocol):
    def listed(self, cluster: str, kind: str, objects: list[dict], unreadable: Mapping[str, str] | None = None) -> None:
        """A complete list of ``kind`` in ``cluster``: it replaces what was held of that kind (objects
        absent from it are deleted). The cluster is synced once each of its kinds has been listed.
        ``unreadable``: objects of the list that cannot be read now, by ``namespace/name`` (a Node's
        name), and why; reported and skipped, each once until its reason changes (a feed of files
        lists the object a broken file held when last read in ``objects`` too)."""

    def event(self, cluster: str, kind: str, type: str, obj: dict) -> None:
        """One watch event: ``type`` is ADDED, MODIFIED or DELETED."""

    def failed(self, cluster: str, kind: str | None, error: str, refused: bool = False) -> None:
        """The cluster (or one kind's watch) cannot be read now: what is held is kept, marked stale,
        until the next ``listed``. ``error`` is one line a person can act on; ``refused``: the API
        server refused the credentials or the permission (trying again helps only once someone
        changes them)."""
