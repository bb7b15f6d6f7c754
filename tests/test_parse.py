from __future__ import annotations

import textwrap

import pytest
import yaml

from compiler.findings import Level
from compiler.parse import MAX_FILE_BYTES, UnreadableFile, format_path, parse
from tests.conftest import snapshot_of

VS = textwrap.dedent("""\
    # a comment first, so document and field lines differ
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata:
      name: reviews
      namespace: bookinfo
    spec:
      hosts:
      - reviews
      http:
      - match:
        - uri:
            prefix: /v2
        route:
        - destination:
            host: reviews
            subset: v1
          weight: 90
        - destination:
            host: reviews
            subset: v2
          weight: 10
    """)


def parse_text(text: str, name: str = "f.yaml"):
    return parse(snapshot_of({name: text}))


def test_every_field_path_has_its_line():
    result = parse_text(VS)
    assert result.findings == []
    (vs,) = result.objects
    assert (vs.kind, vs.namespace, vs.name, vs.version) == ("VirtualService", "bookinfo", "reviews", "v1")
    assert vs.line == 2  # the object starts at its first key, not at the comment above it
    assert vs.line_of(("spec", "http", 0, "route", 1, "destination", "host")) == 20
    assert vs.line_of(("spec", "http", 0, "route", 1, "weight")) == 22
    assert vs.line_of(("spec", "http", 0, "match", 0, "uri", "prefix")) == 13
    assert vs.line_of(("spec", "hosts", 0)) == 9


def test_keys_with_dots_do_not_collide():
    (obj,) = parse_text("apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n"
                        "  a.b: 1\n  a:\n    b: 2\n").objects
    assert obj.line_of(("spec", "a.b")) == 5 and obj.line_of(("spec", "a", "b")) == 7


def test_line_of_falls_back_to_nearest_written_ancestor():
    (vs,) = parse_text(VS).objects
    assert vs.line_of(("spec", "http", 0, "route", 1, "destination", "port", "number")) == 19
    assert vs.line_of(("nowhere",)) == vs.line


def test_format_path():
    assert format_path(("spec", "http", 0, "route", 1, "destination", "host")) == \
        ".spec.http[0].route[1].destination.host"
    assert format_path(()) == "."


def test_multi_document_lines_are_per_file():
    text = VS + "---\n" + VS.replace("name: reviews", "name: ratings")
    result = parse_text(text)
    assert [o.name for o in result.objects] == ["reviews", "ratings"]
    second = result.objects[1]
    offset = VS.count("\n") + 1
    assert second.line == 2 + offset
    assert second.line_of(("spec", "http", 0, "route", 1, "weight")) == 22 + offset


def test_namespace_defaults_to_default():
    (obj,) = parse_text(VS.replace("  namespace: bookinfo\n", "")).objects
    assert obj.namespace == "default"


def test_empty_documents_are_ignored():
    result = parse_text("---\n---\n" + VS + "---\n")
    assert len(result.objects) == 1 and result.findings == []


def test_syntax_error_reports_line_and_column_and_keeps_earlier_documents():
    result = parse_text(VS + "---\nkind: [unclosed\nmore: x\n")
    assert len(result.objects) == 1
    (finding,) = result.findings
    assert finding.code == "GAL0001" and finding.level is Level.ERROR
    assert finding.line == 24  # where the bracket was opened, not where the parser gave up
    assert "column 7" in finding.message and "gave up at line 25" in finding.message


def test_bad_indentation_points_at_the_line():
    result = parse_text("a:\n  b: 1\n c: 2\n")
    (finding,) = result.findings
    assert finding.code == "GAL0001" and finding.line == 3


def test_duplicate_key_is_an_error_at_the_second_key():
    result = parse_text(VS.replace("  namespace: bookinfo\n", "  namespace: bookinfo\n  name: other\n"))
    codes = [(f.code, f.line) for f in result.findings]
    assert codes == [("GAL0005", 7)]
    assert ".metadata.name" in result.findings[0].message


def test_duplicate_object_names_both_places():
    result = parse(snapshot_of({"a.yaml": VS, "b.yaml": VS}))
    assert len(result.objects) == 1
    (finding,) = result.findings
    assert (finding.code, finding.file, finding.line) == ("GAL0002", "b.yaml", 2)
    assert "a.yaml:2" in finding.message


