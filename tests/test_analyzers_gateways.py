"""Istio's Gateway analyzers (compiler/validate/gateways.py): conflicting Gateways (IST0145), one
certificate on two Gateways (IST0138), a server port no Service of the gateway workloads exposes
(IST0162), and a VirtualService none of whose hosts its Gateway serves (IST0132), Istio's or a Kubernetes
Gateway API Gateway, or one that does not exist."""
from __future__ import annotations

import textwrap

import pytest

from compiler.revision import load
from tests.conftest import snapshot_of
from tests.analyzer_cases import BASE, kubernetes_gateway


def gateway(servers: str, name: str = "gw2", namespace: str = "istio-system",
            selector: str = "{istio: ingressgateway}") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {selector}\n  servers:\n"
            + textwrap.indent(textwrap.dedent(servers).strip("\n"), "  ") + "\n")


def server(port: int, hosts: str, extra: str = "", name: str = "") -> str:
    return f"- port: {{number: {port}, name: {name or f'p{port}'}, protocol: HTTP}}\n  hosts: {hosts}\n{extra}"


def virtual_service(gateways: str, hosts: str = "[reviews.example.com]", name: str = "test",
                    namespace: str = "bookinfo") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n"
            "  - route:\n    - destination: {host: reviews.bookinfo.svc.cluster.local}\n")


def deployment(labels: str = "{istio: ingressgateway}", name: str = "ingressgateway",
               namespace: str = "istio-system", ports: str = "") -> str:
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {{matchLabels: {labels}}}\n  template:\n    metadata: {{labels: {labels}}}\n"
            f"    spec:\n      containers:\n      - name: istio-proxy\n        image: proxyv2\n"
            + (f"        ports: {ports}\n" if ports else ""))


def service(ports: str, selector: str = "{istio: ingressgateway}", name: str = "ingressgateway",
            namespace: str = "istio-system") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {selector}\n  ports:\n"
            + textwrap.indent(textwrap.dedent(ports).strip("\n"), "  ") + "\n")


def docs(*parts: str) -> str:
    return "---\n".join(parts)


TLS = "  tls: {{mode: SIMPLE, credentialName: {}}}\n"

CASES = {
    "conflicting-gateways": (
        docs(gateway(server(8080, "[a.example.com]")), gateway(server(8080, "[b.example.com]"), name="gw3")),
        docs(gateway(server(8080, "\n  - a.example.com  # <-")),
             gateway(server(8080, "\n  - b.example.com\n  - a.example.com  # <-"), name="gw3")),
    ),
    "gateway-duplicate-certificate": (
        docs(gateway(server(443, "[a.example.com]", TLS.format("a-cert"))),
             gateway(server(443, "[b.example.com]", TLS.format("b-cert")), name="gw3")),
        docs(gateway(server(443, "[a.example.com]", "  tls:\n    mode: SIMPLE\n    credentialName: cert  # <-\n")),
             gateway(server(443, "[b.example.com]", "  tls:\n    mode: SIMPLE\n    credentialName: cert  # <-\n"),
                     name="gw3")),
    ),
    "gateway-port-not-defined-on-service": (
        docs(deployment(), service("- {name: http, port: 80, targetPort: 8080}"),
             gateway(server(8080, "['*']"))),
        docs(deployment(), service("- {name: http, port: 80, targetPort: 8080}"),
             gateway(server(8080, "['*']") + "- port:\n    number: 8443  # <-\n    name: https\n"
                     "    protocol: HTTP\n  hosts: ['*']\n")),
    ),
    "virtual-service-host-not-found-in-gateway": (
        # an Istio Gateway, and a Kubernetes Gateway API one, whose listeners' hostnames count
        docs(gateway(server(8080, "['bookinfo/*.example.com']")), virtual_service("[istio-system/gw2]"),
             kubernetes_gateway("- {name: http, hostname: '*.example.com', port: 80, protocol: HTTP}"),
             virtual_service("[istio-system/web]", name="web")),
        # a Gateway that does not exist serves no host either: IST0101 and IST0132, as Istio reports it
        docs(gateway(server(8080, "['other/*.example.com']")),
             virtual_service("\n  - istio-system/gw2  # <-\n  - istio-system/gw9  # <- also gateway-not-found"),
             kubernetes_gateway("- {name: http, hostname: ratings.example.com, port: 80, protocol: HTTP}"),
             virtual_service("\n  - istio-system/web  # <-", name="web")),
    ),
}



