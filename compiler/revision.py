"""The front door: a snapshot, read, checked and modelled, as one loaded revision.

Every command and the daemon start here (``galleon validate``, ``compile``, ``diff``, ``dns``,
``ca``, ``serve``): parse (files unchanged since the previous revision are not read again),
validate, and, when asked for, model the mesh.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Collection, Mapping, Sequence

from .findings import Finding, has_errors, sorted_findings
from .model import Mesh, build_mesh
from .parse import FileParse, ParseResult, SourceObject, parse
from .snapshot import Snapshot
from .validate import validate_objects


@dataclass
class Revision:
    """One snapshot as Galleon reads it: every object as parsed (``parsed``), those that passed their
    schemas (``objects``), every finding, and the mesh of those objects.

    A revision with errors is never served, but a reviewer still wants to see what it would do (a
    renamed subset: its clusters and the route left dangling), so its mesh is built too, from the
    objects that passed their schemas; ``mesh`` is None only when even that fails. The mesh is built
    when first asked for: validating alone never builds it.
    """

    snapshot: Snapshot
    parsed: ParseResult = field(repr=False)
    objects: list[SourceObject] = field(repr=False)
    findings: list[Finding]
    # VIPs the mesh keeps (vips.allocate): given, else the previous revision's; and those held back
    keep_vips: Mapping[str, str] | None = field(default=None, repr=False)
    held_vips: Collection[str] = field(default=(), repr=False)
    # What the live registries read (compiler/live.py): Services, EndpointSlices, Pods and Nodes of
    # the clusters, beside the snapshot's objects in the mesh; not validated with them.
    live: Sequence[SourceObject] = field(default=(), repr=False)

    @property
    def valid(self) -> bool:
        return not has_errors(self.findings)

    @cached_property
    def mesh(self) -> Mesh | None:
        try:
            return build_mesh([*self.objects, *self.live], self.snapshot.revision, keep_vips=self.keep_vips,
                              held_vips=self.held_vips)
        except Exception:  # noqa: BLE001 - the analyzers' guarantees do not hold for a revision with errors
            if self.valid:
                raise
            return None


def with_live(revision: Revision, live: Sequence[SourceObject]) -> Revision:
    """The revision with what the registries read now: the same objects and findings, its mesh the
    snapshot's and the live objects'."""
    return replace(revision, live=live)


def load(snapshot: Snapshot, previous: Revision | None = None, *, stored: Mapping[str, FileParse] | None = None,
         vips: Mapping[str, str] | None = None, held_vips: Collection[str] = ()) -> Revision:
    """Parse and validate a snapshot; files unchanged since ``previous`` (or held in ``stored``: parses
    kept between runs) are not read again. Its mesh's names keep the VIPs ``vips`` gives (those
    served), else those of ``previous``'s mesh; ``held_vips`` are given to no new
    name, as a reconciler applying it would. Raises parse.UnreadableFile for files that are not YAML text."""
    parsed = parse(snapshot, previous=previous.parsed if previous else None, stored=stored)
    valid, findings = validate_objects(parsed.objects)
    if vips is None and previous is not None and previous.mesh is not None:
        vips = previous.mesh.vips.addresses
    return Revision(snapshot, parsed, valid, sorted_findings(parsed.findings + findings), vips, held_vips)
