from __future__ import annotations

import textwrap

import pytest
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from compiler.listeners import build_listeners
from compiler.scope import visible_services
from compiler.view import make_view

from .conftest import ONE_CLUSTER, mesh_from

ROUTER_NODE = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local"
SIDECAR_NODE = "sidecar~10.0.0.2~app.shop~shop.svc.cluster.local"

# One cluster, one network, and services that cover each listener shape:
# two HTTP hosts on 9080, three TCP services sharing 3306 (two with addresses).
BASE = ONE_CLUSTER + """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local, api.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1, labels: {version: v1}}, {address: 10.1.0.5, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  addresses: [10.9.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.1.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: shop}
spec:
  hosts: [cache.shop.svc.cluster.local]
  addresses: [10.8.0.0/24]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.1.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: queue, namespace: shop}
spec:
  hosts: [queue.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.1.0.4}]
"""

INGRESS = """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: ["shop/*"]
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: [shop/web.example.com, shop/api.example.com, "shop/*"]
      tls: {mode: SIMPLE, credentialName: web-cert}
    - port: {number: 8443, name: https-mutual, protocol: HTTPS}
      hosts: [shop/partners.example.com]
      tls:
        mode: MUTUAL
        serverCertificate: /etc/certs/server.pem
        privateKey: /etc/certs/key.pem
        caCertificates: /etc/certs/ca.pem
    - port: {number: 9443, name: tls-passthrough, protocol: TLS}
      hosts: [shop/db.example.com, shop/cache.example.com]
      tls: {mode: PASSTHROUGH}
    - port: {number: 5443, name: tls-terminated, protocol: TLS}
      hosts: [shop/queue.example.com]
      tls: {mode: SIMPLE, credentialName: queue-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-routes, namespace: shop}
spec:
  hosts: [db.example.com, cache.example.com, queue.example.com]
  gateways: [istio-system/ingress]
  tls:
    - match: [{port: 9443, sniHosts: [db.example.com]}]
      route: [{destination: {host: db.shop.svc.cluster.local}}]
    - match: [{port: 9443, sniHosts: [cache.example.com]}]
      route:
        - destination: {host: web.shop.svc.cluster.local, subset: v2, port: {number: 9080}}
  tcp:
    - match: [{port: 5443}]
      route: [{destination: {host: queue.shop.svc.cluster.local, port: {number: 3306}}}]
"""

EAST_WEST = """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
    - port: {number: 15443, name: tls, protocol: TLS}
      hosts: ["*.local"]
      tls: {mode: AUTO_PASSTHROUGH}
"""

