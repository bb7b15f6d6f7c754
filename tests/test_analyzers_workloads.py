"""Istio's workload analyzers (compiler/validate/workloads.py): an application running as the proxy's
UID (IST0144), Services that disagree about a workload's ports (IST0116, IST0137), `image: auto`
without injection (IST0146, IST0147), and an ingress route that bypasses a host's subset routing
(IST0140); sidecar injection as the repository tells it (Namespace objects, pod labels)."""
from __future__ import annotations

import textwrap

import pytest

from compiler import kube
from compiler.model import build_mesh
from compiler.revision import load
from compiler.validate.workloads import injection
from tests.analyzer_cases import BASE
from tests.conftest import snapshot_of


def _block(text: str, indent: int) -> str:
    return textwrap.indent(textwrap.dedent(text).strip("\n"), " " * indent) + "\n"


def deployment(containers: str = "- {name: details, image: details:1}", labels: str = "{app: details}",
               name: str = "details", namespace: str = "bookinfo", kind: str = "Deployment", pod: str = "",
               template: str = "", metadata: str = "", mark: str = "") -> str:
    """A workload controller whose pod template has these labels, containers (a YAML list), pod spec
    fields ``pod`` and template metadata fields ``template``; ``mark`` ends the pod labels' line."""
    api = "batch/v1" if kind == "Job" else "apps/v1"
    return (f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}{metadata}}}\n"
            f"spec:\n  selector: {{matchLabels: {labels}}}\n  template:\n    metadata:\n      labels: {labels}{mark}\n"
            + (_block(template, 6) if template else "")
            + "    spec:\n" + (_block(pod, 6) if pod else "") + "      containers:\n" + _block(containers, 6))


def pod(containers: str = "- {name: details, image: details:1}", labels: str = "{app: details}",
        name: str = "details-1", namespace: str = "bookinfo", spec: str = "", metadata: str = "") -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {labels}\n"
            + (_block(metadata, 2) if metadata else "")
            + "spec:\n" + (_block(spec, 2) if spec else "") + "  containers:\n" + _block(containers, 2))


def namespace(name: str = "bookinfo", labels: str = "{istio-injection: enabled}") -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {labels}\n"


def service(name: str, ports: str, selector: str = "{app: details}", namespace: str = "bookinfo") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {selector}\n  ports:\n" + _block(ports, 2))


def virtual_service(name: str, hosts: str, http: str, gateways: str = "") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: bookinfo}}\n"
            f"spec:\n  hosts: {hosts}\n" + (f"  gateways: {gateways}\n" if gateways else "")
            + "  http:\n" + _block(http, 2))


def docs(*parts: str) -> str:
    return "---\n".join(parts)


PROXY_AUTO = "- {name: istio-proxy, image: auto}"
OPTED_OUT = "{app: details, sidecar.istio.io/inject: 'false'}"  # pods labelled not to be injected

CASES = {
    "invalid-application-uid": (
        deployment("- name: details\n  image: details:1\n  securityContext: {runAsUser: 1000}"),
        deployment("- name: details\n  image: details:1\n  securityContext:\n    runAsUser: 1337  # <-"),
    ),
    "deployment-associated-to-multiple-services": (
        docs(namespace(), deployment(), service("details", "- {name: tcp, port: 9080}"),
             service("details-udp", "- {name: udp, port: 9081, protocol: UDP}")),
        docs(namespace(), deployment(mark="  # <-"), service("details", "- {name: tcp, port: 9080}"),
             service("details-udp", "- {name: udp, port: 9080, protocol: UDP}")),
    ),
    "deployment-conflicting-ports": (
        docs(namespace(), deployment(), service("details", "- {name: http, port: 9080, targetPort: 9080}"),
             service("details-admin", "- {name: http, port: 9090, targetPort: 9090}")),
        docs(namespace(), pod(labels="{app: details}  # <-"),
             service("details", "- {name: http, port: 9080, targetPort: 9080}"),
             service("details-admin", "- {name: http, port: 9090, targetPort: 9080}")),
    ),
    "image-auto-without-injection-error": (
        pod(PROXY_AUTO, labels="{app: gw, sidecar.istio.io/inject: 'true'}"),
        docs(namespace(labels="{team: a}"), pod("- name: istio-proxy\n  image: auto  # <-", labels="{app: gw}")),
    ),
    "image-auto-without-injection-warning": (
        docs(namespace(), deployment(PROXY_AUTO, labels="{app: gw}")),
        deployment("- name: istio-proxy\n  image: auto  # <-", labels="{app: gw, sidecar.istio.io/inject: 'false'}"),
    ),
    "ingress-route-rules-not-affected": (
        docs(virtual_service("reviews", "[reviews]", "- route:\n  - destination: {host: reviews, subset: v1}"),
             virtual_service("from-gw", "[reviews.example.com]",
                             "- route:\n  - destination: {host: reviews, subset: v1}", "[istio-system/ingress]")),
        docs(virtual_service("reviews", "[reviews]", "- route:\n  - destination: {host: reviews, subset: v1}"),
             virtual_service("from-gw", "[reviews.example.com]",
                             "- route:\n  - destination: {host: reviews}  # <-", "[istio-system/ingress]")),
    ),
}


