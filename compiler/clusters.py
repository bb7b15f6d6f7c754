"""CDS: ``outbound|port||host`` per service port, ``outbound|port|subset|host`` per subset.

The cluster type follows the ServiceEntry's resolution, and the merged
DestinationRule policy (port and subset levels included) sets the load
balancer, connection pool, outlier detection and TLS, as Istio does.
"""
from __future__ import annotations

from typing import Any, Mapping

from envoy.config.cluster.v3 import circuit_breaker_pb2, outlier_detection_pb2
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2

from . import cache, endpoints, protocols, provenance
from .protos import ads, pack, sds_secret
from .durations import duration
from .gateways import sni_dnat_targets
from .model import Mesh, Port, Service
from .names import cluster_name, sni
from .view import ProxyView

DEFAULT_CONNECT_TIMEOUT = "10s"
UNLIMITED = 2**32 - 1  # Istio lifts Envoy's default limit of 1024 unless the user sets one
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS_TYPE = "type.googleapis.com/" + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name  # as pack() names it
SIMPLE_LB = {"ROUND_ROBIN": Cluster.ROUND_ROBIN, "RANDOM": Cluster.RANDOM, "LEAST_REQUEST": Cluster.LEAST_REQUEST,
             "LEAST_CONN": Cluster.LEAST_REQUEST, "UNSPECIFIED": Cluster.LEAST_REQUEST}


