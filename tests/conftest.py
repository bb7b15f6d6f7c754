from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compiler.snapshot import Snapshot
from compiler.validate import validate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REPO = ROOT / "sample-repo"


def snapshot_of(files: dict[str, str | bytes], revision: str = "test") -> Snapshot:
    return Snapshot(revision, {name: data.encode() if isinstance(data, str) else data
                               for name, data in files.items()})


def check(text: str, name: str = "mesh.yaml"):
    """Validate one file given as (dedented) text; returns the findings."""
    return validate(snapshot_of({name: textwrap.dedent(text).lstrip("\n")})).findings


def sample_files() -> dict[str, bytes]:
    return {p.relative_to(SAMPLE_REPO).as_posix(): p.read_bytes() for p in sorted(SAMPLE_REPO.rglob("*.y*ml"))}


@pytest.fixture
def sample_snapshot() -> Snapshot:
    return Snapshot("sample", sample_files())
