"""Proxyless gRPC: grpcio's own xDS client (``xds:///`` targets) resolves services through Galleon.

Everything is real: ``galleon serve`` runs as its own process on a directory;
the client is grpcio in a process of its own (gRPC reads its bootstrap once per
process), bootstrapped by ``reconciler.bootstrap.grpc_bootstrap_json``; the
backends are local grpcio servers. No Envoy anywhere: the RPCs go straight from
the client to the backend that Galleon's routes, clusters and endpoints pick.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.bootstrap import BootstrapOptions, grpc_bootstrap_json
from tests.conftest import ONE_CLUSTER
from tests.e2e.daemon import Galleon

pytestmark = pytest.mark.e2e

HOST = "echo.default.svc.cluster.local"
PORT = 7070
TARGET = f"xds:///{HOST}:{PORT}"
NODE = "sidecar~127.0.0.1~client-5f7d.default~default.svc.cluster.local"
SERVICE, METHOD = "galleon.test.Echo", "Who"

# The client: reads one JSON command a line on stdin, answers one JSON line on stdout.
#   {"calls": N, "metadata": {...}, "timeout": S}  ->  {"answers": [...], "errors": [...]}
#     (with gRPC's wait_for_ready, so the first calls wait for xDS rather than fail)
#   {"until": NAME, "timeout": S}    ->  {"seen": bool, "answers": [...]}  (5 answers in a row from NAME)
CLIENT = r'''
import json, sys, time
import grpc
import grpc.experimental

if sys.argv[3] == "xds":  # the TLS of xDS clusters applies only on channels with xDS credentials
    channel = grpc.secure_channel(sys.argv[1], grpc.xds_channel_credentials(
        grpc.experimental.insecure_channel_credentials()))
else:
    channel = grpc.insecure_channel(sys.argv[1])
who = channel.unary_unary(sys.argv[2], request_serializer=None, response_deserializer=None)

def call(metadata, wait=True, timeout=10):
    try:
        return who(b"", timeout=timeout, metadata=tuple(metadata.items()) or None, wait_for_ready=wait).decode(), None
    except grpc.RpcError as error:
        return None, f"{error.code().name}: {error.details()}"

for line in sys.stdin:
    command = json.loads(line)
    if "calls" in command:
        answers, errors = [], []
        for _ in range(command["calls"]):
            answer, error = call(command.get("metadata", {}), command.get("wait", True), command.get("timeout", 10))
            (answers.append(answer) if error is None else errors.append(error))
        out = {"answers": answers, "errors": errors}
    else:
        answers, streak, deadline = [], 0, time.monotonic() + command["timeout"]
        while streak < 5 and time.monotonic() < deadline:
            answer, error = call({})
            answers.append(answer or error)
            streak = streak + 1 if answer == command["until"] else 0
            time.sleep(0.02)
        out = {"seen": streak >= 5, "answers": answers[-20:]}
    print(json.dumps(out), flush=True)
'''


class Backend:
    """A local gRPC server whose one method answers with the server's name, and counts its calls."""

    def __init__(self, name: str, credentials: grpc.ServerCredentials | None = None) -> None:
        self.name, self.calls = name, 0
        self._lock = threading.Lock()

        def who(request: bytes, context) -> bytes:
            with self._lock:
                self.calls += 1
            return self.name.encode()

        handler = grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(who)})
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers([handler])
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)