def findings(*parts: str) -> list[tuple[str, str, int]]:
    """(code, object, line) of every finding of BASE with these documents."""
    text = BASE + "---\n" + docs(*parts)
    return sorted((f.code, f"{f.kind}/{f.namespace}/{f.name}", f.line)
                  for f in load(snapshot_of({"mesh.yaml": text})).findings)


def codes(*parts: str) -> list[tuple[str, str]]:
    return [(code, obj) for code, obj, _ in findings(*parts)]


# --- IST0145 --------------------------------------------------------------------------------------

def test_conflict_needs_the_same_port_host_and_bind():
    a = gateway(server(8080, "[a.example.com]"))
    assert codes(a, gateway(server(8081, "[a.example.com]"), name="gw3")) == []
    assert codes(a, gateway(server(8080, "['*.example.com']"), name="gw3")) == []  # no wildcard matching
    assert codes(a, gateway(server(8080, "[a.example.com]", "  bind: 10.0.0.1\n"), name="gw3")) == []
    assert codes(gateway(server(8080, "[a.example.com]", "  bind: 10.0.0.1\n")),
                 gateway(server(8080, "[a.example.com]", "  bind: 10.0.0.1\n"), name="gw3")) == [
        ("IST0145", "Gateway/istio-system/gw2"), ("IST0145", "Gateway/istio-system/gw3")]


def test_conflict_across_namespaces_and_with_the_catch_all_host():
    # BASE's istio-system/ingress serves '*' on port 80: a Gateway of another namespace doing the same
    # on the same workloads conflicts with it
    assert codes(gateway(server(80, "['*']"), namespace="bookinfo")) == [
        ("IST0145", "Gateway/bookinfo/gw2"), ("IST0145", "Gateway/istio-system/ingress")]


def test_selectors_one_inside_the_other_conflict_only_through_a_workload_matching_both():
    wide = gateway(server(8080, "[a.example.com]"))
    narrow = gateway(server(8080, "[a.example.com]"), name="gw3", selector="{istio: ingressgateway, tier: edge}")
    # BASE's ingress workload has no tier label (and the narrow selector matches nothing: IST0101)
    assert codes(wide, narrow) == [("IST0101", "Gateway/istio-system/gw3")]
    edge = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: edge, namespace: istio-system}\n"
            "spec:\n  address: 10.1.100.2\n  labels: {istio: ingressgateway, tier: edge, "
            "topology.istio.io/cluster: cluster-a}\n")
    assert codes(wide, narrow, edge) == [("IST0145", "Gateway/istio-system/gw2"), ("IST0145", "Gateway/istio-system/gw3")]
    disjoint = gateway(server(8080, "[a.example.com]"), name="gw3", selector="{istio: egressgateway}")
    assert codes(wide, disjoint, edge.replace("ingressgateway", "egressgateway")) == []


def test_every_server_of_a_conflict_is_reported_once():
    # gw3 serves a.example.com from its first server on port 8080, b.example.com from its second;
    # both collide with gw2's one server: gw2 once (naming gw3), gw3 once per server
    gw2 = gateway(server(8080, "[a.example.com, b.example.com]"))
    gw3 = gateway(server(8080, "[a.example.com]") + server(8080, "[b.example.com]", name="alt"), name="gw3")
    found = findings(gw2, gw3)
    assert [(c, o) for c, o, _ in found] == [("IST0145", "Gateway/istio-system/gw2")] + [
        ("IST0145", "Gateway/istio-system/gw3")] * 2
    text = [f.message for f in load(snapshot_of({"m.yaml": BASE + "---\n" + docs(gw2, gw3)})).findings
            if f.name == "gw2"][0]
    assert text.startswith("Conflict with gateways istio-system/gw3 (workload selector istio=ingressgateway, "
                           "port 8080, hosts a.example.com,b.example.com)")


# --- IST0138 --------------------------------------------------------------------------------------