def findings(*parts: str) -> list[tuple[str, str, int]]:
    """(code, object, line) of every finding of BASE with these documents, the line counted in the
    documents (their first line is 1)."""
    head = BASE + "---\n"
    offset = len(head.splitlines())
    return sorted((f.code, f"{f.kind}/{f.namespace}/{f.name}", f.line - offset)
                  for f in load(snapshot_of({"mesh.yaml": head + docs(*parts)})).findings)


def codes(*parts: str) -> list[tuple[str, str]]:
    return [(code, obj) for code, obj, _ in findings(*parts)]


def messages(*parts: str) -> list[str]:
    return [f.message for f in load(snapshot_of({"m.yaml": BASE + "---\n" + docs(*parts)})).findings]


def uid(value: int = 1337) -> str:
    return f"securityContext: {{runAsUser: {value}}}"


# --- IST0144 --------------------------------------------------------------------------------------------

def test_a_pod_level_uid_counts_for_the_containers_that_do_not_set_their_own():
    own = "- {name: a, image: a, securityContext: {runAsUser: 1000}}"
    inherits = "- {name: b, image: b}"
    assert codes(deployment(own, pod=uid())) == []  # every container runs as another user
    assert findings(deployment(own + "\n" + inherits, pod=uid())) == [("IST0144", "Deployment/bookinfo/details", 10)]
    assert "makes container 'b' run as it" in messages(deployment(own + "\n" + inherits, pod=uid()))[0]
    # a container's own 1337 and the pod's, inherited by another: two fields, two findings
    both = "- {name: a, image: a, securityContext: {runAsUser: 1337}}\n" + inherits
    assert [line for _, _, line in findings(pod(both, spec=uid()))] == [8, 10]


def test_the_proxy_and_istio_itself_may_run_as_1337():
    proxy = "- {name: app, image: app}\n- {name: istio-proxy, image: proxyv2, securityContext: {runAsUser: 1337}}"
    assert codes(pod(proxy)) == []
    assert codes(pod("- {name: istio-operator, image: op, securityContext: {runAsUser: 1337}}")) == []
    # Istio's control plane and gateways: a label istio (on the object or its pods), or release: istio
    assert codes(deployment(labels="{app: gw, istio: ingressgateway}", pod=uid())) == []
    assert codes(deployment(metadata=", labels: {release: istio}", pod=uid())) == []
    # init containers run before the proxy's traffic capture matters (Istio's analyzer skips them too)
    assert codes(pod(spec="initContainers: [{name: init, image: i, securityContext: {runAsUser: 1337}}]")) == []


