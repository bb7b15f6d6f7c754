"""Sidecars (IST0101 selectors, IST0110, IST0111), Kubernetes Service port names (IST0118, IST0150),
MeshNetworks registries (IST0126) in either spelling, networks (GAL0109) and EndpointSlices Galleon
cannot place (GAL0120): cases added to test_analyzers.BASE, and their corner cases."""
from __future__ import annotations

import textwrap

import pytest

from compiler import meshnetworks
from compiler.model import build_mesh
from compiler.scope import visible_services
from compiler.revision import load
from compiler.view import make_view
from tests.conftest import ONE_CLUSTER, check, snapshot_of
from tests.analyzer_cases import BASE, check_failing, check_passing


def sidecar(name: str, spec: str | None = "", namespace: str = "bookinfo") -> str:
    text = f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
    if spec is None:
        return text
    if not spec:
        return text + "spec: {}\n"
    return text + "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"


def selecting(name: str, labels: str, namespace: str = "bookinfo", marked: bool = False) -> str:
    return sidecar(name, f"workloadSelector:\n  labels: {{{labels}}}{'  # <-' if marked else ''}\n"
                         "egress:\n- hosts: ['./*']", namespace)


def deployment(name: str, labels: str, namespace: str = "shop") -> str:
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {{matchLabels: {{{labels}}}}}\n  template:\n    metadata: {{labels: {{{labels}}}}}\n")


def pod(name: str, labels: str, namespace: str = "shop") -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{{labels}}}\n"


def service(name: str, ports: str, extra: str = "", labels: str = "", namespace: str = "shop") -> str:
    meta = f"metadata:\n  name: {name}\n  namespace: {namespace}\n" + (f"  labels: {{{labels}}}\n" if labels else "")
    return (f"apiVersion: v1\nkind: Service\n{meta}spec:\n{extra}  ports:\n"
            + textwrap.indent(textwrap.dedent(ports).strip("\n"), "  ") + "\n")


def mesh_networks(endpoints: str, name: str = "extra", network: str = "network-1") -> str:
    return (f"apiVersion: galleon.io/v1alpha1\nkind: MeshNetworks\n"
            f"metadata: {{name: {name}, namespace: istio-system}}\n"
            f"spec:\n  networks:\n    {network}:\n      endpoints:\n"
            + textwrap.indent(textwrap.dedent(endpoints).strip("\n"), "      ") + "\n")


def cluster(name: str, spec: str = "{network: network-1, locality: us-east/us-east-1b}") -> str:
    return (f"apiVersion: galleon.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, namespace: istio-system}}\n"
            f"spec: {spec}\n")


def endpoint_slice(name: str, labels: str = "kubernetes.io/service-name: web", namespace: str = "shop",
                   marked: bool = False) -> str:
    meta = f"metadata:\n  name: {name}\n  namespace: {namespace}\n"
    meta += f"  labels: {{{labels}}}{'  # <-' if marked else ''}\n" if labels else ""
    return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n{meta}addressType: IPv4\n"
            "ports: [{name: http, port: 8080}]\nendpoints:\n- addresses: [10.1.5.1]\n")


AMBIENT_SHOP = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio.io/dataplane-mode: ambient}\n"
REVIEWS_V1 = deployment("reviews-v1", "app: reviews, version: v1", namespace="bookinfo")
WEB = service("web", "- {name: http, port: 80, targetPort: 8080}", extra="  selector: {app: web}\n")

