"""CDS: names, types by resolution, and DestinationRule policy translated as Istio does."""
from __future__ import annotations

import textwrap

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from compiler.clusters import build_clusters
from compiler.model import build_mesh
from compiler.parse import parse
from compiler.scope import visible_services
from compiler.revision import load
from compiler.view import make_view
from tests.conftest import mesh_from, snapshot_of

Cluster = cluster_pb2.Cluster

TOPOLOGY = """\
apiVersion: galleon.io/v1alpha1
kind: MeshNetworks
metadata: {name: mesh-networks, namespace: istio-system}
spec:
  networks:
    n1: {endpoints: [{fromRegistry: c1}], gateways: [{address: 192.0.2.1, port: 15443}]}
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: c1, namespace: istio-system}
spec: {network: n1, locality: r1/z1}
"""


def se(name: str, resolution: str, endpoints: str = "", ports: str = "[{number: 80, name: http, protocol: HTTP}]",
       host: str | None = None) -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: {name}, namespace: ns}}
        spec:
          hosts: [{host or name + '.example.com'}]
          location: MESH_INTERNAL
          resolution: {resolution}
          ports: {ports}
        """) + (f"  endpoints: {endpoints}\n" if endpoints else "")


def dr(host: str, body: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host.split('.')[0]}, "
            f"namespace: ns}}\nspec:\n  host: {host}\n" + textwrap.indent(textwrap.dedent(body), "  "))


def clusters(*docs: str) -> dict[str, Cluster]:
    mesh = mesh_from({"mesh.yaml": "---\n".join((TOPOLOGY,) + docs)}, revision="r1")
    view = make_view(mesh, "c1")
    return {c.name: c for c in build_clusters(mesh, view, visible_services(mesh, view))}


def test_names_types_and_defaults():
    out = clusters(se("web", "STATIC", "[{address: 10.0.0.1}]"),
                   se("api", "DNS", "[{address: api.internal}]"),
                   se("rr", "DNS_ROUND_ROBIN"),
                   se("any", "NONE"))
    web = out["outbound|80||web.example.com"]
    assert web.type == Cluster.EDS and web.eds_cluster_config.service_name == web.name
    assert web.eds_cluster_config.eds_config.HasField("ads")
    assert web.lb_policy == Cluster.LEAST_REQUEST and web.connect_timeout.seconds == 10
    assert web.circuit_breakers.thresholds[0].max_connections.value == 2**32 - 1
    api = out["outbound|80||api.example.com"]
    assert api.type == Cluster.STRICT_DNS
    assert [e.endpoint.address.socket_address.address for e in api.load_assignment.endpoints[0].lb_endpoints] == [
        "api.internal"]
    rr = out["outbound|80||rr.example.com"]
    assert rr.type == Cluster.LOGICAL_DNS
    assert rr.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "rr.example.com"
    anything = out["outbound|80||any.example.com"]
    assert anything.type == Cluster.ORIGINAL_DST and anything.lb_policy == Cluster.CLUSTER_PROVIDED


def test_none_with_endpoints_is_rejected_but_compiled_as_endpoints():
    """Istio rejects endpoints with resolution NONE (IST0106); given them anyway, it sends them by EDS."""
    files = {"mesh.yaml": "---\n".join((TOPOLOGY, se("listed", "NONE", "[{address: 10.0.0.9}]")))}
    assert [f.code for f in load(snapshot_of(files)).findings] == ["IST0106"]
    mesh = build_mesh(parse(snapshot_of(files)).objects, "r1")
    view = make_view(mesh, "c1")
    out = {c.name: c for c in build_clusters(mesh, view, visible_services(mesh, view))}
    assert out["outbound|80||listed.example.com"].type == Cluster.EDS


def test_subsets_and_port_level_policy():
    out = clusters(se("web", "STATIC", "[{address: 10.0.0.1, labels: {v: a}}, {address: 10.0.0.2, labels: {v: b}}]",
                      ports="[{number: 80, name: http, protocol: HTTP}, {number: 81, name: grpc, protocol: GRPC}]"),
                   dr("web.example.com", """\
                       trafficPolicy:
                         loadBalancer: {simple: ROUND_ROBIN}
                         portLevelSettings:
                         - port: {number: 81}
                           loadBalancer: {simple: RANDOM}
                       subsets:
                       - name: a
                         labels: {v: a}
                         trafficPolicy:
                           loadBalancer:
                             consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}
                       - name: b
                         labels: {v: b}
                         trafficPolicy:
                           loadBalancer:
                             consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}
                       """))
    assert sorted(out) == ["outbound|80|a|web.example.com", "outbound|80|b|web.example.com",
                           "outbound|80||web.example.com", "outbound|81|a|web.example.com",
                           "outbound|81|b|web.example.com", "outbound|81||web.example.com"]
    assert out["outbound|80||web.example.com"].lb_policy == Cluster.ROUND_ROBIN
    assert out["outbound|81||web.example.com"].lb_policy == Cluster.RANDOM
    ring = out["outbound|80|a|web.example.com"]
    assert ring.lb_policy == Cluster.RING_HASH and ring.ring_hash_lb_config.minimum_ring_size.value == 2048
    maglev = out["outbound|80|b|web.example.com"]
    assert maglev.lb_policy == Cluster.MAGLEV and maglev.maglev_lb_config.table_size.value == 65537
    # gRPC speaks HTTP/2 upstream
    options = http_protocol_options_pb2.HttpProtocolOptions()
    out["outbound|81||web.example.com"].typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_connection_pool_and_outlier_detection():
    out = clusters(se("web", "STATIC", "[{address: 10.0.0.1}]"), dr("web.example.com", """\
        trafficPolicy:
          connectionPool:
            tcp: {maxConnections: 100, connectTimeout: 250ms}
            http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRetries: 3, idleTimeout: 30s,
                   maxRequestsPerConnection: 5}
          outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 1m,
                             maxEjectionPercent: 50, minHealthPercent: 40}
        """))
    web = out["outbound|80||web.example.com"]
    limits = web.circuit_breakers.thresholds[0]
    assert (limits.max_connections.value, limits.max_pending_requests.value, limits.max_requests.value,
            limits.max_retries.value) == (100, 10, 1000, 3)
    assert web.connect_timeout.nanos == 250_000_000
    od = web.outlier_detection
    assert (od.consecutive_5xx.value, od.enforcing_consecutive_5xx.value, od.interval.seconds,
            od.base_ejection_time.seconds, od.max_ejection_percent.value) == (7, 100, 5, 60, 50)
    assert web.common_lb_config.healthy_panic_threshold.value == 40
    options = http_protocol_options_pb2.HttpProtocolOptions()
    web.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    assert options.common_http_protocol_options.idle_timeout.seconds == 30
    assert options.common_http_protocol_options.max_requests_per_connection.value == 5


@pytest.mark.parametrize("tls, sni, secrets", [
    ("{mode: ISTIO_MUTUAL}", "outbound_.80_.a_.web.example.com", ["default"]),
    ("{mode: SIMPLE, sni: api.example.org}", "api.example.org", []),
    ("{mode: SIMPLE, credentialName: egress-cert}", "web.example.com", ["egress-cert"]),
])
def test_tls_modes(tls, sni, secrets):
    out = clusters(se("web", "STATIC", "[{address: 10.0.0.1, labels: {v: a}}]"),
                   dr("web.example.com", f"trafficPolicy:\n  tls: {tls}\nsubsets:\n- {{name: a, labels: {{v: a}}}}\n"))
    cluster = out["outbound|80|a|web.example.com"]
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == sni
    assert [s.name for s in context.common_tls_context.tls_certificate_sds_secret_configs] == secrets


def test_locality_weighted_config_only_with_distribute():
    weighted = clusters(se("web", "STATIC", "[{address: 10.0.0.1}]"), dr("web.example.com", """\
        trafficPolicy:
          loadBalancer:
            localityLbSetting:
              distribute: [{from: r1/*, to: {r1/*: 100}}]
        """))
    assert weighted["outbound|80||web.example.com"].common_lb_config.HasField("locality_weighted_lb_config")
    plain = clusters(se("web", "STATIC", "[{address: 10.0.0.1}]"))
    assert not plain["outbound|80||web.example.com"].common_lb_config.HasField("locality_weighted_lb_config")


def test_provenance_names_service_entry_and_rule():
    out = clusters(se("web", "STATIC", "[{address: 10.0.0.1}]"), dr("web.example.com", "trafficPolicy: {}\n"))
    fields = out["outbound|80||web.example.com"].metadata.filter_metadata["galleon"].fields
    assert fields["source"].string_value == "ServiceEntry/ns/web"
    # the revision is stamped when the view is compiled (test_xds), not by the builder
    assert fields["file"].string_value == "mesh.yaml" and "revision" not in fields
    assert fields["line"].number_value == 13  # after the topology (11 lines) and a --- separator
    assert fields["also"].list_value.values[0].string_value.startswith("DestinationRule/ns/web (mesh.yaml:")


def test_dns_clusters_get_no_split_horizon():
    """Istio applies its network filter to EDS only: a DNS cluster lists its hosts wherever they are."""
    remote = TOPOLOGY.replace("    n1: {endpoints: [{fromRegistry: c1}], gateways: [{address: 192.0.2.1, port: 15443}]}",
                              "    n1: {endpoints: [{fromRegistry: c1}], gateways: [{address: 192.0.2.1, port: 15443}]}\n"
                              "    n2: {endpoints: [{fromCidr: 10.9.0.0/16}], gateways: [{address: 192.0.2.2, port: 15443}]}")
    mesh = mesh_from({"mesh.yaml": "---\n".join(
        (remote, se("api", "DNS", "[{address: api.far.internal, network: n2}, {address: api.near.internal}]")))},
        revision="r1")
    view = make_view(mesh, "c1")
    (api,) = [c for c in build_clusters(mesh, view, visible_services(mesh, view)) if "api" in c.name]
    hosts = {e.endpoint.address.socket_address.address for g in api.load_assignment.endpoints for e in g.lb_endpoints}
    assert hosts == {"api.far.internal", "api.near.internal"}
