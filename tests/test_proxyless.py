"""Proxyless gRPC: the ``grpc`` view, its api_listeners and routes, and the changes gRPC needs.

Each adaptation tested here was found with the real client (grpcio, GRPC_TRACE=xds_client):
what it NACKs, the sidecar's resource that provoked it, and the accepted form.
"""
from __future__ import annotations

import json
import textwrap

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from compiler import proxyless
from compiler.view import GRPC, ROUTER, SIDECAR, ViewError, make_view
from compiler.xds import compile_view
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from reconciler.ads.views import serve_view, view_of_node
from reconciler.bootstrap import BootstrapOptions, grpc_bootstrap, grpc_bootstrap_json
from tests.conftest import ONE_CLUSTER, mesh_from, sample_files

Cluster = cluster_pb2.Cluster
NODE = "sidecar~10.0.0.9~client-7d9f.default~default.svc.cluster.local"
HOST = "echo.default.svc.cluster.local"
ECHO = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 7070, name: grpc, protocol: GRPC}}
  - {{number: 8080, name: http, protocol: HTTP}}
  - {{number: 9000, name: tcp, protocol: TCP}}
  endpoints:
  - {{address: 10.0.0.1, labels: {{version: v1}}}}
  - {{address: 10.0.0.2, labels: {{version: v2}}, serviceAccount: echo}}
"""


def doc(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n"


def compiled(*docs: str, node: str = NODE, proxyless_client: bool = True, topology: str = ONE_CLUSTER, **kw):
    mesh = mesh_from({"mesh.yaml": "---\n".join([topology, *map(doc, docs)])}, revision="r1")
    return mesh, compile_view(mesh, make_view(mesh, "cluster-a", node, proxyless=proxyless_client, **kw))


def manager(listener) -> hcm_pb2.HttpConnectionManager:
    out = hcm_pb2.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(out)
    return out


# --- the view -------------------------------------------------------------------------------------


def _node(generator: str | None) -> base_pb2.Node:
    node = base_pb2.Node(id=NODE)
    node.metadata.fields["CLUSTER_ID"].string_value = "cluster-a"
    if generator is not None:
        node.metadata.fields["GENERATOR"].string_value = generator
    return node


@pytest.mark.parametrize("generator, role", [("grpc", GRPC), (None, SIDECAR), ("istio", SIDECAR), ("", SIDECAR)])
def test_generator_grpc_picks_the_proxyless_view(generator, role):
    mesh = mesh_from({"mesh.yaml": ONE_CLUSTER})
    view = view_of_node(mesh, _node(generator), "cluster-a")
    assert view.role == role
    assert view.namespace == "default" and view.cluster == "cluster-a"


def test_generator_must_be_a_string():
    mesh = mesh_from({"mesh.yaml": ONE_CLUSTER})
    node = _node(None)
    node.metadata.fields["GENERATOR"].number_value = 1
    with pytest.raises(ViewError, match="GENERATOR"):
        view_of_node(mesh, node, "cluster-a")


def test_a_proxyless_view_is_a_view_of_its_own():
    """Views are cached by value: a gRPC client and an Envoy with the same node never share one."""
    mesh = mesh_from({"mesh.yaml": ONE_CLUSTER})
    assert make_view(mesh, "cluster-a", NODE, proxyless=True) != make_view(mesh, "cluster-a", NODE)


# --- listeners and routes -------------------------------------------------------------------------


def test_listeners_are_api_listeners_named_as_the_target():
    _, config = compiled(ECHO)
    listeners = config.messages(LISTENER)
    # HTTP ports only: gRPC is HTTP/2, and a port declared TCP has no routes
    assert list(listeners) == [f"{HOST}:7070", f"{HOST}:8080"]
    for name, listener in listeners.items():
        assert listener.HasField("api_listener") and not listener.HasField("address")
        assert not listener.filter_chains
        hcm = manager(listener)
        assert hcm.rds.route_config_name == name
        assert hcm.rds.config_source.HasField("ads")
        # gRPC NACKs filters it lacks (CORS); the router must be last or it never becomes ready
        assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
        assert listener.metadata.filter_metadata["galleon"]["source"] == "ServiceEntry/default/echo"
    assert set(config.messages(ROUTE)) == set(listeners)


def test_envoy_views_have_no_api_listener():
    _, config = compiled(ECHO, proxyless_client=False)
    assert list(config.messages(LISTENER)) == ["0.0.0.0_7070", "0.0.0.0_8080", "0.0.0.0_9000"]
    assert not any(listener.HasField("api_listener") for listener in config.messages(LISTENER).values())


def test_virtual_hosts_are_the_sidecars():
    """Each listener's route configuration holds the service's virtual host exactly as a sidecar has
    it in its port's configuration (routes.py builds both), except the CORS policies gRPC refuses."""
    mesh = mesh_from(sample_files(), "sample")
    for cluster in sorted(mesh.clusters):
        node = "sidecar~10.1.1.1~productpage-v1.bookinfo~bookinfo.svc.cluster.local"
        sidecar = compile_view(mesh, make_view(mesh, cluster, node)).messages(ROUTE)
        grpc = compile_view(mesh, make_view(mesh, cluster, node, proxyless=True)).messages(ROUTE)
        assert grpc
        for name, config in grpc.items():
            host, port = name.rsplit(":", 1)
            assert [v.name for v in config.virtual_hosts] == [name]
            expected = next(v for v in sidecar[port].virtual_hosts if v.name == name)
            for route in expected.routes:
                if "envoy.filters.http.cors" in route.typed_per_filter_config:
                    del route.typed_per_filter_config["envoy.filters.http.cors"]
            assert config.virtual_hosts[0] == expected, name
            assert list(expected.domains[:2]) == [host, name]


