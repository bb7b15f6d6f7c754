"""A mapping made from another by a few changes, without copying it.

A live registry's batch of Pod and EndpointSlice changes makes a new mesh (model.relisted) whose
index of every Pod, and of every per-service object by digest, differs from the last mesh's in a
few dozen keys. Copying a large mesh's indexes for each batch would cost more than the rest of the
batch; an overlay holds the last mesh's index and the changes instead, both never changed once
made (a mesh is never changed), and folds them into a plain dict once the changes grow to a
sixteenth of it, so that a look-up is at most two dict look-ups and a batch copies the changes since
the last fold, never the whole index but at the fold.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

_GONE: Any = object()      # a change that deletes the key
_MISSING: Any = object()
FOLD = 16                  # fold once the changes are this fraction of the base...
FOLD_AT_LEAST = 1024       # ...and at least this many


class Overlay(Mapping):
    """``base`` (a plain dict) with ``changes`` (a key to its new value, or to _GONE)."""

    __slots__ = ("_base", "_changes", "_length")

    def __init__(self, base: dict, changes: dict | None = None, length: int | None = None) -> None:
        self._base, self._changes = base, changes or {}
        self._length = len(base) if length is None else length

    @classmethod
    def of(cls, mapping: Mapping) -> Overlay:
        return mapping if isinstance(mapping, Overlay) else cls(dict(mapping))

    def __getitem__(self, key: Any) -> Any:
        value = self._changes.get(key, _MISSING)
        if value is _MISSING:
            return self._base[key]
        if value is _GONE:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._changes.get(key, _MISSING)
        if value is _MISSING:
            return self._base.get(key, default)
        return default if value is _GONE else value

    def __contains__(self, key: object) -> bool:
        value = self._changes.get(key, _MISSING)
        return key in self._base if value is _MISSING else value is not _GONE

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        changes = self._changes
        for key in self._base:
            if changes.get(key, _MISSING) is not _GONE:
                yield key
        for key, value in changes.items():
            if value is not _GONE and key not in self._base:
                yield key

    def changed(self, put: Iterable[tuple[Any, Any]] = (), delete: Iterable[Any] = ()) -> Overlay:
        """This mapping with the keys of ``delete`` gone, then those of ``put`` set."""
        base, changes, length = self._base, dict(self._changes), self._length

        def present(key: Any) -> bool:
            current = changes.get(key, _MISSING)
            return key in base if current is _MISSING else current is not _GONE

        for key in delete:
            if present(key):
                length -= 1
                if key in base:
                    changes[key] = _GONE
                else:
                    del changes[key]
        for key, value in put:
            if not present(key):
                length += 1
            changes[key] = value
        if len(changes) >= max(FOLD_AT_LEAST, len(base) // FOLD):
            folded = {key: value for key, value in base.items() if changes.get(key, _MISSING) is _MISSING}
            folded.update((key, value) for key, value in changes.items() if value is not _GONE)
            return Overlay(folded)
        return Overlay(base, changes, length)