def build_clusters(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[Cluster]:
    """Every outbound cluster of the visible services, and an east-west gateway's SNI-DNAT
    clusters, sorted by name."""
    clusters = [cluster for service in services for cluster in service_clusters(mesh, view, service)]
    for service, port, subset in sni_dnat_targets(mesh, view, services):
        clusters.append(build_sni_dnat_cluster(mesh, view, service, port, subset))
    return sorted(clusters, key=lambda c: c.name)


def service_clusters(mesh: Mesh, view: ProxyView, service: Service) -> list[Cluster]:
    """One service's outbound clusters: per port, the whole service and each DestinationRule subset."""
    rule = mesh.destination_rule(service.host)
    subsets = [None] + [s.name for s in rule.subsets] if rule else [None]
    return [build_cluster(mesh, view, service, port, subset) for port in service.ports for subset in subsets]


def build_sni_dnat_cluster(mesh: Mesh, view: ProxyView, service: Service, port: Port,
                           subset: str | None) -> Cluster:
    """What an east-west gateway forwards one SNI to: the outbound cluster's endpoints in the
    gateway's own network, without TLS of its own (the caller's mTLS passes through untouched)."""
    cluster = _renamed(build_cluster(mesh, view, service, port, subset), sni(port.number, subset, service.host))
    if cluster.type == Cluster.EDS:
        cluster.eds_cluster_config.service_name = cluster.name
    else:
        cluster.load_assignment.cluster_name = cluster.name
    return cluster


def shared_by_views(service: Service) -> bool:
    """Whether the service's clusters are the same in every view: only a DNS cluster's inline
    endpoints depend on the proxy."""
    return service.resolution not in ("DNS", "DNS_ROUND_ROBIN")


def build_cluster(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None) -> Cluster:
    """One outbound cluster; one shared by every view is built once per mesh (callers must not change it)."""
    if not shared_by_views(service):
        return _build_cluster(mesh, view, service, port, subset)
    return cache.SHARED_CLUSTER.of(mesh, (service.host, port.number, subset),
                                   lambda: _shared_cluster(mesh, view, service, port, subset))


def _shared_cluster(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None) -> Cluster:
    policy = mesh.policy(service.host, port.number, subset)
    if subset is None or policy != mesh.policy(service.host, port.number, None):
        return _build_cluster(mesh, view, service, port, subset)
    # A subset without a traffic policy of its own has the whole service's cluster but for its
    # names (a copy is several times cheaper than building it from the policy again).
    cluster = _renamed(build_cluster(mesh, view, service, port, None), cluster_name(port.number, subset, service.host))
    if cluster.type == Cluster.EDS:
        cluster.eds_cluster_config.service_name = cluster.name
    _transport_socket(cluster, policy, port, subset, service, mesh)
    return cluster


def _renamed(whole: Cluster, name: str) -> Cluster:
    """A copy of a cluster under another name, without its TLS (whose SNI names the cluster)."""
    cluster = Cluster()
    cluster.CopyFrom(whole)
    cluster.name = name
    cluster.ClearField("transport_socket")
    cluster.ClearField("transport_socket_matches")
    return cluster


def _build_cluster(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None) -> Cluster:
    name = cluster_name(port.number, subset, service.host)
    policy = mesh.policy(service.host, port.number, subset)
    rule = mesh.destination_rule(service.host)
    sources = (service.source, rule.source) if rule else (service.source,)
    cluster = Cluster(name=name)
    provenance.set_sources(cluster.metadata, *sources)
    weighted = endpoints.locality_policy(mesh, service.host, port.number, subset).weighted
    discovery = _discovery_type(service)
    cache.merge(cluster, cache.CLUSTER_SETTINGS, (repr(policy), discovery, port.protocol, weighted),
                lambda: _settings(policy, discovery, port.protocol, weighted))
    if cluster.type == Cluster.EDS:
        cluster.eds_cluster_config.service_name = name
    elif cluster.type in (Cluster.STRICT_DNS, Cluster.LOGICAL_DNS):
        cluster.load_assignment.CopyFrom(_dns_endpoints(mesh, view, service, port, subset, name, cluster.type))
    _transport_socket(cluster, policy, port, subset, service, mesh)
    return cluster


def _settings(policy: Mapping[str, Any], discovery: int, protocol: str, weighted: bool) -> Cluster:
    """The part of a cluster that its policy, discovery type, port protocol and locality weighting
    decide: all but its names, metadata, endpoints and TLS (most services have the same: equal policy
    reprs are equal policies)."""
    cluster = Cluster()
    pool = policy.get("connectionPool") or {}
    cluster.connect_timeout.CopyFrom(duration((pool.get("tcp") or {}).get("connectTimeout", DEFAULT_CONNECT_TIMEOUT)))
    _discovery(cluster, discovery)
    _load_balancer(cluster, policy.get("loadBalancer") or {})
    if weighted:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    _connection_pool(cluster, pool, protocol)
    if "outlierDetection" in policy:
        _outlier_detection(cluster, policy["outlierDetection"])
    return cluster


def _transport_socket(cluster: Cluster, policy: Mapping[str, Any], port: Port, subset: str | None,
                      service: Service, mesh: Mesh) -> None:
    if policy.get("tls"):
        _tls(cluster, policy["tls"], port, subset, service, mesh)
    elif cluster.type in (Cluster.EDS, Cluster.STRICT_DNS):
        _auto_mtls(cluster, port, subset, service, mesh)


def _discovery_type(service: Service) -> int:
    resolution = service.resolution
    if resolution == "STATIC" or (resolution == "NONE" and service.endpoints):
        return Cluster.EDS
    if resolution == "DNS":
        return Cluster.STRICT_DNS
    if resolution == "DNS_ROUND_ROBIN":
        return Cluster.LOGICAL_DNS
    return Cluster.ORIGINAL_DST  # NONE without endpoints: pass through to where the application was going


def _discovery(cluster: Cluster, discovery: int) -> None:
    cluster.type = discovery
    if discovery == Cluster.EDS:
        cluster.eds_cluster_config.eds_config.CopyFrom(ads())  # the service name is the cluster's
    elif discovery in (Cluster.STRICT_DNS, Cluster.LOGICAL_DNS):
        cluster.dns_lookup_family = Cluster.V4_ONLY  # the endpoints are the proxy's (_dns_endpoints)
    else:
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED


def _dns_endpoints(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None, name: str,
                   discovery: int) -> endpoint_pb2.ClusterLoadAssignment:
    """A DNS cluster's inline endpoints: host names Envoy resolves itself, as this proxy sees them."""
    groups = endpoints.compute_groups(mesh, view, service, port, subset, split=False) if service.endpoints else [
        endpoints.Group(view.locality, (endpoints.Target(service.host, port.number, 1),), 1)]
    if discovery == Cluster.LOGICAL_DNS:  # it takes exactly one host
        first = groups[0]
        groups = [endpoints.Group(first.locality, first.targets[:1], first.targets[0].weight, first.priority)]
    auto_mtls = endpoints.mtls_mode(mesh, service.host, port.number, subset) is None
    return endpoints.encode(mesh, name, groups, mark_tls_mode=auto_mtls)


def _load_balancer(cluster: Cluster, lb: Mapping[str, Any]) -> None:
    if cluster.type == Cluster.ORIGINAL_DST:
        return
    simple = lb.get("simple", "LEAST_REQUEST")
    if simple == "PASSTHROUGH":
        cluster.ClearField("eds_cluster_config")
        cluster.ClearField("load_assignment")
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        return
    hashing = lb.get("consistentHash")
    if hashing is None:
        cluster.lb_policy = SIMPLE_LB[simple]
    elif "maglev" in hashing:
        cluster.lb_policy = Cluster.MAGLEV
        if "tableSize" in hashing["maglev"]:
            cluster.maglev_lb_config.table_size.value = hashing["maglev"]["tableSize"]
    else:
        cluster.lb_policy = Cluster.RING_HASH
        size = (hashing.get("ringHash") or {}).get("minimumRingSize") or hashing.get("minimumRingSize")
        if size:
            cluster.ring_hash_lb_config.minimum_ring_size.value = size


def _connection_pool(cluster: Cluster, pool: Mapping[str, Any], protocol: str) -> None:
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    cluster.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections=wrappers_pb2.UInt32Value(value=tcp.get("maxConnections", UNLIMITED)),
            max_pending_requests=wrappers_pb2.UInt32Value(value=http.get("http1MaxPendingRequests", UNLIMITED)),
            max_requests=wrappers_pb2.UInt32Value(value=http.get("http2MaxRequests", UNLIMITED)),
            max_retries=wrappers_pb2.UInt32Value(value=http.get("maxRetries", UNLIMITED)))]))
    http2 = protocol in protocols.HTTP2_FAMILY or http.get("h2UpgradePolicy") == "UPGRADE"
    # A detected protocol: the cluster speaks to the endpoint what the client spoke (Istio's choice)
    detected = protocol == protocols.AUTO and not http2
    if not (http2 or detected or "idleTimeout" in http or "maxRequestsPerConnection" in http):
        return
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if "idleTimeout" in http:
        options.common_http_protocol_options.idle_timeout.CopyFrom(duration(http["idleTimeout"]))
    if http.get("maxRequestsPerConnection"):
        options.common_http_protocol_options.max_requests_per_connection.value = http["maxRequestsPerConnection"]
    if http2:
        options.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    elif detected:
        options.use_downstream_protocol_config.http_protocol_options.SetInParent()
        options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(pack(options))


