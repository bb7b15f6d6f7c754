"""Two real Envoys doing mTLS with workload certificates from two clusters' intermediates (issue 8).

One shared ECDSA root (``init_root``) and two intermediates (``issue`` for cluster-a and cluster-b)
as Galleon would put them into each cluster's ``cacerts``. In the test, each intermediate signs a
workload certificate as istiod would (``tests.test_ca.workload``: empty subject, SPIFFE URI SAN):

- Envoy 1, the server side in cluster-b: a TLS listener requiring a client certificate, trusting the
  root bundle only and accepting only the client's SPIFFE identity, routing to a local HTTP backend;
- Envoy 2, the client side in cluster-a: a plain HTTP listener whose cluster reaches Envoy 1 over
  TLS, presenting A's workload chain and accepting only the server's SPIFFE identity under the root.

Each Envoy presents leaf + its own intermediate (as Istio's agent serves a chain) and trusts only
``root-cert.pem``, so the request goes through only if the two clusters' intermediates chain up to
the shared root. Both are static bootstraps with certificate files on disk (no xDS). The negative
cases each start a fresh pair with one thing changed and read the rejecting side's TLS counters
from the admin ``/stats``.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from reconciler.ca import CaCerts, Policy, init_root, issue
from reconciler.ca.root import CERT_FILE
from reconciler.ca.x509util import ECDSA_P256, cert_pem, key_pem
from tests.e2e.backends import Backend
from tests.e2e.envoy import Envoy, answers, wait_for
from tests.ports import free_port
from tests.test_ca import workload

pytestmark = pytest.mark.e2e

NOW = datetime.now(timezone.utc).replace(microsecond=0)  # Envoy checks validity against the real clock
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"
SERVER_HOST = "server.default.svc.cluster.local"
UPSTREAM = "outbound|80||" + SERVER_HOST  # Envoy 2's cluster for Envoy 1, named as Istio names it
TLS = "envoy.transport_sockets.tls"
TYPES = "type.googleapis.com/envoy.extensions."


@dataclasses.dataclass(frozen=True)
class Identity:
    """Files an Envoy is given: the certificate chain it presents (leaf + intermediate) and its key."""

    chain: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class Pki:
    root: Path  # root-cert.pem of the shared root, as both clusters' cacerts publish it
    foreign_root: Path  # root-cert.pem of an unrelated root
    client: Identity  # cluster-a's workload, signed by A's intermediate
    server: Identity  # cluster-b's workload, signed by B's intermediate
    rogue_client: Identity  # the client's SPIFFE ID, under an intermediate of the foreign root
    intruder: Identity  # a valid cluster-a workload with another SPIFFE ID
    bare_client: Identity  # the client's leaf without its intermediate


def _data(cacerts: CaCerts) -> dict[str, bytes]:
    return {name: value.encode() for name, value in cacerts.data().items()}


def _identity(directory: Path, name: str, cacerts: CaCerts, uri: str, intermediate: bool = True) -> Identity:
    cert, key = workload(_data(cacerts), uri)
    identity = Identity(directory / f"{name}-chain.pem", directory / f"{name}-key.pem")
    # The intermediate travels with the leaf; the root never does (each side has it already).
    identity.chain.write_bytes(cert_pem(cert) + (cacerts.ca_cert.encode() if intermediate else b""))
    identity.key.write_bytes(key_pem(key))
    identity.key.chmod(0o600)
    return identity


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = init_root(directory / "root", "ecdsa-p256", NOW)
    foreign = init_root(directory / "foreign", "ecdsa-p256", NOW)
    a = issue(root, "cluster-a", Policy("cluster-a", key_algorithm=ECDSA_P256), NOW)
    b = issue(root, "cluster-b", Policy("cluster-b", key_algorithm=ECDSA_P256), NOW)
    rogue_a = issue(foreign, "cluster-a", Policy("cluster-a", key_algorithm=ECDSA_P256), NOW)
    assert a.ca_cert != b.ca_cert and a.root_cert == b.root_cert == root.pem
    return Pki(root=directory / "root" / CERT_FILE, foreign_root=directory / "foreign" / CERT_FILE,
               client=_identity(directory, "client", a, CLIENT_ID),
               server=_identity(directory, "server", b, SERVER_ID),
               rogue_client=_identity(directory, "rogue-client", rogue_a, CLIENT_ID),
               intruder=_identity(directory, "intruder", a, "spiffe://cluster.local/ns/default/sa/intruder"),
               bare_client=_identity(directory, "bare-client", a, CLIENT_ID, intermediate=False))


# -- static bootstraps ---------------------------------------------------------------------------------

def _address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _common_tls(identity: Identity, trust: Path, peer: str) -> dict:
    return {"tls_certificates": [{"certificate_chain": {"filename": str(identity.chain)},
                                  "private_key": {"filename": str(identity.key)}}],
            "validation_context": {"trusted_ca": {"filename": str(trust)},
                                   "match_typed_subject_alt_names": [
                                       {"san_type": "URI", "matcher": {"exact": peer}}]}}


def _http(stat_prefix: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": TYPES + "filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": stat_prefix,
                "route_config": {"name": "local", "virtual_hosts": [
                    {"name": "all", "domains": ["*"],
                     "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router",
                                  "typed_config": {"@type": TYPES + "filters.http.router.v3.Router"}}]}}


def _cluster(name: str, port: int, transport_socket: dict | None = None) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "2s",
               "load_assignment": {"cluster_name": name, "endpoints": [
                   {"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}]}}
    if transport_socket:
        cluster["transport_socket"] = transport_socket
    return cluster


def _bootstrap(node: str, listener: dict, cluster: dict) -> str:
    return yaml.safe_dump({"node": {"id": node, "cluster": node.split("~")[2]},
                           "admin": {"address": _address(0)},
                           "static_resources": {"listeners": [listener], "clusters": [cluster]}})


def server_bootstrap(port: int, backend_port: int, identity: Identity, trust: Path, client_id: str) -> str:
    """Envoy 1 (cluster-b): mTLS in on ``port``, plain HTTP to the backend."""
    tls = {"@type": TYPES + "transport_sockets.tls.v3.DownstreamTlsContext",
           "require_client_certificate": True,
           "common_tls_context": _common_tls(identity, trust, client_id)}
    listener = {"name": "mtls_in", "address": _address(port),
                "filter_chains": [{"transport_socket": {"name": TLS, "typed_config": tls},
                                   "filters": [_http("inbound", "backend")]}]}
    return _bootstrap("sidecar~127.0.0.1~server.default~default.svc.cluster.local", listener,
                      _cluster("backend", backend_port))


def client_bootstrap(port: int, server_port: int, identity: Identity, trust: Path, server_id: str) -> str:
    """Envoy 2 (cluster-a): plain HTTP in on ``port``, mTLS out to Envoy 1."""
    tls = {"@type": TYPES + "transport_sockets.tls.v3.UpstreamTlsContext", "sni": SERVER_HOST,
           "common_tls_context": _common_tls(identity, trust, server_id)}
    listener = {"name": "http_in", "address": _address(port),
                "filter_chains": [{"filters": [_http("outbound", UPSTREAM)]}]}
    return _bootstrap("sidecar~127.0.0.1~client.default~default.svc.cluster.local", listener,
                      _cluster(UPSTREAM, server_port, {"name": TLS, "typed_config": tls}))


# -- a pair of Envoys ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Pair:
    server: Envoy
    client: Envoy
    server_port: int
    client_port: int

    def request(self) -> str:
        seen = answers(self.client_port, SERVER_HOST, 1)
        assert len(seen) == 1, seen
        return next(iter(seen))

    def cluster_stat(self, name: str) -> int:
        return self.client.stats().get(f"cluster.{UPSTREAM}.{name}", 0)


def ssl_counters(envoy: Envoy) -> dict[str, int]:
    """The non-zero TLS counters of an Envoy's one listener or cluster with TLS, by name after ``ssl.``."""
    return {name.rpartition(".ssl.")[2]: value for name, value in envoy.stats().items()
            if ".ssl." in name and ".ssl.certificate." not in name and value}


