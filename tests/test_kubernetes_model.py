"""Kubernetes Services and their endpoints in the mesh, as Istio reads them (compiler/kube.py,
compiler/model.py): hosts, Istio's protocol selection, headless and ExternalName Services,
EndpointSlices and legacy Endpoints, the pods they name, WorkloadEntries a Service selects, and one
service across clusters (namespace sameness). Gateway API Gateways, which validation reads, are not in it."""
from __future__ import annotations

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from compiler import protocols
from compiler.view import make_view
from compiler.xds import compile_view
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.conftest import mesh_from

TWO_CLUSTERS = """\
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: east, namespace: istio-system}
spec: {network: net-1, locality: us-east/us-east-1a}
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: west, namespace: istio-system}
spec: {network: net-1, locality: us-east/us-east-1b}
---
apiVersion: galleon.io/v1alpha1
kind: MeshNetworks
metadata: {name: networks, namespace: istio-system}
spec:
  networks:
    net-1:
      endpoints: [{fromRegistry: east}, {fromRegistry: west}]
"""


def service(name: str = "web", ports: str = "[{name: http, port: 80}]", extra: str = "", labels: str = "") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n{labels}"
            f"spec:\n  selector: {{app: {name}}}\n  ports: {ports}\n{extra}")


def endpoint_slice(name: str, cluster: str, endpoints: str, ports: str = "[{name: http, port: 8080}]",
                   service_name: str = "web") -> str:
    return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: shop\n"
            f"  labels: {{kubernetes.io/service-name: {service_name}, topology.istio.io/cluster: {cluster}}}\n"
            f"addressType: IPv4\nports: {ports}\nendpoints:\n{endpoints}")


def pod(name: str, cluster: str, labels: str = "app: web, version: v1", account: str = "web") -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n"
            f"  labels: {{{labels}, topology.istio.io/cluster: {cluster}}}\nspec: {{serviceAccountName: {account}}}\n")


def mesh_of(*documents: str):
    return mesh_from({"mesh.yaml": "---\n".join((TWO_CLUSTERS, *documents))})


@pytest.mark.parametrize("port, expected", [
    ("{name: http, port: 80}", protocols.HTTP),
    ("{name: http-api, port: 80}", protocols.HTTP),
    ("{name: HTTP2-x, port: 80}", protocols.HTTP2),
    ("{name: grpc-web, port: 80}", protocols.GRPC_WEB),
    ("{name: grpc-web-x, port: 80}", protocols.GRPC_WEB),
    ("{name: tcp-db, port: 80}", protocols.TCP),
    ("{name: tls, port: 443}", protocols.TLS),
    ("{name: mongo, port: 80}", protocols.MONGO),
    ("{name: web, port: 80}", protocols.AUTO),  # no protocol named: detected on the connection
    ("{port: 80}", protocols.AUTO),
    ("{name: web, port: 3306}", protocols.TCP),  # a server-first port is never sniffed
    ("{name: http, port: 80, appProtocol: grpc}", protocols.GRPC),  # appProtocol wins, the name is not read
    ("{name: http, port: 80, appProtocol: example.com/custom}", protocols.AUTO),
    ("{name: x, port: 80, appProtocol: kubernetes.io/h2c}", protocols.HTTP2),
    ("{name: http, port: 80, protocol: UDP}", protocols.UDP),
])
def test_istio_protocol_selection(port, expected):
    from compiler import kube
    from compiler.parse import parse
    from tests.conftest import snapshot_of
    (svc,) = parse(snapshot_of({"a.yaml": service(ports=f"[{port}]")})).objects
    (selected,) = kube.service_ports(svc)
    assert selected.protocol == expected


def test_a_service_is_its_host_with_its_ports_and_addresses_and_no_udp():
    mesh = mesh_of(service(ports="[{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]",
                           extra="  clusterIP: 10.96.0.9\n"))
    svc = mesh.services["web.shop.svc.cluster.local"]
    assert [(p.number, p.protocol) for p in svc.ports] == [(80, "HTTP")]
    assert svc.addresses == ("10.96.0.9",) and svc.resolution == "STATIC" and svc.location == "MESH_INTERNAL"
    assert svc.endpoints == ()  # nothing runs yet: still a service


def test_endpoint_slices_give_ready_endpoints_with_their_pods_labels_account_and_tls_mode():
    endpoints = ("- addresses: [10.1.0.1]\n  targetRef: {kind: Pod, namespace: shop, name: web-1}\n"
                 "- addresses: [10.1.0.2]\n  conditions: {ready: false}\n"
                 "- addresses: [10.1.0.3]\n  conditions: {ready: true, terminating: true}\n"
                 "- addresses: [10.1.0.4]\n  zone: us-east-1c\n")
    mesh = mesh_of(service(), endpoint_slice("web-e", "east", endpoints),
                   pod("web-1", "east", "app: web, version: v2, security.istio.io/tlsMode: istio"))
    eps = {ep.address: ep for ep in mesh.services["web.shop.svc.cluster.local"].endpoints}
    assert sorted(eps) == ["10.1.0.1", "10.1.0.4"]  # not ready and terminating: not endpoints
    first = eps["10.1.0.1"]
    assert first.labels["version"] == "v2" and first.labels["topology.istio.io/cluster"] == "east"
    assert (first.service_account, first.tls_mode, first.mtls_ready, first.cluster, first.network) == \
        ("web", "istio", True, "east", "net-1")
    assert str(first.locality) == "us-east/us-east-1a"
    # no pod: no labels but the cluster's, no sidecar; the slice's zone, in its cluster's region
    fourth = eps["10.1.0.4"]
    assert (fourth.tls_mode, fourth.service_account, str(fourth.locality)) == ("disabled", "", "us-east/us-east-1c")


