"""Checks on Sidecars: which workloads each one applies to (Istio's sidecar.SelectorAnalyzer).

A proxy gets one Sidecar: the one of its namespace whose workloadSelector picks it, else its
namespace's Sidecar without a selector, else the root namespace's. Two Sidecars that both pick a
workload, or two without a selector in one namespace, leave it to chance which one a proxy gets.

Workloads are Galleon's (index.Index.workloads): Pods, the pods of workload manifests (Deployment,
StatefulSet...), WorkloadEntries, and for a selector to match, the endpoints ServiceEntries write
(as for Gateway selectors); Istio's analyzer sees live Pods only. A selector is checked against the
workloads of its namespace: an error when the repository holds some but none matches, a warning
when it holds none (live pods may match). A Sidecar with no spec, or an empty one, is valid: it is
its namespace's default, importing every service. In a namespace in Istio's ambient mode (its
Namespace object says so) workloads have no sidecar: a Sidecar there has no effect (IST0167).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

from ..findings import Level
from ..parse import SourceObject
from .assumed import is_assumed, shown
from .framework import analyzer
from .index import Index
from .references import REFERENCE_NOT_FOUND

SIDECAR = "Sidecar"


def _selector(sidecar: SourceObject) -> dict[str, str]:
    """The Sidecar's workloadSelector labels; {} when it has none (no selector, or an empty one: Istio's
    analyzer counts both as the namespace's default)."""
    return (sidecar.spec.get("workloadSelector") or {}).get("labels") or {}


def _selector_path(selector: dict[str, str]) -> tuple:
    # Istio points at the first label key (in sorted order) of the selector
    return ("spec", "workloadSelector", "labels", min(selector))