CASES = {
    "sidecar-selector-not-found": (
        selecting("reviews", "app: reviews"),
        selecting("productpage", "app: productpage", marked=True),
    ),
    "sidecar-selector-matches-nothing": (
        selecting("web", "app: web", namespace="shop") + "---\n" + deployment("web", "app: web"),
        selecting("web", "app: web", namespace="shop", marked=True),
    ),
    "conflicting-sidecar-selectors": (
        REVIEWS_V1 + "---\n" + selecting("reviews", "app: reviews") + "---\n" + selecting("ratings", "app: ratings"),
        REVIEWS_V1 + "---\n" + selecting("reviews", "app: reviews", marked=True) + "---\n"
        + selecting("v1", "version: v1", marked=True),
    ),
    "multiple-sidecars-without-selector": (
        sidecar("default", None) + "---\n" + selecting("reviews", "app: reviews"),
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default  # <-\n  namespace: bookinfo\n"
        "---\n" + sidecar("other", "workloadSelector: {}  # <-"),
    ),
    "port-name-not-under-convention": (
        WEB + "---\n" + service("db", "- {name: mysql-main, port: 3306}\n- {port: 53, protocol: UDP}\n"
                                      "- {name: web, port: 8080, appProtocol: http}"),
        service("db", "- port: 8080\n  name: web  # <-\n- port: 8081\n  name: http\n  appProtocol: foo  # <-"),
    ),
    "external-name-port-name": (
        service("ext", "- {name: https, port: 443}\n- {name: tcp-db, port: 5432}",
                extra="  type: ExternalName\n  externalName: db.example.com\n"),
        service("ext", "- port: 443\n  name: tcp  # <-\n- port: 80  # <-",
                extra="  type: ExternalName\n  externalName: db.example.com\n"),
    ),
    "endpoint-slice-without-service": (
        WEB + "---\n" + endpoint_slice("web-abc"),
        WEB + "---\n" + endpoint_slice("web-abc", labels="app: web", marked=True),
    ),
    "endpoints-in-no-cluster": (
        cluster("cluster-b") + "---\n" + WEB + "---\n"
        + endpoint_slice("web-abc", labels="kubernetes.io/service-name: web, topology.istio.io/cluster: cluster-b"),
        cluster("cluster-b") + "---\n" + WEB + "---\n" + endpoint_slice("web-abc", marked=True),
    ),
    "negative-condition-status": (
        WEB + "status:\n  conditions:\n  - {type: istio.io/WaypointBound, status: 'True'}\n"
        "  - {type: argocd.argoproj.io/Synced, status: 'False', reason: OutOfSync}\n",
        WEB + "status:\n  conditions:\n  - type: istio.io/WaypointBound  # <-\n    status: 'False'\n"
        "    reason: NoWaypoint\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        "metadata: {name: web, namespace: shop}\nspec:\n  gatewayClassName: istio\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n"
        "status:\n  conditions:\n  - {type: Accepted, status: 'True'}\n  - {type: Programmed, status: 'False'}  # <-\n",
    ),
    "ambient-sidecar": (
        AMBIENT_SHOP + "---\n" + pod("web-1", "app: web, istio.io/dataplane-mode: none") + "---\n"
        + selecting("web", "app: web", namespace="shop"),
        AMBIENT_SHOP + "---\n" + deployment("web", "app: web") + "---\n"
        + selecting("web", "app: web", namespace="shop", marked=True) + "---\n"
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default  # <-\n  namespace: shop\n",
    ),
    "unknown-mesh-networks-registry": (
        cluster("cluster-b") + "---\n" + mesh_networks("- from_registry: cluster-b"),
        mesh_networks("- from_registry: cluster-c  # <-\n- fromRegistry: Kubernetes  # <-"),
    ),
}



def findings_of(*documents: str, base: str = BASE) -> list[tuple[str, str, str, str]]:
    """(code, level, kind namespace/name, message) of every finding of BASE plus these documents."""
    text = "---\n".join([base, *documents]) if base else "---\n".join(documents)
    return [(f.code, f.level.value, f"{f.kind} {f.namespace}/{f.name}", f.message)
            for f in load(snapshot_of({"mesh.yaml": text})).findings]


def codes_of(*documents: str, base: str = BASE) -> list[tuple[str, str, str]]:
    return sorted((code, level, obj) for code, level, obj, _ in findings_of(*documents, base=base))


# --- Sidecars -------------------------------------------------------------------------------------

def test_a_sidecar_without_spec_or_with_an_empty_one_is_valid_and_imports_every_service():
    for text in (sidecar("default", None), sidecar("default", "")):
        result = load(snapshot_of({"mesh.yaml": BASE + "---\n" + text}))
        assert result.findings == []
        mesh = build_mesh(result.objects)
        (sc,) = mesh.sidecars
        view = make_view(mesh, "cluster-a", "sidecar~10.1.0.9~p.bookinfo~bookinfo.svc.cluster.local")
        assert [s.host for s in visible_services(mesh, view)] == sorted(mesh.services)


