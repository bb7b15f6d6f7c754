"""One file's parse, with what validation found in its objects, as plain data and back.

A record holds only tuples, lists, dicts, strings, numbers, booleans and None, so a cache kept
between runs (reconciler/parse_cache.py) can store it with marshal, whose loading runs no code,
unlike pickle's. Restoring a record gives what parsing the file gives, including each object's
``checks`` (validate.schema, validate.framework), so an unchanged file is neither parsed nor
checked again. FORMAT changes whenever the shape or the meaning of a record does.
"""
from __future__ import annotations

from typing import Any

from .findings import Finding, Level
from .parse import FileParse, SourceObject, file_lines

FORMAT = 4


class RecordError(ValueError):
    """Data that is not a record of this format (another version's, or damaged)."""


def _finding(finding: Finding) -> tuple:
    return (finding.file, finding.line, finding.level.value, finding.code, finding.message, finding.kind,
            finding.namespace, finding.name)


def file_record(parsed: FileParse) -> tuple:
    lines = parsed.objects[0].file_lines if parsed.objects else None
    spans, digests = (lines.spans, lines.digests) if lines else ((), ())
    objects = [(o.group, o.version, o.kind, o.namespace, o.name, o.body, o.line, o.document, o.at, o.checks)
               for o in parsed.objects]
    return (FORMAT, spans, digests, objects, [_finding(f) for f in parsed.findings])


def restore(file: str, data: bytes, record: Any) -> FileParse:
    """The parse of ``file`` (whose bytes are ``data``) that ``record`` holds; RecordError when it
    does not hold one."""
    if not (isinstance(record, tuple) and len(record) == 5 and record[0] == FORMAT):
        raise RecordError(f"{file}: not a record of format {FORMAT}")
    _, spans, digests, objects, findings = record
    if not (all(isinstance(span, tuple) and len(span) == 2 for span in spans) and len(digests) == len(spans)
            and all(isinstance(digest, str) for digest in digests)):
        raise RecordError(f"{file}: a damaged record (documents)")
    try:
        lines = file_lines(file, data, spans, digests)
        restored = [SourceObject(group, version, kind, namespace, name, body, file, line, lines, document, tuple(at),
                                 dict(checks))
                    for group, version, kind, namespace, name, body, line, document, at, checks in objects]
        return FileParse(data, restored, [Finding(f[0], f[1], Level(f[2]), *f[3:]) for f in findings])
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{file}: a damaged record ({exc})") from None