def test_same_name_in_another_namespace_or_kind_is_fine():
    other_ns = VS.replace("namespace: bookinfo", "namespace: other")
    other_kind = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n"
                  "  name: reviews\n  namespace: bookinfo\nspec:\n  host: reviews\n")
    result = parse(snapshot_of({"a.yaml": VS, "b.yaml": other_ns, "c.yaml": other_kind}))
    assert result.findings == [] and len(result.objects) == 3


def test_a_kind_of_istio_or_galleon_that_galleon_does_not_read_is_a_warning_and_ignored():
    result = parse_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                        "metadata: {name: x, namespace: shop}\n")
    assert result.objects == []
    (finding,) = result.findings
    assert (finding.code, finding.level, finding.kind) == ("GAL0003", Level.WARNING, "AuthorizationPolicy")
    assert (finding.namespace, finding.name) == ("shop", "x")  # named, not -/-


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n",
    "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x.example.com}\n",
    # another product's kinds of the same names as Galleon's
    "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: x}\n",
    "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualService\nmetadata: {name: x}\n",
    # Gateway API's kinds but its Gateway
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: x}\nspec: {parentRefs: [{name: gw}]}\n",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: istio}\n",
    "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: x}\n",
])
def test_other_kinds_of_a_repository_of_manifests_are_read_silently(text):
    result = parse_text(text)
    assert result.objects == [] and result.findings == []


@pytest.mark.parametrize("text, home", [
    ("apiVersion: v1\nkind: ServiceEntry\nmetadata: {name: x}\n", "networking.istio.io"),
    ("apiVersion: networking.istio.io/v1\nkind: Service\nmetadata: {name: x}\n", "the core group"),
    ("apiVersion: networking.isito.io/v1\nkind: VirtualService\nmetadata: {name: x}\n", "networking.istio.io"),
    ("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: x}\n", "the core group"),
])
def test_a_known_kind_under_a_group_that_is_not_its_own_is_an_error(text, home):
    (finding,) = parse_text(text).findings
    assert finding.code == "GAL0004" and f"belongs to {home}" in finding.message


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha2"])
def test_a_gateway_api_gateway_is_read_as_a_kubernetes_gateway(version):
    """Gateway API's Gateway is read (VirtualServices may bind to one), as its own kind: Galleon knows it
    as KubernetesGateway, never as Istio's Gateway; findings name it as written, with its group."""
    text = (f"apiVersion: gateway.networking.k8s.io/{version}\nkind: Gateway\nmetadata: {{name: gw, namespace: shop}}\n"
            "spec:\n  gatewayClassName: istio\n  listeners:\n  - {name: http, hostname: a.example.com, port: 80, "
            "protocol: HTTP}\n---\n"
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\n"
            "spec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n")
    result = parse_text(text)
    assert result.findings == []  # not GAL0003, and the same name is no duplicate of the Istio Gateway
    kubernetes, istio = result.objects
    assert (kubernetes.group, kubernetes.version, kubernetes.kind) == ("gateway.networking.k8s.io", version,
                                                                       "KubernetesGateway")
    assert kubernetes.shown_kind == "Gateway.gateway.networking.k8s.io"
    assert (istio.group, istio.kind, istio.shown_kind) == ("networking.istio.io", "Gateway", "Gateway")
    twice = parse(snapshot_of({"a.yaml": text, "b.yaml": text.split("---\n")[0]}))
    (duplicate,) = twice.findings
    assert (duplicate.code, duplicate.kind, duplicate.file) == ("GAL0002", "Gateway.gateway.networking.k8s.io", "b.yaml")


