"""LDS: the listeners one proxy gets.

Sidecars get one outbound listener per port of the services they see;
gateways ("router" proxies) get one listener per port of the Gateway servers
that select them. Listeners only point at other resources by name (RDS route
configurations, CDS clusters, SDS secrets): those are built elsewhere and
named by ``compiler.names``, so the two sides meet on these names alone.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Iterable, Iterator

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.listener.v3.listener_components_pb2 import FilterChain
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import wrappers_pb2

from . import provenance
from .gateways import MeshVirtualServices, selected_servers, sni_dnat_targets, weighted_destinations
from .protos import ads, pack, sds_secret
from .hosts import fqdn, matches
from .model import Mesh, Port, Service
from .names import cluster_name, gateway_route_name, listener_name, sidecar_route_name, sni
from .parse import SourceObject
from .protocols import AUTO
from .view import ROUTER, ProxyView

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
# What Envoy's HTTP inspector says of plain HTTP/1.1 and of HTTP/2 without TLS, as Istio matches them.
RAW_BUFFER, SNIFFED_HTTP = "raw_buffer", ("http/1.1", "h2c")
TLS_SOCKET = "envoy.transport_sockets.tls"

# Gateway TLS modes in which the gateway itself holds the certificate and decrypts.
TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
# Modes that check a client certificate; OPTIONAL_MUTUAL checks one only if offered.
CLIENT_CERT_MODES = ("MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
# Ports whose clients speak TLS end to end, so the SNI tells the services apart.
SNI_PROTOCOLS = ("TLS", "HTTPS")
# Istio's SDS names for the proxy's own workload certificate and the mesh root.
ISTIO_WORKLOAD_SECRET, ISTIO_ROOT_SECRET = "default", "ROOTCA"
HTTPS_ALPN = ("h2", "http/1.1")
TLS_VERSIONS = {"TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO, "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
                "TLSV1_1": common_pb2.TlsParameters.TLSv1_1, "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
                "TLSV1_3": common_pb2.TlsParameters.TLSv1_3}

MATCH_ANY = ""  # stands for "no server names" when telling which chain claimed what
Target = tuple[str, int]  # (cluster name, weight)


def build_listeners(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[listener_pb2.Listener]:
    """The listeners for a proxy with this view, given the services it sees (scoped, sorted by host)."""
    if view.role == ROUTER:
        listeners = _gateway_listeners(mesh, view, services)
    else:
        listeners = _sidecar_listeners(mesh, view, services)
    return sorted(listeners, key=lambda listener: listener.name)


# --- sidecars -------------------------------------------------------------------------------------


def _sidecar_listeners(mesh: Mesh, view: ProxyView, services: list[Service]) -> Iterator[listener_pb2.Listener]:
    for port, on_port in sorted(_services_by_port(services).items()):
        streams = [service for service in on_port if not service.known_port(port).is_http]
        routing = MeshVirtualServices.of(mesh)
        if not streams:
            # One HTTP listener serves every host on the port: RDS picks the virtual host.
            chains, default = [_chain([_hcm_filter(port, sidecar_route_name(port))])], None
        elif len(streams) == len(on_port) and all(s.known_port(port).protocol != AUTO for s in streams):
            chains, default = _tcp_service_chains(mesh, routing, port, streams)
        else:
            # HTTP beside TCP on one port, or a protocol to detect: Istio's protocol sniffing. What
            # Envoy's HTTP inspector finds to be HTTP is routed (RDS, as above); other bytes go to the
            # TCP chains of the services whose port is not HTTP.
            tcp_chains, default = _tcp_service_chains(mesh, routing, port, streams)
            if default is None:
                tcp_chains, default = [], tcp_chains[0]
            http = _chain([_hcm_filter(port, sidecar_route_name(port))], transport_protocol=RAW_BUFFER,
                          application_protocols=SNIFFED_HTTP)
            chains = tcp_chains + [http]
        yield _listener(view, port, chains, [on_port[0].source], default)


def _services_by_port(services: list[Service]) -> dict[int, list[Service]]:
    """Port number -> the services with that port, in the given (host) order."""
    by_port: dict[int, list[Service]] = defaultdict(list)
    for service in services:
        for port in service.ports:
            by_port[port.number].append(service)
    return by_port


def _tcp_service_chains(mesh: Mesh, routing: MeshVirtualServices, port: int, on_port: list[Service]
                        ) -> tuple[list[FilterChain], FilterChain | None]:
    """(filter chains, default chain) for a port with no HTTP service.

    Without HTTP there is no Host header, so services sharing the port are told
    apart by destination address or, for TLS, by SNI; what neither tells apart
    goes to the first service by host.
    """
    first = _chain([_tcp_proxy_filter(port, _mesh_tcp_targets(mesh, routing, on_port[0], port))])
    matched = list(_matched_service_chains(mesh, routing, port, on_port)) if len(on_port) > 1 else []
    if not matched:
        return [first], None
    return matched, first


def _mesh_tcp_targets(mesh: Mesh, routing: MeshVirtualServices, service: Service, port: int) -> list[Target]:
    """Where a sidecar sends a service's TCP stream: the first ``tcp`` rule of its mesh VirtualService
    that applies on this port (weighted clusters), else the service's own cluster."""
    vs = routing.for_host(service.host)
    if vs is not None:
        for rule in vs.spec.get("tcp", []):
            if any(match.get("port") in (None, port) for match in rule.get("match") or [{}]):
                targets = _route_targets(mesh, vs, rule.get("route", []), port)
                if targets:
                    return targets
    return [(cluster_name(port, None, service.host), 1)]


