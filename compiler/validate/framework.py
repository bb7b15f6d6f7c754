"""What an analyzer is, and the registry of them."""
from __future__ import annotations

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
    run: Callable[[Index], Iterable[Problem]]


ANALYZERS: list[Analyzer] = []


def repeats(values: Iterable) -> Iterator[tuple[int, int]]:
    """(index, index of its first occurrence) for every value that occurred before."""
    first: dict = {}
    for index, value in enumerate(values):
        if value in first:
            yield index, first[value]
        else:
            first[value] = index


def analyzer(name: str, code: str, level: Level, summary: str):
    """Register a check: a function from the index to (object, field path, message) triples."""
    def register(fn: Callable[[Index], Iterator[Problem]]):
        if any(a.name == name for a in ANALYZERS):
            raise ValueError(f"analyzer {name} registered twice")
        ANALYZERS.append(Analyzer(name, code, level, summary, fn))
        return fn
    return register
