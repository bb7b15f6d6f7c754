"""Objects as `kubectl get -o yaml` prints them validate, on every kind Galleon reads: every ObjectMeta
field is allowed, `.status` is ignored, a field set to null is not set; and names stay strict."""
from __future__ import annotations

import textwrap

import pytest

from compiler.revision import load
from tests.conftest import ONE_CLUSTER, snapshot_of

# What the API server adds to every object it returns.
SERVER_METADATA = """\
  uid: 5b1c1a1e-7a0e-4d8f-9d0a-0c2f8e6f4b1a
  resourceVersion: "4817263"
  generation: 3
  creationTimestamp: "2026-11-02T09:14:07Z"
  selfLink: /apis/x/y
  generateName: web-
  finalizers: [example.com/keep]
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: web-7d4b9
    uid: 0c2f8e6f-4b1a-4d8f-9d0a-5b1c1a1e7a0e
    controller: true
    blockOwnerDeletion: true
  managedFields:
  - manager: kubectl-client-side-apply
    operation: Update
    apiVersion: v1
    time: "2026-11-02T09:14:07Z"
    fieldsType: FieldsV1
    fieldsV1: {f:metadata: {f:annotations: {}}}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"X","metadata":{"name":"web"}}
  labels:
    app: web
"""
STATUS = """\
status:
  conditions:
  - type: Ready
    status: "True"
  observedGeneration: 3
"""

# One valid object of every kind, without metadata: (apiVersion, kind, the rest of the object).
KINDS = [
    ("networking.istio.io/v1", "ServiceEntry",
     "spec:\n  hosts: [web.example.com]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"),
    ("networking.istio.io/v1", "WorkloadEntry", "spec:\n  address: 10.1.0.9\n  labels: {app: web}\n"),
    ("networking.istio.io/v1", "DestinationRule", "spec:\n  host: web.example.com\n"),
    ("networking.istio.io/v1beta1", "VirtualService",
     "spec:\n  hosts: [web.example.com]\n  http:\n  - directResponse: {status: 503}\n"),
    ("networking.istio.io/v1alpha3", "Gateway",
     "spec:\n  selector: {app: web}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n"
     "    hosts: ['*']\n"),
    ("networking.istio.io/v1", "Sidecar", "spec:\n  egress:\n  - hosts: ['./*']\n"),
    ("galleon.io/v1alpha1", "MeshConfig", "spec:\n  trustDomain: cluster.local\n"),
    ("galleon.io/v1alpha1", "CertificateAuthority", "spec:\n  keyAlgorithm: ECDSA_P256\n"),
    ("v1", "Service", "spec:\n  selector: {app: web}\n  ports:\n  - {port: 80, name: http, targetPort: 8080}\n"
                      "  clusterIP: 10.96.0.7\n  type: ClusterIP\n  sessionAffinity: None\n"),
    ("discovery.k8s.io/v1", "EndpointSlice",
     "addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n"
     "- addresses: [10.1.0.9]\n  conditions: {ready: true, serving: true, terminating: false}\n"
     "  nodeName: node-1\n  zone: us-east-1a\n  targetRef: {kind: Pod, namespace: shop, name: web-1}\n"),
    ("v1", "Endpoints", "subsets:\n- addresses: [{ip: 10.1.0.9, nodeName: node-1}]\n"
                        "  ports: [{name: http, port: 8080, protocol: TCP}]\n"),
    ("v1", "Pod", "spec:\n  serviceAccountName: web\n  nodeName: node-1\n  containers:\n  - name: web\n"
                  "    image: web:1\n    ports: [{containerPort: 8080}]\n"),
    ("apps/v1", "Deployment", "spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n"
                              "    metadata: {labels: {app: web}, annotations: {a: b}}\n"
                              "    spec: {containers: [{name: web, image: web:1}]}\n"),
    ("apps/v1", "StatefulSet", "spec:\n  serviceName: web\n  selector: {matchLabels: {app: web}}\n  template:\n"
                               "    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n"),
    ("apps/v1", "DaemonSet", "spec:\n  selector: {matchLabels: {app: web}}\n  template:\n"
                             "    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n"),
    ("apps/v1", "ReplicaSet", "spec:\n  selector: {matchLabels: {app: web}}\n  template:\n"
                              "    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n"),
    ("batch/v1", "Job", "spec:\n  template:\n    metadata: {labels: {app: web}}\n"
                        "    spec: {restartPolicy: Never, containers: [{name: web, image: web:1}]}\n"),
]
IDS = [kind for _, kind, _ in KINDS]


def exported(api_version: str, kind: str, rest: str) -> str:
    return f"apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: web\n  namespace: shop\n" \
           f"{SERVER_METADATA}{rest}{STATUS}"


@pytest.mark.parametrize("api_version, kind, rest", KINDS, ids=IDS)
def test_an_object_as_kubectl_get_prints_it_validates(api_version, kind, rest):
    findings = load(snapshot_of({"exported.yaml": ONE_CLUSTER + "---\n" + exported(api_version, kind, rest)})).findings
    assert [f.text() for f in findings if f.level.value == "error"] == []


def test_a_list_of_exported_objects_validates_with_every_item_read():
    items = "".join("- " + textwrap.indent(exported(*entry), "  ")[2:] for entry in KINDS)
    text = f"apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n{items}"
    result = load(snapshot_of({"list.yaml": ONE_CLUSTER + "---\n" + text}))
    assert [f.text() for f in result.findings if f.level.value == "error"] == []
    assert sorted(o.kind for o in result.objects if o.namespace == "shop") == sorted(IDS)


def test_a_misspelt_metadata_field_is_still_an_error():
    (finding,) = load(snapshot_of({"a.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
                                                 "  namepsace: shop\n"})).findings
    assert (finding.code, finding.line) == ("IST0106", 5) and "did you mean 'namespace'" in finding.message


@pytest.mark.parametrize("field", ["name", "namespace"])
def test_a_name_ending_in_a_newline_is_refused(field):
    """A pattern anchored with `$` would let "web\\n" through in Python (its `$` also matches before a
    final newline), and the name would reach file names, certificates and Envoy."""
    value = '"web\\n"'
    other = "namespace: shop" if field == "name" else "name: web"
    text = f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  {field}: {value}\n" \
           f"  {other}\nspec:\n  host: web.example.com\n"
    (finding,) = [f for f in load(snapshot_of({"a.yaml": text})).findings if f.code == "IST0106"]
    assert finding.line == 4 and "does not match" in finding.message
    assert "\n" not in finding.text()  # the control character is shown escaped


def test_control_characters_in_a_name_are_escaped_in_the_text_of_a_finding():
    text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: \"gw\\e[31m\"\nspec: {}\n"
    findings = load(snapshot_of({"a.yaml": text})).findings
    assert findings and all("\x1b" not in f.text() for f in findings)
    assert any("\\x1b[31m" in f.text() for f in findings)
