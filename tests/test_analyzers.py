"""Every semantic analyzer, with a case that passes it and one that fails it.

Each case is YAML added to a small valid mesh (BASE). In a failing case the
line the finding must point at carries the marker ``# <-``.
"""
from __future__ import annotations

import textwrap

import pytest

from compiler.validate import validate
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


CASES = {
    "destination-host-not-found": (
        vs("- route:\n  - destination: {host: reviews}"),
        vs("- route:\n  - destination: {host: reveiws}  # <-"),
    ),
    "destination-rule-host-not-found": (
        dr("loadBalancer: {simple: RANDOM}", host="ratings"),
        dr("loadBalancer: {simple: RANDOM}", host="ratngs  # <-"),
    ),
    "subset-not-found": (
        vs("- route:\n  - destination: {host: reviews, subset: v2}"),
        vs("- route:\n  - destination: {host: reviews, subset: v3}  # <-"),
    ),
    "gateway-not-found": (
        vs("- route:\n  - destination: {host: reviews}", extra="  gateways: [istio-system/ingress, mesh]\n"),
        vs("- route:\n  - destination: {host: reviews}",
           extra="  gateways:\n  - mesh\n  - ingress  # <-\n"),
    ),
    "gateway-selector-matches-nothing": (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw2, namespace: istio-system}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw2, namespace: istio-system}\n"
        "spec:\n  selector: {istio: egressgateway}  # <-\n  servers:\n"
        "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n",
    ),
    "destination-port-required": (
        vs("- route:\n  - destination: {host: ratings, port: {number: 9080}}", hosts="[ratings]"),
        vs("- route:\n  - destination: {host: ratings}  # <-", hosts="[ratings]"),
    ),
    "destination-port-not-found": (
        vs("- route:\n  - destination: {host: reviews, port: {number: 9080}}"),
        vs("- route:\n  - destination:\n      host: reviews\n      port: {number: 9081}  # <-"),
    ),
    "duplicate-virtual-service-host": (
        vs("- route:\n  - destination: {host: reviews}", hosts="[reviews, ratings]"),
        vs("- route:\n  - destination: {host: reviews}",
           hosts="\n  - reviews\n  - reviews.bookinfo.svc.cluster.local  # <-"),
    ),
    "negative-weight": (
        vs("- route:\n  - destination: {host: reviews, subset: v1}\n    weight: 0\n"
           "  - destination: {host: reviews, subset: v2}\n    weight: 100"),
        vs("- route:\n  - destination: {host: reviews, subset: v1}\n    weight: -10  # <-\n"
           "  - destination: {host: reviews, subset: v2}\n    weight: 110"),
    ),
    "all-weights-zero": (
        vs("- route:\n  - destination: {host: reviews, subset: v1}\n    weight: 0\n"
           "  - destination: {host: reviews, subset: v2}\n    weight: 1"),
        vs("- route:  # <-\n  - destination: {host: reviews, subset: v1}\n    weight: 0\n"
           "  - destination: {host: reviews, subset: v2}\n    weight: 0"),
    ),
    "conflicting-mesh-virtual-service-hosts": (
        vs("- route:\n  - destination: {host: reviews}")
        + "---\n" + vs("- route:\n  - destination: {host: reviews}").replace("name: test", "name: gw-only")
        .replace("  http:", "  gateways: [istio-system/ingress]\n  http:"),
        vs("- route:\n  - destination: {host: reviews}", hosts="\n  - reviews  # <-")
        + "---\n" + vs("- route:\n  - destination: {host: reviews}", hosts="\n  - reviews  # <-")
        .replace("name: test", "name: other"),
    ),
    "duplicate-gateway-port-name": (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw2, namespace: istio-system}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n"
        "  - port: {number: 8081, name: http-alt, protocol: HTTP}\n    hosts: ['*']\n",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw2, namespace: istio-system}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n"
        "  - port:\n      number: 8081\n      name: http  # <-\n      protocol: HTTP\n    hosts: ['*']\n",
    ),
    "duplicate-subset-name": (
        dr("loadBalancer: {simple: RANDOM}").replace("  trafficPolicy:", "  subsets:\n  - {name: a}\n"
                                                     "  - {name: b}\n  trafficPolicy:"),
        dr("loadBalancer: {simple: RANDOM}").replace("  trafficPolicy:", "  subsets:\n  - {name: a}\n"
                                                     "  - name: a  # <-\n  trafficPolicy:"),
    ),
    "locality-distribute-not-100": (
        dr("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east/*\n"
           "      to: {us-east/*: 80, eu-west/*: 20}"),
        dr("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east/*\n"
           "      to: {us-east/*: 80, eu-west/*: 10}  # <-"),
    ),
    "failover-without-outlier-detection": (
        dr("outlierDetection: {consecutive5xxErrors: 5}\nloadBalancer:\n  localityLbSetting:\n"
           "    failover: [{from: us-east, to: eu-west}]"),
        dr("loadBalancer:\n  localityLbSetting:  # <-\n    failover: [{from: us-east, to: eu-west}]"),
    ),
    "unknown-network": (
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints: [{address: 10.0.0.1, network: network-1}]"),
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints:\n- address: 10.0.0.1\n  network: network-9  # <-"),
    ),
    "unknown-cluster": (
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints: [{address: 10.0.0.1, labels: {topology.istio.io/cluster: cluster-a}}]"),
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints:\n- address: 10.0.0.1\n  labels:\n    topology.istio.io/cluster: cluster-z  # <-"),
    ),
    "invalid-address": (
        se("hosts: [w.example.com]\nresolution: DNS\nports: [{number: 80, name: http}]\n"
           "endpoints: [{address: backend.example.com}]"),
        se("hosts: [w.example.com]\nresolution: DNS\nports: [{number: 80, name: http}]\n"
           "endpoints:\n- address: 10.0.0.300  # <-"),
    ),
    "invalid-host": (
        se("hosts: [w.example.com, '*.w.example.com']\nresolution: NONE\nports: [{number: 80, name: http}]"),
        se("hosts:\n- w.example.com - v.example.com  # <-\nresolution: NONE\nports: [{number: 80, name: http}]"),
    ),
    "duplicate-vip": (
        se("hosts: [a.bookinfo.global]\naddresses: [240.0.0.7/32]\nresolution: NONE\n"
           "ports: [{number: 80, name: http}]") + "---\n"
        + se("hosts: [c.bookinfo.global]\naddresses: [10.9.0.0/24, 240.0.0.8]\nresolution: NONE\n"
             "ports: [{number: 80, name: http}]", name="other"),
        se("hosts: [a.bookinfo.global]\naddresses: [240.0.0.7/32]  # <-\nresolution: NONE\n"
           "ports: [{number: 80, name: http}]") + "---\n"
        + se("hosts: [c.bookinfo.global]\naddresses:\n- 10.9.0.0/24\n- 240.0.0.7\nresolution: NONE\n"
             "ports: [{number: 80, name: http}]", name="other"),
    ),
    "vip-pool-too-small": (
        MESH_CONFIG.format(cidr="240.0.0.0/29") + "---\n"
        + se("hosts: [a.bookinfo.global, b.bookinfo.global, c.bookinfo.global]\nresolution: NONE\n"
             "ports: [{number: 80, name: http}]"),
        MESH_CONFIG.format(cidr="240.0.0.0/30") + "---\n"
        + se("hosts:\n- a.bookinfo.global\n- b.bookinfo.global\n- c.bookinfo.global  # <-\nresolution: NONE\n"
             "ports: [{number: 80, name: http}]"),
    ),
    "static-hostname-endpoint": (
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints: [{address: 10.0.0.1}]"),
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints:\n- address: backend.example.com  # <-"),
    ),
    "endpoints-with-workload-selector": (
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "workloadSelector: {labels: {app: w}}"),
        se("hosts: [w.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
           "endpoints: [{address: 10.0.0.1}]\nworkloadSelector:  # <-\n  labels: {app: w}"),
    ),
    "wildcard-host-with-dns": (
        se("hosts: ['*.example.com']\nresolution: NONE\nports: [{number: 80, name: http}]"),
        se("hosts:\n- '*.example.com'  # <-\nresolution: DNS\nports: [{number: 80, name: http}]"),
    ),
    "port-out-of-range": (
        se("hosts: [w.example.com]\nresolution: DNS\nports: [{number: 65535, name: http}]"),
        se("hosts: [w.example.com]\nresolution: DNS\nports:\n- number: 65536  # <-\n  name: http"),
    ),
    "conflicting-port-protocol": (
        se("hosts: [reviews.bookinfo.svc.cluster.local]\nresolution: STATIC\n"
           "ports: [{number: 9080, name: http, protocol: HTTP}]\nendpoints: [{address: 10.1.0.9}]"),
        se("hosts: [reviews.bookinfo.svc.cluster.local]\nresolution: STATIC\n"
           "ports:\n- number: 9080\n  name: tcp\n  protocol: TCP  # <-\nendpoints: [{address: 10.1.0.9}]"),
    ),
}


