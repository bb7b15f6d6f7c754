"""`galleon diff`: read two revisions, build the preview (compiler.diff) and render it.

Markdown is made for one pull-request comment: the header (verdict, summary, biggest traffic
shifts) is always whole, then blocks (objects, findings, each cluster's traffic and proxies,
reconciler plans) are added in order while they fit ``max_bytes``; the ones left out are named
in a note at the end. JSON carries everything, uncut, for bots.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Callable

import jinja2

from compiler.diff import PlanSection, Preview, build_preview
from compiler.revision import Revision
from compiler.snapshot import short_revision

from . import defaults
from .templating import environment
from .ca.preview import ca_plan
from .dns.preview import dns_plan

DEFAULT_MAX_BYTES, MIN_MAX_BYTES = defaults.PREVIEW_MAX_BYTES, defaults.PREVIEW_MIN_MAX_BYTES
# Found by the README's workflow to update its one comment instead of adding another.
MARKER = "<!-- galleon-preview -->"
CUT_NOTE_RESERVE = 600
CUT_NAMES_SHOWN = 12
OBJECTS_SHOWN = 200  # per block; JSON has them all
RESOURCES_SHOWN = 100

# What the cluster reconcilers (CA, DNS) would change, each given (base, head, clusters) and
# returning one section.
Planner = Callable[[Revision, Revision, list[str]], PlanSection]
PLANNERS: list[Planner] = [ca_plan, dns_plan]


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = environment()
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|")
    env.filters["code"] = lambda text: f"`{text}`"
    return env.get_template("preview.md.j2")


def plans(base: Revision, head: Revision, clusters: list[str]) -> list[PlanSection]:
    return [planner(base, head, clusters) for planner in PLANNERS]


def preview_of(base: Revision, head: Revision, clusters: list[str],
               progress: Callable[[str], None] | None = None) -> Preview:
    """The preview `galleon diff` and the status API's Preview both give: of ``clusters`` (every
    cluster when empty), with every reconciler's plan. Raises ValueError for a cluster neither
    revision has."""
    known = sorted({*(base.mesh.clusters if base.mesh else ()), *(head.mesh.clusters if head.mesh else ())})
    unknown = sorted(set(clusters) - set(known))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a Cluster at either revision "
                         f"(clusters: {', '.join(known) or 'none'})")
    chosen = sorted(set(clusters)) or known
    return build_preview(base, head, chosen, plans(base, head, chosen), progress=progress)


def render_json(preview: Preview) -> str:
    return json.dumps(preview.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def render_markdown(preview: Preview, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    data = preview.to_dict()
    macros = _template().make_module()
    header = str(macros.header(data, short_revision, MARKER)).strip() + "\n"
    budget = max_bytes - _size(header) - CUT_NOTE_RESERVE
    kept, cut = [header], []
    for name, block in _blocks(data, macros):
        text = str(block).strip() + "\n"
        if _size(text) + 1 <= budget:
            kept.append(text)
            budget -= _size(text) + 1
        else:
            cut.append(name)
    if cut:
        shown = cut[:CUT_NAMES_SHOWN] + ([f"{len(cut) - CUT_NAMES_SHOWN} more"] if len(cut) > CUT_NAMES_SHOWN else [])
        kept.append(str(macros.cut(shown)).strip() + "\n")
    return "\n".join(kept)


def _blocks(data: dict, macros):
    """(name, rendered block) in the order a reviewer reads them; rendered lazily."""
    if data["objects"]["changes"]:
        yield "objects", macros.objects(data, OBJECTS_SHOWN)
    if data["findings"]["new"] or data["findings"]["existing"]:
        yield "validation", macros.findings(data)
    seen: dict[str, str] = {}  # a proxy's changes, as JSON -> the first block that showed them
    for cluster in data["clusters"]:
        if cluster["notes"]:
            yield f"{cluster['name']} notes", macros.notes(cluster)
        if cluster["traffic"]:
            yield f"{cluster['name']} traffic", macros.traffic(cluster)
        for proxy in cluster["proxies"]:
            name = f"{cluster['name']}: {proxy['proxy']}"
            same = seen.setdefault(json.dumps(proxy["changes"], sort_keys=True), name)
            if same != name:
                yield name, macros.same_proxy(name, proxy, same)
            else:
                yield name, macros.proxy(name, proxy, RESOURCES_SHOWN)
    for section in data["plans"]:
        if section["changes"]:
            yield section["title"], macros.plan(section)