def mesh_yaml(backends: dict[str, Backend], weights: dict[str, int]) -> dict[str, str]:
    """``echo`` (a STATIC ServiceEntry, one endpoint per backend, subsets by version), and a
    VirtualService: ``x-route: v1`` goes to subset v1, everything else split by ``weights``."""
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{grpc: {b.port}}}, labels: {{version: {v}}}}}"
                          for v, b in sorted(backends.items()))
    split = "\n".join(f"    - {{destination: {{host: {HOST}, subset: {v}}}, weight: {w}}}"
                      for v, w in sorted(weights.items()))
    return {"mesh.yaml": ONE_CLUSTER, "echo.yaml": f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  endpoints:
{endpoints}
---
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
  - match: [{{headers: {{x-route: {{exact: v1}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: v1}}}}]
  - route:
{split}
"""}


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)


class Client:
    """grpcio's xDS client in a process of its own, bootstrapped to ``galleon serve``."""

    def __init__(self, workdir: Path, bootstrap: str, target: str = TARGET, credentials: str = "insecure") -> None:
        script = workdir / "grpc_client.py"
        script.write_text(CLIENT)
        self.log = workdir / "grpc_client.log"
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP_CONFIG=bootstrap,
                   # what gRPC says of each xDS response (and why it NACKs one) lands in the log
                   GRPC_TRACE="xds_client,xds_resolver", GRPC_VERBOSITY="debug")
        env.pop("GRPC_XDS_BOOTSTRAP", None)
        self.process = subprocess.Popen([sys.executable, str(script), target, f"/{SERVICE}/{METHOD}", credentials],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
                                        text=True, env=env)

    def ask(self, command: dict, timeout: float = 60) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        assert answer and answer[0], f"the gRPC client did not answer {command}; its log:\n{self.tail()}"
        return json.loads(answer[0])

    def tail(self) -> str:
        return self.log.read_text()[-4000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def backends():
    started = {version: Backend(version) for version in ("v1", "v2")}
    yield started
    for backend in started.values():
        backend.close()


def bootstrap_for(galleon: Galleon, certificate_dir: Path | None = None) -> str:
    options = BootstrapOptions(cluster="cluster-a", node_id=NODE, ads=galleon.ads, labels={"app": "client"},
                               locality="us-east/us-east-1a")
    return grpc_bootstrap_json(options, **({"certificate_dir": str(certificate_dir)} if certificate_dir else {}))


def test_grpc_xds_client_resolves_routes_and_follows_changes(tmp_path, backends):
    repo = tmp_path / "repo"
    repo.mkdir()
    write(repo, mesh_yaml(backends, {"v1": 0, "v2": 100}))
    with Galleon(repo, "cluster-a") as galleon:
        client = Client(tmp_path, bootstrap_for(galleon))
        try:
            # the weighted route: all to v2, though v1 is listed first and has an endpoint too
            plain = client.ask({"calls": 20})
            assert plain == {"answers": ["v2"] * 20, "errors": []}, client.tail()
            # the header route: subset v1
            routed = client.ask({"calls": 10, "metadata": {"x-route": "v1"}})
            assert routed == {"answers": ["v1"] * 10, "errors": []}, client.tail()
            assert (backends["v1"].calls, backends["v2"].calls) == (10, 20)  # they reached the servers

            # Galleon served this client the proxyless view, and gRPC accepted every resource of it
            compiled = galleon.event("view compiled", role="grpc")
            assert compiled is not None and compiled["locality"] == "us-east/us-east-1a", galleon.log()
            assert galleon.event("proxy connected", node=NODE) is not None
            assert galleon.count("proxy rejected configuration") == 0, galleon.log()
            log = client.tail()
            assert "will NACK" not in log and "invalid resource" not in log, log

            # a change to the repository reaches the client: the split flips to v1
            write(repo, mesh_yaml(backends, {"v1": 100, "v2": 0}))
            flipped = client.ask({"until": "v1", "timeout": 30})
            assert flipped["seen"], f"{flipped}\n{galleon.log()}\n{client.tail()}"
            after = client.ask({"calls": 10})
            assert after == {"answers": ["v1"] * 10, "errors": []}, client.tail()
        finally:
            client.close()


def test_a_target_galleon_does_not_have_fails(tmp_path, backends):
    """gRPC asks for the listener by name: a host (or port) the mesh lacks gets none, and RPCs fail
    rather than reach some other service. (gRPC gives a resource it never had 15 s to appear
    before it calls it missing and fails RPCs with UNAVAILABLE; until then they wait.)"""
    repo = tmp_path / "repo"
    repo.mkdir()
    write(repo, mesh_yaml(backends, {"v1": 50, "v2": 50}))
    with Galleon(repo, "cluster-a") as galleon:
        client = Client(tmp_path, bootstrap_for(galleon), target=f"xds:///{HOST}:{PORT + 1}")
        try:
            answer = client.ask({"calls": 1, "timeout": 2})
            assert answer == {"answers": [], "errors": ["DEADLINE_EXCEEDED: Deadline Exceeded"]}, client.tail()
            assert backends["v1"].calls == backends["v2"].calls == 0
            log = client.tail()
            assert f"starting watch for listener {HOST}:{PORT + 1}" in log, log
            assert "type_url=envoy.config.listener.v3.Listener" in log and "num_resources=0" in log, log
            assert galleon.count("proxy rejected configuration") == 0, galleon.log()
        finally:
            client.close()


# --- Istio mTLS -----------------------------------------------------------------------------------

SPIFFE = "spiffe://cluster.local/ns/default/sa/"


def certificate(name: str, issuer: tuple | None = None, uri: str | None = None) -> tuple:
    """(key, certificate): a CA when no issuer is given, else a workload certificate with a SPIFFE id."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signing_key, issuer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1)))
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    else:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        builder = (builder.add_extension(san, critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    return key, builder.sign(signing_key, hashes.SHA256())


def pem(key, cert) -> tuple[bytes, bytes]:
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))


def test_istio_mutual_with_xds_credentials(tmp_path):
    """ISTIO_MUTUAL reaches gRPC as certificate providers: a client with xDS credentials presents the
    bootstrap's workload certificate to a server that demands one, and checks the server's SPIFFE id
    (a subset expecting another identity fails the handshake)."""
    root = certificate("root")
    _, root_pem = pem(*root)
    certs = tmp_path / "certs"
    certs.mkdir()
    key_pem, chain_pem = pem(*certificate("client", root, SPIFFE + "client"))
    (certs / "key.pem").write_bytes(key_pem)
    (certs / "cert-chain.pem").write_bytes(chain_pem)
    (certs / "root-cert.pem").write_bytes(root_pem)
    server = Backend("echo-tls", grpc.ssl_server_credentials([pem(*certificate("echo", root, SPIFFE + "echo"))],
                                                             root_certificates=root_pem, require_client_auth=True))
    repo = tmp_path / "repo"
    repo.mkdir()
    write(repo, {"mesh.yaml": ONE_CLUSTER, "echo.yaml": f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {server.port}}}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: ["{SPIFFE}echo"]}}
  subsets:
  - name: impostor
    labels: {{version: v1}}
    trafficPolicy:
      tls: {{mode: ISTIO_MUTUAL, subjectAltNames: ["{SPIFFE}someone-else"]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{headers: {{x-route: {{exact: impostor}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: impostor}}}}]
  - route: [{{destination: {{host: {HOST}}}}}]
"""})
    try:
        with Galleon(repo, "cluster-a") as galleon:
            client = Client(tmp_path, bootstrap_for(galleon, certs), credentials="xds")
            try:
                answer = client.ask({"calls": 5})
                assert answer == {"answers": ["echo-tls"] * 5, "errors": []}, client.tail()
                refused = client.ask({"calls": 1, "timeout": 3, "metadata": {"x-route": "impostor"}})
                assert refused["answers"] == [] and len(refused["errors"]) == 1, refused
                assert server.calls == 5
                assert galleon.count("proxy rejected configuration") == 0, galleon.log()
            finally:
                client.close()
    finally:
        server.close()
