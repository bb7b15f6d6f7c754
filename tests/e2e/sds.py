"""A stand-in for Istio's node agent: the SDS server every sidecar's bootstrap points at.

In a pod, Istio's agent serves the workload certificate (``default``) and the
root bundle (``ROOTCA``) on a Unix socket; Galleon's clusters and gateways name
those secrets. Without them Envoy holds every TLS cluster in warming until the
15 s initial fetch timeout. This server answers Envoy's real SDS stream
(SecretDiscoveryService, state of the world) with a CA and a SPIFFE workload
certificate made with ``cryptography``.
"""
from __future__ import annotations

import datetime
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_identity(spiffe_id: str = "spiffe://cluster.local/ns/default/sa/default") -> tuple[bytes, bytes, bytes]:
    """(root certificate, workload certificate, workload key), all PEM."""
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "galleon-test"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=6))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .sign(root_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _pem(root), _pem(leaf), key_pem


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="sds", dir="/tmp"))  # short: Unix socket paths are limited
        self.socket = self.directory / "sds.sock"
        root, cert, key = make_identity()
        workload = secret_pb2.Secret(name="default")
        workload.tls_certificate.certificate_chain.inline_bytes = cert
        workload.tls_certificate.private_key.inline_bytes = key
        bundle = secret_pb2.Secret(name="ROOTCA")
        bundle.validation_context.trusted_ca.inline_bytes = root
        self.secrets = {s.name: s for s in (workload, bundle)}
        self.requests = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(8))
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix:{self.socket}")

    def StreamSecrets(self, requests, context):  # noqa: N802 (gRPC's name)
        for request in requests:
            with self._lock:
                self.requests += 1
            if request.response_nonce:
                continue  # an ACK or NACK: the secrets never change here
            response = discovery_pb2.DiscoveryResponse(type_url=SECRET, version_info="1", nonce="1")
            for name in request.resource_names:
                if name in self.secrets:
                    packed = any_pb2.Any()
                    packed.Pack(self.secrets[name])
                    response.resources.append(packed)
            yield response

    def __enter__(self) -> "SdsServer":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(0)
