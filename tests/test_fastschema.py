"""The compiled fast check must agree with jsonschema on every object, valid or not."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.fastschema import compile_schema
from compiler.parse import parse
from compiler.schemas import fast_check, served_versions, validator
from tests.conftest import sample_files, snapshot_of

CORPUS = Path(__file__).parent / "data" / "invalid"


def agree(obj_body, group, kind, version):
    fast = fast_check(group, kind, version)(obj_body)
    slow = not any(True for _ in validator(group, kind, version).iter_errors(obj_body))
    return fast, slow


def test_every_served_version_compiles():
    for (group, kind), versions in served_versions().items():
        for version in versions:
            assert callable(fast_check(group, kind, version))


def objects_of(files):
    return parse(snapshot_of(files)).objects


def test_agrees_on_sample_repo_and_corpus():
    objects = objects_of(sample_files())
    for path in sorted(CORPUS.glob("*.yaml")):
        try:
            objects += objects_of({path.name: path.read_bytes()})
        except Exception:  # unreadable on purpose (bombs etc.): nothing to compare
            continue
    assert len(objects) > 100
    verdicts = [agree(o.body, o.group, o.kind, o.version) for o in objects]
    assert all(fast == slow for fast, slow in verdicts)
    assert any(not slow for _, slow in verdicts), "the corpus must include schema-invalid objects"


def test_unsupported_keyword_is_refused():
    with pytest.raises(ValueError, match="dependentRequired"):
        compile_schema({"type": "object", "dependentRequired": {"a": ["b"]}}, lambda ref: {})


@pytest.mark.parametrize("schema, good, bad", [
    ({"type": "integer"}, [1, -3], [1.0, True, "1"]),
    ({"enum": [1, "a"]}, [1, "a", 1.0], [True, "b"]),
    ({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1}, {"b": 1}], [{"a": 1, "b": 1}, {}]),
    ({"not": {"required": ["a"]}}, [{}], [{"a": 1}]),
    ({"type": "array", "uniqueItems": True, "maxItems": 2}, [[1, 2]], [[1, 1], [1, 2, 3]]),
    ({"type": "string", "pattern": "^a", "maxLength": 3}, ["ab"], ["ba", "abcd"]),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, [{"ab": 1}], [{"A": 1}]),
])
def test_keywords(schema, good, bad):
    check = compile_schema(schema, lambda ref: {})
    assert all(check(v) for v in good) and not any(check(v) for v in bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**33, 2**33) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)
SAMPLE = objects_of(sample_files())


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, prefix + (index,))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_on_mutated_objects(data):
    obj = data.draw(st.sampled_from(SAMPLE))
    body = copy.deepcopy(obj.body)
    # anywhere but the kind and version, which choose the schema (Kubernetes kinds have no spec)
    path = data.draw(st.sampled_from([p for p in paths(body) if p and p[0] not in ("apiVersion", "kind")]))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    target = parent[path[-1]] if path else body
    if action == "add" and isinstance(target, dict):
        target[data.draw(st.text(min_size=1, max_size=8))] = data.draw(json_values)
    elif action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    fast, slow = agree(body, obj.group, obj.kind, obj.version)
    assert fast == slow, (obj.ref, path, action)