def _run(case: str):
    text = BASE + "---\n" + case
    return text, validate(snapshot_of({"mesh.yaml": text})).findings


def test_base_mesh_is_clean():
    assert validate(snapshot_of({"mesh.yaml": BASE})).findings == []


def test_every_analyzer_has_cases():
    assert sorted(CASES) == sorted(a.name for a in ANALYZERS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_passing_case(name):
    _, findings = _run(CASES[name][0])
    assert [f.text() for f in findings] == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_failing_case(name):
    check = next(a for a in ANALYZERS if a.name == name)
    text, findings = _run(CASES[name][1])
    marked = [i for i, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("# <-")]
    assert marked, "a failing case must mark its line"
    assert sorted((f.code, f.level, f.line) for f in findings) == \
        sorted((check.code, check.level, line) for line in marked), [f.text() for f in findings]
    assert all(f.message and f.kind != "-" and f.name != "-" for f in findings)


def test_local_analyzers_reuse_an_unchanged_objects_problems_only_while_their_facts_hold():
    """Objects shared with a previous parse keep their local analyzers' problems (framework.Analyzer.run),
    but not when an index fact they read changed: here a Cluster goes, so an unchanged endpoint's
    cluster label becomes unknown, and a port error in an unchanged file is still reported."""
    from compiler.diff import load_revision
    from compiler.validate.framework import ANALYZERS as ALL

    assert {a.name for a in ALL if a.local is not None} >= {"unknown-cluster", "port-out-of-range"}
    port_error = se("hosts: [w.example.com]\nresolution: DNS\nports:\n- number: 65536\n  name: http", name="bad")
    files = {"mesh.yaml": BASE, "bad.yaml": port_error}
    first = load_revision(snapshot_of(files, "r1"))
    assert [f.code for f in first.findings] == ["GAL0115"]
    # Unchanged: the same objects, the same problems, from the memo.
    again = load_revision(snapshot_of({**files, "other.yaml": vs("- route:\n  - destination: {host: reviews}")},
                                      "r2"), like=first)
    assert [(f.code, f.file, f.line) for f in again.findings] == [(f.code, f.file, f.line) for f in first.findings]
    # A Cluster goes (its own file): the unchanged WorkloadEntry that names it is now wrong.
    cluster_b = ("apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {name: cluster-b, namespace: istio-system}\n"
                 "spec: {network: network-1, locality: us-east/us-east-1b}\n")
    workload = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w, namespace: bookinfo}\n"
                "spec:\n  address: 10.1.0.9\n  labels: {app: w, topology.istio.io/cluster: cluster-b}\n")
    with_b = load_revision(snapshot_of({**files, "b.yaml": cluster_b, "we.yaml": workload}, "r3"), like=first)
    assert [f.code for f in with_b.findings] == ["GAL0115"]
    without_b = load_revision(snapshot_of({**files, "we.yaml": workload}, "r4"), like=with_b)
    assert without_b.parsed.files["we.yaml"] is with_b.parsed.files["we.yaml"]  # the very same objects
    assert sorted((f.code, f.file) for f in without_b.findings) == [("GAL0110", "we.yaml"), ("GAL0115", "bad.yaml")]
    fresh = validate(snapshot_of({**files, "we.yaml": workload}))
    assert [f.text() for f in without_b.findings] == [f.text() for f in fresh.findings]


