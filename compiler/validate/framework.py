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
        """Every problem, all objects checked (run_all keeps local analyzers' problems per object)."""
        yield from self.check(index)


ANALYZERS: list[Analyzer] = []
# obj.checks keys. LOCAL_STAMP: a hash of every local analyzer of the object's kind with the facts it
# read, and all their problems with the object (analyzer name, path, message), kept when they were
# last found. LOCAL_FACTS: for each of those analyzers, a digest of the facts it read then (one dict,
# shared by the objects of a kind checked together).
LOCAL_STAMP = "local analyzers"
LOCAL_FACTS = "local facts"


def run_all(index: Index) -> Iterator[tuple[Analyzer, SourceObject, Path, str]]:
    """Every analyzer's problems.

    A local analyzer's problems with an object come from that object and some facts of the index
    alone, so an object parsed once and shared by two revisions (parse's ``previous``, or a parse
    cache's record) keeps them while those facts are the same: a revision that changes one file of
    15,000 objects is not checked whole again. An object whose local analyzers all read the same
    facts as before (its LOCAL_STAMP) gives its problems at once; one whose facts changed for some
    is checked again by those only; a new one by all."""
    local = [a for a in ANALYZERS if a.local is not None]
    by_name = {a.name: a for a in local}
    # Every fact is read here, on the whole index, before the restricted copies below share its memo.
    facts = {a.name: index.facts_digest(a.local or ()) for a in local}
    facts_of_kind = {kind: {a.name: facts[a.name] for a in local if kind in a.kinds} for kind in index.by_kind}
    stamps = {kind: hashlib.sha256("".join(f"{name}\n{digest}\n" for name, digest in read.items()).encode())
              .hexdigest()[:32] for kind, read in facts_of_kind.items()}
    new: dict[str, list[SourceObject]] = defaultdict(list)  # never checked: every local analyzer runs
    partly: dict[str, list[SourceObject]] = defaultdict(list)  # checked against other facts
    for obj in index.objects:
        kept = obj.checks.get(LOCAL_STAMP)
        if kept is None:
            new[obj.kind].append(obj)
        elif kept[0] == stamps[obj.kind]:
            for name, path, message in kept[1]:
                yield by_name[name], obj, path, message
        else:
            partly[obj.kind].append(obj)
    found: dict[SourceObject, list[tuple[str, Path, str]]] = defaultdict(list)
    for check in local:
        fresh: dict[str, list[SourceObject]] = {}
        for kind in check.kinds:
            fresh[kind] = new.get(kind, [])
            for obj in partly.get(kind, ()):
                if obj.checks[LOCAL_FACTS].get(check.name) == facts[check.name]:
                    found[obj] += [p for p in obj.checks[LOCAL_STAMP][1] if p[0] == check.name]
                else:
                    fresh[kind] = fresh[kind] + [obj]
        if not any(fresh.values()):
            continue
        # The restricted index has no other kinds, so a check reading one it does not declare fails
        # at once (KeyError) instead of missing problems.
        for obj, path, message in check.check(index.only(fresh)):
            found[obj].append((check.name, path, message))
    for kind, objects in [*new.items(), *partly.items()]:
        read = facts_of_kind[kind]
        for obj in objects:
            problems = tuple(found.get(obj, ()))
            obj.checks[LOCAL_STAMP] = (stamps[kind], problems)
            obj.checks[LOCAL_FACTS] = read
            for name, path, message in problems:
                yield by_name[name], obj, path, message
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