VS = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{headers: {{x-fault: {{exact: "yes"}}}}}}]
    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}
    corsPolicy: {{allowOrigins: [{{exact: "https://a.example"}}]}}
    route: [{{destination: {{host: {HOST}, port: {{number: 7070}}, subset: v1}}}}]
  - match: [{{withoutHeaders: {{x-canary: {{exact: "no"}}}}, headers: {{x-user: {{prefix: a}}}}}}]
    route: [{{destination: {{host: {HOST}, port: {{number: 7070}}, subset: v2}}}}]
  - route:
    - {{destination: {{host: {HOST}, port: {{number: 7070}}, subset: v1}}, weight: 10}}
    - {{destination: {{host: {HOST}, port: {{number: 7070}}, subset: v2}}, weight: 90}}
"""


def test_routes_keep_virtual_service_order_and_weights():
    _, config = compiled(ECHO, VS)
    routes = config.messages(ROUTE)[f"{HOST}:7070"].virtual_hosts[0].routes
    assert routes[0].route.cluster == f"outbound|7070|v1|{HOST}"
    weighted = routes[-1].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in weighted] == [(f"outbound|7070|v1|{HOST}", 10),
                                                           (f"outbound|7070|v2|{HOST}", 90)]


def test_cors_policies_go_and_faults_stay():
    """gRPC NACKs per-route config of a filter it does not have ("unsupported filter type");
    fault injection it implements."""
    mesh, config = compiled(ECHO, VS)
    route = config.messages(ROUTE)[f"{HOST}:7070"].virtual_hosts[0].routes[0]
    assert list(route.typed_per_filter_config) == ["envoy.filters.http.fault"]
    sidecar = compile_view(mesh, make_view(mesh, "cluster-a", NODE)).messages(ROUTE)["7070"]
    assert "envoy.filters.http.cors" in sidecar.virtual_hosts[0].routes[0].typed_per_filter_config


def test_without_headers_also_matches_a_request_lacking_the_header():
    """Envoy matches an absent header with withoutHeaders (treat_missing_header_as_empty); gRPC does
    not, so the route is doubled: header absent (inverted presence), or present with another value."""
    _, config = compiled(ECHO, VS)
    routes = config.messages(ROUTE)[f"{HOST}:7070"].virtual_hosts[0].routes
    variants = [r for r in routes if r.route.cluster == f"outbound|7070|v2|{HOST}"]
    assert len(variants) == 2 and len(routes) == 4
    present, absent = ([h for h in v.match.headers if h.name == "x-canary"][0] for v in variants)
    assert present.invert_match and present.string_match.exact == "no"
    assert not present.treat_missing_header_as_empty
    assert absent.invert_match and absent.present_match and not absent.HasField("string_match")
    for variant in variants:  # the other conditions stay on both
        user = [h for h in variant.match.headers if h.name == "x-user"][0]
        assert user.string_match.prefix == "a" and not user.invert_match


def test_many_without_headers_are_not_expanded():
    names = [f"x-h{i}" for i in range(proxyless.MAX_ABSENT_VARIANTS + 1)]
    without = ", ".join(f'{n}: {{exact: "1"}}' for n in names)
    vs = f"""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: echo, namespace: default}}
    spec:
      hosts: [{HOST}]
      http:
      - match: [{{withoutHeaders: {{{without}}}}}]
        route: [{{destination: {{host: {HOST}, port: {{number: 7070}}}}}}]
    """
    _, config = compiled(ECHO, vs)
    assert len(config.messages(ROUTE)[f"{HOST}:7070"].virtual_hosts[0].routes) == 1


# --- clusters -------------------------------------------------------------------------------------


def dr(traffic_policy: str, host: str = HOST) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: rule, namespace: default}}\n"
            f"spec:\n  host: {host}\n  trafficPolicy:\n" + textwrap.indent(textwrap.dedent(traffic_policy), "    "))


@pytest.mark.parametrize("load_balancer, sidecar_policy, policy", [
    # gRPC NACKs all but ROUND_ROBIN and RING_HASH: "LB policy is not supported"
    ("", Cluster.LEAST_REQUEST, Cluster.ROUND_ROBIN),  # Istio's default
    ("loadBalancer: {simple: LEAST_REQUEST}", Cluster.LEAST_REQUEST, Cluster.ROUND_ROBIN),
    ("loadBalancer: {simple: RANDOM}", Cluster.RANDOM, Cluster.ROUND_ROBIN),
    ("loadBalancer: {simple: ROUND_ROBIN}", Cluster.ROUND_ROBIN, Cluster.ROUND_ROBIN),
    ("loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 64}}}",
     Cluster.RING_HASH, Cluster.RING_HASH),
    ("loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}",
     Cluster.MAGLEV, Cluster.RING_HASH),
])
def test_load_balancers_gRPC_has(load_balancer, sidecar_policy, policy):
    docs = [ECHO] + ([dr(load_balancer)] if load_balancer else [])
    mesh, config = compiled(*docs)
    cluster = config.messages(CLUSTER)[f"outbound|7070||{HOST}"]
    assert cluster.lb_policy == policy
    assert not cluster.HasField("maglev_lb_config")
    if "ringHash" in load_balancer:
        assert cluster.ring_hash_lb_config.minimum_ring_size.value == 64
    # the sidecar's clusters are shared between views (compiled once per mesh): adapting a copy
    # must leave them as they are
    sidecar = compile_view(mesh, make_view(mesh, "cluster-a", NODE)).messages(CLUSTER)[f"outbound|7070||{HOST}"]
    assert sidecar.lb_policy == sidecar_policy


def test_what_gRPC_accepts_is_kept_as_the_sidecar_has_it():
    """Circuit breakers, outlier detection, locality settings and auto mTLS's socket matches (which
    gRPC ignores) are accepted as they are: the cluster differs from the sidecar's in lb_policy only."""
    policy = dr("""
        connectionPool: {tcp: {maxConnections: 10}, http: {http2MaxRequests: 100, idleTimeout: 30s}}
        outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    """)
    mesh, config = compiled(ECHO, policy)
    sidecar = compile_view(mesh, make_view(mesh, "cluster-a", NODE)).messages(CLUSTER)
    for name, cluster in config.messages(CLUSTER).items():
        expected = Cluster()
        expected.CopyFrom(sidecar[name])
        expected.lb_policy = Cluster.ROUND_ROBIN
        assert cluster == expected, name
    cluster = config.messages(CLUSTER)[f"outbound|7070||{HOST}"]
    assert cluster.HasField("outlier_detection") and cluster.circuit_breakers.thresholds[0].max_requests.value == 100
    assert [m.name for m in cluster.transport_socket_matches] == ["tlsMode-istio", "tlsMode-disabled"]