def test_duplicate_certificate_is_reported_on_the_gateway_whose_selector_the_other_holds():
    wide = gateway(server(443, "[a.example.com]", TLS.format("cert")))
    narrow = gateway(server(443, "[b.example.com]", TLS.format("cert")), name="gw3",
                     selector="{istio: ingressgateway, tier: edge}")
    # IST0101: no workload has the tier label; IST0138 is not about workloads (Istio's neither)
    assert codes(wide, narrow) == [("IST0101", "Gateway/istio-system/gw3"), ("IST0138", "Gateway/istio-system/gw2")]


def test_duplicate_certificate_files_and_mixed_kinds():
    files = "  tls: {mode: SIMPLE, serverCertificate: /etc/c.pem, privateKey: /etc/k.pem}\n"
    assert codes(gateway(server(443, "[a.example.com]", files)),
                 gateway(server(443, "[b.example.com]", files), name="gw3", namespace="bookinfo")) == [
        ("IST0138", "Gateway/bookinfo/gw3"), ("IST0138", "Gateway/istio-system/gw2")]
    other_key = files.replace("k.pem", "k2.pem")
    assert codes(gateway(server(443, "[a.example.com]", files)),
                 gateway(server(443, "[b.example.com]", other_key), name="gw3")) == []
    # a credentialName on one side and files on the other: not compared (Istio neither)
    assert codes(gateway(server(443, "[a.example.com]", files)),
                 gateway(server(443, "[b.example.com]", TLS.format("/etc/c.pem")), name="gw3")) == []
    # no certificate at all (a redirect, a passthrough) is never a duplicate
    assert codes(gateway(server(443, "[a.example.com]", "  tls: {httpsRedirect: true}\n")),
                 gateway(server(443, "[b.example.com]", "  tls: {httpsRedirect: true}\n"), name="gw3")) == []


def test_duplicate_certificate_with_several_servers_is_one_finding_per_other_gateway():
    gw2 = gateway(server(443, "[a.example.com]", TLS.format("cert")) + server(8443, "[a.example.com]",
                                                                                TLS.format("cert")))
    gw3 = gateway(server(443, "[b.example.com]", TLS.format("cert")), name="gw3")
    gw4 = gateway(server(443, "[c.example.com]", TLS.format("cert")), name="gw4")
    assert codes(gw2, gw3, gw4) == [("IST0138", "Gateway/istio-system/gw2")] * 2 + [
        ("IST0138", "Gateway/istio-system/gw3")] * 2 + [("IST0138", "Gateway/istio-system/gw4")] * 2


# --- IST0162 --------------------------------------------------------------------------------------

def test_no_verdict_without_the_gateway_workloads_or_their_service():
    gw = gateway(server(8443, "['*']"))
    assert codes(gw) == []  # BASE's ingress is a WorkloadEntry: no Service
    assert codes(gw, deployment()) == []  # a workload, but no Service selects it
    assert codes(gw, service("- {name: http, port: 80}")) == []  # a Service, but no workload of the selector
    assert codes(gw, deployment(), service("- {name: http, port: 80}", namespace="bookinfo")) == []


def test_service_ports_target_ports_and_named_target_ports_are_accepted():
    svc = service("""
        - {name: http, port: 80, targetPort: 8080}
        - {name: https, port: 443, targetPort: https}
        - {name: tls, port: 15443, targetPort: '15444'}
        """)
    workload = deployment(ports="[{name: https, containerPort: 8443}]")
    listening = "".join(server(p, "[gw2.example.com]") for p in (80, 8080, 443, 8443, 15443, 15444))
    assert codes(gateway(listening), workload, svc) == []
    # a named targetPort no container declares: only the Service port is known
    assert codes(gateway(listening), deployment(), svc) == [("IST0162", "Gateway/istio-system/gw2")]


def test_udp_ports_do_not_count_and_each_port_is_reported_once():
    svc = service("- {name: http, port: 80}\n- {name: dns, port: 53, protocol: UDP}")
    gw = gateway(server(53, "[a.example.com]") + server(53, "[b.example.com]", name="dns2") + server(9000, "['*']"))
    found = findings(gw, deployment(), svc)
    assert [(c, o) for c, o, _ in found] == [("IST0162", "Gateway/istio-system/gw2")] * 2


def test_pods_and_statefulsets_are_workloads_too():
    pod = ("apiVersion: v1\nkind: Pod\nmetadata: {name: gw-0, namespace: edge, labels: {app: edge-gw}}\n"
           "spec:\n  containers: [{name: istio-proxy, image: proxyv2}]\n")
    svc = service("- {name: http, port: 80}", selector="{app: edge-gw}", namespace="edge")
    gw = gateway(server(80, "['*']") + server(81, "['*']"), selector="{app: edge-gw}", namespace="edge")
    assert codes(gw, pod, svc) == [("IST0162", "Gateway/edge/gw2")]