def _shown(selector: dict[str, str]) -> str:
    """A selector as Kubernetes prints it: ``key=value`` pairs sorted by key, joined by commas."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _named(obj: SourceObject) -> str:
    return shown(obj, f"{obj.kind} {obj.name}")


def _workloads(index: Index, namespaces: set[str], proxies_only: bool = False
               ) -> dict[str, list[tuple[SourceObject, dict[str, str]]]]:
    """The workloads of these namespaces, by namespace, in the index's order. ``proxies_only``: without
    the endpoints ServiceEntries write (labels of an address, which no Sidecar is applied to)."""
    found: dict[str, list[tuple[SourceObject, dict[str, str]]]] = defaultdict(list)
    if not namespaces:
        return found  # (a large mesh's workloads are its endpoints by the hundred thousand)
    for obj, labels in index.workloads():
        if obj.namespace in namespaces and not (proxies_only and obj.kind == "ServiceEntry"):
            found[obj.namespace].append((obj, labels))
    return found


def _with_selectors(index: Index) -> list[tuple[SourceObject, dict[str, str]]]:
    return [(sc, _selector(sc)) for sc in index.by_kind[SIDECAR] if _selector(sc)]


def _selecting_nothing(index: Index, known: bool) -> Iterator[tuple[SourceObject, tuple, str]]:
    """Sidecars whose selector matches no workload of their namespace: those of a namespace the
    repository holds workloads of (``known``), or of one it holds none of."""
    sidecars = _with_selectors(index)
    if not sidecars:
        return
    workloads = _workloads(index, {sc.namespace for sc, _ in sidecars})
    for sidecar, selector in sidecars:
        present = workloads.get(sidecar.namespace, [])
        if any(selector.items() <= labels.items() for _, labels in present):
            continue
        # Whether the repository holds workloads of the namespace: Istio's default ingress gateway,
        # which validation assumes (assumed.py), is matched but does not make a namespace known.
        present = [(obj, labels) for obj, labels in present if not is_assumed(obj)]
        if bool(present) != known:
            continue
        if known:
            yield sidecar, _selector_path(selector), (
                f"Referenced selector not found: {_shown(selector)!r}: no workload of namespace {sidecar.namespace!r} "
                f"has these labels ({_listed(_named(obj) for obj, _ in present)} in the repository), so this Sidecar "
                "applies to none; a Sidecar selects workloads of its own namespace only")
        else:
            yield sidecar, _selector_path(selector), (
                f"Referenced selector not found: {_shown(selector)!r}: the repository holds no workload of namespace "
                f"{sidecar.namespace!r} to check it against; only proxies of that namespace with these labels "
                "will get this Sidecar")


def _listed(named: Iterable[str], limit: int = 5) -> str:
    """Workload names (``Kind name``), sorted, the first ``limit`` of them."""
    names = sorted(set(named))
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@analyzer("sidecar-selector-not-found", REFERENCE_NOT_FOUND, Level.ERROR,
          "a Sidecar's workloadSelector matches none of its namespace's workloads in the repository")
def sidecar_selector_not_found(index: Index):
    yield from _selecting_nothing(index, known=True)


@analyzer("sidecar-selector-matches-nothing", REFERENCE_NOT_FOUND, Level.WARNING,
          "a Sidecar's workloadSelector cannot be checked: the repository holds no workload of its namespace")
def sidecar_selector_matches_nothing(index: Index):
    yield from _selecting_nothing(index, known=False)


@analyzer("conflicting-sidecar-selectors", "IST0110", Level.ERROR,
          "two Sidecars' workloadSelectors pick the same workload")
def conflicting_sidecar_selectors(index: Index):
    sidecars = _with_selectors(index)
    if len(sidecars) < 2:
        return
    workloads = _workloads(index, {sc.namespace for sc, _ in sidecars}, proxies_only=True)
    # Sidecar -> the other Sidecars it shares workloads with -> those workloads
    shared: dict[SourceObject, dict[tuple[str, ...], set[str]]] = defaultdict(lambda: defaultdict(set))
    for namespace, present in sorted(workloads.items()):
        local = sorted(((sc, sel) for sc, sel in sidecars if sc.namespace == namespace), key=lambda s: s[0].name)
        for obj, labels in present:
            picking = [sc for sc, selector in local if selector.items() <= labels.items()]
            if len(picking) < 2:
                continue
            names = tuple(sc.name for sc in picking)
            for sc in picking:
                shared[sc][names].add(_named(obj))
    for sidecar, selector in sidecars:
        if sidecar not in shared:
            continue
        parts = [f"[{' '.join(names)}]" + (f" in namespace {sidecar.namespace!r} select" if i == 0 else "")
                 + f" the same workload{'s' if len(named) > 1 else ''} ({_listed(named)})"
                 for i, (names, named) in enumerate(sorted(shared[sidecar].items()))]
        yield sidecar, _selector_path(selector), (
            f"The Sidecars {', and '.join(parts)}, which can lead to undefined behavior: each such workload gets "
            "one of its Sidecars, unpredictably; make the workloadSelectors pick disjoint workloads")


@analyzer("multiple-sidecars-without-selector", "IST0111", Level.ERROR,
          "a namespace has several Sidecars without a workloadSelector")
def multiple_sidecars_without_selector(index: Index):
    defaults: dict[str, list[SourceObject]] = defaultdict(list)
    for sidecar in index.by_kind[SIDECAR]:
        if not _selector(sidecar):
            defaults[sidecar.namespace].append(sidecar)
    ambient = _ambient_namespaces(index)
    for namespace, sidecars in sorted(defaults.items()):
        if len(sidecars) < 2 or namespace in ambient:  # ambient-sidecar reports those: none applies
            continue
        names = " ".join(sorted(sc.name for sc in sidecars))
        for sidecar in sorted(sidecars, key=lambda sc: sc.name):
            path = ("spec", "workloadSelector") if "workloadSelector" in sidecar.spec else ("metadata", "name")
            yield sidecar, path, (
                f"The Sidecars [{names}] in namespace {namespace!r} have no workload selector, which can lead to "
                "undefined behavior: each proxy of the namespace that no selector picks gets one of them, "
                "unpredictably; keep one, or give the others a workloadSelector")


# Istio's ambient mode: a namespace so labelled has no sidecars (ztunnel and waypoints carry its
# traffic), unless it asks for injection too; a pod opts out with the same label set to none.
DATAPLANE_MODE_LABEL, AMBIENT, NO_DATAPLANE = "istio.io/dataplane-mode", "ambient", "none"
AMBIENT_REDIRECTION = "ambient.istio.io/redirection"  # what Istio's CNI writes on a pod it redirects


def _ambient_namespaces(index: Index) -> set[str]:
    """The namespaces a Namespace object of the repository puts in ambient mode (Istio's rule: labelled
    ambient, and asking neither istio-injection=enabled nor a revision's injection)."""
    return {ns.name for ns in index.by_kind.get("Namespace", ())
            if ns.labels.get(DATAPLANE_MODE_LABEL) == AMBIENT and ns.labels.get("istio-injection") != "enabled"
            and not ns.labels.get("istio.io/rev")}


def _in_ambient(obj: SourceObject, labels: dict[str, str], ambient: set[str]) -> bool:
    annotations = ((obj.body.get("metadata") or {}).get("annotations") or {}) if obj.kind == "Pod" else {}
    if annotations.get(AMBIENT_REDIRECTION) == "enabled":
        return True
    return obj.namespace in ambient and labels.get(DATAPLANE_MODE_LABEL) != NO_DATAPLANE \
        and labels.get("sidecar.istio.io/inject") != "true"


@analyzer("ambient-sidecar", "IST0167", Level.WARNING,
          "a Sidecar applies only to workloads in ambient mode, which have no sidecar: it has no effect")
def ambient_sidecar(index: Index):
    ambient = _ambient_namespaces(index)
    workloads = _workloads(index, {sc.namespace for sc in index.by_kind[SIDECAR]}, proxies_only=True)
    for sidecar in index.by_kind[SIDECAR]:
        selector = _selector(sidecar)
        if not selector:
            if sidecar.namespace in ambient:
                yield sidecar, ("metadata", "name"), (
                    f"The policy has no impact: namespace {sidecar.namespace!r} is in ambient mode "
                    f"({DATAPLANE_MODE_LABEL}={AMBIENT}), where workloads have no sidecar to apply it to; remove it, "
                    "or configure the namespace's waypoint instead")
            continue
        picked = [(obj, labels) for obj, labels in workloads.get(sidecar.namespace, ())
                  if selector.items() <= labels.items()]
        if picked and all(_in_ambient(obj, labels, ambient) for obj, labels in picked):
            yield sidecar, _selector_path(selector), (
                f"The policy has no impact: the workloads it selects ({_listed(_named(obj) for obj, _ in picked)}) "
                "are in ambient mode and have no sidecar to apply it to; remove it, or configure their waypoint")