def test_istio_mutual_uses_the_bootstraps_certificate_provider():
    """gRPC NACKs SDS ("tls_certificate_sds_secret_configs: feature unsupported"); Istio's proxyless
    form names the bootstrap's certificate provider for the workload certificate and the root."""
    sans = '["spiffe://cluster.local/ns/default/sa/echo"]'
    _, config = compiled(ECHO, dr(f"tls: {{mode: ISTIO_MUTUAL, subjectAltNames: {sans}}}"))
    cluster = config.messages(CLUSTER)[f"outbound|7070||{HOST}"]
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert not common.tls_certificate_sds_secret_configs
    assert not common.combined_validation_context.HasField("validation_context_sds_secret_config")
    assert (common.tls_certificate_provider_instance.instance_name,
            common.tls_certificate_provider_instance.certificate_name) == ("default", "default")
    validation = common.combined_validation_context.default_validation_context
    assert (validation.ca_certificate_provider_instance.instance_name,
            validation.ca_certificate_provider_instance.certificate_name) == ("default", "ROOTCA")
    # gRPC ignores the typed SAN matchers (any certificate of the CA would do): the untyped ones
    assert [m.exact for m in validation.match_subject_alt_names] == ["spiffe://cluster.local/ns/default/sa/echo"]
    assert not validation.match_typed_subject_alt_names
    assert context.sni == f"outbound_.7070_._.{HOST}"
    providers = grpc_bootstrap(BootstrapOptions("cluster-a", NODE))["certificate_providers"]
    assert proxyless.CERTIFICATE_PROVIDER in providers