# --- IST0132 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("hosts, namespace, found", [
    ("['*']", "bookinfo", False),
    ("['*/*']", "bookinfo", False),
    ("['*/reviews.example.com']", "bookinfo", False),
    ("['bookinfo/reviews.example.com']", "bookinfo", False),
    ("['bookinfo/reviews.example.com']", "other", True),
    ("['./reviews.example.com']", "istio-system", False),   # ./ is the Gateway's namespace
    ("['./reviews.example.com']", "bookinfo", True),
    ("['*.example.com']", "bookinfo", False),
    ("['ratings.example.com']", "bookinfo", True),
    ("['reviews']", "bookinfo", True),                      # no short-name expansion (Istio neither)
])
def test_gateway_hosts_visible_to_the_virtual_service_namespace(hosts, namespace, found):
    got = codes(gateway(server(8080, hosts)), virtual_service("[istio-system/gw2]", namespace=namespace))
    assert got == ([("IST0132", f"VirtualService/{namespace}/test")] if found else [])


def test_wildcards_match_either_way():
    gw = gateway(server(8080, "[reviews.example.com]"))
    assert codes(gw, virtual_service("[istio-system/gw2]", hosts="['*.example.com']")) == []
    assert codes(gw, virtual_service("[istio-system/gw2]", hosts="['*']")) == []
    assert codes(gw, virtual_service("[istio-system/gw2]", hosts="['*.other.com']")) == [
        ("IST0132", "VirtualService/bookinfo/test")]


def test_each_gateway_reference_is_checked_and_a_missing_gateway_serves_no_host():
    """As Istio's GatewayAnalyzer: a Gateway that does not exist is not found (IST0101), and since no
    gateway hosts match, none of the VirtualService's hosts is found in it either (IST0132)."""
    gw = gateway(server(8080, "[ratings.example.com]"))
    vs = virtual_service("\n  - mesh\n  - istio-system/ingress\n  - istio-system/gw2\n  - istio-system/gw9")
    found = findings(gw, vs)
    lines = (BASE + "---\n" + docs(gw, vs)).splitlines()
    assert [(c, lines[line - 1].strip()) for c, _, line in found] == [
        ("IST0101", "- istio-system/gw9"), ("IST0132", "- istio-system/gw2"), ("IST0132", "- istio-system/gw9")]
    # a short reference is to the VirtualService's namespace
    local = gateway(server(8080, "[reviews.example.com]"), namespace="bookinfo")
    assert codes(local, virtual_service("[gw2]")) == []


def test_host_check_of_an_unchanged_virtual_service_follows_its_gateway_hosts():
    """The check is local with the Gateways' hosts as its fact: a VirtualService in a file no revision
    touches is checked again when the hosts of a Gateway change."""
    from compiler.revision import load
    files = {"mesh.yaml": BASE, "vs.yaml": virtual_service("[istio-system/gw2]")}
    revisions = [gateway(server(8080, "[reviews.example.com]")), gateway(server(8080, "[ratings.example.com]")),
                 gateway(server(8080, "[reviews.example.com]"))]
    previous = None
    for n, gw in enumerate(revisions):
        snapshot = snapshot_of({**files, "gw.yaml": gw}, f"r{n}")
        revision = load(snapshot, previous) if previous else load(snapshot)
        assert [f.text() for f in revision.findings] == [f.text() for f in load(snapshot).findings]
        assert [f.code for f in revision.findings] == ([] if n != 1 else ["IST0132"])
        previous = revision


def test_odd_container_lists_do_not_break_the_port_check():
    svc = service("- {name: http, port: 80}\n- {name: https, port: 443, targetPort: https}")
    for containers in ("containers: oops", "containers: [oops, {ports: oops}, {ports: [oops, {name: 1}]}]",
                       "containers: {name: c}"):
        workload = deployment().replace("containers:\n      - name: istio-proxy\n        image: proxyv2", containers)
        assert containers in workload
        assert codes(gateway(server(8443, "[a.example.com]")), workload, svc) == [("IST0162", "Gateway/istio-system/gw2")]


