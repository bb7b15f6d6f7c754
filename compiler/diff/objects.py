"""What changed in the repository's objects between two revisions, field by field.

Objects are matched by kind, namespace and name, and compared by what they say (their parsed
values), so reformatting, reordering keys or moving an object to another file is not a change
of configuration (a move is still reported, as such).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

from ..parse import SourceObject
from .fields import FieldChange, diff_values

ADDED, REMOVED, CHANGED, MOVED, UNREADABLE = "added", "removed", "changed", "moved", "unreadable"
ACTIONS = (ADDED, CHANGED, REMOVED, MOVED, UNREADABLE)


@dataclass(frozen=True)
class FieldLine:
    change: FieldChange
    line: int

    def to_dict(self) -> dict:
        return {**self.change.to_dict(), "line": self.line, "text": self.text()}

    def text(self) -> str:
        return self.change.text()


@dataclass(frozen=True)
class ObjectChange:
    """``file``/``line`` are at HEAD (at BASE for a removed object); ``moved_from`` is BASE's file:line
    when the object now lives in another file."""

    action: str
    kind: str
    namespace: str
    name: str
    file: str
    line: int
    fields: tuple[FieldLine, ...] = ()
    moved_from: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def to_dict(self) -> dict:
        return {"action": self.action, "kind": self.kind, "namespace": self.namespace, "name": self.name,
                "file": self.file, "line": self.line, "fields": [f.to_dict() for f in self.fields],
                "moved_from": self.moved_from}


@dataclass(frozen=True)
class ObjectDiff:
    changes: tuple[ObjectChange, ...] = field(default_factory=tuple)

    def count(self, action: str) -> int:
        return sum(c.action == action for c in self.changes)


def _key(obj: SourceObject) -> tuple[str, str, str]:
    # The kind Galleon knows it as (an Istio Gateway and a Gateway API one of the same name are two
    # objects); a change names it as findings do (SourceObject.shown_kind).
    return (obj.kind, obj.namespace, obj.name)


def diff_objects(base: list[SourceObject], head: list[SourceObject], unreadable: Collection[str] = ()) -> ObjectDiff:
    """Changes from ``base`` to ``head`` by HEAD's file and line (removed ones last, by BASE's).
    ``unreadable``: HEAD's files read only up to invalid YAML: a BASE object of one of them that HEAD
    lacks is unreadable there, not removed (its file's finding says why)."""
    # An object parsed once for both revisions (its file is unchanged) has not changed: leave it out
    # (it cannot match another object, whose key would make it a duplicate).
    shared = {id(obj) for obj in base} & {id(obj) for obj in head}
    base = [obj for obj in base if id(obj) not in shared]
    head = [obj for obj in head if id(obj) not in shared]
    # Duplicates (an error validation reports) keep their first occurrence here.
    before: dict = {}
    for obj in base:
        before.setdefault(_key(obj), obj)
    after: dict = {}
    for obj in head:
        after.setdefault(_key(obj), obj)
    changes = []
    for key, new in after.items():
        old = before.get(key)
        if old is None:
            changes.append(ObjectChange(ADDED, new.shown_kind, *key[1:], new.file, new.line))
            continue
        # A removed field's path is BASE's: line_of falls back to the nearest ancestor HEAD still has.
        fields = tuple(FieldLine(c, new.line_of(c.path)) for c in diff_values(old.body, new.body))
        moved = f"{old.file}:{old.line}" if old.file != new.file else ""
        if fields or moved:
            changes.append(ObjectChange(CHANGED if fields else MOVED, new.shown_kind, *key[1:], new.file, new.line,
                                        fields, moved))
    removed = [ObjectChange(UNREADABLE if old.file in unreadable else REMOVED, old.shown_kind, *key[1:], old.file,
                            old.line) for key, old in before.items() if key not in after]
    changes.sort(key=lambda c: (c.file, c.line))
    removed.sort(key=lambda c: (c.file, c.line))
    return ObjectDiff(tuple(changes + removed))