def test_dot_in_the_root_namespaces_default_sidecar_is_each_proxys_own_namespace():
    # Istio's mesh-wide default (a Sidecar without selector in the root namespace) is converted for each
    # proxy's namespace: "./*" imports the proxy's namespace, not istio-system.
    shop = service("web", "- {name: http, port: 80}", extra="  selector: {app: web}\n")
    root = sidecar("default", "egress:\n- hosts: ['./*']", namespace="istio-system")
    local = sidecar("default", "egress:\n- hosts: ['./*', 'bookinfo/ratings.bookinfo.svc.cluster.local']",
                    namespace="shop")
    for documents, expected in (
            ((shop, root), {"bookinfo": ["ratings", "reviews"], "shop": ["web"]}),
            ((shop, root, local), {"bookinfo": ["ratings", "reviews"], "shop": ["ratings", "web"]})):
        mesh = build_mesh(load(snapshot_of({"mesh.yaml": "---\n".join((BASE, *documents))})).objects)
        for namespace, names in expected.items():
            view = make_view(mesh, "cluster-a", f"sidecar~10.1.0.9~p.{namespace}~{namespace}.svc.cluster.local")
            assert [s.host.split(".")[0] for s in visible_services(mesh, view)] == names, namespace


def test_sidecars_without_selector_conflict_only_within_one_namespace():
    assert codes_of(sidecar("a", None), sidecar("b", None, namespace="shop"),
                    sidecar("c", "", namespace="istio-system")) == []
    assert codes_of(sidecar("a", None), sidecar("b", ""), sidecar("c", "workloadSelector: {labels: {}}"),
                    selecting("d", "app: reviews")) == [
        ("IST0111", "error", "Sidecar bookinfo/a"), ("IST0111", "error", "Sidecar bookinfo/b"),
        ("IST0111", "error", "Sidecar bookinfo/c")]
    (_, _, _, message), *_ = findings_of(sidecar("b", None), sidecar("a", None))
    assert message.startswith("The Sidecars [a b] in namespace 'bookinfo' have no workload selector")


def test_a_sidecar_selector_is_matched_in_its_own_namespace_only():
    # bookinfo has workloads (the endpoints of BASE), so a selector matching none there is an error, even
    # when another namespace has a match; a namespace without any workload gets a warning
    other = deployment("web", "app: web", namespace="shop")
    assert codes_of(other, selecting("web", "app: web")) == [("IST0101", "error", "Sidecar bookinfo/web")]
    assert codes_of(other, selecting("web", "app: web", namespace="store")) == [
        ("IST0101", "warning", "Sidecar store/web")]
    assert codes_of(other, selecting("web", "app: web", namespace="shop")) == []
    # every label must match; the pods of workload manifests, Pods and WorkloadEntries all count
    assert codes_of(other, selecting("web", "app: web, version: v2", namespace="shop")) == [
        ("IST0101", "error", "Sidecar shop/web")]
    vm = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: shop}\n"
          "spec: {address: 10.1.9.9, labels: {app: vm}}\n")
    assert codes_of(other, vm, pod("p", "app: pod"), selecting("vm", "app: vm", namespace="shop"),
                    selecting("pod", "app: pod", namespace="shop")) == []


def test_a_selector_not_found_says_what_the_namespace_holds():
    (_, level, _, message), = findings_of(deployment("web", "app: web"), pod("db", "app: db"),
                                           selecting("x", "tier: front, app: web", namespace="shop"))
    assert level == "error"
    assert message.startswith("Referenced selector not found: 'app=web,tier=front': no workload of namespace 'shop'")
    assert "(Deployment web, Pod db in the repository)" in message


def test_conflicting_sidecars_are_reported_once_each_naming_every_workload_they_share():
    shared = [pod("p1", "app: web, tier: a"), pod("p2", "app: web, tier: a"), deployment("d", "app: web, tier: b")]
    sidecars = [selecting("web", "app: web", namespace="shop"), selecting("tier-a", "tier: a", namespace="shop"),
                selecting("tier-b", "tier: b", namespace="shop")]
    found = findings_of(*shared, *sidecars)
    assert sorted((code, obj) for code, _, obj, _ in found) == [
        ("IST0110", "Sidecar shop/tier-a"), ("IST0110", "Sidecar shop/tier-b"), ("IST0110", "Sidecar shop/web")]
    messages = {obj: message for _, _, obj, message in found}
    assert messages["Sidecar shop/web"].startswith(
        "The Sidecars [tier-a web] in namespace 'shop' select the same workloads (Pod p1, Pod p2), "
        "and [tier-b web] the same workload (Deployment d), which can lead to undefined behavior")
    assert messages["Sidecar shop/tier-a"].startswith(
        "The Sidecars [tier-a web] in namespace 'shop' select the same workloads (Pod p1, Pod p2), which")
    # the same documents in another order give the same findings
    again = findings_of(*reversed(sidecars), *reversed(shared))
    assert sorted(again) == sorted(found)


