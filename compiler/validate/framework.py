"""What an analyzer is, and the registry of them."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..findings import Level
from ..parse import Path, SourceObject
from .index import Index

Problem = tuple[SourceObject, Path, str]


@dataclass(frozen=True)
class Analyzer:
    name: str
    code: str
    level: Level
    summary: str
    check: Callable[[Index], Iterable[Problem]]
    # Local analyzers find each object's problems from that object alone, plus these index facts
    # (attributes of Index); None: the analyzer compares objects with each other.
    local: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = ()  # the kinds a local analyzer checks

    def run(self, index: Index) -> Iterator[Problem]:
        if self.local is None:
            yield from self.check(index)
            return
        # An object parsed once and shared by two revisions (parse's ``previous``) keeps its problems
        # while the facts it was checked against are the same: a revision that changes one file is
        # not checked whole again (15,000 objects take the analyzers a second). The facts are kept as
        # a digest, which a parse cache (compiler/records.py) can store as well.
        context = index.facts_digest(self.local)
        fresh = []
        for kind in self.kinds:
            for obj in index.by_kind.get(kind, ()):
                known = obj.checks.get(self.name)
                if known is not None and known[0] == context:
                    yield from ((obj, path, message) for path, message in known[1])
                    continue
                fresh.append(obj)
        if not fresh:
            return
        found: dict[SourceObject, list] = defaultdict(list)
        # The restricted index has no other kinds, so a check reading one it does not declare fails
        # at once (KeyError) instead of missing problems.
        for obj, path, message in self.check(index.only(fresh, self.kinds)):
            found[obj].append((path, message))
            yield obj, path, message
        for obj in fresh:
            obj.checks[self.name] = (context, tuple(found.get(obj, ())))


ANALYZERS: list[Analyzer] = []
# obj.checks key: a hash of every local analyzer of the object's kind with the facts it read, and
# all their problems with the object, kept when they were last found.
LOCAL_STAMP = "local analyzers"


def run_all(index: Index) -> Iterator[tuple[Analyzer, SourceObject, Path, str]]:
    """Every analyzer's problems. An object whose local analyzers all read the same facts as when its
    problems were kept (its LOCAL_STAMP) gives them at once: in a revision that changes one file of
    15,000 objects, asking each analyzer about each object took longer than the analyzers that
    compare objects with each other."""
    local = [a for a in ANALYZERS if a.local is not None]
    by_name = {a.name: a for a in local}
    # Every fact is read here, on the whole index, before the restricted copies below share its memo.
    contexts = {a.name: index.facts_digest(a.local) for a in local}
    stamps = {kind: hashlib.sha256("".join(f"{a.name}\n{contexts[a.name]}\n" for a in local
                                           if kind in a.kinds).encode()).hexdigest()[:32]
              for kind in index.by_kind}
    stale = []
    for obj in index.objects:
        kept = obj.checks.get(LOCAL_STAMP)
        if kept is not None and kept[0] == stamps[obj.kind]:
            for name, path, message in kept[1]:
                yield by_name[name], obj, path, message
        else:
            stale.append(obj)
    if stale:
        restricted = index.only(stale, tuple(index.by_kind))
        for check in local:
            for obj, path, message in check.run(restricted):
                yield check, obj, path, message
        for obj in stale:
            obj.checks[LOCAL_STAMP] = (stamps[obj.kind], tuple(
                (a.name, path, message) for a in local if obj.kind in a.kinds for path, message in obj.checks[a.name][1]))
    for check in ANALYZERS:
        if check.local is None:
            for obj, path, message in check.run(index):
                yield check, obj, path, message


def repeats(values: Iterable) -> Iterator[tuple[int, int]]:
    """(index, index of its first occurrence) for every value that occurred before."""
    first: dict = {}
    for index, value in enumerate(values):
        if value in first:
            yield index, first[value]
        else:
            first[value] = index


def analyzer(name: str, code: str, level: Level, summary: str, local: tuple[str, ...] | None = None,
             kinds: tuple[str, ...] = ()):
    """Register a check: a function from the index to (object, field path, message) triples.

    ``local``: the check's problems with an object come from that object and these facts of the
    index alone (``()``: none), so they are kept per object (Analyzer.run); the function then
    iterates ``index.by_kind`` for ``kinds`` and reads nothing else of the index but those facts.
    """
    if local is not None and not kinds:
        raise ValueError(f"analyzer {name}: a local analyzer names the kinds it checks")

    def register(fn: Callable[[Index], Iterator[Problem]]):
        if any(a.name == name for a in ANALYZERS):
            raise ValueError(f"analyzer {name} registered twice")
        ANALYZERS.append(Analyzer(name, code, level, summary, fn, local, kinds))
        return fn
    return register
