"""Istio's annotation analyzers: an Istio annotation Istio does not know (IST0108), one on a kind it does
not go on (IST0107), a value Istio rejects (IST0125), a deprecated one (IST0135), an alpha-phase one
(IST0136).

Istio's ``annotations.K8sAnalyzer`` (and ``maturity.AlphaAnalyzer``, which ``istioctl x precheck``
runs) look at the annotations of Namespaces, Services, Pods and Deployments whose names are Istio's:
a prefix ending in ``istio.io``, or ``kubernetes.io/ingress.class``. Each is looked up in istio/api's
registry (compiler/annotations.py), in this order: unknown (IST0108, nothing else); deprecated
(IST0135: not ``sidecar.istio.io/inject`` beside a label of that name); any kind of resource (no
more); not one of the kinds it goes on, compared by kind name (IST0107); a value its validator
rejects (IST0125). IST0136 is any known alpha annotation wherever it is. Istio's own bookkeeping
(``sidecar.istio.io/status``, ``gateway.istio.io/controller-version``, ``istio.io/rev``) is never
reported, and the alpha annotations Istio's CNI plugin sets are not, on a pod without an ``istio-init``
init container.

Galleon reads the same annotations on the kinds it reads: Services, Pods, the Istio networking kinds
(ServiceEntry and WorkloadEntry are kinds annotations go on, and Gateway by name: the registry's
Gateway annotations are for Kubernetes Gateways, but Istio matches kinds by name; on a DestinationRule,
VirtualService or Sidecar any Istio annotation but ``galley.istio.io/analyze-suppress`` is misplaced),
and the workload kinds (Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job), whose own annotations are theirs (a pod's annotation there is misplaced,
as Istio says of a Deployment's) and whose pod template's annotations are the pods' (checked as a
Pod's, with the template's labels and init containers), as Istio checks the pods they create.
Objects in Kubernetes' own namespaces (kube-system...) are left alone, as Istio's analyzers never load
them. Namespaces, Ingresses and other kinds Galleon does not read are not looked at.

Istio runs AlphaAnalyzer only in ``istioctl x precheck`` (too noisy for ``istioctl analyze``, its code
says); Galleon reports IST0136 always, as an info.
"""
from __future__ import annotations

import difflib
import weakref
from collections import defaultdict
from typing import Any, Iterator

from .. import annotations as istio
from ..findings import Level
from ..kinds import WORKLOAD_KINDS
from ..parse import Path, SourceObject
from .framework import Problem, analyzer
from .index import Index
from .services import IGNORED_NAMESPACES

ISTIO_KINDS = ("ServiceEntry", "WorkloadEntry", "DestinationRule", "VirtualService", "Gateway", "Sidecar")
KINDS = (*ISTIO_KINDS, "Service", *sorted(WORKLOAD_KINDS))
TEMPLATED = WORKLOAD_KINDS - {"Pod"}  # their spec.template is a pod's
ISTIO_INIT = "istio-init"  # the init container of injection without Istio's CNI plugin


class Annotated:
    """One annotation map: an object's own, or its pod template's (read as a Pod's)."""

    __slots__ = ("obj", "path", "kind", "labels", "annotations", "pod_spec")

    def __init__(self, obj: SourceObject, path: Path, kind: str, labels: Any, annotations: dict, pod_spec: Any):
        self.obj, self.path, self.kind, self.annotations = obj, path, kind, annotations
        self.labels = labels if isinstance(labels, dict) else {}
        self.pod_spec = pod_spec if isinstance(pod_spec, dict) else None

    @property
    def where(self) -> str:
        return "pod template" if self.path[0] == "spec" else self.kind

    def istios(self) -> Iterator[tuple[Path, str, str, istio.Annotation | None]]:
        """(path, name, value, registry entry or None) of each of Istio's annotations Istio looks at."""
        for name, value in self.annotations.items():
            if isinstance(name, str) and istio.is_istios(name) and name not in istio.ALWAYS_IGNORED:
                yield (*self.path, name), name, value if isinstance(value, str) else "", istio.REGISTRY.get(name)

    def uses_cni(self) -> bool:
        """Istio's test of a pod injected with its CNI plugin: no init container named istio-init."""
        containers = self.pod_spec.get("initContainers") if self.pod_spec is not None else None
        return not any(isinstance(c, dict) and c.get("name") == ISTIO_INIT for c in containers or ())