def test_sidecar_conflicts_count_proxies_not_the_endpoints_service_entries_write():
    # BASE's ServiceEntry endpoints carry app=reviews, version=v1: not proxies a Sidecar applies to
    assert codes_of(selecting("a", "app: reviews"), selecting("b", "version: v1")) == []
    vm = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: bookinfo}\n"
          "spec: {address: 10.1.9.9, labels: {app: reviews, version: v1}}\n")
    assert codes_of(vm, selecting("a", "app: reviews"), selecting("b", "version: v1")) == [
        ("IST0110", "error", "Sidecar bookinfo/a"), ("IST0110", "error", "Sidecar bookinfo/b")]
    # overlapping selectors that pick no common workload are no conflict
    assert codes_of(pod("p", "app: web", namespace="bookinfo"), selecting("a", "app: web"),
                    selecting("b", "app: web, version: v9"), base=BASE) == [("IST0101", "error", "Sidecar bookinfo/b")]


# --- Service port names ----------------------------------------------------------------------------

@pytest.mark.parametrize("ports, reported", [
    ("- {name: http, port: 80}\n- {name: HTTP-web, port: 81}\n- {name: grpc-webfoo, port: 82}\n"
     "- {name: tcp, port: 83}\n- {name: https-443, port: 84}\n- {name: http_proxy, port: 85}", []),
    ("- {port: 3306}\n- {port: 25}\n- {name: dns, port: 53}\n- {port: 27017}", []),  # server-first well-known ports
    ("- {port: 9999, protocol: UDP}\n- {name: x, port: 9998, protocol: UDP}", []),
    ("- {name: web, port: 80, appProtocol: http}\n- {name: x, port: 81, appProtocol: kubernetes.io/h2c}", []),
    ("- {port: 8080}", [("name", 0)]),  # no name: reported at the port
    ("- {name: http2foo, port: 80}\n- {name: status-port, port: 81}\n- {name: hbone, port: 82}", [
        ("name", 0), ("name", 1), ("name", 2)]),
    ("- {name: http, port: 80, appProtocol: foo}\n- {name: http, port: 81, appProtocol: ''}", [
        ("appProtocol", 0), ("appProtocol", 1)]),  # appProtocol, when written, decides alone
    ("- {name: x, port: 80, protocol: SCTP}", [("name", 0)]),
])
def test_port_names_follow_istios_protocol_selection(ports, reported):
    found = findings_of(service("svc", ports), base=ONE_CLUSTER)
    assert [(code, level) for code, level, _, _ in found] == [("IST0118", "info")] * len(reported)
    assert len({message for *_, message in found}) == len(found)


def test_port_name_findings_point_at_the_field_that_decides():
    text = ONE_CLUSTER + "---\n" + service("svc", """
        - port: 8080
          targetPort: web
        - name: foo
          port: 8081
        - name: http
          port: 8082
          appProtocol: bar
        """)
    lines = text.splitlines()
    found = sorted((f.line, f.message) for f in check(text))
    assert [lines[line - 1].strip() for line, _ in found] == ["- port: 8080", "- name: foo", "appProtocol: bar"]
    assert found[0][1].startswith("Port name '' (port: 8080, targetPort: web) doesn't follow the naming convention")
    assert "(port: 8081, targetPort: 8081)" in found[1][1]
    assert "appProtocol 'bar' is not a protocol Istio knows" in found[2][1]


