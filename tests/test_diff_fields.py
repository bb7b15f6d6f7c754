"""Field-level differences (compiler/diff/fields.py) and Envoy resource comparison (resources.py)."""
from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from compiler import provenance
from compiler.diff.fields import MISSING, FieldChange, diff_values, format_path
from compiler.diff.resources import diff_views, without_provenance
from compiler.cache import serialize
from compiler.xds_types import CLUSTER
from tests.conftest import compiled_from


def texts(old, new, named=False):
    return [c.text(named) for c in diff_values(old, new, named)]


def test_scalars_and_nested_keys():
    assert texts({"a": 1, "b": {"c": "x"}}, {"a": 2, "b": {"c": "x", "d": [1]}}) == [".a: 1 → 2", ".b.d: + [1]"]
    assert diff_values({"a": 1}, {"a": 1}) == []
    assert diff_values({"a": 1}, {}) == [FieldChange(("a",), 1, MISSING)]


def test_named_list_elements_are_matched_by_name_not_position():
    old = {"subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}
    new = {"subsets": [{"name": "v0", "labels": {"version": "v0"}}, {"name": "v1", "labels": {"version": "v1"}},
                       {"name": "v2", "labels": {"version": "two"}}]}
    assert texts(old, new) == ['.subsets[0]: + {"labels": {"version": "v0"}, "name": "v0"}',
                               ".subsets[2].labels.version: v2 → two"]
    # Envoy style: elements named by name, no leading dot
    assert texts(old, new, named=True)[1] == "subsets[v2].labels.version: v2 → two"


def test_an_insertion_into_a_plain_list_is_one_addition():
    assert texts({"hosts": ["a", "b", "c"]}, {"hosts": ["a", "x", "b", "c"]}) == [".hosts[1]: + x"]
    assert texts({"hosts": ["a", "b"]}, {"hosts": ["a", "c"]}) == [".hosts[1]: b → c"]
    assert texts({"hosts": ["a", "b", "c"]}, {"hosts": ["c"]}) == [".hosts[0]: - a", ".hosts[1]: - b"]


def test_an_element_edited_beside_one_added_reads_as_a_change_and_an_addition():
    """A canary: the route's weight goes 100 → 90 and a second destination takes 10."""
    v1 = {"destination": {"host": "reviews", "subset": "v1"}}
    old = {"route": [{**v1, "weight": 100}]}
    new = {"route": [{**v1, "weight": 90}, {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}]}
    assert texts(old, new) == [".route[0].weight: 100 → 90",
                               '.route[1]: + {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}']
    # the other way round, and with the edited element second
    assert texts(new, old) == [".route[0].weight: 90 → 100",
                               '.route[1]: - {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}']
    old = {"route": [{**v1, "weight": 100}]}
    new = {"route": [{"destination": {"host": "ratings"}, "weight": 10}, {**v1, "weight": 90}]}
    assert texts(old, new) == ['.route[0]: + {"destination": {"host": "ratings"}, "weight": 10}',
                               ".route[1].weight: 100 → 90"]
    # nothing alike: a removal and an addition
    assert [c.action for c in diff_values({"r": [{"a": 1, "b": 2}]}, {"r": [{"c": 3}, {"d": 4}]})] == \
        ["removed", "added", "added"]


def test_format_path_reads_like_the_findings():
    assert format_path(("spec", "http", 0, "route", 1, "weight")) == ".spec.http[0].route[1].weight"
    assert format_path(()) == "."


def _cluster(revision: str, line: int, lb=cluster_pb2.Cluster.LEAST_REQUEST, sample=None) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name="outbound|80||a.b.svc.cluster.local", lb_policy=lb)
    source = sample.services["reviews.bookinfo.svc.cluster.local"].source
    provenance.set_sources(cluster.metadata, source)
    cluster.metadata.filter_metadata[provenance.FILTER].fields["line"].number_value = line
    cluster.metadata.filter_metadata[provenance.FILTER].fields["revision"].string_value = revision
    cluster.metadata.filter_metadata["istio"].fields["kept"].string_value = "yes"
    return cluster


def _view(*clusters):
    return compiled_from({CLUSTER: list(clusters)})


def test_provenance_is_not_a_change_but_other_metadata_is(sample_mesh):
    before = _cluster("rev-1", 10, sample=sample_mesh)
    after = _cluster("rev-2", 12, sample=sample_mesh)
    assert serialize(before) != serialize(after)
    assert serialize(without_provenance(before)) == serialize(without_provenance(after))
    assert "istio" in without_provenance(before).metadata.filter_metadata
    assert diff_views(_view(before), _view(after)) == []
    changed = _cluster("rev-2", 10, lb=cluster_pb2.Cluster.ROUND_ROBIN, sample=sample_mesh)
    assert [c.action for c in diff_views(_view(before), _view(changed))] == ["changed"]
    after.metadata.filter_metadata["istio"].fields["kept"].string_value = "no"
    (change,) = diff_views(_view(before), _view(after))
    assert change.lines == ("metadata.filter_metadata.istio.kept: yes → no",)


def test_enum_defaults_are_named_not_called_removed(sample_mesh):
    before = _cluster("r", 1, cluster_pb2.Cluster.LEAST_REQUEST, sample_mesh)
    after = _cluster("r", 1, cluster_pb2.Cluster.ROUND_ROBIN, sample_mesh)  # ROUND_ROBIN is 0: absent in JSON
    (change,) = diff_views(_view(before), _view(after))
    assert change.lines == ("lb_policy: LEAST_REQUEST → ROUND_ROBIN",)
    assert change.to_dict()["fields"] == [{"path": "lb_policy", "action": "changed", "old": "LEAST_REQUEST",
                                           "new": "ROUND_ROBIN"}]


def test_added_and_removed_resources_and_missing_views(sample_mesh):
    one = _cluster("r", 1, sample=sample_mesh)
    assert [(c.action, c.kind) for c in diff_views(None, _view(one))] == [("added", "cluster")]
    assert [(c.action, c.kind) for c in diff_views(_view(one), _view())] == [("removed", "cluster")]