def test_an_endpoint_serves_only_the_ports_its_slice_lists():
    mesh = mesh_of(service(ports="[{name: http, port: 80}, {name: admin, port: 81}]"),
                   endpoint_slice("web-e", "east", "- addresses: [10.1.0.1]\n"))
    svc = mesh.services["web.shop.svc.cluster.local"]
    (ep,) = svc.endpoints
    assert ep.port_for(svc.known_port(80)) == 8080 and ep.port_for(svc.known_port(81)) is None
    config = compile_view(mesh, make_view(mesh, "east"))
    admin = config.messages(ENDPOINT)["outbound|81||web.shop.svc.cluster.local"]
    assert not any(group.lb_endpoints for group in admin.endpoints)


def test_legacy_endpoints_are_read_where_a_cluster_has_no_endpoint_slice():
    legacy = ("apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\n  namespace: shop\n"
              "  labels: {{topology.istio.io/cluster: {cluster}}}\nsubsets:\n"
              "- addresses: [{{ip: {ip}}}]\n  notReadyAddresses: [{{ip: 10.9.9.9}}]\n"
              "  ports: [{{name: http, port: 8080}}]\n")
    mesh = mesh_of(service(), endpoint_slice("web-e", "east", "- addresses: [10.1.0.1]\n"),
                   legacy.format(cluster="east", ip="10.1.0.99"),
                   legacy.format(cluster="west", ip="10.2.0.1"))
    addresses = sorted(ep.address for ep in mesh.services["web.shop.svc.cluster.local"].endpoints)
    assert addresses == ["10.1.0.1", "10.2.0.1"]  # east's slice wins over east's Endpoints


def test_the_same_service_in_two_clusters_is_one_service_with_both_clusters_endpoints():
    east = service(extra="  clusterIP: 10.96.0.9\n", labels="  labels: {topology.istio.io/cluster: east}\n")
    west = service(ports="[{name: http, port: 80}, {name: extra, port: 90}]", extra="  clusterIP: 10.97.0.9\n",
                   labels="  labels: {topology.istio.io/cluster: west}\n")
    mesh = mesh_of(east, west, endpoint_slice("web-e", "east", "- addresses: [10.1.0.1]\n"),
                   endpoint_slice("web-w", "west", "- addresses: [10.2.0.1]\n"))
    svc = mesh.services["web.shop.svc.cluster.local"]
    assert [p.number for p in svc.ports] == [80]  # the first cluster's Service gives the ports
    assert svc.addresses == ("10.96.0.9", "10.97.0.9")
    assert sorted((ep.cluster, ep.address) for ep in svc.endpoints) == [("east", "10.1.0.1"), ("west", "10.2.0.1")]


def test_a_service_selects_workload_entries_as_istio_does():
    entry = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: shop}\n"
             "spec:\n  address: 10.3.0.1\n  ports: {http: 18080}\n  serviceAccount: vm\n"
             "  labels: {app: web, topology.istio.io/cluster: west}\n")
    other = entry.replace("name: vm,", "name: other,").replace("app: web", "app: other")
    mesh = mesh_of(service(ports="[{name: http, port: 80, targetPort: 8080}]"), entry, other)
    svc = mesh.services["web.shop.svc.cluster.local"]
    (ep,) = svc.endpoints
    assert (ep.address, ep.port_for(svc.known_port(80)), ep.mtls_ready) == ("10.3.0.1", 18080, True)


def test_a_headless_service_passes_connections_through():
    mesh = mesh_of(service(extra="  clusterIP: None\n"), endpoint_slice("web-e", "east", "- addresses: [10.1.0.1]\n"))
    config = compile_view(mesh, make_view(mesh, "east"))
    cluster = config.messages(CLUSTER)["outbound|80||web.shop.svc.cluster.local"]
    assert cluster.type == Cluster.ORIGINAL_DST and "outbound|80||web.shop.svc.cluster.local" not in \
        config.messages(ENDPOINT)


def test_an_external_name_service_is_an_alias_of_the_host_it_names():
    alias = ("apiVersion: v1\nkind: Service\nmetadata: {name: shortcut, namespace: shop}\n"
             "spec: {type: ExternalName, externalName: web.shop.svc.cluster.local}\n")
    mesh = mesh_of(service(), alias)
    assert "shortcut.shop.svc.cluster.local" not in mesh.services
    assert mesh.resolve_alias("shortcut.shop.svc.cluster.local") == "web.shop.svc.cluster.local"
    config = compile_view(mesh, make_view(mesh, "east"))
    (vhost,) = config.messages(ROUTE)["80"].virtual_hosts
    assert "shortcut.shop.svc.cluster.local" in vhost.domains
    assert not any("shortcut" in name for name in config.messages(CLUSTER))