def test_port_names_of_istio_and_kubernetes_services_are_not_checked():
    bad = "- {name: foo, port: 80}"
    assert codes_of(service("a", bad, labels="istio: pilot", namespace="istio-system"),
                    service("b", bad, labels="release: istio", namespace="istio-system"),
                    service("c", bad, labels="gateway.istio.io/managed: istio.io-gateway-controller"),
                    service("d", bad, labels="gateway.istio.io/managed: istio.io-mesh-controller"),
                    service("e", bad, namespace="kube-system"), service("f", bad, namespace="kube-public"),
                    base=ONE_CLUSTER) == []
    assert codes_of(service("g", bad, labels="gateway.istio.io/managed: someone-else"), base=ONE_CLUSTER) == [
        ("IST0118", "info", "Service shop/g")]


def test_external_name_services_get_ist0150_instead():
    ext = "  type: ExternalName\n  externalName: db.example.com\n"
    assert codes_of(service("ext", "- {name: tcp-db, port: 5432}\n- {name: https, port: 443}\n- {port: 3306}",
                            extra=ext), base=ONE_CLUSTER) == []
    assert codes_of(service("ext", "- {name: tcp, port: 5432}\n- {name: foo, port: 443}\n- {name: TCP, port: 80}",
                            extra=ext), base=ONE_CLUSTER) == [("IST0150", "warning", "Service shop/ext")] * 2
    # `tcp` alone is only wrong on an ExternalName Service
    assert codes_of(service("svc", "- {name: tcp, port: 5432}"), base=ONE_CLUSTER) == []


# --- MeshNetworks in either spelling ----------------------------------------------------------------

def test_meshnetworks_fields_are_read_in_either_spelling_the_json_name_winning():
    assert meshnetworks.get({"from_registry": "a"}, "fromRegistry") == "a"
    assert meshnetworks.get({"from_registry": "a", "fromRegistry": "b"}, "fromRegistry") == "b"
    assert meshnetworks.key({"from_cidr": "10.0.0.0/8"}, "fromCidr") == "from_cidr"
    assert meshnetworks.key({"fromCidr": "10.0.0.0/8"}, "fromRegistry") is None
    assert meshnetworks.normalized({"registry_service_name": "gw.istio-system.svc.cluster.local", "port": 443}) == {
        "registryServiceName": "gw.istio-system.svc.cluster.local", "port": 443}
    assert meshnetworks.normalized({"from_cidr": "10.0.0.0/8", "fromCidr": "10.1.0.0/16"}) == {
        "fromCidr": "10.1.0.0/16"}
    assert meshnetworks.networks({"networks": {"n": {"endpoints": [{"from_registry": "a"}]}}}) == {
        "n": {"endpoints": [{"fromRegistry": "a"}], "gateways": []}}


SNAKE_MESH = """\
apiVersion: galleon.io/v1alpha1
kind: MeshNetworks
metadata: {name: mesh-networks, namespace: istio-system}
spec:
  networks:
    network-1:
      endpoints: [{from_registry: cluster-a}]
      gateways: [{address: 192.0.2.10, port: 15443}]
    network-2:
      endpoints:
      - from_registry: cluster-b
      - from_cidr: 10.2.0.0/16
      - {fromCidr: 10.3.0.0/16, from_cidr: 10.9.0.0/16}
      gateways: [{registry_service_name: eastwest.istio-system.svc.cluster.local, port: 15443}]
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: cluster-a, namespace: istio-system}
spec: {network: network-1, locality: us-east/us-east-1a}
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: cluster-b, namespace: istio-system}
spec: {locality: eu-west/eu-west-1a}
"""


def test_istio_spelling_of_meshnetworks_is_accepted_and_compiled():
    result = load(snapshot_of({"mesh.yaml": SNAKE_MESH}))
    assert result.findings == []
    mesh = build_mesh(result.objects)
    network = mesh.networks["network-2"]
    assert network.registries == ("cluster-b",)
    assert [str(c) for c in network.cidrs] == ["10.2.0.0/16", "10.3.0.0/16"]  # fromCidr over from_cidr
    assert [(g.address, g.port) for g in network.gateways] == [("eastwest.istio-system.svc.cluster.local", 15443)]
    # a Cluster that names no network is on the one whose fromRegistry lists it (Istio's rule)
    assert mesh.clusters["cluster-b"].network == "network-2"
    assert mesh.clusters["cluster-a"].network == "network-1"