def _matched_service_chains(mesh: Mesh, routing: MeshVirtualServices, port: int, on_port: list[Service]
                            ) -> Iterator[FilterChain]:
    claimed: set[tuple[str, int]] = set()
    for service in on_port:
        names = [service.host] if service.known_port(port).protocol in SNI_PROTOCOLS and service.host != "*" else []
        # Hosts are unique, so a chain matching on its host's SNI never collides; plain TCP
        # chains only have the address, and Envoy rejects two chains with the same one.
        prefixes = [p for p in _cidrs(service.addresses) if names or p not in claimed]
        if not names:
            claimed.update(prefixes)
        if names or prefixes:
            yield _chain([_tcp_proxy_filter(port, _mesh_tcp_targets(mesh, routing, service, port))],
                         server_names=names, prefixes=prefixes, name=cluster_name(port, None, service.host))


def _cidrs(addresses: Iterable[str]) -> list[tuple[str, int]]:
    """ServiceEntry addresses (IPs or CIDRs) as (prefix, length); anything else is skipped."""
    cidrs = []
    for address in addresses:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            continue
        cidrs.append((str(network.network_address), network.prefixlen))
    return cidrs


# --- gateways -------------------------------------------------------------------------------------


def _gateway_listeners(mesh: Mesh, view: ProxyView, services: list[Service]) -> Iterator[listener_pb2.Listener]:
    servers_by_port: dict[int, list[tuple[SourceObject, dict]]] = defaultdict(list)
    for gateway, server in selected_servers(mesh, view):
        servers_by_port[server["port"]["number"]].append((gateway, server))
    for port, servers in sorted(servers_by_port.items()):
        chains = _without_conflicts(chain for gateway, server in servers
                                    for chain in _server_chains(mesh, view, gateway, server, services))
        if chains:  # Envoy rejects a listener with no filter chain
            gateways = list({gateway.key: gateway for gateway, _ in servers}.values())
            yield _listener(view, port, sorted(chains, key=lambda c: list(c.filter_chain_match.server_names)),
                            gateways)


def _server_chains(mesh: Mesh, view: ProxyView, gateway: SourceObject, server: dict,
                   services: list[Service]) -> list[FilterChain]:
    """The filter chains one Gateway server contributes to its port's listener."""
    port = server["port"]["number"]
    protocol = server["port"].get("protocol", "").upper()
    mode = (server.get("tls") or {}).get("mode", "")
    if mode == "AUTO_PASSTHROUGH":
        return list(_auto_passthrough_chains(mesh, view, port, services))
    if mode == "PASSTHROUGH":
        return list(_passthrough_chains(mesh, gateway, server))
    if Port(port, "", protocol).is_http:  # a plain-text server; its tls block can only ask for redirects
        return [_chain([_hcm_filter(port, gateway_route_name(port), edge=True)])]
    if mode in TERMINATING_MODES:
        return _terminating_chains(mesh, gateway, server, protocol)
    if protocol not in SNI_PROTOCOLS:  # plain TCP (or another opaque protocol)
        targets = _stream_targets(mesh, gateway, server, sections=("tcp",))
        return [_chain([_tcp_proxy_filter(port, targets)])] if targets else []
    return []  # HTTPS/TLS without a usable tls block: validation reports it, nothing to serve