def _outlier_detection(cluster: Cluster, od: Mapping[str, Any]) -> None:
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate=wrappers_pb2.UInt32Value(value=0))
    errors = od.get("consecutive5xxErrors", od.get("consecutiveErrors"))
    if errors is not None:
        out.consecutive_5xx.value = errors
        out.enforcing_consecutive_5xx.value = 100 if errors else 0
    if "consecutiveGatewayErrors" in od:
        out.consecutive_gateway_failure.value = od["consecutiveGatewayErrors"]
        out.enforcing_consecutive_gateway_failure.value = 100 if od["consecutiveGatewayErrors"] else 0
    if "consecutiveLocalOriginFailures" in od:
        out.consecutive_local_origin_failure.value = od["consecutiveLocalOriginFailures"]
    if od.get("splitExternalLocalOriginErrors"):
        out.split_external_local_origin_errors = True
    for field, key in (("interval", "interval"), ("base_ejection_time", "baseEjectionTime")):
        if key in od:
            getattr(out, field).CopyFrom(duration(od[key]))
    if "maxEjectionPercent" in od:
        out.max_ejection_percent.value = od["maxEjectionPercent"]
    cluster.outlier_detection.CopyFrom(out)
    # Istio always sets it (default 0: no panic mode), so ejection is never undone by Envoy's 50 %
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=float(od.get("minHealthPercent", 0))))


def _combined_validation(common: tls_pb2.CommonTlsContext, secret: str) -> None:
    # Envoy requires the default context to be present, even when the CA comes only over SDS
    common.combined_validation_context.default_validation_context.SetInParent()
    common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(sds_secret(secret))


def _identities(mesh: Mesh, service: Service) -> tuple[str, ...]:
    """The SPIFFE identities of the service's workloads, which an Istio mTLS peer must present;
    computed once per mesh for all the service's clusters."""
    trust_domain = mesh.settings.trust_domain
    return cache.IDENTITIES.of(mesh, service.host, lambda: tuple(sorted({
        f"spiffe://{trust_domain}/ns/{ep.namespace}/sa/{ep.service_account}"
        for ep in service.endpoints if ep.service_account})))