def test_meshnetworks_problems_point_at_the_field_as_written():
    text = SNAKE_MESH.replace("from_registry: cluster-b", "from_registry: cluster-z").replace(
        "from_cidr: 10.2.0.0/16", "from_cidr: 10.2.0.0/33")
    lines = text.splitlines()
    found = sorted((f.code, lines[f.line - 1].strip(), f.message) for f in check(text))
    # (cluster-b, which names no network, is now on none: fromRegistry no longer lists it)
    assert [(code, line) for code, line, _ in found] == [
        ("GAL0109", "spec: {locality: eu-west/eu-west-1a}"), ("GAL0111", "- from_cidr: 10.2.0.0/33"),
        ("IST0126", "- from_registry: cluster-z")]
    assert found[1][2] == "from_cidr '10.2.0.0/33' is not a CIDR"
    assert found[2][2] == ("Unknown service registry cluster-z in network network-2: a registry is a Cluster of the "
                           "repository (defined clusters: cluster-a, cluster-b)")
    # one finding, Istio's: no GAL0110 beside it
    assert not [f for f in check(text) if f.code == "GAL0110"]


def test_istios_own_registry_names_are_explained():
    (_, level, obj, message), = findings_of(mesh_networks("- fromRegistry: Kubernetes"))
    assert (level, obj) == ("error", "MeshNetworks istio-system/extra")
    assert message.endswith("'Kubernetes' is Istio's default name for its own cluster, which Galleon names by its "
                            "Cluster")


@pytest.mark.parametrize("endpoint", ["{}", "{fromCidr: 10.0.0.0/8, from_registry: cluster-a}",
                                      "{from_cidr: 10.0.0.0/8, fromRegistry: cluster-a}", "{from_registry: 7}",
                                      "{from_registry: bad_name}", "{fromRegistry: cluster-a, fromm_cidr: x}"])
def test_meshnetworks_endpoints_still_need_exactly_one_field(endpoint):
    assert [code for code, *_ in findings_of(mesh_networks(f"- {endpoint}"))] == ["IST0106"]


def test_meshnetworks_gateway_needs_an_address_or_a_registry_service_name_in_either_spelling():
    def gateway(text):
        return mesh_networks("- fromRegistry: cluster-a") + f"      gateways: [{text}]\n"
    assert findings_of(gateway("{registry_service_name: gw.example.com, port: 15443}")) == []
    assert findings_of(gateway("{registry_service_name: a.example.com, registryServiceName: b.example.com, "
                               "port: 1}")) == []
    (_, _, _, message), = findings_of(gateway("{port: 15443}"))
    assert message.endswith("set exactly one of address, registryServiceName (or registry_service_name)")
    assert [code for code, *_ in findings_of(gateway("{address: 192.0.2.1, registry_service_name: x, port: 1}"))] == [
        "IST0106"]


# --- networks ------------------------------------------------------------------------------------

def test_a_mesh_of_one_network_needs_no_meshnetworks():
    assert codes_of(cluster("cluster-a", "{network: network-1, locality: us-east/us-east-1a}"),
                    cluster("cluster-b", "{locality: us-east/us-east-1b}"), base="") == []
    workload = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: shop}\n"
                "spec: {address: 10.1.9.9, network: network-1}\n")
    assert codes_of(cluster("cluster-a", "{network: network-1, locality: us-east/us-east-1a}"), workload, base="") == []


def test_networks_no_meshnetworks_lists_are_warnings_in_a_mesh_of_several():
    found = findings_of(cluster("cluster-a", "{network: network-1, locality: us-east/us-east-1a}"),
                        cluster("cluster-b", "{network: network-2, locality: us-east/us-east-1b}"),
                        pod("p", "topology.istio.io/network: network-3"), base="")
    assert sorted((code, level, obj) for code, level, obj, _ in found) == [
        ("GAL0109", "warning", "Cluster istio-system/cluster-a"),
        ("GAL0109", "warning", "Cluster istio-system/cluster-b"),
        ("GAL0109", "warning", "Pod shop/p")]
    message = next(m for _, _, obj, m in found if obj == "Cluster istio-system/cluster-b")
    assert message == ("network 'network-2' is in no MeshNetworks (no MeshNetworks lists any network), in a mesh of "
                       "networks network-1, network-2, network-3: Istio sends traffic to its endpoints directly, "
                       "without an east-west gateway, so they must be reachable from every other network; if they "
                       "are not, list 'network-2' in MeshNetworks with its gateway")
    # BASE lists network-1: a second network named by an endpoint is the one reported
    assert codes_of(se_endpoint_on("network-2")) == [("GAL0109", "warning", "ServiceEntry bookinfo/ext")]
    assert codes_of(se_endpoint_on("network-1")) == []


