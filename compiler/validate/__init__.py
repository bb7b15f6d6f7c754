"""Validation: schemas first, then the semantic analyzers, over one snapshot's objects (compiler/revision.py).

Analyzers see only objects that passed their schema, so each can trust the
shapes it reads; an object with schema errors is reported once, for those.
"""
from __future__ import annotations

from ..findings import Finding
from ..parse import SourceObject
from . import (conditions, deprecation, destination_rules, gateways, jwt_claims, references, routing,  # noqa: F401
               service_entries, services, sidecars, topology, vips, workload_entries, workloads)  # (each registers its analyzers)
from . import schema
from .assumed import is_assumed
# (`from . import annotations` would find this module's `from __future__ import annotations` instead)
from .annotations import KINDS as _ANNOTATED_KINDS  # noqa: F401
from .framework import run_all
from .index import Index


def validate_objects(objects: list[SourceObject]) -> tuple[list[SourceObject], list[Finding]]:
    """(the objects that passed their schema, every finding)."""
    findings: list[Finding] = []
    valid = []
    for obj in objects:
        problems = schema.check(obj)
        findings += problems
        if not problems:
            valid.append(obj)
    for check, obj, path, message in run_all(Index(valid)):
        if is_assumed(obj):
            continue  # Istio's default ingress gateway (assumed.py): not the repository's to fix
        findings.append(Finding(obj.file, obj.line_of(path), check.level, check.code, message,
                                obj.shown_kind, obj.namespace, obj.name))
    return valid, findings