def test_objects_whose_local_facts_are_unchanged_are_not_asked_about_again(monkeypatch):
    """framework.run_all: an object shared with a validated revision, whose local analyzers would read
    the same facts, gives its kept problems without any local analyzer running on it; when a fact
    changes, only the objects of the kinds that read it are checked again, and the findings are a
    fresh validation's."""
    import dataclasses

    from compiler.validate import framework

    asked: list[tuple[str, str]] = []

    def counted(analyzer):
        def check(index):
            asked.extend((analyzer.name, obj.ref) for kind in analyzer.kinds for obj in index.by_kind.get(kind, ()))
            return analyzer.check(index)
        return dataclasses.replace(analyzer, check=check) if analyzer.local is not None else analyzer

    monkeypatch.setattr(framework, "ANALYZERS", [counted(a) for a in framework.ANALYZERS])
    from compiler.diff import load_revision
    port_error = se("hosts: [w.example.com]\nresolution: DNS\nports:\n- number: 65536\n  name: http", name="bad")
    files = {"mesh.yaml": BASE, "bad.yaml": port_error}
    first = load_revision(snapshot_of(files, "r1"))
    assert asked and [f.code for f in first.findings] == ["GAL0115"]
    asked.clear()
    # The stamp alone gives an object's problems: the analyzers' own entries are not read.
    (bad,) = first.parsed.files["bad.yaml"].objects
    assert bad.checks[framework.LOCAL_STAMP][1] == (("port-out-of-range", ("spec", "ports", 0, "number"),
                                                     bad.checks["port-out-of-range"][1][0][1]),)
    for analyzer in framework.ANALYZERS:
        bad.checks.pop(analyzer.name, None)
    same = load_revision(snapshot_of({**files, "mesh.yaml": BASE + "\n# a comment\n"}, "r2"), like=first)
    # mesh.yaml's objects are new (its text changed); bad.yaml's are not asked about again
    assert asked and not [ref for _, ref in asked if ref.endswith("/bad")], asked
    assert [f.text() for f in same.findings] == [f.text() for f in first.findings]
    asked.clear()
    again = load_revision(snapshot_of({**files, "mesh.yaml": BASE + "\n# a comment\n"}, "r3"), like=same)
    assert asked == [] and [f.text() for f in again.findings] == [f.text() for f in first.findings]
    # A new ServiceEntry changes what the ServiceEntries declare: the DestinationRule, which reads it,
    # is asked again; the WorkloadEntry, whose analyzers read only clusters and networks, is not.
    other = se("hosts: [x.example.com]\nresolution: DNS\nports:\n- number: 80\n  name: http", name="x")
    changed = load_revision(snapshot_of({**files, "mesh.yaml": BASE + "\n# a comment\n", "x.yaml": other}, "r4"),
                            like=again)
    kinds = {ref.split("/")[0] for _, ref in asked}
    assert "DestinationRule" in kinds and "WorkloadEntry" not in kinds, asked
    fresh = validate(snapshot_of({**files, "mesh.yaml": BASE + "\n# a comment\n", "x.yaml": other}))
    assert [f.text() for f in changed.findings] == [f.text() for f in fresh.findings]