def test_a_cluster_on_no_network_in_a_mesh_of_several():
    # on the network whose fromRegistry lists it (either spelling): nothing to say
    assert codes_of(cluster("cluster-b", "{locality: us-east/us-east-1b}"),
                    mesh_networks("- from_registry: cluster-b", network="network-2")) == []
    found = findings_of(cluster("cluster-b", "{locality: us-east/us-east-1b}"),
                        mesh_networks("- fromRegistry: cluster-c", network="network-2"))
    assert [(code, level, obj) for code, level, obj, _ in found if code != "IST0126"] == [
        ("GAL0109", "warning", "Cluster istio-system/cluster-b")]
    assert "names no network and no MeshNetworks fromRegistry lists it" in found[0][3] + found[1][3]
    # in a mesh of one network, a Cluster on none is no problem
    assert codes_of(cluster("cluster-b", "{locality: us-east/us-east-1b}")) == []


def se_endpoint_on(network: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: bookinfo}\n"
            "spec:\n  hosts: [ext.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
            f"  endpoints: [{{address: 10.0.0.1, network: {network}}}]\n")


def test_an_unchanged_object_is_warned_about_when_the_mesh_gets_a_second_network():
    from compiler.revision import load
    files = {"a.yaml": cluster("cluster-a", "{network: network-1, locality: us-east/us-east-1a}"),
             "we.yaml": ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
                         "metadata: {name: vm, namespace: shop}\nspec: {address: 10.1.9.9, network: network-1}\n")}
    first = load(snapshot_of(files, "r1"))
    assert first.findings == []
    second = load(snapshot_of({**files, "b.yaml": cluster("cluster-b", "{network: network-2, locality: x/y}")},
                                       "r2"), first)
    assert second.parsed.files["we.yaml"] is first.parsed.files["we.yaml"]
    assert sorted((f.code, f.file) for f in second.findings) == [
        ("GAL0109", "a.yaml"), ("GAL0109", "b.yaml"), ("GAL0109", "we.yaml")]
    fresh = load(snapshot_of({**files, "b.yaml": cluster("cluster-b", "{network: network-2, locality: x/y}")}))
    assert [f.text() for f in second.findings] == [f.text() for f in fresh.findings]


# --- EndpointSlices Galleon cannot place -----------------------------------------------------------------

def legacy_endpoints(name: str, labels: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n  namespace: shop\n" + (f"  labels: {{{labels}}}\n" if labels else "")
    return (f"apiVersion: v1\nkind: Endpoints\n{meta}subsets:\n- addresses: [{{ip: 10.1.5.2}}]\n"
            "  ports: [{name: http, port: 8080}]\n")


def test_listings_in_a_mesh_of_one_cluster_are_that_clusters():
    assert codes_of(WEB, endpoint_slice("web-abc"), legacy_endpoints("web")) == []
    assert codes_of(WEB, endpoint_slice("web-abc"), base="") == []  # no Cluster at all


def test_listings_without_cluster_label_in_a_mesh_of_several_clusters():
    placed = endpoint_slice("web-b", "kubernetes.io/service-name: web, topology.istio.io/cluster: cluster-b")
    found = findings_of(cluster("cluster-b"), WEB, endpoint_slice("web-abc"), legacy_endpoints("web"), placed)
    assert sorted((code, level, obj) for code, level, obj, _ in found) == [
        ("GAL0120", "warning", "EndpointSlice shop/web-abc"), ("GAL0120", "warning", "Endpoints shop/web")]
    assert found[0][3].endswith("add the label topology.istio.io/cluster with its Cluster's name")
    # a slice of no Service gets the one warning that says so
    (code, _, _, message), = findings_of(cluster("cluster-b"), endpoint_slice("orphan", labels="app: web"))
    assert code == "GAL0120" and "no label kubernetes.io/service-name" in message
    (code, _, _, message), = findings_of(endpoint_slice("orphan", labels=""))
    assert code == "GAL0120" and "no label kubernetes.io/service-name" in message


def test_a_listing_naming_an_unknown_cluster_is_gal0110():
    (code, level, obj, message), = findings_of(WEB, endpoint_slice(
        "web-abc", "kubernetes.io/service-name: web, topology.istio.io/cluster: cluster-z"))
    assert (code, level, obj) == ("GAL0110", "error", "EndpointSlice shop/web-abc")
    assert message.startswith(
        "label topology.istio.io/cluster='cluster-z' is not a Cluster, so its endpoints are in none")


AMBIENT_NAMESPACE = ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mesh-a\n"
                     "  labels: {istio.io/dataplane-mode: ambient}\n")


