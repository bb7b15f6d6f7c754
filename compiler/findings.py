"""Findings: what validation reports, in one shape for text, JSON and previews."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Level(str, Enum):
    ERROR = "error"
    WARNING = "warning"


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
        return (f"{self.file}:{self.line}: {self.level.value} {self.code} "
                f"{self.kind} {self.namespace}/{self.name}: {self.message}")

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "level": self.level.value, "code": self.code,
                "kind": self.kind, "namespace": self.namespace, "name": self.name,
                "message": self.message}


def sorted_findings(findings) -> list[Finding]:
    return sorted(findings, key=Finding.sort_key)


def has_errors(findings) -> bool:
    return any(f.level is Level.ERROR for f in findings)