def _terminating_chains(mesh: Mesh, gateway: SourceObject, server: dict, protocol: str) -> list[FilterChain]:
    port = server["port"]["number"]
    context = _downstream_tls_context(server["tls"], HTTPS_ALPN if protocol == "HTTPS" else ())
    if context is None:
        return []
    if protocol == "HTTPS":
        filters = [_hcm_filter(port, gateway_route_name(port), edge=True)]
    else:
        # Istio routes decrypted TLS by the VirtualService's tls rules, else its tcp rules.
        targets = _stream_targets(mesh, gateway, server, sections=("tls", "tcp"))
        if not targets:
            return []
        filters = [_tcp_proxy_filter(port, targets)]
    names = _server_sni_names(server)
    socket = base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
    return [_chain(filters, server_names=names, transport_socket=socket, name=names[0] if names else "")]


def _passthrough_chains(mesh: Mesh, gateway: SourceObject, server: dict) -> Iterator[FilterChain]:
    """One chain per tls match of the bound VirtualServices: SNI in, encrypted bytes out."""
    port = server["port"]["number"]
    patterns = _server_host_patterns(server)
    for vs in _bound_virtual_services(mesh, gateway, server):
        for rule in vs.spec.get("tls", []):
            targets = _route_targets(mesh, vs, rule.get("route", []), port)
            for match in _applicable_matches(rule, vs, gateway, port):
                names = [h for h in match.get("sniHosts", []) if h != "*" and _admitted(h, patterns)]
                if names and targets:
                    yield _chain([_tcp_proxy_filter(port, targets)], server_names=names, name=names[0])


def _auto_passthrough_chains(mesh: Mesh, view: ProxyView, port: int, services: list[Service]
                             ) -> Iterator[FilterChain]:
    """The east-west gateway: the SNI a remote sidecar sends names the SNI-DNAT cluster to use."""
    for service, service_port, subset in sni_dnat_targets(mesh, view, services):
        name = sni(service_port.number, subset, service.host)
        yield _chain([_tcp_proxy_filter(port, [(name, 1)])], server_names=[name], name=name)


def _without_conflicts(chains: Iterable[FilterChain]) -> list[FilterChain]:
    """Envoy rejects a listener in which two chains match the same server name, or two match
    everything; as in Istio, the server declared first keeps what is contested."""
    claimed: set[str] = set()
    kept = []
    for chain in chains:
        names = list(chain.filter_chain_match.server_names)
        wanted = names or [MATCH_ANY]
        fresh = [name for name in wanted if name not in claimed]
        if not fresh:
            continue
        claimed.update(fresh)
        if fresh != wanted:  # only some of its names were taken: keep the rest
            del chain.filter_chain_match.server_names[:]
            chain.filter_chain_match.server_names.extend(fresh)
            chain.name = fresh[0]
        kept.append(chain)
    return kept


# --- Gateway servers and the VirtualServices bound to them ----------------------------------------


def _server_host_patterns(server: dict) -> list[tuple[str, str]]:
    """A server's ``namespace/host`` entries as (namespace, host); no namespace means any."""
    patterns = []
    for entry in server.get("hosts", []):
        namespace, _, host = entry.rpartition("/")
        patterns.append((namespace or "*", host))
    return patterns


def _server_sni_names(server: dict) -> list[str]:
    """The server names a terminating chain matches; ``*`` is left out, so it matches any."""
    names = []
    for _, host in _server_host_patterns(server):
        if host != "*" and host not in names:
            names.append(host)
    return names


def _admitted(host: str, patterns: list[tuple[str, str]]) -> bool:
    return any(matches(pattern, host) or matches(host, pattern) for _, pattern in patterns)