def test_sidecars_in_an_ambient_namespace_have_no_effect():
    default = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: scoped, namespace: mesh-a}\n")
    pod_scoped = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: picky, namespace: mesh-a}\n"
                  "spec:\n  workloadSelector:\n    labels: {app: web}\n")
    workload = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: mesh-a\n  labels: {app: web}\n"
                "spec: {containers: [{name: web, image: web}]}\n")
    assert codes_of(AMBIENT_NAMESPACE, default, pod_scoped, workload) == [
        ("IST0167", "warning", "Sidecar mesh-a/picky"), ("IST0167", "warning", "Sidecar mesh-a/scoped")]
    # a namespace that also asks for injection is not ambient; a pod may opt out of ambient mode
    injected = AMBIENT_NAMESPACE.replace("ambient}", "ambient, istio-injection: enabled}")
    assert codes_of(injected, default, pod_scoped, workload) == []
    opted_out = workload.replace("{app: web}", "{app: web, istio.io/dataplane-mode: none}")
    assert codes_of(AMBIENT_NAMESPACE, pod_scoped, opted_out) == []
    # several namespace defaults in ambient mode: each has no effect, none conflicts
    other = default.replace("name: scoped", "name: another")
    assert sorted(code for code, _, _ in codes_of(AMBIENT_NAMESPACE, default, other)) == ["IST0167", "IST0167"]


# --- GAL0111 on Kubernetes objects: the addresses their API server would refuse, and Envoy cannot use ---

def _slice(address_type: str, addresses: str) -> str:
    return ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-x\n  namespace: shop\n"
            "  labels: {kubernetes.io/service-name: web, topology.istio.io/cluster: cluster-a}\n"
            f"addressType: {address_type}\nendpoints:\n" + addresses + "ports: [{name: http, port: 8080}]\n")


@pytest.mark.parametrize("address_type, address, ok", [
    ("IPv4", "10.1.2.3", True), ("IPv4", "999.1.2.3", False), ("IPv4", "fd00::1", False),
    ("IPv4", "010.1.2.3", False),  # a leading zero: Envoy's parser (inet_pton) refuses it
    ("IPv6", "fd00::1", True), ("IPv6", "10.1.2.3", False), ("IPv6", "fe80::1%eth0", False),
    ("FQDN", "web.example.com", True), ("FQDN", "web_1!", False)])
def test_an_endpoint_slice_address_is_of_its_address_type(address_type, address, ok):
    case = _slice(address_type, f"- addresses: ['{address}']" + ("\n" if ok else "  # <-\n"))
    if ok:
        check_passing(case)
    else:
        check_failing("invalid-address", case)


def test_pod_endpoints_and_service_addresses_are_ips():
    check_failing("invalid-address", textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1, namespace: shop}
        status:
          podIP: 10.0.0.300  # <-
          podIPs:
          - {ip: 10.0.0.4}
          - {ip: not-an-ip}  # <-
        ---
        apiVersion: v1
        kind: Endpoints
        metadata: {name: web, namespace: shop, labels: {topology.istio.io/cluster: cluster-a}}
        subsets:
        - addresses: [{ip: 10.0.0.4}, {ip: web-1}]  # <-
          notReadyAddresses: [{ip: 300.0.0.1}]  # <-
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          clusterIP: None
          clusterIPs: ["None", 10.96.0.400]  # <-
          ports: [{name: http, port: 80}]
        """))
    (finding,) = [f for f in check(BASE + "---\n" + _slice("IPv4", "- addresses: [10.0.0.1, 999.1.2.3]\n"))
                  if f.code == "GAL0111"]
    assert finding.message == "address '999.1.2.3' is not an IPv4 address (the slice's addressType)"