def _template_metadata(obj: SourceObject) -> dict:
    template = obj.spec.get("template")
    metadata = template.get("metadata") if isinstance(template, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _annotated(index: Index) -> Iterator[Annotated]:
    for kind in KINDS:
        objects = index.by_kind.get(kind, ())
        # Most objects have no annotations: one comprehension finds those that have (about 20 ms for each
        # analyzer over the 45,000 objects of bench/validate.py --kubernetes, none annotated).
        if kind in TEMPLATED:
            objects = [o for o in objects if o.body["metadata"].get("annotations")
                       or _template_metadata(o).get("annotations")]
        else:
            objects = [o for o in objects if o.body["metadata"].get("annotations")]
        for obj in objects:
            if obj.namespace in IGNORED_NAMESPACES:
                continue
            annotations = obj.body["metadata"].get("annotations")
            if annotations:
                yield Annotated(obj, ("metadata", "annotations"), kind, obj.labels, annotations,
                                obj.spec if kind == "Pod" else None)
            if kind in TEMPLATED:
                metadata = _template_metadata(obj)
                annotations = metadata.get("annotations")
                if annotations and isinstance(annotations, dict):
                    template = obj.spec["template"]
                    yield Annotated(obj, ("spec", "template", "metadata", "annotations"), "Pod",
                                    metadata.get("labels"), annotations, template.get("spec"))


def _unknown(at: Annotated, name: str) -> str:
    close = difflib.get_close_matches(name, istio.REGISTRY, n=1, cutoff=0.8)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"Unknown annotation: {name}: no Istio annotation has this name, so nothing reads it; {hint}(Istio's "
            "annotations: https://istio.io/latest/docs/reference/config/annotations/)")


def _misplaced(at: Annotated, name: str, known: istio.Annotation) -> str:
    if "Pod" in known.resources and at.kind in TEMPLATED:
        todo = (f"on a {at.kind} it applies to nothing: move it to spec.template.metadata.annotations, where it "
                "applies to the pods")
    else:
        todo = f"on a {at.where} Istio ignores it"
    return f"Misplaced annotation: {name} can only be applied to {', '.join(known.resources)}; {todo}"


def _invalid(name: str, value: str, problem: str) -> str:
    return (f"Invalid annotation {name}: {problem} (the value {value!r}; it takes {istio.EXPECTED[name]}); Istio's "
            "sidecar injector refuses to create a pod it injects with it")


def _deprecated(name: str) -> str:
    extra = ' in favor of the "sidecar.istio.io/inject" label' if name == istio.SIDECAR_INJECT else ""
    instead = istio.REPLACEMENTS.get(name)
    return (f"Annotation {name!r} has been deprecated{extra} and may not work in future Istio versions."
            + (f" Use {instead} instead." if instead else ""))


def _alpha(name: str) -> str:
    return f"Annotation {name!r} is part of an alpha-phase feature and may be incompletely supported."


def _find(index: Index) -> dict[str, list[Problem]]:
    """Every annotation problem of the index, by code: Istio's K8sAnalyzer (IST0108, IST0135, IST0107,
    IST0125, in its order) and AlphaAnalyzer (IST0136), in one pass."""
    found: dict[str, list[Problem]] = defaultdict(list)
    for at in _annotated(index):
        cni = None
        for path, name, value, known in at.istios():
            if known is None:
                found["IST0108"].append((at.obj, path, _unknown(at, name)))
                continue
            if known.status == istio.ALPHA:
                if name in istio.SET_BY_CNI and at.kind == "Pod" and cni is None:
                    cni = at.uses_cni()
                if not (name in istio.SET_BY_CNI and at.kind == "Pod" and cni):  # CNI sets it on every pod
                    found["IST0136"].append((at.obj, path, _alpha(name)))
            # (sidecar.istio.io/inject beside the label of that name is kept for older Istio versions, knowingly)
            if known.deprecated and not (name == istio.SIDECAR_INJECT and istio.SIDECAR_INJECT in at.labels):
                found["IST0135"].append((at.obj, path, _deprecated(name)))
            if istio.ANY in known.resources:
                continue
            if at.kind not in known.resources:
                found["IST0107"].append((at.obj, path, _misplaced(at, name, known)))
                continue
            validate = istio.VALIDATORS.get(name)
            problem = validate(value) if validate is not None else None
            if problem:
                found["IST0125"].append((at.obj, path, _invalid(name, value, problem)))
    return found


# The five analyzers share one pass over the index (_find), kept for the index it was made for. They are
# not local: the framework's per-object bookkeeping of five local analyzers over the 36,000 Services and
# Pods of bench/validate.py --kubernetes took 0.3 s, where the pass itself takes 20 ms (most objects have
# no annotations).
_FOUND: weakref.WeakKeyDictionary[Index, dict[str, list[Problem]]] = weakref.WeakKeyDictionary()


def _problems(index: Index, code: str) -> list[Problem]:
    found = _FOUND.get(index)
    if found is None:
        found = _FOUND[index] = _find(index)
    return found.get(code, [])


@analyzer("unknown-annotation", "IST0108", Level.WARNING,
          "an annotation in Istio's domains (...istio.io/) that Istio does not know")
def unknown_annotation(index: Index):
    return _problems(index, "IST0108")


@analyzer("misplaced-annotation", "IST0107", Level.WARNING,
          "an Istio annotation on a kind of resource it does not go on")
def misplaced_annotation(index: Index):
    return _problems(index, "IST0107")


@analyzer("invalid-annotation", "IST0125", Level.WARNING,
          "an Istio annotation whose value Istio rejects")
def invalid_annotation(index: Index):
    return _problems(index, "IST0125")


@analyzer("deprecated-annotation", "IST0135", Level.INFO,
          "a deprecated Istio annotation")
def deprecated_annotation(index: Index):
    return _problems(index, "IST0135")


@analyzer("alpha-annotation", "IST0136", Level.INFO,
          "an Istio annotation of an alpha-phase feature")
def alpha_annotation(index: Index):
    return _problems(index, "IST0136")