def test_the_uid_matters_only_to_pods_with_a_sidecar():
    assert codes(deployment(pod=uid(), labels=OPTED_OUT)) == []
    assert codes(namespace(labels="{istio-injection: disabled}"), deployment(pod=uid())) == []
    assert codes(deployment(pod=uid(), namespace="kube-system")) == []
    # a sidecar injected by hand counts, whatever the labels say
    by_hand = "- {name: details, image: d}\n- {name: istio-proxy, image: proxyv2}"
    assert codes(deployment(by_hand, pod=uid(), labels=OPTED_OUT)) == [("IST0144", "Deployment/bookinfo/details")]
    # no Namespace object: the pods may be injected
    for kind in ("StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        assert codes(deployment(kind=kind, pod=uid())) == [("IST0144", f"{kind}/bookinfo/details")]


def test_odd_containers_do_not_break_the_uid_check():
    for containers in ("oops", "[oops, {securityContext: oops}, {securityContext: {runAsUser: '1337'}}]",
                       "{name: c}"):
        text = deployment().replace("      containers:\n      - {name: details, image: details:1}\n",
                                    f"      containers: {containers}\n")
        assert f"containers: {containers}" in text
        assert codes(text) == []
        # with the pod's user 1337, a container that sets no user of its own runs as it
        assert codes(text.replace("    spec:\n", "    spec:\n      securityContext: {runAsUser: 1337}\n")) == (
            [("IST0144", "Deployment/bookinfo/details")] if "oops}" in containers else [])
    # the pod's own user is typed, as Kubernetes types it
    assert codes(pod(spec="securityContext: {runAsUser: '1337'}")) == [("IST0106", "Pod/bookinfo/details-1")]


# --- IST0116 / IST0137 ----------------------------------------------------------------------------------

TCP_9080 = service("details", "- {name: tcp, port: 9080}")
UDP_9080 = service("details-udp", "- {name: udp, port: 9080, protocol: UDP}")


def test_services_are_compared_only_for_workloads_known_to_run_a_sidecar():
    assert codes(deployment(), TCP_9080, UDP_9080) == []  # no Namespace object, no label: no verdict
    assert codes(namespace(labels="{team: a}"), deployment(), TCP_9080, UDP_9080) == []
    assert codes(namespace(), deployment(labels=OPTED_OUT), TCP_9080, UDP_9080) == []
    in_mesh = [("IST0116", "Deployment/bookinfo/details")]
    assert codes(namespace(), deployment(), TCP_9080, UDP_9080) == in_mesh
    assert codes(namespace(labels="{istio.io/rev: canary}"), deployment(), TCP_9080, UDP_9080) == in_mesh
    assert codes(deployment(labels="{app: details, sidecar.istio.io/inject: 'true'}"), TCP_9080, UDP_9080) == in_mesh
    assert codes(deployment("- {name: d, image: d}\n- {name: istio-proxy, image: proxyv2}"), TCP_9080, UDP_9080) == \
        in_mesh
    # Istio's waypoints are Istio's business
    assert codes(namespace(), deployment(metadata=", labels: {gateway.istio.io/managed: istio.io-mesh-controller}"),
                 TCP_9080, UDP_9080) == []


def test_only_services_of_the_workloads_namespace_with_a_selector_count():
    other = service("details-udp", "- {name: udp, port: 9080, protocol: UDP}", namespace="default")
    assert codes(namespace(), deployment(), TCP_9080, other) == []
    no_selector = UDP_9080.replace("selector: {app: details}", "selector: {}")
    assert codes(namespace(), deployment(), TCP_9080, no_selector) == []
    assert codes(namespace(), deployment(labels="{app: ratings}"), TCP_9080, UDP_9080) == []


def test_the_protocol_compared_is_the_kubernetes_field_as_written():
    # Istio's analyzer compares the field (TCP when unset, or empty); its test data writes HTTP there,
    # which Kubernetes refuses but Galleon reads
    http = service("details-http", "- {name: http, port: 9080, protocol: HTTP}")
    assert codes(namespace(), deployment(), TCP_9080, http) == [("IST0116", "Deployment/bookinfo/details")]
    empty = service("details-2", "- {name: tcp-2, port: 9080, protocol: ''}")
    assert codes(namespace(), deployment(), TCP_9080, empty) == []
    text = messages(namespace(), deployment(), TCP_9080, UDP_9080)[0]
    assert text.startswith("This deployment details is associated with multiple services using port 9080 but different "
                           "protocols: [bookinfo/details bookinfo/details-udp] (TCP by bookinfo/details, UDP by "
                           "bookinfo/details-udp)")


def test_one_service_alone_does_not_disagree_with_itself():
    dns = service("dns", "- {name: dns-tcp, port: 53}\n- {name: dns, port: 53, protocol: UDP}")
    assert codes(namespace(), deployment(), dns) == []
    two_ports = service("web", "- {name: http, port: 80, targetPort: 8080}\n- {name: http-alt, port: 8080}")
    assert codes(namespace(), deployment(), two_ports) == []
    assert codes(namespace(), deployment(), two_ports, service("web-2", "- {name: http, port: 80}")) == []


def test_target_ports_as_istio_keys_them_with_named_ports_resolved():
    a = service("a", "- {name: http, port: 80, targetPort: http}")
    b = service("b", "- {name: http, port: 8080, targetPort: 9080}")
    named = deployment("- name: details\n  image: d\n  ports: [{name: http, containerPort: 9080}]")
    assert codes(namespace(), named, a, b) == [("IST0137", "Deployment/bookinfo/details")]
    assert "using targetPort '9080' but different ports: [80 8080]" in messages(namespace(), named, a, b)[0]
    assert codes(namespace(), deployment(), a, b) == []  # a name no container gives: another port
    # an unset target port (or 0, or a numeric string) is the port itself
    c = service("c", "- {name: http, port: 9080}")
    d = service("d", "- {name: http, port: 9090, targetPort: '9080'}")
    assert codes(namespace(), deployment(), c, d) == [("IST0137", "Deployment/bookinfo/details")]
    e = service("e", "- {name: http, port: 9080, targetPort: 0}")
    assert codes(namespace(), deployment(), c, e) == []


def test_every_workload_kind_is_associated_with_its_services():
    for kind in ("StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        assert codes(namespace(), deployment(kind=kind), TCP_9080, UDP_9080) == [("IST0116", f"{kind}/bookinfo/details")]
    assert findings(namespace(), pod(), TCP_9080, UDP_9080) == [("IST0116", "Pod/bookinfo/details-1", 12)]


# --- sidecar injection, IST0146 / IST0147 ----------------------------------------------------------------

@pytest.mark.parametrize("namespace_labels, labels, annotations, spec, injected", [
    (None, "{}", "{}", "", None),  # the repository holds no Namespace object: no verdict
    (None, "{sidecar.istio.io/inject: 'true'}", "{}", "", True),
    (None, "{istio.io/rev: canary}", "{}", "", True),
    (None, "{sidecar.istio.io/inject: 'false'}", "{}", "", False),
    (None, "{}", "{sidecar.istio.io/inject: 'false'}", "", False),
    (None, "{sidecar.istio.io/inject: 'true'}", "{}", "hostNetwork: true", False),
    ("{istio-injection: enabled}", "{}", "{}", "", True),
    ("{istio-injection: enabled}", "{}", "{sidecar.istio.io/inject: 'false'}", "", False),
    # the label wins over the annotation (Istio's injector)
    ("{istio-injection: enabled}", "{sidecar.istio.io/inject: 'true'}", "{sidecar.istio.io/inject: 'false'}", "", True),
    ("{istio-injection: disabled}", "{sidecar.istio.io/inject: 'true'}", "{}", "", False),
    ("{istio-injection: disabled, istio.io/rev: canary}", "{}", "{}", "", False),
    ("{istio.io/rev: canary}", "{}", "{}", "", True),
    ("{istio.io/rev: canary}", "{sidecar.istio.io/inject: 'false'}", "{}", "", False),
    ("{}", "{}", "{}", "", False),
    ("{}", "{sidecar.istio.io/inject: 'true'}", "{}", "", True),
    ("{}", "{istio.io/rev: stable}", "{}", "", True),
    # an annotation alone calls no webhook: the webhooks' selectors read labels
    ("{}", "{}", "{sidecar.istio.io/inject: 'true'}", "", False),
])
def test_injection_as_istios_webhooks_and_injector_decide_it(namespace_labels, labels, annotations, spec, injected):
    text = pod(labels=labels, metadata=f"annotations: {annotations}", spec=spec)
    if namespace_labels is not None:
        text = docs(namespace(labels=namespace_labels), text)
    objects = load(snapshot_of({"m.yaml": text})).objects
    (the_pod,) = [o for o in objects if o.kind == "Pod"]
    table = {ns.name: {k: v for k, v in ns.labels.items() if k in ("istio-injection", "istio.io/rev")}
             for ns in objects if ns.kind == "Namespace"}
    verdict, why = injection(the_pod, table.get("bookinfo"))
    assert verdict is injected
    assert bool(why) == (injected is False)


def test_kubernetes_own_namespaces_are_never_injected():
    assert codes(deployment(PROXY_AUTO, labels="{app: gw}", namespace="kube-system")) == [
        ("IST0146", "Deployment/kube-system/details")]


def test_image_auto_gives_an_error_on_a_pod_and_a_warning_on_a_controller():
    opted_out = "{app: gw, sidecar.istio.io/inject: 'false'}"
    assert codes(pod(PROXY_AUTO, labels=opted_out), deployment(PROXY_AUTO, labels=opted_out)) == [
        ("IST0146", "Deployment/bookinfo/details"), ("IST0147", "Pod/bookinfo/details-1")]
    text = messages(namespace(labels="{istio-injection: disabled}"), deployment(PROXY_AUTO))[0]
    assert text.startswith("Deployment details contains `image: auto` but does not match any Istio injection webhook "
                           "selectors: its namespace 'bookinfo' is labelled istio-injection=disabled")
    # only the proxy container's image is filled in; another container named otherwise is left alone
    assert codes(pod("- {name: app, image: auto}", labels=opted_out)) == []


def test_no_verdict_without_the_namespace_and_the_namespace_of_the_workloads_cluster():
    assert codes(deployment(PROXY_AUTO)) == []  # Istio's test expects IST0146 here: its analyzer finds no namespace
    # a Namespace per cluster: the workload's cluster's, else one without a cluster label
    east = ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n"
            "  labels: {topology.istio.io/cluster: east, istio-injection: enabled}\n")
    west = east.replace("east", "west").replace("enabled", "disabled")
    in_west = deployment(PROXY_AUTO, metadata=", labels: {topology.istio.io/cluster: west}")
    in_east = deployment(PROXY_AUTO, metadata=", labels: {topology.istio.io/cluster: east}")
    assert codes(east, west, in_west) == [("IST0146", "Deployment/bookinfo/details")]
    assert codes(east, west, in_east) == []
    # a workload without a cluster label, between Namespaces that disagree: no verdict
    assert codes(east, west, deployment(PROXY_AUTO)) == []
    assert codes(west, deployment(PROXY_AUTO)) == [("IST0146", "Deployment/bookinfo/details")]
    unlabelled = namespace(labels="{istio-injection: disabled}")
    assert codes(unlabelled, in_east) == [("IST0146", "Deployment/bookinfo/details")]


def test_namespaces_are_cluster_scoped_objects():
    twice = namespace() + "---\n" + namespace().replace("  name: bookinfo\n", "  name: bookinfo\n  namespace: other\n")
    assert codes(twice) == [("GAL0002", "Namespace/other/bookinfo")]
    east = namespace(labels="{topology.istio.io/cluster: east}")
    assert codes(east, namespace(labels="{topology.istio.io/cluster: west}")) == []
    # a Namespace is no proxy's configuration: the mesh's digest leaves it out
    objects = load(snapshot_of({"m.yaml": BASE})).objects
    with_namespace = load(snapshot_of({"m.yaml": BASE + "---\n" + namespace()})).objects
    assert build_mesh(objects).digest == build_mesh(with_namespace).digest


# --- IST0140 ---------------------------------------------------------------------------------------------

SUBSETS = virtual_service("reviews", "[reviews]", "- route:\n  - destination: {host: reviews, subset: v1}")


def from_gateway(destination: str = "{host: reviews}", gateways: str = "[istio-system/ingress]",
                 name: str = "from-gw") -> str:
    return virtual_service(name, f"[{name}.example.com]", f"- route:\n  - destination: {destination}", gateways)


def test_route_rules_of_a_host_are_bypassed_by_a_gateways_route_to_it():
    assert codes(from_gateway()) == []  # no VirtualService routes reviews by subsets
    assert codes(SUBSETS, from_gateway()) == [("IST0140", "VirtualService/bookinfo/from-gw")]
    assert codes(SUBSETS, from_gateway(gateways="")) == []  # bound to no gateway
    # any gateways, even only the mesh (Istio's condition)
    assert codes(SUBSETS, from_gateway(gateways="[mesh]")) == [("IST0140", "VirtualService/bookinfo/from-gw")]
    text = messages(SUBSETS, from_gateway())[0]
    assert text.startswith("Subset in virtual service bookinfo/reviews has no effect on ingress gateway "
                           "bookinfo/from-gw requests")


def test_hosts_are_compared_as_written():
    # Istio compares the strings: the subset route's host must be one of its VirtualService's hosts,
    # and the gateway route's host that same string
    assert codes(SUBSETS, from_gateway("{host: reviews.bookinfo.svc.cluster.local}")) == []
    # a VirtualService for reviews routing ratings by subsets is not ratings' routing (its other findings:
    # no subset v1 for ratings, and ratings has two ports)
    elsewhere = virtual_service("reviews", "[reviews]", "- route:\n  - destination: {host: ratings, subset: v1}")
    assert "IST0140" not in {code for code, _ in codes(elsewhere, from_gateway("{host: ratings}"))}


def test_every_subset_virtual_service_is_named_once_in_order():
    # (bound to a gateway: two VirtualServices of the mesh for one host are IST0109)
    second = virtual_service("reviews-2", "[reviews]", "- route:\n  - destination: {host: reviews, subset: v2}",
                             "[istio-system/ingress]")
    route_twice = virtual_service("from-gw", "[from-gw.example.com]",
                                  "- route:\n  - destination: {host: reviews}\n    weight: 50\n"
                                  "  - destination: {host: reviews}\n    weight: 50", "[istio-system/ingress]")
    found = [m for m in messages(SUBSETS, second, route_twice)]
    assert [m.split(" has no effect")[0] for m in found] == [
        "Subset in virtual service bookinfo/reviews", "Subset in virtual service bookinfo/reviews-2"] * 2
    # a VirtualService that routes its own host both ways is named itself
    own = virtual_service("reviews", "[reviews]", "- match: [{headers: {end-user: {exact: jason}}}]\n"
                          "  route:\n  - destination: {host: reviews, subset: v1}\n"
                          "- route:\n  - destination: {host: reviews}", "[istio-system/ingress, mesh]")
    assert findings(own) == [("IST0140", "VirtualService/bookinfo/reviews", 12)]


# --- Kubernetes Service port protocols -------------------------------------------------------------------

def test_a_service_port_protocol_is_any_name_and_only_udp_is_read():
    http = service("details", "- {name: http-web, port: 9080, protocol: HTTP}")
    assert codes(http) == []  # read, not refused (IST0106); the name says HTTP
    unnamed = service("details", "- {name: web, port: 9080, protocol: HTTP}")
    assert codes(unnamed) == [("IST0118", "Service/bookinfo/details")]  # the field does not name the protocol
    both = service("details", "- {name: http-web, port: 9080, protocol: HTTP}\n- {name: web, port: 53, protocol: UDP}\n"
                   "- {name: tcp, port: 9090, protocol: udp}\n- {name: grpc, port: 9091, protocol: ''}")
    (read,) = [o for o in load(snapshot_of({"m.yaml": both})).objects if o.kind == "Service"]
    assert [(p.protocol, p.kubernetes_protocol) for p in kube.service_ports(read)] == [
        ("HTTP", "HTTP"), ("UDP", "UDP"), ("TCP", "udp"), ("GRPC", "TCP")]  # only UDP, as Kubernetes spells it


def test_an_unchanged_workload_is_checked_again_when_its_namespaces_labels_change():
    """The image and UID checks are local, with the Namespaces' injection labels as their fact: a
    Deployment in a file no revision touches gets the findings a fresh validation gives."""
    from compiler.revision import load
    workload = deployment("- {name: app, image: app}\n" + PROXY_AUTO, labels="{app: gw}", pod=uid())
    revisions = [{}, {"ns.yaml": namespace(labels="{istio-injection: disabled}")},
                 {"ns.yaml": namespace(labels="{istio-injection: disabled, team: a}")},
                 {"ns.yaml": namespace()}, {"ns.yaml": namespace(labels="{istio-injection: disabled}")}]
    previous = None
    seen = []
    for n, extra in enumerate(revisions):
        files = {"mesh.yaml": BASE, "gw.yaml": workload, **extra}
        loaded = load(snapshot_of(files, f"r{n}"), previous)
        if previous is not None:
            assert loaded.parsed.files["gw.yaml"] is previous.parsed.files["gw.yaml"]
        fresh = load(snapshot_of(files))
        assert [f.text() for f in loaded.findings] == [f.text() for f in fresh.findings]
        seen.append(sorted(f.code for f in loaded.findings))
        previous = loaded
    # no Namespace: the proxy may come, and run beside an app as 1337; disabled: no proxy, a broken image
    assert seen == [["IST0144"], ["IST0146"], ["IST0146"], ["IST0144"], ["IST0146"]]