def test_a_gateway_with_many_hosts_is_named_in_short():
    hosts = "[" + ", ".join(f"h{n}.example.com" for n in range(20)) + "]"
    text = BASE + "---\n" + docs(gateway(server(8080, hosts)), virtual_service("[istio-system/gw2]"))
    (finding,) = load(snapshot_of({"mesh.yaml": text})).findings
    assert finding.code == "IST0132" and "'h7.example.com' and 12 more to namespace bookinfo" in finding.message


# --- IST0132 on a Kubernetes Gateway API Gateway ---------------------------------------------------

LISTENER = "- {{name: {name}, hostname: '{hostname}', port: 80, protocol: HTTP}}\n"
NO_HOSTNAME = "- {name: any, port: 8080, protocol: HTTP}\n"


@pytest.mark.parametrize("listeners, hosts, found", [
    (LISTENER.format(name="a", hostname="reviews.example.com"), "[reviews.example.com]", False),
    (LISTENER.format(name="a", hostname="ratings.example.com"), "[reviews.example.com]", True),
    (LISTENER.format(name="a", hostname="*.example.com"), "[reviews.example.com]", False),
    (LISTENER.format(name="a", hostname="reviews.example.com"), "['*.example.com']", False),   # either way
    (LISTENER.format(name="a", hostname="*.other.com"), "['*.example.com']", True),
    (LISTENER.format(name="a", hostname="reviews.example.com"), "[reviews]", True),            # no expansion
    (LISTENER.format(name="a", hostname="ratings.example.com")
     + LISTENER.format(name="b", hostname="reviews.example.com"), "[reviews.example.com]", False),
    # a listener without hostname accepts every host, whatever the others say
    (LISTENER.format(name="a", hostname="ratings.example.com") + NO_HOSTNAME, "[reviews.example.com]", False),
    ("[]", "[reviews.example.com]", True),                                                    # no listener
])
def test_a_kubernetes_gateway_serves_its_listeners_hostnames(listeners, hosts, found):
    got = codes(kubernetes_gateway(listeners), virtual_service("[istio-system/web]", hosts=hosts))
    assert got == ([("IST0132", "VirtualService/bookinfo/test")] if found else [])


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha2"])
def test_a_virtual_service_bound_to_a_kubernetes_gateway_validates_clean(version):
    """Istio's test data (virtualservice_kubernetes_gateways.yaml): a VirtualService bound to a Gateway API
    Gateway by NAMESPACE/NAME, or by name alone in its own namespace, is no IST0101."""
    gw = kubernetes_gateway(LISTENER.format(name="http", hostname="reviews.example.com"), version=version)
    assert findings(gw, virtual_service("[istio-system/web]")) == []
    local = kubernetes_gateway(LISTENER.format(name="http", hostname="reviews.example.com"), namespace="bookinfo",
                               version=version)
    assert findings(local, virtual_service("[web]")) == []


def test_the_messages_say_which_gateway_was_found_or_looked_for():
    gw = kubernetes_gateway(LISTENER.format(name="a", hostname="ratings.example.com"))
    vs = virtual_service("\n  - istio-system/web\n  - istio-system/gw9")
    text = BASE + "---\n" + docs(gw, vs)
    host, missing, serves_nothing = load(snapshot_of({"mesh.yaml": text})).findings
    assert (host.code, missing.code, serves_nothing.code) == ("IST0132", "IST0101", "IST0132")
    assert host.message.startswith(
        "one or more host [reviews.example.com] defined in VirtualService bookinfo/test not found in Gateway "
        "istio-system/web: it is a Kubernetes Gateway (gateway.networking.k8s.io), whose listeners accept only "
        "'ratings.example.com', so")
    assert missing.message == (
        "Referenced gateway not found: 'istio-system/gw9' (looked for Gateway istio-system/gw9 of Istio "
        "(networking.istio.io), then of the Kubernetes Gateway API (gateway.networking.k8s.io)); "
        "use NAMESPACE/NAME or 'mesh'")
    assert serves_nothing.line == missing.line and serves_nothing.message == (
        "one or more host [reviews.example.com] defined in VirtualService bookinfo/test not found in Gateway "
        "istio-system/gw9: no Gateway of that name exists (neither an Istio Gateway nor a Kubernetes Gateway "
        "(gateway.networking.k8s.io)), so no gateway serves these hosts for this VirtualService; create the Gateway, "
        "or bind the VirtualService to one that serves them")
    istio = load(snapshot_of({"mesh.yaml": BASE + "---\n" + docs(gateway(server(8080, "[ratings.example.com]")),
                                                                      virtual_service("[istio-system/gw2]"))}))
    (finding,) = istio.findings
    assert "not found in Gateway istio-system/gw2: the Istio Gateway serves 'ratings.example.com'" in finding.message
    bare = load(snapshot_of({"mesh.yaml": BASE + "---\n" + docs(kubernetes_gateway("[]"),
                                                                     virtual_service("[istio-system/web]"))}))
    (finding,) = bare.findings
    assert "it is a Kubernetes Gateway (gateway.networking.k8s.io) without listeners, so" in finding.message


