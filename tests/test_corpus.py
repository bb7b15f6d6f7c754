"""The invalid corpus: one small, self-contained mini-repository per file.

Every file in ``tests/data/invalid/`` states, in its leading comments, every
finding validation must produce for it, one ``# expect: CODE LINE`` line each
(LINE is 1-based, in that file), plus a ``# why:`` line saying what is wrong.
A case passes only when the findings are exactly those: an extra finding or a
missing one fails it, as does one pointing at another line.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from compiler.snapshot import Snapshot
from compiler.revision import load
from compiler.validate.framework import ANALYZERS

CORPUS = Path(__file__).resolve().parent / "data" / "invalid"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
PARSE_CODES = {"GAL0001", "GAL0002", "GAL0003", "GAL0004", "GAL0005"}
SCHEMA_CODE = "IST0106"

_EXPECT = re.compile(r"^# expect: ([A-Z]+[0-9]{4}) ([1-9][0-9]*)\s*$")


def expectations(path: Path) -> Counter:
    """The (code, line) pairs the leading comment block of ``path`` promises."""
    expected: Counter = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = _EXPECT.match(line)
        if match:
            expected[(match.group(1), int(match.group(2)))] += 1
        else:
            assert not line.startswith("# expect"), f"{path.name}: malformed expectation {line!r}"
    return expected


def test_corpus_is_large_enough():
    assert len(CASES) >= 30, f"only {len(CASES)} invalid cases in {CORPUS}"


def test_every_case_states_expectations_and_why():
    for path in CASES:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# expect: "), f"{path.name}: must start with '# expect:' lines"
        assert expectations(path), f"{path.name}: no '# expect: CODE LINE' line"
        assert re.search(r"^# why: \S", text, re.M), f"{path.name}: no '# why:' line"


def test_corpus_covers_every_code():
    covered = {code for path in CASES for code, _ in expectations(path)}
    wanted = {a.code for a in ANALYZERS} | PARSE_CODES | {SCHEMA_CODE}
    missing = sorted(wanted - covered)
    assert not missing, f"no invalid case expects: {', '.join(missing)}"


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_case(path: Path):
    expected = expectations(path)
    snapshot = Snapshot(revision="test", files={path.name: path.read_bytes()})
    findings = load(snapshot).findings
    got = Counter((f.code, f.line) for f in findings)
    if got != expected:
        missing = sorted((expected - got).elements())
        extra = sorted((got - expected).elements())
        detail = "\n".join(f"  {f.text()}" for f in findings) or "  (no findings)"
        pytest.fail(f"{path.name}: missing {missing}, unexpected {extra}; findings were:\n{detail}")
    assert all(f.file == path.name for f in findings)
