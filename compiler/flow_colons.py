"""Plain scalars with a colon inside flow collections, read as Kubernetes reads them.

``addresses: [2001:db8::1]`` and ``{url: http://example.com}`` are YAML 1.2, which Kubernetes' and
Istio's YAML libraries read (a plain scalar may hold ``:`` followed by anything but a space or a
flow indicator). libyaml follows YAML 1.1, which refuses a ``:`` not followed by a space inside
``[]`` or ``{}`` ("found unexpected ':'"). Rather than reject what ``kubectl apply`` accepts, each
such scalar is quoted (the string YAML 1.2 reads it as) before parsing. Only lines of the text
change, never the number of lines, so every finding keeps its line.
"""
from __future__ import annotations

import re

import yaml

# A line where a flow collection is open and a colon is followed by neither a space nor a flow
# indicator: only those files pay for a trial scan. Where the scalar ends is Kubernetes' YAML
# library's rule: at a flow indicator, or at a colon followed by a space.
# (Each opening bracket's search stops at the next one: linear in the text, whatever it holds.)
_SUSPECT = re.compile(r"[\[{][^\n\[{]*?[^\s'\"]:[^\s,\[\]{}]")
_UNEXPECTED = "found unexpected ':'"
_ENDS = ",[]{}"
# Each quoted scalar costs a scan of the whole text: past this many characters scanned for one file,
# libyaml's own error stands (a small file may have many such scalars, a large one a few).
SCAN_BUDGET = 64 * 2**20


def quoted(text: str) -> str:
    """``text`` with each plain flow scalar that libyaml refuses for its colons single-quoted."""
    if _SUSPECT.search(text) is None:
        return text
    for _ in range(max(1, SCAN_BUDGET // max(1, len(text)))):
        try:
            for _token in yaml.scan(text, Loader=yaml.CSafeLoader):
                pass
            return text
        except yaml.scanner.ScannerError as exc:
            mark = exc.problem_mark
            if exc.problem != _UNEXPECTED or mark is None:
                return text
            fixed = _quote_at(text, mark.line, mark.column)
            if fixed is None:
                return text
            text = fixed
        except yaml.YAMLError:
            return text  # another mistake: parse reports it
    return text


def _quote_at(text: str, line: int, column: int) -> str | None:
    """Quote the plain scalar holding the colon at (line, column), or None if there is none."""
    lines = text.split("\n")
    if line >= len(lines):
        return None
    row = lines[line]
    start = column
    while start > 0 and row[start - 1] not in _ENDS and not row[start - 1].isspace():
        start -= 1
    end = column
    while end < len(row) and row[end] not in _ENDS and not row.startswith(" #", end) \
            and not (row[end] == ":" and (end + 1 == len(row) or row[end + 1] in " \t")):
        end += 1
    scalar = row[start:end].rstrip()
    if not scalar or scalar[0] in "'\"&*!|>%@`":
        return None
    lines[line] = row[:start] + "'" + scalar.replace("'", "''") + "'" + row[start + len(scalar):]
    return "\n".join(lines)