@pytest.fixture
def backend():
    server = Backend("backend-in-cluster-b")
    yield server
    server.stop()


@pytest.fixture
def start_pair(pki, backend, tmp_path):
    """Start Envoy 1 and Envoy 2 with the given identities and trust (default: the good ones)."""
    started: list[Envoy] = []

    def start(server_trust: Path | None = None, client_trust: Path | None = None,
              client: Identity | None = None, server: Identity | None = None,
              expected_client: str = CLIENT_ID, expected_server: str = SERVER_ID) -> Pair:
        server_port, client_port = free_port(), free_port()
        envoy1 = Envoy(server_bootstrap(server_port, backend.port, server or pki.server,
                                        server_trust or pki.root, expected_client), tmp_path, "envoy-server")
        started.append(envoy1)
        envoy1.start().wait_live()
        envoy2 = Envoy(client_bootstrap(client_port, server_port, client or pki.client,
                                        client_trust or pki.root, expected_server), tmp_path, "envoy-client")
        started.append(envoy2)
        envoy2.start().wait_live()
        return Pair(envoy1, envoy2, server_port, client_port)

    yield start
    for envoy in reversed(started):
        envoy.stop()


def test_workloads_of_two_clusters_speak_mtls_through_two_envoys(pki, start_pair, backend):
    pair = start_pair()
    assert pair.request() == "backend-in-cluster-b"
    assert backend.hits == 1
    # The request really crossed the TLS hop: one handshake on each side, no failure of any kind.
    for envoy in (pair.server, pair.client):
        counted = ssl_counters(envoy)
        assert counted["handshake"] == 1, counted
        assert not [name for name in counted if name.startswith("fail_") or name == "connection_error"], counted
    # Each Envoy loaded its own workload certificate and the root as its only trust anchor.
    for envoy, identity, uri in ((pair.server, pki.server, SERVER_ID), (pair.client, pki.client, CLIENT_ID)):
        (loaded,) = json.loads(envoy.get("/certs"))["certificates"]
        assert [c["path"] for c in loaded["ca_cert"]] == [str(pki.root)]
        assert loaded["cert_chain"][0]["path"] == str(identity.chain)
        assert loaded["cert_chain"][0]["subject_alt_names"] == [{"uri": uri}]