def test_reference_checks_of_an_unchanged_virtual_service_follow_the_hosts_ports_subsets_and_gateways():
    """The reference analyzers are local too, with what the ServiceEntries declare, the subsets and the
    Gateways as their facts: a VirtualService in a file no revision touches is checked again exactly
    when one of those changes, so each revision's findings equal a fresh validation's."""
    from compiler.diff import load_revision

    routes = vs("""
        - route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: ratings, port: {number: 9090}}
        - route:
          - destination: {host: ratings}
        """, extra="  gateways: [mesh, istio-system/ingress]\n")
    one_port = BASE.replace("  - {number: 9090, name: grpc, protocol: GRPC}\n", "")
    revisions = {
        "base": BASE,
        "ratings keeps one port": one_port,
        "subset v2 gone": BASE.replace("  - {name: v2, labels: {version: v2}}\n", ""),
        "gateway gone": BASE.replace("kind: Gateway\nmetadata: {name: ingress,", "kind: Gateway\nmetadata: {name: other,"),
        "reviews gone": BASE.replace("metadata: {name: reviews, namespace: bookinfo}\nspec:\n  hosts: [reviews.",
                                     "metadata: {name: reviews, namespace: bookinfo}\nspec:\n  hosts: [reviewz."),
        "base again": BASE,
    }
    seen, previous = set(), None
    for number, (label, mesh) in enumerate(revisions.items()):
        files = {"mesh.yaml": mesh, "routes.yaml": routes}
        revision = load_revision(snapshot_of(files, f"r{number}"), like=previous)
        if previous is not None:
            assert revision.parsed.files["routes.yaml"] is previous.parsed.files["routes.yaml"]
        fresh = validate(snapshot_of(files, f"r{number}"))
        assert [f.text() for f in revision.findings] == [f.text() for f in fresh.findings], label
        seen.update(f.message.split(":")[0] for f in revision.findings if f.file == "routes.yaml")
        previous = revision
    assert {"Referenced subset not found", "Referenced port not found", "Referenced gateway not found",
            "Referenced host not found", "This VirtualService routes to a service with more than one port "
            "(9080, 9090), but does not specify which to use"} <= seen, seen
