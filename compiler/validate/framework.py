"""What an analyzer is, and the registry of them."""
from __future__ import annotations

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