def test_istio_mutual_checks_the_endpoints_identities():
    """Without subjectAltNames, Istio checks the service accounts of the service's endpoints."""
    _, config = compiled(ECHO, dr("tls: {mode: ISTIO_MUTUAL}"))
    context = tls_pb2.UpstreamTlsContext()
    config.messages(CLUSTER)[f"outbound|8080||{HOST}"].transport_socket.typed_config.Unpack(context)
    validation = context.common_tls_context.combined_validation_context.default_validation_context
    assert [m.exact for m in validation.match_subject_alt_names] == ["spiffe://cluster.local/ns/default/sa/echo"]


@pytest.mark.parametrize("tls", [
    "{mode: SIMPLE}", "{mode: SIMPLE, credentialName: echo-cred}",
    "{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}"])
def test_tls_gRPC_cannot_take_leaves_the_cluster_out(tls):
    """Files and SDS credentials: gRPC NACKs them ("no CA certs configured", "feature unsupported");
    the cluster is left out rather than sent without its TLS."""
    _, config = compiled(ECHO, dr(f"tls: {tls}"))
    assert f"outbound|7070||{HOST}" not in config.messages(CLUSTER)
    assert f"outbound|7070||{HOST}" not in config.messages(ENDPOINT)
    assert f"{HOST}:7070" in config.messages(LISTENER)  # the route is there; its RPCs fail UNAVAILABLE


def _service(name: str, resolution: str, endpoints: str = "") -> str:
    text = f"""
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {{name: {name}, namespace: default}}
    spec:
      hosts: [{name}.example.com]
      resolution: {resolution}
      ports: [{{number: 443, name: grpc, protocol: GRPC}}]
    """
    return doc(text) + (f"  endpoints: {endpoints}\n" if endpoints else "")