@pytest.mark.parametrize("text, message", [
    # Istio's Gateway, as before Galleon read Gateway API's: a group of Istio's, Kubernetes' own, or a misspelling
    ("apiVersion: networking.istio.ioo/v1\nkind: Gateway\nmetadata: {name: x}\n",
     "Gateway belongs to networking.istio.io, not networking.istio.ioo; use apiVersion: networking.istio.io/v1"),
    ("apiVersion: security.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\n",
     "Gateway belongs to networking.istio.io, not security.istio.io"),
    ("apiVersion: v1\nkind: Gateway\nmetadata: {name: x}\n", "Gateway belongs to networking.istio.io, not the core group"),
    # a misspelt Gateway API group
    ("apiVersion: gateway.networking.k8s.oi/v1\nkind: Gateway\nmetadata: {name: x}\n",
     "Gateway belongs to gateway.networking.k8s.io, not gateway.networking.k8s.oi; "
     "use apiVersion: gateway.networking.k8s.io/v1"),
])
def test_a_gateway_under_another_group_points_to_the_gateway_it_most_likely_is(text, message):
    (finding,) = parse_text(text).findings
    assert (finding.code, finding.kind) == ("GAL0004", "Gateway") and finding.message.startswith(message)


def test_the_networking_istio_io_gateway_is_read_as_before():
    result = parse_text("apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: x}\n"
                        "spec: {servers: []}\n")
    (gateway,) = result.objects
    assert result.findings == [] and (gateway.kind, gateway.ref, gateway.shown_kind) == ("Gateway", "Gateway/default/x",
                                                                                          "Gateway")
    (finding,) = parse_text("apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: x}\n").findings
    assert finding.message == ("networking.istio.io/v2 is not a served version of Gateway; use one of "
                               "networking.istio.io/v1, networking.istio.io/v1alpha3, networking.istio.io/v1beta1")
    (finding,) = parse_text("apiVersion: gateway.networking.k8s.io/v2\nkind: Gateway\nmetadata: {name: x}\n").findings
    assert finding.kind == "Gateway.gateway.networking.k8s.io" and finding.message == (
        "gateway.networking.k8s.io/v2 is not a served version of Gateway; use one of gateway.networking.k8s.io/v1, "
        "gateway.networking.k8s.io/v1alpha2, gateway.networking.k8s.io/v1beta1")


def test_kubernetes_kinds_galleon_reads():
    text = "".join(f"---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n" for api, kind in [
        ("v1", "Service"), ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "Endpoints"), ("v1", "Pod"),
        ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("apps/v1", "ReplicaSet"),
        ("batch/v1", "Job")])
    result = parse_text(text)
    assert result.findings == [] and len(result.objects) == 9


def test_a_v1_list_is_expanded_into_its_items_with_their_lines():
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: a, namespace: shop}
          spec:
            ports:
            - port: 80
        - apiVersion: v1
          kind: ConfigMap
          metadata: {name: ignored}
        - apiVersion: networking.istio.io/v1
          kind: VirtualService
          metadata: {name: b, namespace: shop}
          spec: {hosts: [a]}
        """)
    result = parse_text(text)
    assert result.findings == []
    service, vs = result.objects
    assert (service.ref, service.line, vs.ref, vs.line) == ("Service/shop/a", 4, "VirtualService/shop/b", 13)
    assert service.line_of(("spec", "ports", 0, "port")) == 9
    assert vs.line_of(("spec", "hosts")) == 16
    assert vs.line_of(("nowhere",)) == 13  # the item, not the List


def test_a_list_without_items_is_malformed():
    (finding,) = parse_text("apiVersion: v1\nkind: List\nitems: 3\n").findings
    assert finding.code == "GAL0004"


def test_the_same_kubernetes_object_in_two_clusters_is_two_objects():
    service = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: shop\n"
               "  labels: {{topology.istio.io/cluster: {cluster}}}\n")
    result = parse(snapshot_of({"a.yaml": service.format(cluster="east"), "b.yaml": service.format(cluster="west"),
                                "c.yaml": service.format(cluster="west")}))
    assert len(result.objects) == 2
    (duplicate,) = result.findings
    assert (duplicate.code, duplicate.file) == ("GAL0002", "c.yaml")


@pytest.mark.parametrize("text, line", [
    ("a: &a {b: 1, <<: *a}\n", 1),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: &s\n  x: 1\n  y:\n    <<: *s\n", 7),
    ("a: &a\n  b: *a\n", 2),
    ("a: &a [*a]\n", 1),
])
def test_a_cycle_of_anchors_is_one_finding_not_a_recursion(text, line):
    (finding,) = parse_text(text + "---\napiVersion: v1\nkind: Service\nmetadata: {name: next}\n").findings
    assert (finding.code, finding.line) == ("GAL0001", line) and "cycle" in finding.message


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "must be a mapping"),
    ("apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n", "kind is missing"),
    ("kind: Gateway\nmetadata: {name: x}\n", "apiVersion"),
    ("apiVersion: networking.istio.io/v1\nkind: Gateway\nspec: {}\n", "metadata.name is required"),
    ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x, namespace: 3}\n", "namespace"),
    ("apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: x}\n", "not a served version"),
])
def test_malformed_objects(text, message):
    result = parse_text(text)
    assert result.objects == []
    (finding,) = result.findings
    assert finding.code == "GAL0004" and message in finding.message


def test_unserved_version_lists_the_served_ones():
    (finding,) = parse_text("apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: x}\n").findings
    assert "networking.istio.io/v1" in finding.message and "v1beta1" in finding.message


def test_scalars_follow_yaml_types_but_timestamps_stay_text():
    (obj,) = parse_text("apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n"
                        "spec: {network: n, locality: r/z, when: 2024-01-01, n: 3, f: 1.5, b: true, z: null}\n"
                        ).objects
    spec = obj.body["spec"]
    assert spec["when"] == "2024-01-01" and spec["n"] == 3 and spec["f"] == 1.5
    assert spec["b"] is True and "z" not in spec  # null: not set, as Kubernetes reads it


def test_a_field_set_to_null_is_not_set_and_keeps_no_error():
    result = parse_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n  labels: ~\n"
                        "spec:\n  selector: null\n  ports: [{port: 80, name: null}]\n")
    (service,) = result.objects
    assert service.body["metadata"] == {"name": "a"} and service.spec == {"ports": [{"port": 80}]}

class _Reference(yaml.SafeLoader):
    """PyYAML's own SafeLoader, but for timestamps, which stay text as Kubernetes reads them."""