# Each case changes one thing from the working pair (a Pki attribute, or the SPIFFE ID Envoy 2
# expects); the named side must refuse the handshake, counting the named ssl counter.
NEGATIVE = {
    # (a) Envoy 1 trusts a foreign root only: A's chain does not verify there ...
    "server-trusts-a-foreign-root": (dict(server_trust="foreign_root"), "server", "fail_verify_error"),
    # ... and the other way round: Envoy 2 cannot verify B's chain.
    "client-trusts-a-foreign-root": (dict(client_trust="foreign_root"), "client", "fail_verify_error"),
    # (b) the client's SPIFFE ID, but its leaf is signed by an intermediate of another root.
    "client-leaf-under-another-root": (dict(client="rogue_client"), "server", "fail_verify_error"),
    # A's own leaf without A's intermediate: the root alone cannot vouch for it (the chain matters).
    "client-leaf-without-its-intermediate": (dict(client="bare_client"), "server", "fail_verify_error"),
    # (c) a valid chain under the shared root, but not the SPIFFE ID the other side expects.
    "client-san-does-not-match": (dict(client="intruder"), "server", "fail_verify_san"),
    "server-san-does-not-match": (dict(expected_server="spiffe://cluster.local/ns/default/sa/other"),
                                  "client", "fail_verify_san"),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_a_chain_or_identity_outside_the_mesh_is_rejected(case, pki, start_pair, backend):
    change, side, counter = NEGATIVE[case]
    pair = start_pair(**{key: getattr(pki, value) if key != "expected_server" else value
                         for key, value in change.items()})
    assert pair.request() == "HTTP 503"
    assert backend.hits == 0

    rejecting, other = (pair.server, pair.client) if side == "server" else (pair.client, pair.server)
    # The rejecting side counts the verification failure, the other side the alert it received;
    # neither completes a handshake.
    wait_for(lambda: ssl_counters(rejecting) == {counter: 1}, 5,
             lambda: f"{case}: the {side} side counted {ssl_counters(rejecting)}, not {counter}")
    wait_for(lambda: ssl_counters(other) == {"connection_error": 1}, 5,
             lambda: f"{case}: the other side counted {ssl_counters(other)}")
    # Envoy 2 sees its connection to Envoy 1 fail and answers 503 itself.
    assert pair.cluster_stat("upstream_cx_connect_fail") == 1
    assert pair.cluster_stat("upstream_rq_503") == 1