def test_cluster_types_gRPC_knows():
    """gRPC has EDS and LOGICAL_DNS only ("unknown discovery type" for the others)."""
    _, config = compiled(_service("one", "DNS", "[{address: one.internal}]"),
                         _service("two", "DNS", "[{address: a.internal}, {address: b.internal}]"),
                         _service("rr", "DNS_ROUND_ROBIN"),
                         _service("passthrough", "NONE"))
    clusters = config.messages(CLUSTER)
    assert clusters["outbound|443||one.example.com"].type == Cluster.LOGICAL_DNS
    address = clusters["outbound|443||one.example.com"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.address == "one.internal"
    assert clusters["outbound|443||rr.example.com"].type == Cluster.LOGICAL_DNS
    assert "outbound|443||two.example.com" not in clusters  # several names do not fit one gRPC cluster
    assert "outbound|443||passthrough.example.com" not in clusters  # ORIGINAL_DST
    assert all(c.lb_policy in (Cluster.ROUND_ROBIN, Cluster.RING_HASH) for c in clusters.values())


# --- endpoints ------------------------------------------------------------------------------------

TWO_NETWORKS = ONE_CLUSTER.replace("      gateways: [{address: 192.0.2.10, port: 15443}]\n", """\
      gateways: [{address: 192.0.2.10, port: 15443}]
    network-2:
      endpoints: [{fromCidr: 10.2.0.0/16}]
      gateways: [{address: 192.0.2.20, port: 15443}]
""")
SPREAD = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 10.1.0.1, locality: us-east/us-east-1a}}
  - {{address: 10.1.0.2, locality: us-east/us-east-1b, weight: 3}}
  - {{address: 10.2.0.1, locality: eu/eu-1, serviceAccount: echo}}
  - {{address: 10.2.0.2, locality: eu/eu-2, serviceAccount: echo}}
"""


def _hosts(assignment):
    return [(group.locality.zone, group.load_balancing_weight.value, group.priority,
             [lb.endpoint.address.socket_address.address for lb in group.lb_endpoints])
            for group in assignment.endpoints]


def test_remote_networks_gateways_are_left_out():
    """A sidecar gets network-2's gateway once per locality; gRPC NACKs the repeated address
    ("duplicate endpoint address"), and could not pass the gateway without Istio mTLS's SNI anyway."""
    mesh, config = compiled(SPREAD, topology=TWO_NETWORKS)
    name = f"outbound|7070||{HOST}"
    sidecar = compile_view(mesh, make_view(mesh, "cluster-a", NODE)).messages(ENDPOINT)[name]
    assert [hosts for *_, hosts in _hosts(sidecar)].count(["192.0.2.20"]) == 2
    assert _hosts(config.messages(ENDPOINT)[name]) == [("us-east-1a", 1, 0, ["10.1.0.1"]),
                                                        ("us-east-1b", 3, 0, ["10.1.0.2"])]


def test_failover_priorities_stay_contiguous_and_weights_positive():
    failover = dr("outlierDetection: {consecutive5xxErrors: 1}")
    _, config = compiled(SPREAD, failover, topology=TWO_NETWORKS, locality="us-east/us-east-1b")
    groups = _hosts(config.messages(ENDPOINT)[f"outbound|7070||{HOST}"])
    assert groups == [("us-east-1b", 3, 0, ["10.1.0.2"]), ("us-east-1a", 1, 1, ["10.1.0.1"])]


def test_endpoints_in_a_network_without_gateways_stay():
    no_gateway = TWO_NETWORKS.replace("      gateways: [{address: 192.0.2.20, port: 15443}]\n", "")
    _, config = compiled(SPREAD, topology=no_gateway)
    assert _hosts(config.messages(ENDPOINT)[f"outbound|7070||{HOST}"]) == [
        ("eu-1", 1, 0, ["10.2.0.1"]), ("eu-2", 1, 0, ["10.2.0.2"]),
        ("us-east-1a", 1, 0, ["10.1.0.1"]), ("us-east-1b", 3, 0, ["10.1.0.2"])]


