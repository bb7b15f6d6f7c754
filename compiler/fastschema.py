"""A yes/no JSON Schema check compiled into Python closures, for the keywords our schemas use.

jsonschema re-walks the schema for every value and builds a validator object
per step; that dominates validation time on large repositories. Almost every
object is valid, so a predicate compiled once per schema answers "valid?"
several times faster, and jsonschema is asked only to explain the objects
that fail. A keyword this module does not know is refused when the schema is
compiled, so a new schema can never be checked less strictly than it says.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

Predicate = Callable[[Any], bool]
Resolve = Callable[[str], dict]

ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "x-galleon-group", "x-galleon-kind"}

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
}


def _same(a: Any, b: Any) -> bool:
    # JSON equality: unlike Python, true is not 1
    return type(a) is type(b) and a == b or (type(a) in (int, float) and type(b) in (int, float) and a == b)


def compile_schema(schema: dict | bool, resolve: Resolve) -> Predicate:
    if schema is True or schema == {}:
        return lambda v: True
    if schema is False:
        return lambda v: False
    unknown = set(schema) - ANNOTATIONS - _KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} are not supported by the fast check")
    checks = [build(schema, resolve) for build, keys in _BUILDERS if any(key in schema for key in keys)]
    if not checks:
        return lambda v: True
    combined = checks[0]
    for check in checks[1:]:
        combined = _both(combined, check)
    return combined


def _both(first: Predicate, second: Predicate) -> Predicate:
    # direct calls: a generator over a list of checks costs more than the checks themselves
    return lambda v: first(v) and second(v)


def _type(schema, _resolve):
    names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    tests = [_TYPES[name] for name in names]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(t(v) for t in tests)


def _object(schema, resolve):
    props = {name: compile_schema(sub, resolve) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties")
    extra_check = compile_schema(extra, resolve) if isinstance(extra, dict) else None
    closed = extra is False
    min_props, max_props = schema.get("minProperties"), schema.get("maxProperties")
    names = compile_schema(schema["propertyNames"], resolve) if "propertyNames" in schema else None

    def check(v):
        if type(v) is not dict:
            return True
        for key in required:
            if key not in v:
                return False
        for key, item in v.items():
            sub = props.get(key)
            if sub is None:
                if closed or (extra_check is not None and not extra_check(item)):
                    return False
            elif not sub(item):
                return False
            if names is not None and not names(key):
                return False
        if min_props is not None and len(v) < min_props:
            return False
        return max_props is None or len(v) <= max_props
    return check


def _array(schema, resolve):
    items = compile_schema(schema["items"], resolve) if "items" in schema else None
    low, high, unique = schema.get("minItems"), schema.get("maxItems"), schema.get("uniqueItems")

    def check(v):
        if type(v) is not list:
            return True
        if (low is not None and len(v) < low) or (high is not None and len(v) > high):
            return False
        if items is not None:
            for item in v:
                if not items(item):
                    return False
        if unique:
            seen = [json.dumps(item, sort_keys=True) for item in v]
            return len(set(seen)) == len(seen)
        return True
    return check


def _string(schema, _resolve):
    low, high = schema.get("minLength"), schema.get("maxLength")
    pattern = re.compile(schema["pattern"]).search if "pattern" in schema else None

    def check(v):
        if type(v) is not str:
            return True
        if (low is not None and len(v) < low) or (high is not None and len(v) > high):
            return False
        return pattern is None or pattern(v) is not None
    return check


def _number(schema, _resolve):
    low, high = schema.get("minimum"), schema.get("maximum")

    def check(v):
        if type(v) not in (int, float):
            return True
        return (low is None or v >= low) and (high is None or v <= high)
    return check


def _enum(schema, _resolve):
    options = schema["enum"]
    return lambda v: any(_same(v, option) for option in options)


def _const(schema, _resolve):
    value = schema["const"]
    return lambda v: _same(v, value)


def _combinators(schema, resolve):
    all_of = [compile_schema(s, resolve) for s in schema.get("allOf", ())]
    any_of = [compile_schema(s, resolve) for s in schema.get("anyOf", ())]
    one_of = [compile_schema(s, resolve) for s in schema.get("oneOf", ())]
    negated = compile_schema(schema["not"], resolve) if "not" in schema else None
    condition = compile_schema(schema["if"], resolve) if "if" in schema else None
    then = compile_schema(schema.get("then", True), resolve)

    def check(v):
        if all_of and not all(s(v) for s in all_of):
            return False
        if any_of and not any(s(v) for s in any_of):
            return False
        if one_of and sum(1 for s in one_of if s(v)) != 1:
            return False
        if negated is not None and negated(v):
            return False
        return condition is None or not condition(v) or then(v)
    return check


def _ref(schema, resolve):
    target: list[Predicate] = []

    def check(v):
        if not target:  # compiled on first use, so schemas may refer to each other
            target.append(compile_schema(resolve(schema["$ref"]), resolve))
        return target[0](v)
    return check


# Each builder reads all the keywords of its group at once.
_BUILDERS = [
    (_type, ("type",)), (_enum, ("enum",)), (_const, ("const",)), (_ref, ("$ref",)),
    (_object, ("properties", "required", "additionalProperties", "minProperties", "maxProperties",
               "propertyNames")),
    (_array, ("items", "minItems", "maxItems", "uniqueItems")),
    (_string, ("pattern", "minLength", "maxLength")),
    (_number, ("minimum", "maximum")),
    (_combinators, ("allOf", "anyOf", "oneOf", "not", "if", "then")),
]
_KEYWORDS = {key for _, keys in _BUILDERS for key in keys}
