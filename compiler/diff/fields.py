"""Field-level differences between two plain values (YAML objects, or Envoy resources as dicts).

One walk serves both: a change is a path with the old and the new value. Lists are matched the
way people read them: elements that name themselves (a ``name`` key, unique in the list) by
name, others by content, so inserting an element shows one addition rather than every later
element changed.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# Pairing edited list elements compares each old element with each new one of a changed block.
PAIRING_LIMIT = 10_000


@dataclass(frozen=True)
class FieldChange:
    """``path`` is where the value is in the new document (in the old one for a removal)."""

    path: Path
    old: Any = MISSING
    new: Any = MISSING

    @property
    def action(self) -> str:
        return "added" if self.old is MISSING else "removed" if self.new is MISSING else "changed"

    def text(self, named: bool = False) -> str:
        path = format_path(self.path, named)
        if self.old is MISSING:
            return f"{path}: + {show(self.new)}"
        if self.new is MISSING:
            return f"{path}: - {show(self.old)}"
        return f"{path}: {show(self.old)} → {show(self.new)}"

    def to_dict(self, named: bool = False) -> dict:
        out: dict[str, Any] = {"path": format_path(self.path, named), "action": self.action}
        if self.old is not MISSING:
            out["old"] = self.old
        if self.new is not MISSING:
            out["new"] = self.new
        return out


def format_path(path: Path, named: bool = False) -> str:
    """``('spec', 'subsets', 1, 'labels')`` -> ``.spec.subsets[1].labels``; with ``named``, list
    elements matched by name read ``[v2]`` and there is no leading dot (Envoy's field style)."""
    text = "".join(f"[{p}]" if isinstance(p, int) else (f"[{p[1:]}]" if named and p.startswith("=") else f".{p}")
                   for p in path)
    return text.lstrip(".") if named else (text or ".")


def diff_values(old: Any, new: Any, named: bool = False, path: Path = ()) -> list[FieldChange]:
    """Every change from ``old`` to ``new``. With ``named``, elements matched by name are addressed
    by name (``[v2]``); otherwise by their index in the new value, so a path can be looked up in a file."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(old.keys() | new.keys(), key=str):
            changes += diff_values(old.get(key, MISSING), new.get(key, MISSING), named, path + (key,))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        return _diff_lists(old, new, named, path)
    return [FieldChange(path, old, new)]


def _names(items: list) -> list[str] | None:
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        return names
    return None


def _diff_lists(old: list, new: list, named: bool, path: Path) -> list[FieldChange]:
    old_names, new_names = _names(old), _names(new)
    if old_names is not None and new_names is not None and (old or new):
        where_new = {n: i for i, n in enumerate(new_names)}
        where_old = {n: i for i, n in enumerate(old_names)}
        changes = []
        for name in sorted(where_old.keys() | where_new.keys(), key=lambda n: (where_new.get(n, len(new)), n)):
            i, j = where_old.get(name), where_new.get(name)
            step = f"={name}" if named else (j if j is not None else i)
            changes += diff_values(old[i] if i is not None else MISSING, new[j] if j is not None else MISSING,
                                   named, path + (step,))
        return changes
    fingerprint = [json.dumps(v, sort_keys=True, default=str) for v in old]
    matcher = difflib.SequenceMatcher(None, fingerprint, [json.dumps(v, sort_keys=True, default=str) for v in new],
                                      autojunk=False)
    changes = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            pairs = [(i1 + k, j1 + k) for k in range(i2 - i1)]
        else:
            pairs = _pair_alike(old, new, range(i1, i2), range(j1, j2))
        for i, j in pairs + [(i2, j2)]:  # in order: what went and came before a pair, then the pair
            changes += [FieldChange(path + (k,), old=old[k]) for k in range(i1, i)]
            changes += [FieldChange(path + (k,), new=new[k]) for k in range(j1, j)]
            if i < i2:
                changes += diff_values(old[i], new[j], named, path + (j,))
            i1, j1 = i + 1, j + 1
    return changes


def _pair_alike(old: list, new: list, olds: range, news: range) -> list[tuple[int, int]]:
    """Old and new elements that are one element edited, in order: a route's weight changed while
    another destination is added reads as that change and one addition, not as a route removed and
    two added. Elements pair when at least half of their leaves are the same. Blocks too large to
    compare pairwise cheaply stay removals and additions."""
    if len(olds) * len(news) > PAIRING_LIMIT:
        return []
    leaves = {j: _leaves(new[j]) for j in news}
    pairs: list[tuple[int, int]] = []
    start = news.start
    for i in olds:
        mine = _leaves(old[i])
        alike = {j: _alike(mine, leaves[j]) for j in range(start, news.stop)}
        best = max(alike, key=alike.__getitem__, default=None)  # the first of equals
        if best is not None and alike[best] >= 0.5:
            pairs.append((i, best))
            start = best + 1
    return pairs


def _alike(a: set | None, b: set | None) -> float:
    """The share of two mappings' leaves they have in common; 0 unless both are mappings."""
    if a is None or b is None:
        return 0.0
    return len(a & b) / len(a | b) if a | b else 1.0


def _leaves(value: Any) -> set | None:
    """A mapping's leaves as (path, value) pairs; None for anything else."""
    if not isinstance(value, dict):
        return None
    out: set = set()
    pending: list[tuple[Any, Path]] = [(value, ())]
    while pending:
        item, path = pending.pop()
        if isinstance(item, dict):
            pending += [(child, path + (key,)) for key, child in item.items()]
        elif isinstance(item, list):
            pending += [(child, path + (k,)) for k, child in enumerate(item)]
        else:
            out.add((path, json.dumps(item, default=str)))
    return out


def show(value: Any, limit: int = 120) -> str:
    """A value on one line, as compact JSON (strings unquoted), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(", ", ": "),
                                                            default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"
