"""What every analyzer case is built on (tests/test_analyzers*.py): a small valid mesh (BASE) a case
is appended to, builders of the objects cases add, and the two checks a case's passing and failing
YAML go through. In a failing case every line a finding must point at carries the marker ``# <-``;
where another analyzer's finding always comes with it (a missing Gateway is IST0101 and IST0132, as
in Istio), the marker names that analyzer too: ``# <- also virtual-service-host-not-found-in-gateway``."""
from __future__ import annotations

import re
import textwrap

from compiler.revision import load
from compiler.validate.framework import ANALYZERS
from tests.conftest import ONE_CLUSTER, snapshot_of

BASE = ONE_CLUSTER + """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - address: 10.1.0.1
    labels: {app: reviews, version: v1, topology.istio.io/cluster: cluster-a}
  - address: 10.1.0.3
    labels: {app: reviews, version: v2, topology.istio.io/cluster: cluster-a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: grpc, protocol: GRPC}
  endpoints:
  - address: 10.1.0.2
    labels: {app: ratings, topology.istio.io/cluster: cluster-a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress-a, namespace: istio-system}
spec:
  address: 10.1.100.1
  labels: {istio: ingressgateway, topology.istio.io/cluster: cluster-a}
"""


MESH_CONFIG = "apiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec: {{vipCidr: {cidr}}}\n"


def vs(http: str, hosts: str = "[reviews]", extra: str = "") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: test, namespace: bookinfo}}\nspec:\n  hosts: {hosts}\n{extra}  http:\n"
            + textwrap.indent(textwrap.dedent(http).strip("\n"), "  ") + "\n")


def dr(traffic_policy: str, host: str = "reviews") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: test, namespace: bookinfo}}\nspec:\n  host: {host}\n  trafficPolicy:\n"
            + textwrap.indent(textwrap.dedent(traffic_policy).strip("\n"), "    ") + "\n")


def se(spec: str, name: str = "test") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: {name}, namespace: bookinfo}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


def kubernetes_gateway(listeners: str, name: str = "web", namespace: str = "istio-system",
                       version: str = "v1") -> str:
    """A Kubernetes Gateway API Gateway (gateway.networking.k8s.io) with these listeners (YAML list items)."""
    return (f"apiVersion: gateway.networking.k8s.io/{version}\nkind: Gateway\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  gatewayClassName: istio\n  listeners:\n"
            + textwrap.indent(textwrap.dedent(listeners).strip("\n"), "    ") + "\n")


def _run(case: str):
    text = BASE + "---\n" + case
    return text, load(snapshot_of({"mesh.yaml": text})).findings


def check_passing(case: str) -> None:
    """The case added to BASE gives no finding at all."""
    _, findings = _run(case)
    assert [f.text() for f in findings] == []


_MARK = re.compile(r"# <-(?: also ([a-z0-9 -]+))?$")


def check_failing(name: str, case: str) -> None:
    """The case added to BASE gives exactly the analyzer's findings, one on each line marked ``# <-``
    (and the findings of the analyzers a marker names after ``also``, on its line)."""
    by_name = {a.name: a for a in ANALYZERS}
    check = by_name[name]
    text, findings = _run(case)
    expected = []
    for i, line in enumerate(text.splitlines(), 1):
        mark = _MARK.search(line.rstrip())
        if mark:
            expected += [(a.code, a.level, i) for a in (check, *(by_name[n] for n in (mark.group(1) or "").split()))]
    assert expected, "a failing case must mark its line"
    assert sorted((f.code, f.level, f.line) for f in findings) == sorted(expected), [f.text() for f in findings]
    assert all(f.message and f.kind != "-" and f.name != "-" for f in findings)