# A TLS service on a shared port is told apart by SNI, not only by address.
EXTERNAL_TLS = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: shop}
spec:
  hosts: [api.github.com, example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"""


def mesh_of(text: str, revision: str = "rev"):
    return mesh_from({"mesh.yaml": textwrap.dedent(text).lstrip("\n")}, revision)


def listeners_for(mesh, node_id: str = SIDECAR_NODE, labels: dict | None = None, cluster: str = "cluster-a"):
    view = make_view(mesh, cluster, node_id=node_id, labels=labels)
    return build_listeners(mesh, view, visible_services(mesh, view))


def by_name(listeners) -> dict:
    return {listener.name: listener for listener in listeners}


def unpack(packed, message_type):
    message = message_type()
    assert packed.Unpack(message), packed.type_url
    return message


def hcm_of(chain) -> hcm_pb2.HttpConnectionManager:
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    return unpack(network_filter.typed_config, hcm_pb2.HttpConnectionManager)


def tcp_proxy_of(chain) -> tcp_proxy_pb2.TcpProxy:
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.tcp_proxy"
    return unpack(network_filter.typed_config, tcp_proxy_pb2.TcpProxy)


def tls_context_of(chain) -> tls_pb2.DownstreamTlsContext:
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    return unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)


def listener_filter_names(listener) -> list[str]:
    return [f.name for f in listener.listener_filters]


def assert_rds_over_ads(manager, route_name: str) -> None:
    assert manager.rds.route_config_name == route_name
    assert manager.rds.config_source.HasField("ads")
    assert manager.rds.config_source.resource_api_version == config_source_pb2.V3
    names = [f.name for f in manager.http_filters]
    assert names == ["envoy.filters.http.cors", "envoy.filters.http.fault", "envoy.filters.http.router"]  # router last
    unpack(manager.http_filters[1].typed_config, fault_pb2.HTTPFault)
    unpack(manager.http_filters[-1].typed_config, router_pb2.Router)


# --- sidecars -------------------------------------------------------------------------------------


def test_sidecar_gets_one_outbound_listener_per_port_sorted_by_name():
    listeners = listeners_for(mesh_of(BASE))
    assert [listener.name for listener in listeners] == ["0.0.0.0_3306", "0.0.0.0_9080"]
    for listener, port in zip(listeners, (3306, 9080)):
        assert listener.address.socket_address.address == "0.0.0.0"
        assert listener.address.socket_address.port_value == port
        assert listener.traffic_direction == base_pb2.OUTBOUND


def test_sidecar_http_port_uses_rds_named_by_port():
    listener = by_name(listeners_for(mesh_of(BASE)))["0.0.0.0_9080"]
    (chain,) = listener.filter_chains
    assert not chain.HasField("filter_chain_match")
    manager = hcm_of(chain)
    assert manager.stat_prefix == "outbound_0.0.0.0_9080"
    assert_rds_over_ads(manager, "9080")
    assert not manager.HasField("use_remote_address")  # only the edge trusts its peer as the client
    assert not listener.listener_filters


def test_sidecar_tcp_port_with_one_service_proxies_to_its_cluster():
    mesh = mesh_of(BASE)
    view = make_view(mesh, "cluster-a", node_id=SIDECAR_NODE)
    db = mesh.services["db.shop.svc.cluster.local"]
    (listener,) = build_listeners(mesh, view, [db])
    (chain,) = listener.filter_chains
    assert not chain.HasField("filter_chain_match")
    assert not listener.HasField("default_filter_chain")
    proxy = tcp_proxy_of(chain)
    assert proxy.cluster == "outbound|3306||db.shop.svc.cluster.local"
    assert proxy.stat_prefix == "outbound|3306||db.shop.svc.cluster.local"


def test_sidecar_tcp_services_sharing_a_port_are_matched_by_address():
    listener = by_name(listeners_for(mesh_of(BASE)))["0.0.0.0_3306"]
    chains = [(c.name, [(r.address_prefix, r.prefix_len.value) for r in c.filter_chain_match.prefix_ranges],
               tcp_proxy_of(c).cluster) for c in listener.filter_chains]
    # queue has no address, so only the catch-all (which belongs to the first host, cache) can reach it.
    cache, db = "outbound|3306||cache.shop.svc.cluster.local", "outbound|3306||db.shop.svc.cluster.local"
    assert chains == [(cache, [("10.8.0.0", 24)], cache), (db, [("10.9.0.1", 32)], db)]
    assert tcp_proxy_of(listener.default_filter_chain).cluster == "outbound|3306||cache.shop.svc.cluster.local"
    assert not listener.listener_filters


def test_sidecar_tcp_address_claimed_twice_keeps_the_first_host():
    text = BASE.replace("addresses: [10.8.0.0/24]", "addresses: [10.9.0.1]")
    listener = by_name(listeners_for(mesh_of(text)))["0.0.0.0_3306"]
    assert [c.name for c in listener.filter_chains] == ["outbound|3306||cache.shop.svc.cluster.local"]


def test_sidecar_tls_services_sharing_a_port_are_matched_by_sni():
    listener = by_name(listeners_for(mesh_of(BASE + EXTERNAL_TLS)))["0.0.0.0_443"]
    assert [(list(c.filter_chain_match.server_names), tcp_proxy_of(c).cluster) for c in listener.filter_chains] == [
        (["api.github.com"], "outbound|443||api.github.com"),
        (["example.com"], "outbound|443||example.com"),
    ]
    assert tcp_proxy_of(listener.default_filter_chain).cluster == "outbound|443||api.github.com"
    assert listener_filter_names(listener) == ["envoy.filters.listener.tls_inspector"]


def test_sidecar_listener_provenance_is_the_first_service_entry_on_the_port():
    listeners = by_name(listeners_for(mesh_of(BASE, revision="abc123")))
    fields = listeners["0.0.0.0_3306"].metadata.filter_metadata["galleon"]
    assert fields["source"] == "ServiceEntry/shop/cache"
    assert fields["file"] == "mesh.yaml"
    assert "revision" not in fields  # stamped when the view is compiled (test_xds)
    assert fields["line"] > 0
    assert listeners["0.0.0.0_9080"].metadata.filter_metadata["galleon"]["source"] == "ServiceEntry/shop/web"


# --- gateways -------------------------------------------------------------------------------------


def ingress_listeners(text: str = BASE + INGRESS) -> dict:
    return by_name(listeners_for(mesh_of(text), ROUTER_NODE, {"istio": "ingressgateway"}))


def test_router_gets_one_listener_per_gateway_port():
    listeners = listeners_for(mesh_of(BASE + INGRESS), ROUTER_NODE, {"istio": "ingressgateway"})
    assert [listener.name for listener in listeners] == [
        "0.0.0.0_443", "0.0.0.0_5443", "0.0.0.0_80", "0.0.0.0_8443", "0.0.0.0_9443"]
    for listener in listeners:
        assert listener.address.socket_address.port_value == int(listener.name.split("_")[1])
        assert listener.traffic_direction == base_pb2.OUTBOUND


def test_gateway_http_server_uses_rds_named_http_port():
    listener = ingress_listeners()["0.0.0.0_80"]
    (chain,) = listener.filter_chains
    manager = hcm_of(chain)
    assert_rds_over_ads(manager, "http.80")
    assert manager.use_remote_address.value is True
    assert not listener.listener_filters


def test_gateway_https_server_terminates_with_sds_secret_and_server_names():
    listener = ingress_listeners()["0.0.0.0_443"]
    (chain,) = listener.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["web.example.com", "api.example.com"]  # "*" left out
    context = tls_context_of(chain)
    (secret,) = context.common_tls_context.tls_certificate_sds_secret_configs
    assert secret.name == "web-cert"
    # Istio's convention: every SDS secret comes from the agent's local socket, named sds-grpc
    grpc = secret.sds_config.api_config_source.grpc_services[0]
    assert grpc.envoy_grpc.cluster_name == "sds-grpc"
    assert secret.sds_config.resource_api_version == config_source_pb2.V3
    assert not context.common_tls_context.tls_certificates
    assert not context.HasField("require_client_certificate")
    assert list(context.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    assert_rds_over_ads(hcm_of(chain), "http.443")
    assert listener_filter_names(listener) == ["envoy.filters.listener.tls_inspector"]


def test_gateway_mutual_tls_from_files_requires_a_client_certificate():
    (chain,) = ingress_listeners()["0.0.0.0_8443"].filter_chains
    context = tls_context_of(chain)
    (certificate,) = context.common_tls_context.tls_certificates
    assert certificate.certificate_chain.filename == "/etc/certs/server.pem"
    assert certificate.private_key.filename == "/etc/certs/key.pem"
    assert context.common_tls_context.validation_context.trusted_ca.filename == "/etc/certs/ca.pem"
    assert context.require_client_certificate.value is True
    assert_rds_over_ads(hcm_of(chain), "http.8443")


def test_gateway_terminated_tls_server_proxies_to_the_route_destination():
    (chain,) = ingress_listeners()["0.0.0.0_5443"].filter_chains
    assert list(chain.filter_chain_match.server_names) == ["queue.example.com"]
    assert tls_context_of(chain).common_tls_context.tls_certificate_sds_secret_configs[0].name == "queue-cert"
    assert not tls_context_of(chain).common_tls_context.alpn_protocols  # not HTTP: no h2 to offer
    assert tcp_proxy_of(chain).cluster == "outbound|3306||queue.shop.svc.cluster.local"


def test_gateway_passthrough_routes_by_sni_from_tls_routes():
    listener = ingress_listeners()["0.0.0.0_9443"]
    chains = [(list(c.filter_chain_match.server_names), tcp_proxy_of(c).cluster, c.HasField("transport_socket"))
              for c in listener.filter_chains]
    assert chains == [
        (["cache.example.com"], "outbound|9080|v2|web.shop.svc.cluster.local", False),
        # no port in the destination: the service's only port
        (["db.example.com"], "outbound|3306||db.shop.svc.cluster.local", False),
    ]
    assert listener_filter_names(listener) == ["envoy.filters.listener.tls_inspector"]


def test_gateway_passthrough_splits_weighted_destinations():
    text = (BASE + INGRESS).replace(
        "route: [{destination: {host: db.shop.svc.cluster.local}}]",
        "route: [{destination: {host: db.shop.svc.cluster.local}, weight: 80},"
        " {destination: {host: cache.shop.svc.cluster.local}, weight: 20},"
        " {destination: {host: queue.shop.svc.cluster.local}, weight: 0}]")
    chain = ingress_listeners(text)["0.0.0.0_9443"].filter_chains[1]
    proxy = tcp_proxy_of(chain)
    assert not proxy.cluster
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [
        ("outbound|3306||db.shop.svc.cluster.local", 80), ("outbound|3306||cache.shop.svc.cluster.local", 20)]


def test_east_west_gateway_auto_passthrough_chains_are_named_by_sni():
    mesh = mesh_of(BASE + EAST_WEST)
    (listener,) = listeners_for(mesh, ROUTER_NODE, {"istio": "eastwestgateway"})
    assert listener.name == "0.0.0.0_15443"
    chains = [(c.name, list(c.filter_chain_match.server_names), tcp_proxy_of(c).cluster)
              for c in listener.filter_chains]
    # each SNI goes to its SNI-DNAT cluster: local endpoints, no TLS of the gateway's own
    expected = [(f"outbound_.{port}_.{subset}_.{host}", [f"outbound_.{port}_.{subset}_.{host}"],
                 f"outbound_.{port}_.{subset}_.{host}")
                for port, subset, host in [
                    (3306, "", "cache.shop.svc.cluster.local"), (3306, "", "db.shop.svc.cluster.local"),
                    (3306, "", "queue.shop.svc.cluster.local"), (9080, "", "api.shop.svc.cluster.local"),
                    (9080, "", "web.shop.svc.cluster.local"), (9080, "v1", "web.shop.svc.cluster.local"),
                    (9080, "v2", "web.shop.svc.cluster.local")]]
    assert chains == expected
    assert listener_filter_names(listener) == ["envoy.filters.listener.tls_inspector"]
    assert not any(c.HasField("transport_socket") for c in listener.filter_chains)  # bytes pass through


def test_router_that_no_gateway_selects_gets_no_listeners():
    mesh = mesh_of(BASE + INGRESS + EAST_WEST)
    assert listeners_for(mesh, ROUTER_NODE, {"istio": "something-else"}) == []
    assert listeners_for(mesh, ROUTER_NODE) == []


def test_gateway_listener_provenance_is_the_gateway():
    listeners = listeners_for(mesh_of(BASE + INGRESS, revision="abc123"), ROUTER_NODE, {"istio": "ingressgateway"})
    for listener in listeners:
        fields = listener.metadata.filter_metadata["galleon"]
        assert fields["source"] == "Gateway/istio-system/ingress"
        assert "revision" not in fields
        assert fields["file"] == "mesh.yaml"
        assert "also" not in fields


def test_two_gateways_on_one_port_share_a_listener_and_the_first_keeps_contested_names():
    # The same host written the same way on both Gateways is an error (IST0145); written differently
    # (here `*/` against `shop/`) it is not seen by that check, and the first Gateway keeps it.
    second = """
    ---
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: more, namespace: shop}
    spec:
      selector: {istio: ingressgateway}
      servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["*/web.example.com", shop/new.example.com]
          tls: {mode: SIMPLE, credentialName: more-cert}
    """
    listener = ingress_listeners(BASE + INGRESS + textwrap.dedent(second))["0.0.0.0_443"]
    chains = [(list(c.filter_chain_match.server_names),
               tls_context_of(c).common_tls_context.tls_certificate_sds_secret_configs[0].name)
              for c in listener.filter_chains]
    assert chains == [(["new.example.com"], "more-cert"), (["web.example.com", "api.example.com"], "web-cert")]
    fields = listener.metadata.filter_metadata["galleon"]
    assert fields["source"] == "Gateway/istio-system/ingress"
    (also,) = fields["also"]
    assert also.startswith("Gateway/shop/more (mesh.yaml:")


def test_same_input_gives_identical_messages():
    first = listeners_for(mesh_of(BASE + INGRESS + EAST_WEST + EXTERNAL_TLS), ROUTER_NODE, {"istio": "ingressgateway"})
    second = listeners_for(mesh_of(BASE + INGRESS + EAST_WEST + EXTERNAL_TLS), ROUTER_NODE, {"istio": "ingressgateway"})
    assert [m.SerializeToString(deterministic=True) for m in first] == [
        m.SerializeToString(deterministic=True) for m in second]


# --- the sample repository ------------------------------------------------------------------------


SAMPLE_VIEWS = [("cluster-a", SIDECAR_NODE, None), ("cluster-b", SIDECAR_NODE, None),
                ("cluster-c", SIDECAR_NODE, None), ("cluster-a", ROUTER_NODE, {"istio": "ingressgateway"})]


@pytest.mark.parametrize("cluster,node_id,labels", SAMPLE_VIEWS)
def test_sample_repo_listeners_are_complete_and_deterministic(sample_mesh, cluster, node_id, labels):
    listeners = listeners_for(sample_mesh, node_id, labels, cluster)
    assert listeners
    assert [listener.name for listener in listeners] == sorted(listener.name for listener in listeners)
    again = listeners_for(sample_mesh, node_id, labels, cluster)
    for listener, repeat in zip(listeners, again, strict=True):
        assert listener.IsInitialized()
        assert listener.SerializeToString(deterministic=True) == repeat.SerializeToString(deterministic=True)


def test_sample_repo_sidecar_and_ingress_listeners(sample_mesh):
    sidecar = by_name(listeners_for(sample_mesh, SIDECAR_NODE))
    assert sorted(sidecar) == ["0.0.0.0_18080", "0.0.0.0_3306", "0.0.0.0_9080", "0.0.0.0_9090"]
    assert tcp_proxy_of(sidecar["0.0.0.0_3306"].filter_chains[0]).cluster == \
        "outbound|3306||mysqldb.bookinfo.svc.cluster.local"
    assert hcm_of(sidecar["0.0.0.0_9090"].filter_chains[0]).rds.route_config_name == "9090"
    ingress = by_name(listeners_for(sample_mesh, ROUTER_NODE, {"istio": "ingressgateway"}))
    assert sorted(ingress) == ["0.0.0.0_443", "0.0.0.0_80"]
    (https,) = ingress["0.0.0.0_443"].filter_chains
    assert not https.HasField("filter_chain_match")  # hosts bookinfo/*: any server name
    assert tls_context_of(https).common_tls_context.tls_certificate_sds_secret_configs[0].name == "bookinfo-cert"
    assert hcm_of(https).rds.route_config_name == "http.443"

