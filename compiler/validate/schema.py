"""Schema check (IST0106): every object against its kind's JSON Schema.

jsonschema's own messages quote whole instances and say "additional
properties"; these are rewritten into one finding per problem, at the line of
the offending field, with a suggestion for misspelt keys.
"""
from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Iterator

from ..findings import Finding, Level
from ..parse import SourceObject, format_path
from ..schemas import fast_check, validator

if TYPE_CHECKING:
    from jsonschema import ValidationError

CODE = "IST0106"


def check(obj: SourceObject) -> list[Finding]:
    # An object parsed once and validated again (a preview's second revision reuses the objects of
    # unchanged files, parse.parse's ``previous``; a cached parse, ``stored``) keeps its problems, as
    # the local analyzers' do, in the same shape: ("", ((path, message), ...)).
    found = obj.checks.get(CODE)
    if found is None:
        found = obj.checks[CODE] = ("", tuple(_problems(obj)))
    return [Finding(obj.file, obj.line_of(path), Level.ERROR, CODE, message, obj.shown_kind, obj.namespace,
                    obj.name) for path, message in found[1]]


def _problems(obj: SourceObject) -> Iterator[tuple[tuple, str]]:
    if fast_check(obj.group, obj.kind, obj.version)(obj.body):
        return iter(())
    return _explain_all(validator(obj.group, obj.kind, obj.version).iter_errors(obj.body))


def _explain_all(errors) -> Iterator[tuple[tuple, str]]:
    seen = set()
    for error in errors:
        for path, message in _explain(error):
            if (path, message) not in seen:
                seen.add((path, message))
                yield path, message


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(error: ValidationError) -> Iterator[tuple[tuple, str]]:
    path = tuple(error.absolute_path)
    kind = error.validator
    if "propertyNames" in error.absolute_schema_path:
        # jsonschema reports a bad key at its parent; the key itself is the place to point at
        path += (error.instance,)
        yield path, f"{format_path(path)}: the name {error.instance!r} {error.message.split(' ', 1)[1]}"
        return
    if kind == "uniqueItems" and isinstance(error.instance, list):
        path += (_first_repeat(error.instance),)
        yield path, f"{format_path(path)}: {_short(error.instance[path[-1]])} is listed twice"
        return
    where = format_path(path)
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
        for key in error.instance:
            if key in allowed or any(p.search(key) for p in patterns):
                continue
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else (
                f"; allowed: {', '.join(sorted(allowed))}" if 0 < len(allowed) <= 12 else "")
            yield path + (key,), f"unknown field {format_path(path + (key,))}{suggestion}"
    elif kind in ("oneOf", "anyOf"):
        # Required-field alternatives read as a choice; otherwise the branch that got furthest says most.
        if not error.context or _only_requirements(error.context):
            yield path, f"{where}: {_oneof_message(error)}"
        else:
            from jsonschema.exceptions import best_match  # loaded with the validator (compiler/schemas.py)
            yield from _explain(best_match(error.context))
    elif kind == "required":
        yield path, f"{where}: {error.message.split(' is a required')[0]} is required"
    elif kind == "type":
        yield path, f"{where}: expected {_types(error.validator_value)}, got {_short(error.instance)}"
    elif kind == "enum":
        yield path, f"{where}: {_short(error.instance)} is not one of {', '.join(map(str, error.validator_value))}"
    elif kind == "const":
        yield path, f"{where}: must be {error.validator_value!r}, not {_short(error.instance)}"
    else:
        yield path, f"{where}: {error.message if len(error.message) < 200 else error.message[:197] + '...'}"


def _only_requirements(errors) -> bool:
    """Whether these errors only say which fields to set (also through nested alternatives, such as
    MeshNetworks' ``fromRegistry`` in either spelling)."""
    return all(e.validator in ("required", "not")
               or (e.validator in ("oneOf", "anyOf") and e.context and _only_requirements(e.context))
               for e in errors)


def _first_repeat(items: list) -> int:
    seen = []
    for index, item in enumerate(items):
        if item in seen:
            return index
        seen.append(item)
    return 0


def _types(value) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "null"}
    values = value if isinstance(value, list) else [value]
    return " or ".join(names.get(v, str(v)) for v in values)


def _oneof_message(error: ValidationError) -> str:
    fields = sorted({name for sub in error.validator_value for name in _spelled(sub)})
    if not fields:
        return error.message[:200]
    if error.validator == "anyOf":
        return f"set at least one of {', '.join(fields)}"
    # Istio writes "at most one" as oneOf [not anyOf [...], required a, required b]
    optional = any("not" in sub for sub in error.validator_value if isinstance(sub, dict))
    return f"set {'at most' if optional else 'exactly'} one of {', '.join(fields)}"


def _spelled(schema) -> list[str]:
    """The fields an alternative requires; one field in either of two spellings (an anyOf of two
    ``required``, MeshNetworks' ``fromRegistry``/``from_registry``) as ``fromRegistry (or from_registry)``."""
    alternatives = schema.get("anyOf") if isinstance(schema, dict) and len(schema) == 1 else None
    if alternatives and all(isinstance(a, dict) and list(a) == ["required"] and len(a["required"]) == 1
                            for a in alternatives):
        first, *others = [a["required"][0] for a in alternatives]
        return [f"{first} (or {', '.join(others)})"]
    return _required_names(schema)


def _required_names(schema) -> list[str]:
    if not isinstance(schema, dict):
        return []
    names = list(schema.get("required", []))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            names += _required_names(sub)
    if "not" in schema:
        names += _required_names(schema["not"])
    return names
