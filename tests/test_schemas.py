from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from compiler.schemas import served_versions, written_kind, written_kinds
from schemas.generate import generate
from tests.conftest import check

CRDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "istio-crds.gen.yaml"


@pytest.mark.skipif(not CRDS.exists(), reason="needs ../shared/data/istio-crds.gen.yaml beside the checkout")
def test_committed_schemas_are_what_the_generator_makes(tmp_path):
    written = generate(CRDS, tmp_path)
    # the six Istio networking kinds, ObjectMeta, ten Kubernetes kinds, Gateway API's Gateway, Istio's
    # RequestAuthentication
    assert len(written) == 19
    for path in written:
        committed = resources.files("schemas").joinpath(path.name).read_text()
        assert path.read_text() == committed, f"schemas/{path.name} is stale: run make schemas"


def test_every_schema_file_is_a_valid_json_schema():
    files = [f for f in resources.files("schemas").iterdir() if f.name.endswith(".json")]
    assert len(files) == 23
    for f in files:
        Draft202012Validator.check_schema(json.loads(f.read_text()))


def test_served_versions():
    versions = served_versions()
    for kind in ("ServiceEntry", "WorkloadEntry", "DestinationRule", "VirtualService", "Gateway", "Sidecar"):
        assert versions[("networking.istio.io", kind)] == ("v1", "v1alpha3", "v1beta1")
    for kind in ("Cluster", "MeshNetworks", "MeshConfig", "CertificateAuthority"):
        assert versions[("galleon.io", kind)] == ("v1alpha1",)
    for group, kind in (("", "Service"), ("discovery.k8s.io", "EndpointSlice"), ("", "Endpoints"), ("", "Pod"),
                        ("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"),
                        ("apps", "ReplicaSet"), ("batch", "Job"), ("", "Namespace")):
        assert versions[(group, kind)] == ("v1",)
    # Gateway API's Gateway, by the name Galleon knows it by, in the versions Istio reads
    assert versions[("gateway.networking.k8s.io", "KubernetesGateway")] == ("v1", "v1alpha2", "v1beta1")
    # Istio's RequestAuthentication, read for its selector alone, in the versions Istio serves
    assert versions[("security.istio.io", "RequestAuthentication")] == ("v1", "v1beta1")


def test_a_kind_is_read_by_how_it_is_written():
    """kubernetesgateway.json says its kind is written Gateway: (group, kind as written) -> kind known."""
    kinds = written_kinds()
    assert kinds[("gateway.networking.k8s.io", "Gateway")] == "KubernetesGateway"
    assert kinds[("networking.istio.io", "Gateway")] == "Gateway"
    assert ("gateway.networking.k8s.io", "KubernetesGateway") not in kinds
    assert all(kind == written for (_, written), kind in kinds.items() if written != "Gateway")
    assert sorted((g, k) for (g, _), k in kinds.items()) == sorted(served_versions())
    assert written_kind("gateway.networking.k8s.io", "KubernetesGateway") == "Gateway"
    assert written_kind("networking.istio.io", "Gateway") == "Gateway"


VS = """
apiVersion: networking.istio.io/{version}
kind: VirtualService
metadata:
  name: r
spec:
  {field}: [r.default.svc.cluster.local]
  http:
  - route:
    - destination:
        host: r.default.svc.cluster.local
"""


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_misspelt_field_is_caught_in_every_version_with_a_suggestion(version):
    findings = [f for f in check(VS.format(version=version, field="hsots")) if f.code == "IST0106"]
    (finding,) = findings
    assert finding.line == 6
    assert "unknown field .spec.hsots" in finding.message and "did you mean 'hosts'" in finding.message


def test_unknown_field_deep_inside_points_at_its_line():
    text = VS.format(version="v1", field="hosts").replace("        host: r", "        hots: x\n        host: r")
    (finding,) = [f for f in check(text) if f.code == "IST0106"]
    assert finding.line == 10 and ".spec.http[0].route[0].destination.hots" in finding.message


@pytest.mark.parametrize("text, line, words", [
    ("""
     apiVersion: networking.istio.io/v1
     kind: DestinationRule
     metadata: {name: r}
     spec:
       host: r
       trafficPolicy:
         loadBalancer:
           simple: FASTEST
     """, 8, ["FASTEST", "is not one of", "ROUND_ROBIN"]),
    ("""
     apiVersion: networking.istio.io/v1
     kind: ServiceEntry
     metadata: {name: s}
     spec:
       hosts: x.example.com
     """, 5, ["expected a list", "x.example.com"]),
    ("""
     apiVersion: galleon.io/v1alpha1
     kind: Cluster
     metadata: {name: c}
     spec:
       network: n1
       locallity: r/z
     """, 4, ["'locality' is required"]),
    ("""
     apiVersion: networking.istio.io/v1
     kind: DestinationRule
     metadata: {name: r}
     spec:
       host: r
       trafficPolicy:
         loadBalancer:
           simple: ROUND_ROBIN
           consistentHash: {httpHeaderName: x}
     """, 7, ["set at most one of", "consistentHash", "simple"]),
    ("""
     apiVersion: galleon.io/v1alpha1
     kind: MeshConfig
     metadata: {name: m}
     spec:
       localityLbSetting:
         distribute:
         - from: a/b
           too: {a/b: 100}
     """, 8, ["unknown field", "too", "did you mean 'to'"]),
    ("""
     apiVersion: networking.istio.io/v1
     kind: Gateway
     metadata: {name: UPPER}
     spec: {}
     """, 3, [".metadata.name", "does not match"]),
])
def test_schema_messages_are_readable(text, line, words):
    findings = [f for f in check(text.replace("\n     ", "\n")) if f.code == "IST0106"]
    assert findings, "expected a schema finding"
    assert any(f.line == line and all(w in f.message for w in words) for f in findings), \
        [f.text() for f in findings]


def test_cluster_misspelling_is_an_unknown_field():
    findings = check("""
        apiVersion: galleon.io/v1alpha1
        kind: Cluster
        metadata: {name: c}
        spec:
          network: n1
          locality: r/z
          kubeContxt: x
        """)
    assert any("unknown field .spec.kubeContxt" in f.message and "kubeContext" in f.message and f.line == 7
               for f in findings)


def test_long_values_are_shortened_in_messages():
    findings = check("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\n"
                     f"spec:\n  hosts: {{a: '{'x' * 500}'}}\n")
    (finding,) = [f for f in findings if f.code == "IST0106"]
    assert len(finding.message) < 200