def _gateway_ref(gateway: SourceObject) -> str:
    return f"{gateway.namespace}/{gateway.name}"


def _vs_gateway_refs(vs: SourceObject, names: Iterable[str]) -> set[str]:
    """A VirtualService's gateway names as ``namespace/name``; a bare name is in the VS's namespace."""
    return {name if "/" in name else f"{vs.namespace}/{name}" for name in names}


def _bound_virtual_services(mesh: Mesh, gateway: SourceObject, server: dict) -> Iterator[SourceObject]:
    """The VirtualServices bound to ``gateway`` with a host this server admits, in mesh order."""
    ref = _gateway_ref(gateway)
    patterns = [(gateway.namespace if ns == "." else ns, host) for ns, host in _server_host_patterns(server)]
    for vs in mesh.virtual_services:
        if ref not in _vs_gateway_refs(vs, vs.spec.get("gateways", [])):
            continue
        visible = [pattern for pattern in patterns if pattern[0] in ("*", vs.namespace)]
        if any(_admitted(fqdn(host, vs.namespace), visible) for host in vs.spec.get("hosts", [])):
            yield vs


def _applicable_matches(rule: dict, vs: SourceObject, gateway: SourceObject, port: int) -> list[dict]:
    """The rule's matches that apply on this gateway and port (a rule without matches applies as is)."""
    applicable = []
    for match in rule.get("match") or [{}]:
        if match.get("port") not in (None, port):
            continue
        if match.get("gateways") and _gateway_ref(gateway) not in _vs_gateway_refs(vs, match["gateways"]):
            continue
        applicable.append(match)
    return applicable


def _stream_targets(mesh: Mesh, gateway: SourceObject, server: dict, sections: tuple[str, ...]) -> list[Target]:
    """Where a server's decrypted or plain TCP stream goes: the first applicable rule's route."""
    port = server["port"]["number"]
    for section in sections:
        for vs in _bound_virtual_services(mesh, gateway, server):
            for rule in vs.spec.get(section, []):
                if _applicable_matches(rule, vs, gateway, port):
                    targets = _route_targets(mesh, vs, rule.get("route", []), port)
                    if targets:
                        return targets
    return []


def _route_targets(mesh: Mesh, vs: SourceObject, route: list[dict], default_port: int) -> list[Target]:
    """A tls/tcp route's destinations as weighted clusters, weighted as HTTP routes are."""
    targets = []
    for dest, weight in weighted_destinations(route):
        destination = dest["destination"]
        host = fqdn(destination["host"], vs.namespace)
        port = (destination.get("port") or {}).get("number") or _sole_port(mesh, host) or default_port
        targets.append((cluster_name(port, destination.get("subset"), host), weight))
    return targets


def _sole_port(mesh: Mesh, host: str) -> int | None:
    """A destination may leave out its port when the service has only one (Istio's rule)."""
    service = mesh.services.get(host)
    return service.ports[0].number if service and len(service.ports) == 1 else None


# --- TLS ------------------------------------------------------------------------------------------


def _downstream_tls_context(tls: dict, alpn: Iterable[str]) -> tls_pb2.DownstreamTlsContext | None:
    """The gateway's side of a terminated TLS server; None when no certificate is given."""
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    if not _add_server_certificate(common, tls):
        return None
    common.alpn_protocols.extend(alpn)
    _add_tls_parameters(common, tls)
    mode = tls["mode"]
    if mode in CLIENT_CERT_MODES:
        _add_client_validation(common, tls)
        # OPTIONAL_MUTUAL checks a client certificate if one is offered but does not demand it.
        context.require_client_certificate.value = mode != "OPTIONAL_MUTUAL"
    return context


def _add_server_certificate(common: common_pb2.CommonTlsContext, tls: dict) -> bool:
    if tls.get("credentialName"):
        common.tls_certificate_sds_secret_configs.append(sds_secret(tls["credentialName"]))
    elif tls["mode"] == "ISTIO_MUTUAL":
        common.tls_certificate_sds_secret_configs.append(sds_secret(ISTIO_WORKLOAD_SECRET))
    elif tls.get("serverCertificate") and tls.get("privateKey"):
        common.tls_certificates.append(common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=tls["serverCertificate"]),
            private_key=base_pb2.DataSource(filename=tls["privateKey"])))
    else:
        return False
    return True


