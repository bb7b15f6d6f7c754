"""The bundled JSON Schemas (schemas/*.json) and the kinds they define."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from .fastschema import compile_schema

# jsonschema and referencing are imported when first needed: a run whose objects all come from the
# parse cache, or pass the fast check, never needs them (they take 0.1 s to import).
if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from referencing import Registry


@cache
def _documents() -> dict[str, dict]:
    docs = {}
    for entry in resources.files("schemas").iterdir():
        if entry.name.endswith(".json"):
            doc = json.loads(entry.read_text(encoding="utf-8"), object_hook=_python_patterns)
            docs[doc["$id"]] = doc
    return docs


def _python_patterns(node: dict) -> dict:
    """JSON Schema patterns are ECMA-262 regular expressions, in which ``$`` is the end of the text;
    in Python's ``$`` also matches before a final newline, which would let ``"evil\\n"`` pass a name
    pattern and reach file names, certificates and Envoy. ``\\Z`` is Python's end of the text."""
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.endswith("$") and not pattern.endswith("\\$"):
        node["pattern"] = pattern[:-1] + "\\Z"
    return node


@cache
def served_versions() -> dict[tuple[str, str], tuple[str, ...]]:
    """(group, kind) -> the versions Galleon accepts, as the schema files define them (the core group
    is ``""``). ObjectMeta's schema, shared by every kind, is not a kind. A kind is named as Galleon
    knows it, its schema's title: ``KubernetesGateway`` for Gateway API's Gateway (compiler/kinds.py)."""
    return {(doc["x-galleon-group"], doc["title"]): tuple(sorted(doc["$defs"]))
            for doc in _documents().values() if "x-galleon-group" in doc}


@cache
def written_kinds() -> dict[tuple[str, str], str]:
    """(group, kind as a document writes it) -> the kind Galleon knows it as: its schema's title, for
    the kinds whose schema says they are written otherwise (``x-galleon-kind``), the kind itself for
    the others. (gateway.networking.k8s.io, Gateway) is a KubernetesGateway; (networking.istio.io,
    Gateway) Istio's Gateway."""
    return {(doc["x-galleon-group"], doc.get("x-galleon-kind", doc["title"])): doc["title"]
            for doc in _documents().values() if "x-galleon-group" in doc}


@cache
def written_kind(group: str, kind: str) -> str:
    """How a document writes a kind Galleon knows as ``kind`` (``Gateway`` for a KubernetesGateway)."""
    return next((written for (g, written), known in written_kinds().items() if (g, known) == (group, kind)), kind)


def _is_integer(_checker, value) -> bool:
    # JSON Schema counts 9080.0 as an integer; Kubernetes' decoder (and Envoy's names) do not.
    return isinstance(value, int) and not isinstance(value, bool)


@cache
def _strict_validator() -> type[Draft202012Validator]:
    from jsonschema import Draft202012Validator, validators
    return validators.extend(Draft202012Validator,
                             type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


@cache
def _registry() -> Registry:
    from referencing import Registry, Resource
    return Registry().with_resources(
        (uri, Resource.from_contents(doc)) for uri, doc in _documents().items())


@cache
def fast_check(group: str, kind: str, version: str):
    """A compiled yes/no check for one served version of one kind (see fastschema)."""
    def resolve(ref: str) -> dict:
        return _registry().resolver().lookup(ref).contents

    return compile_schema({"$ref": f"https://galleon.io/schemas/{kind.lower()}.json#/$defs/{version}"}, resolve)


@cache
def validator(group: str, kind: str, version: str) -> Draft202012Validator:
    """A validator for one served version of one kind, built once and reused."""
    uri = f"https://galleon.io/schemas/{kind.lower()}.json"
    doc = _documents()[uri]
    if doc["x-galleon-group"] != group or version not in doc["$defs"]:
        raise KeyError((group, kind, version))
    return _strict_validator()({"$ref": f"{uri}#/$defs/{version}"}, registry=_registry())
