"""Findings: what validation reports, in one shape for text, JSON and previews."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Level(str, Enum):
    """Istio's levels: an error keeps a revision from being served; a warning and an info do not."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# C0 and C1 control characters (and DEL): a name or a value holding one must not reach a terminal raw.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``), for a terminal or a log line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    level: Level
    code: str
    message: str
    kind: str = "-"
    namespace: str = "-"
    name: str = "-"

    def sort_key(self) -> tuple:
        return (self.file, self.line, self.code, self.kind, self.namespace, self.name, self.message)

    def text(self) -> str:
        return printable(f"{self.file}:{self.line}: {self.level.value} {self.code} "
                         f"{self.kind} {self.namespace}/{self.name}: {self.message}")

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "level": self.level.value, "code": self.code,
                "kind": self.kind, "namespace": self.namespace, "name": self.name,
                "message": self.message}


def sorted_findings(findings) -> list[Finding]:
    return sorted(findings, key=Finding.sort_key)


def has_errors(findings) -> bool:
    return any(f.level is Level.ERROR for f in findings)


def counts(findings) -> dict[str, int]:
    """How many findings of each level, by the level's name (``error``, ``warning``, ``info``)."""
    found = {level.value: 0 for level in Level}
    for finding in findings:
        found[finding.level.value] += 1
    return found