# --- the whole view -------------------------------------------------------------------------------


def test_sidecar_scoping_applies():
    sidecar = """
    apiVersion: networking.istio.io/v1
    kind: Sidecar
    metadata: {name: default, namespace: default}
    spec:
      egress: [{hosts: ["./other.example.com"]}]
    """
    _, config = compiled(ECHO, _service("other", "DNS", "[{address: o.internal}]"), sidecar)
    assert list(config.messages(LISTENER)) == ["other.example.com:443"]


def test_the_view_is_deterministic_and_served_by_name():
    mesh = mesh_from(sample_files(), "sample")
    view = make_view(mesh, "cluster-a", NODE, proxyless=True)
    assert compile_view(mesh, view).versions() == compile_view(mesh, view).versions()
    served = serve_view(mesh, view)
    name = "reviews.bookinfo.svc.cluster.local:9080"
    _, _, body = served.sotw(LISTENER, frozenset({name}))
    assert name.encode() in body and b"details.bookinfo" not in body
    for config in compile_view(mesh, view).messages(ENDPOINT).values():
        assert all(group.load_balancing_weight.value > 0 for group in config.endpoints)


def test_a_router_node_can_be_proxyless_too():
    mesh = mesh_from({"mesh.yaml": ONE_CLUSTER})
    view = make_view(mesh, "cluster-a", "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local",
                     proxyless=True)
    assert view.role == GRPC != ROUTER


# --- bootstrap ------------------------------------------------------------------------------------


def test_grpc_bootstrap():
    options = BootstrapOptions("cluster-a", NODE, ads="galleon.istio-system:15010", labels={"app": "client"},
                               locality="us-east/us-east-1a", network="network-1")
    boot = json.loads(grpc_bootstrap_json(options, certificate_dir="/certs/"))
    assert boot["xds_servers"] == [{"server_uri": "galleon.istio-system:15010",
                                    "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}]
    assert boot["node"] == {"id": NODE, "cluster": "cluster-a",
                            "metadata": {"CLUSTER_ID": "cluster-a", "GENERATOR": "grpc", "NETWORK": "network-1",
                                         "LABELS": {"app": "client"}},
                            "locality": {"region": "us-east", "zone": "us-east-1a"}}
    files = boot["certificate_providers"]["default"]
    assert files["plugin_name"] == "file_watcher"
    assert files["config"]["certificate_file"] == "/certs/cert-chain.pem"
    assert files["config"]["ca_certificate_file"] == "/certs/root-cert.pem"
    # the node as gRPC sends it gives the proxyless view
    mesh = mesh_from({"mesh.yaml": ONE_CLUSTER})
    node = base_pb2.Node(id=NODE)
    node.metadata.update(boot["node"]["metadata"])
    node.locality.region, node.locality.zone = "us-east", "us-east-1a"
    assert view_of_node(mesh, node, "cluster-a").role == GRPC


def test_grpc_bootstrap_minimal_and_refusals():
    boot = grpc_bootstrap(BootstrapOptions("cluster-a", NODE))
    assert boot["node"]["metadata"] == {"CLUSTER_ID": "cluster-a", "GENERATOR": "grpc"}
    assert "locality" not in boot["node"]
    assert boot["xds_servers"][0]["server_uri"] == "127.0.0.1:15010"
    with pytest.raises(ValueError, match="state of the world"):
        grpc_bootstrap(BootstrapOptions("cluster-a", NODE, delta=True))
    with pytest.raises(ViewError):
        grpc_bootstrap(BootstrapOptions("cluster-a", "not-a-node-id"))
    with pytest.raises(ValueError, match="--ads"):
        grpc_bootstrap(BootstrapOptions("cluster-a", NODE, ads="nowhere"))