def test_an_istio_gateway_of_the_same_name_is_looked_up_first():
    """Istio's order: Istio's Gateways, then Gateway API ones. Of two Gateways named istio-system/web, the
    Istio one's hosts are those the VirtualService must match."""
    k8s = kubernetes_gateway(LISTENER.format(name="a", hostname="reviews.example.com"))
    istio = gateway(server(8080, "[ratings.example.com]"), name="web")
    assert codes(k8s, istio, virtual_service("[istio-system/web]")) == [("IST0132", "VirtualService/bookinfo/test")]
    istio = gateway(server(8080, "[reviews.example.com]"), name="web")
    k8s = kubernetes_gateway(LISTENER.format(name="a", hostname="ratings.example.com"))
    assert codes(k8s, istio, virtual_service("[istio-system/web]")) == []


def test_other_gateway_api_kinds_are_no_gateway():
    route = ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: istio-system}\n"
             "spec:\n  parentRefs: [{name: web}]\n  hostnames: [reviews.example.com]\n")
    assert codes(route, virtual_service("[istio-system/web]")) == [("IST0101", "VirtualService/bookinfo/test"),
                                                                    ("IST0132", "VirtualService/bookinfo/test")]


def test_a_kubernetes_gateway_is_checked_against_its_schema_and_named_as_written():
    gw = kubernetes_gateway("- name: http\n  hostname: [reviews.example.com]\n  port: 80\n  protocol: HTTP\n"
                            "  allowedRoutes: {namespaces: {from: All}}\n  tls: {mode: Terminate}\n")
    text = BASE + "---\n" + gw
    (finding,) = load(snapshot_of({"mesh.yaml": text})).findings
    assert (finding.code, finding.kind, finding.namespace, finding.name) == (
        "IST0106", "Gateway.gateway.networking.k8s.io", "istio-system", "web")
    assert finding.line == text.splitlines().index("      hostname: [reviews.example.com]") + 1
    assert "expected a string" in finding.message


def test_host_check_of_an_unchanged_virtual_service_follows_its_kubernetes_gateway_listeners():
    """The check's facts hold the Kubernetes Gateways' listener hostnames, and gateway-not-found's their
    names: a VirtualService in a file no revision touches is checked again when they change."""
    from compiler.revision import load
    files = {"mesh.yaml": BASE, "vs.yaml": virtual_service("[istio-system/web]")}
    revisions = [kubernetes_gateway(LISTENER.format(name="a", hostname="reviews.example.com")),
                 kubernetes_gateway(LISTENER.format(name="a", hostname="ratings.example.com")),
                 kubernetes_gateway(LISTENER.format(name="a", hostname="ratings.example.com") + NO_HOSTNAME),
                 kubernetes_gateway(NO_HOSTNAME, name="other"),
                 kubernetes_gateway(LISTENER.format(name="a", hostname="reviews.example.com"))]
    expected = [[], ["IST0132"], [], ["IST0101", "IST0132"], []]
    previous = None
    for n, gw in enumerate(revisions):
        snapshot = snapshot_of({**files, "gw.yaml": gw}, f"r{n}")
        revision = load(snapshot, previous) if previous else load(snapshot)
        if previous is not None:
            assert revision.parsed.files["vs.yaml"] is previous.parsed.files["vs.yaml"]
        assert [f.text() for f in revision.findings] == [f.text() for f in load(snapshot).findings]
        assert [f.code for f in revision.findings] == expected[n], n
        previous = revision