def _istio_mutual(port: Port, subset: str | None, service: Service, mesh: Mesh,
                  tls: Mapping[str, Any]) -> any_pb2.Any:
    """Istio mTLS to the service's workloads, packed for a transport socket. A cluster's context
    differs from its service's other clusters' only by its SNI: the rest is the same for every
    service with the same identities."""
    identities = tuple(tls.get("subjectAltNames") or _identities(mesh, service))
    context = tls_pb2.UpstreamTlsContext(sni=tls.get("sni") or sni(port.number, subset, service.host))
    cache.merge(context, cache.MTLS_CONTEXTS, identities, lambda: _istio_common_context(identities))
    return pack(context)


def _istio_common_context(identities: tuple[str, ...]) -> tls_pb2.UpstreamTlsContext:
    """An UpstreamTlsContext holding only the common context of Istio mTLS with peers of these identities."""
    context = tls_pb2.UpstreamTlsContext()
    common = context.common_tls_context
    common.tls_certificate_sds_secret_configs.append(sds_secret("default"))
    _combined_validation(common, "ROOTCA")
    for name in identities:
        common.combined_validation_context.default_validation_context.match_typed_subject_alt_names.add(
            san_type=common_pb2.SubjectAltNameMatcher.URI, matcher={"exact": name})
    common.alpn_protocols.extend(["istio-peer-exchange", "istio"])
    return context


def _auto_mtls(cluster: Cluster, port: Port, subset: str | None, service: Service, mesh: Mesh) -> None:
    """Istio's auto mTLS: with no TLS in the DestinationRule, endpoints marked tlsMode=istio (they
    have a sidecar; remote networks' gateways too) get Istio mTLS, the others plaintext."""
    istio = cluster.transport_socket_matches.add()
    istio.CopyFrom(_ISTIO_MATCH)
    istio.transport_socket.typed_config.CopyFrom(_istio_mutual(port, subset, service, mesh, {}))
    cluster.transport_socket_matches.append(_PLAIN_MATCH)


def _socket_match(name: str, socket: str, tls_mode: str | None = None) -> Cluster.TransportSocketMatch:
    match = Cluster.TransportSocketMatch(name=name)
    match.match.SetInParent()
    if tls_mode is not None:
        match.match.fields["tlsMode"].string_value = tls_mode
    match.transport_socket.name = socket
    return match


# The parts of auto mTLS's matches that are the same in every cluster (shared: copied, never changed).
_ISTIO_MATCH = _socket_match("tlsMode-istio", TLS_SOCKET, "istio")
_PLAIN_MATCH = _socket_match("tlsMode-disabled", "envoy.transport_sockets.raw_buffer")
_PLAIN_MATCH.transport_socket.typed_config.CopyFrom(pack(raw_buffer_pb2.RawBuffer()))


def _tls(cluster: Cluster, tls: Mapping[str, Any], port: Port, subset: str | None, service: Service,
         mesh: Mesh) -> None:
    mode = tls.get("mode", "DISABLE")
    if mode == "DISABLE":
        return
    if mode == "ISTIO_MUTUAL":
        packed = _istio_mutual(port, subset, service, mesh, tls)
    else:
        packed = pack(_originated_tls(tls, service.host))
    cluster.transport_socket.name = TLS_SOCKET
    cluster.transport_socket.typed_config.CopyFrom(packed)


def _originated_tls(tls: Mapping[str, Any], host: str) -> tls_pb2.UpstreamTlsContext:
    """SIMPLE or MUTUAL TLS to a server outside the mesh, with files or an SDS credential."""
    context = tls_pb2.UpstreamTlsContext(sni=tls.get("sni") or host)
    common = context.common_tls_context
    if tls.get("credentialName"):
        common.tls_certificate_sds_secret_configs.append(sds_secret(tls["credentialName"]))
        _combined_validation(common, tls["credentialName"] + "-cacert")
        target = common.combined_validation_context.default_validation_context
    else:
        if tls.get("mode") == "MUTUAL" and tls.get("clientCertificate"):
            common.tls_certificates.append(common_pb2.TlsCertificate(
                certificate_chain={"filename": tls["clientCertificate"]},
                private_key={"filename": tls["privateKey"]}))
        if tls.get("caCertificates"):
            common.validation_context.trusted_ca.filename = tls["caCertificates"]
        target = common.validation_context
    for name in tls.get("subjectAltNames") or []:
        target.match_typed_subject_alt_names.add(san_type=common_pb2.SubjectAltNameMatcher.DNS,
                                                 matcher={"exact": name})
    return context