_Reference.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))

# YAML 1.1 scalars whose type depends on how they are written: plain, quoted, tagged.
SCALARS = ["yes", "No", "ON", "off", "y", "N", "true", "False", "~", "null", "Null", "", "012", "0x1F", "0o17",
           "1_000", "1:20", "190:20:30.15", ".inf", "-.Inf", ".NaN", "1e3", "1.0e+3", "+12", "-0", "0.", "0b101",
           "'yes'", '"12"', "'~'", "! 12", "!!str 12", "!!int '12'", "!!float 3", "!!bool yes", "2001-12-14",
           "2001-12-14t21:59:43.10-05:00", "'<<'", "|\n    012\n", ">-\n    yes\n"]


@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_resolve_as_pyyaml_safe_loader_does(scalar):
    head = "apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n"
    for text in (f"{head}value: {scalar}\nlist:\n- {scalar}\n", f"{head}nested:\n  deeper: {scalar}\n"):
        (obj,) = parse_text(text).objects
        assert obj.body == _without_nulls(yaml.load(text, Loader=_Reference)), text


def _without_nulls(value):
    """What Kubernetes reads of a value: mapping fields set to null are not set."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_merge_and_value_keys_written_as_values_stay_text():
    # PyYAML's SafeLoader cannot construct these at all; as values they can only have meant the text.
    (obj,) = parse_text("apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n"
                        "spec: {a: <<, b: =}\n").objects
    assert obj.body["spec"] == {"a": "<<", "b": "="}


def test_a_quoted_merge_key_is_a_plain_key():
    (obj,) = parse_text("apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n"
                        "spec:\n  '<<': {network: n1}\n  network: n2\n").objects
    assert obj.body["spec"] == {"<<": {"network": "n1"}, "network": "n2"}


def test_merge_keys_are_resolved_with_own_keys_winning():
    (obj,) = parse_text("base: &b {network: n1, locality: r/z}\n"
                        "apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n"
                        "spec:\n  <<: *b\n  network: n2\n").objects
    assert obj.body["spec"] == {"network": "n2", "locality": "r/z"}


def test_yaml_bomb_is_refused():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    with pytest.raises(UnreadableFile, match="YAML bomb"):
        parse_text("\n".join(lines) + "\n", "bomb.yaml")


def test_modest_alias_use_is_fine():
    result = parse_text("x: &p {a: 1}\ny: *p\nz: *p\napiVersion: galleon.io/v1alpha1\nkind: Cluster\n"
                        "metadata: {name: c}\nspec: {network: n, locality: r/z}\n")
    assert len(result.objects) == 1


def test_deep_nesting_is_refused_without_a_crash():
    with pytest.raises(UnreadableFile, match="nesting deeper than 100"):
        parse_text("a: " + "[" * 500 + "]" * 500 + "\n")
    # libyaml's own limit comes first for absurd depths: a syntax finding, still no crash
    (finding,) = parse_text("a: " + "[" * 5000 + "]" * 5000 + "\n").findings
    assert finding.code == "GAL0001" and "nesting" in finding.message


def test_binary_file_is_unreadable():
    with pytest.raises(UnreadableFile, match="binary") as exc:
        parse_text(b"\x89PNG\r\n\x1a\n\0\0\0", "logo.yaml")
    assert exc.value.file == "logo.yaml"


def test_non_utf8_names_the_line():
    with pytest.raises(UnreadableFile, match=r"line 2: not valid UTF-8"):
        parse_text(b"a: 1\nb: caf\xe9\n", "latin1.yaml")


def test_utf8_bom_is_accepted():
    result = parse_text(b"\xef\xbb\xbf" + VS.encode())
    assert len(result.objects) == 1


def test_file_over_10_mb_is_refused():
    big = b"# " + b"x" * MAX_FILE_BYTES + b"\n"
    with pytest.raises(UnreadableFile, match="10 MB"):
        parse_text(big, "big.yaml")


def test_files_and_objects_keep_snapshot_order():
    result = parse(snapshot_of({"z.yaml": VS, "a.yaml": VS.replace("name: reviews", "name: a")}))
    assert [o.file for o in result.objects] == ["a.yaml", "z.yaml"]


def test_another_revision_reuses_the_unchanged_files_and_still_finds_duplicates_across_files():
    first = parse(snapshot_of({"a.yaml": VS, "b.yaml": VS.replace("name: reviews", "name: b")}))
    changed = {"a.yaml": VS, "b.yaml": VS.replace("name: reviews", "name: c"), "d.yaml": VS}
    second = parse(snapshot_of(changed), previous=first)
    assert second.objects[0] is first.objects[0]  # a.yaml: same bytes, not read again
    assert [o.name for o in second.objects] == ["reviews", "c"]
    fresh = parse(snapshot_of(changed))
    assert second.findings == fresh.findings
    assert [f.code for f in second.findings] == ["GAL0002"]  # d.yaml repeats a.yaml's object
    assert [(o.file, o.line, o.body) for o in second.objects] == [(o.file, o.line, o.body) for o in fresh.objects]


def test_field_lines_of_documents_before_a_syntax_error():
    """A finding in a document before a syntax error still gets its field's line (the lazy second
    reading of the file stops at the error instead of raising it)."""
    from compiler.revision import load
    text = textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: web}
        spec:
          hosts: [web.default.svc.cluster.local]
          resolution: STATIC
          ports: [{number: 80, name: http, protocol: HTTP}]
          endpoints: 3
        ---
          broken: [
        """)
    findings = load(snapshot_of({"web.yaml": text})).findings
    assert [f.code for f in findings] == ["IST0106", "GAL0001"]
    assert findings[0].line == 8


def test_colons_in_flow_scalars_read_as_kubernetes_reads_them():
    # libyaml (YAML 1.1) refuses `001:db8::` inside [...]; Kubernetes' YAML library reads it as a string
    text = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: v6, namespace: default}\n"
            "spec:\n  hosts: [v6.example.com]\n  addresses: [1.2.3.4, 2001:db8::, 'it''s']\n"
            "  ports: [{number: 80, name: http, protocol: HTTP}]\n  location: MESH_EXTERNAL\n"
            "  resolution: DNS  # 12:30\n")
    result = parse_text(text.encode())
    assert result.findings == []
    (se,) = result.objects
    assert se.spec["addresses"] == ["1.2.3.4", "2001:db8::", "it's"]
    assert se.line_of(("spec", "resolution")) == 9  # lines unchanged
    # a file without such scalars is read as written; another mistake is still reported at its line
    broken = text.replace("resolution: DNS", "resolution: [DNS")
    (finding,) = parse_text(broken.encode()).findings
    assert finding.code == "GAL0001"