def test_alias_loops_resolve_to_nothing():
    loop = ("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n"
            "spec: {{type: ExternalName, externalName: {target}.shop.svc.cluster.local}}\n")
    mesh = mesh_of(loop.format(name="a", target="b"), loop.format(name="b", target="a"))
    assert mesh.resolve_alias("a.shop.svc.cluster.local") == "a.shop.svc.cluster.local"
    assert mesh.aliases_of("a.shop.svc.cluster.local") == []


def test_a_port_whose_protocol_is_detected_gets_istios_sniffing_listener():
    mesh = mesh_of(service(ports="[{name: web, port: 80}]"), service("db", "[{name: tcp, port: 80}]",
                                                                        extra="  clusterIP: 10.96.0.3\n"))
    config = compile_view(mesh, make_view(mesh, "east"))
    listener = config.messages(LISTENER)["0.0.0.0_80"]
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.http_inspector"]
    http = [c for c in listener.filter_chains if c.filter_chain_match.application_protocols]
    (chain,) = http
    assert list(chain.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert chain.filter_chain_match.transport_protocol == "raw_buffer"
    assert listener.HasField("default_filter_chain")  # what is not HTTP goes to a TCP proxy
    (vhost,) = config.messages(ROUTE)["80"].virtual_hosts  # routes for the detected port's service only
    assert vhost.name == "web.shop.svc.cluster.local:80"
    packed = config.messages(CLUSTER)["outbound|80||web.shop.svc.cluster.local"].typed_extension_protocol_options
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    assert options.HasField("use_downstream_protocol_config")  # the endpoint speaks what the client spoke



def test_a_proxy_sees_only_the_services_exported_to_its_namespace():
    private = service("private", extra="").replace(
        "  namespace: shop\n", "  namespace: shop\n  annotations: {networking.istio.io/exportTo: .}\n", 1)
    entry = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: partner, namespace: shop}\n"
             "spec:\n  hosts: [api.partner.example]\n  exportTo: [billing]\n  resolution: DNS\n"
             "  ports: [{number: 443, name: tls, protocol: TLS}]\n")
    mesh = mesh_of(service(), private, entry)

    def seen(namespace: str) -> set[str]:
        view = make_view(mesh, "east", f"sidecar~10.1.0.1~p.{namespace}~{namespace}.svc.cluster.local")
        return {name.split("|")[3] for name in compile_view(mesh, view).messages(CLUSTER)}

    assert seen("shop") == {"web.shop.svc.cluster.local", "private.shop.svc.cluster.local"}
    assert seen("billing") == {"web.shop.svc.cluster.local", "api.partner.example"}
    assert seen("other") == {"web.shop.svc.cluster.local"}


GATEWAY_API = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: istio-system}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, hostname: bookinfo.example.com, port: 80, protocol: HTTP}
  - {name: other, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: web, namespace: bookinfo}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def test_build_mesh_leaves_gateway_api_gateways_out():
    """Gateway API Gateways are read for VirtualService references only: not in the mesh (not among its
    Gateways, even one named as an Istio Gateway is, nor in its digests), so no proxy's configuration
    changes with them."""
    from compiler.model import build_mesh
    from compiler.revision import load
    from compiler.xds import config_dump, dump_json
    from tests.conftest import sample_files, snapshot_of

    files = sample_files()
    plain = load(snapshot_of(files, "r"))
    both = load(snapshot_of({**files, "gateways/gateway-api.yaml": GATEWAY_API}, "r"))
    assert plain.valid and both.valid, [f.text() for f in both.findings]
    read = [o for o in both.objects if o.group == "gateway.networking.k8s.io"]
    assert [(o.kind, o.name) for o in read] == [("KubernetesGateway", "bookinfo-gateway"), ("KubernetesGateway", "web")]
    without, with_them = build_mesh(plain.objects, "r"), build_mesh(both.objects, "r")
    assert [g.ref for g in with_them.gateways] == [g.ref for g in without.gateways] == [
        "Gateway/istio-system/bookinfo-gateway"]
    assert with_them.digest == without.digest
    assert list(with_them.per_service_objects.by_digest) == list(without.per_service_objects.by_digest)
    assert not [o for o in (*with_them.virtual_services, *with_them.sidecars) if o.group != "networking.istio.io"]
    for node_id, labels in (("sidecar~10.1.0.9~p.bookinfo~bookinfo.svc.cluster.local", {}),
                            ("router~10.1.100.1~ingress.istio-system~istio-system.svc.cluster.local",
                             {"istio": "ingressgateway"})):
        dumps = [dump_json(config_dump(compile_view(mesh, make_view(mesh, "cluster-a", node_id, labels))))
                 for mesh in (without, with_them)]
        assert dumps[0] == dumps[1]