def _add_client_validation(common: common_pb2.CommonTlsContext, tls: dict) -> None:
    if tls.get("credentialName"):
        # Istio's convention: the CA bundle of credential X is served as secret "X-cacert".
        common.validation_context_sds_secret_config.CopyFrom(sds_secret(f"{tls['credentialName']}-cacert"))
    elif tls["mode"] == "ISTIO_MUTUAL":
        common.validation_context_sds_secret_config.CopyFrom(sds_secret(ISTIO_ROOT_SECRET))
    elif tls.get("caCertificates"):
        common.validation_context.trusted_ca.filename = tls["caCertificates"]


def _add_tls_parameters(common: common_pb2.CommonTlsContext, tls: dict) -> None:
    if tls.get("minProtocolVersion") in TLS_VERSIONS:
        common.tls_params.tls_minimum_protocol_version = TLS_VERSIONS[tls["minProtocolVersion"]]
    if tls.get("maxProtocolVersion") in TLS_VERSIONS:
        common.tls_params.tls_maximum_protocol_version = TLS_VERSIONS[tls["maxProtocolVersion"]]
    if tls.get("cipherSuites"):
        common.tls_params.cipher_suites.extend(tls["cipherSuites"])


# --- Envoy building blocks ------------------------------------------------------------------------


def _hcm_filter(port: int, route_name: str, edge: bool = False) -> listener_components_pb2.Filter:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_{listener_name(port)}",
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=route_name),
        http_filters=[
            # Routes carry CORS policies; the filter applies them (and does nothing for routes without).
            hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors())),
            # An empty fault filter does nothing until a route's typed_per_filter_config asks it to.
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            # The router forwards the request, so Envoy requires it last.
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ])
    if edge:
        # A gateway is where traffic enters the mesh: its peer, not X-Forwarded-For, is the client.
        manager.use_remote_address.value = True
    return listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(manager))


def _tcp_proxy_filter(port: int, targets: list[Target]) -> listener_components_pb2.Filter:
    if len(targets) == 1:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=targets[0][0], cluster=targets[0][0])
    else:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=f"outbound_{listener_name(port)}")
        proxy.weighted_clusters.clusters.extend(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
            for name, weight in targets)
    return listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy))


def _chain(filters: list[listener_components_pb2.Filter], server_names: Iterable[str] = (),
           prefixes: Iterable[tuple[str, int]] = (), transport_socket: base_pb2.TransportSocket | None = None,
           name: str = "", transport_protocol: str = "", application_protocols: Iterable[str] = ()) -> FilterChain:
    chain = FilterChain(name=name, filters=filters, transport_socket=transport_socket)
    chain.filter_chain_match.server_names.extend(server_names)
    chain.filter_chain_match.transport_protocol = transport_protocol
    chain.filter_chain_match.application_protocols.extend(application_protocols)
    chain.filter_chain_match.prefix_ranges.extend(
        address_pb2.CidrRange(address_prefix=prefix, prefix_len=wrappers_pb2.UInt32Value(value=length))
        for prefix, length in prefixes)
    if chain.filter_chain_match.ByteSize() == 0:
        chain.ClearField("filter_chain_match")  # no match at all, rather than an empty one
    return chain


def _listener(view: ProxyView, port: int, chains: list[FilterChain], sources: list[SourceObject],
              default_chain: FilterChain | None = None) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(
        name=listener_name(port),
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=view.listen_address,
                                                                                 port_value=port)),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=chains,
        default_filter_chain=default_chain)
    provenance.set_sources(listener.metadata, *sources)
    if any(chain.filter_chain_match.server_names for chain in chains):
        # Server names are only known once the TLS inspector has read the ClientHello.
        listener.listener_filters.append(listener_components_pb2.ListenerFilter(
            name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())))
    if any(chain.filter_chain_match.application_protocols for chain in chains):
        # Whether the bytes are HTTP is only known once the HTTP inspector has read the first ones.
        listener.listener_filters.append(listener_components_pb2.ListenerFilter(
            name=HTTP_INSPECTOR, typed_config=pack(http_inspector_pb2.HttpInspector())))
    return listener
