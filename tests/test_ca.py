"""The CA reconciler (issue 8) with real keys and certificates, checked by cryptography's X.509
verification, Debian's openssl and a real TLS handshake."""
from __future__ import annotations

import base64
import dataclasses
import os
import socket
import ssl
import sys
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from compiler.revision import load
from reconciler.ca import (CAError, DirTarget, init_root, issue, load_root, plan, policy_for, reconcile,
                           secret_manifest, target_from)
from reconciler.ca.planning import CREATE, NONE, REFUSE, REISSUE
from reconciler.ca.x509util import key_pem
from tests.conftest import mesh_from, sample_files, snapshot_of

# Certificates are checked by openssl and TLS against the real clock, so the tests' "now" is real;
# the library itself only ever sees the clock it is given.
NOW = datetime.now(timezone.utc).replace(microsecond=0)
WORKLOAD_URI = "spiffe://cluster.local/ns/default/sa/x"
ECDSA = "ecdsa-p256"


def sample_objects(extra: dict[str, str] | None = None):
    result = load(snapshot_of({**sample_files(), **(extra or {})}))
    assert result.valid, "\n".join(f.text() for f in result.findings)
    return result.objects


SAMPLE_CLUSTERS = sorted(mesh_from(sample_files()).clusters)


@pytest.fixture(scope="module")
def rsa_root(tmp_path_factory):
    """The one RSA-4096 root of this file (generating one takes about a second)."""
    return init_root(tmp_path_factory.mktemp("rsa-root"), "rsa-4096", NOW)


@pytest.fixture
def root(tmp_path):
    return init_root(tmp_path / "root", ECDSA, NOW)


@pytest.fixture
def target(tmp_path):
    return DirTarget(tmp_path / "out")


@pytest.fixture
def policy():
    return policy_for(sample_objects(), "cluster-a")


def values(secret: dict) -> dict[str, bytes]:
    return {name: base64.b64decode(value) for name, value in secret["data"].items()}


def workload(data: dict[str, bytes], uri: str = WORKLOAD_URI):
    """A workload certificate as istiod issues it: signed by the cluster's intermediate, empty
    subject, SPIFFE URI SAN (critical, as the subject is empty), server and client auth."""
    ca_cert = x509.load_pem_x509_certificate(data["ca-cert.pem"])
    ca_key = serialization.load_pem_private_key(data["ca-key.pem"], password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(minutes=1)).not_valid_after(NOW + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- the root ----------------------------------------------------------------------------------------------

def test_rsa_root_profile_and_files(rsa_root, tmp_path_factory):
    cert = rsa_root.cert
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 4096
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    assert cert.subject == cert.issuer
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_root_key_is_0600_from_creation_whatever_the_umask(tmp_path):
    old = os.umask(0)  # a permissive umask must not make the key readable by others
    try:
        init_root(tmp_path / "r", ECDSA, NOW)
    finally:
        os.umask(old)
    assert (tmp_path / "r" / "root-key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "r" / "root-cert.pem").stat().st_mode & 0o777 == 0o644


def test_init_root_refuses_to_overwrite(root, tmp_path):
    key_before = (tmp_path / "root" / "root-key.pem").read_bytes()
    with pytest.raises(CAError, match="already holds a root CA.*refusing to overwrite"):
        init_root(tmp_path / "root", ECDSA, NOW)
    (tmp_path / "root" / "root-cert.pem").unlink()  # half a root is still a root
    with pytest.raises(CAError, match=r"root-key\.pem"):
        init_root(tmp_path / "root", ECDSA, NOW)
    assert (tmp_path / "root" / "root-key.pem").read_bytes() == key_before
    with pytest.raises(CAError, match="unknown root key algorithm"):
        init_root(tmp_path / "other", "dsa-1024", NOW)


def test_load_root_round_trip_and_one_line_errors(root, tmp_path):
    assert load_root(tmp_path / "root").fingerprint == root.fingerprint
    other = init_root(tmp_path / "other", ECDSA, NOW)
    cases = tmp_path / "cases"

    def case(name: str, cert: bytes | None, key: bytes | None) -> str:
        directory = cases / name
        directory.mkdir(parents=True)
        if cert is not None:
            (directory / "root-cert.pem").write_bytes(cert)
        if key is not None:
            (directory / "root-key.pem").write_bytes(key)
        with pytest.raises(CAError) as caught:
            load_root(directory)
        return str(caught.value)

    key = (tmp_path / "root" / "root-key.pem").read_bytes()
    cert = (tmp_path / "root" / "root-cert.pem").read_bytes()
    messages = {
        "no such file": case("empty", None, None),
        "root-key.pem: no such file": case("no-key", cert, None),
        "does not match": case("mismatch", cert, (tmp_path / "other" / "root-key.pem").read_bytes()),
        "is not a PEM certificate": case("garbage-cert", b"hello", key),
        "is not an unencrypted PEM private key": case("garbage-key", cert, key[:-40] + b"\n"),
        "holds 2 certificates": case("two", cert + pem(other.cert), key),
    }
    for expected, message in messages.items():
        assert expected in message and "\n" not in message and "PRIVATE" not in message, message


# -- policy ------------------------------------------------------------------------------------------------

def test_sample_policy_and_defaults():
    objects = sample_objects()
    for cluster in SAMPLE_CLUSTERS:
        policy = policy_for(objects, cluster)
        assert (policy.key_algorithm, policy.lifetime, policy.renew_before, policy.organization) == (
            "ECDSA_P256", "8760h", "720h", "Istio")
        assert policy.source == "CertificateAuthority/istio-system/mesh-ca"
    minimal = """\
        apiVersion: galleon.io/v1alpha1
        kind: CertificateAuthority
        metadata: {name: only-c, namespace: istio-system}
        spec: {clusters: [cluster-c], subject: {organization: Acme, organizationalUnit: Mesh}}
        """
    objects = sample_objects({"mesh/only-c.yaml": minimal.replace("        ", "")})
    explicit = policy_for(objects, "cluster-c")  # listing the cluster wins over covering every one
    assert (explicit.key_algorithm, explicit.lifetime_delta, explicit.renew_before_delta) == (
        "RSA_4096", timedelta(days=365), timedelta(days=30))
    assert explicit.subject().rfc4514_string() == "L=cluster-c,CN=Intermediate CA,OU=Mesh,O=Acme"
    assert policy_for(objects, "cluster-a").source == "CertificateAuthority/istio-system/mesh-ca"
    assert policy_for([o for o in objects if o.kind != "CertificateAuthority"], "cluster-a") is None


def test_conflicting_or_self_defeating_policies_are_errors():
    twin = (sample_files()["mesh/ca.yaml"].decode().replace("name: mesh-ca", "name: twin"))
    with pytest.raises(CAError, match="covered by two CertificateAuthority policies .*mesh-ca.*twin"):
        policy_for(sample_objects({"mesh/twin.yaml": twin}), "cluster-a")
    lasting = sample_files()["mesh/ca.yaml"].decode().replace("renewBefore: 720h", "renewBefore: 8760h")
    with pytest.raises(CAError, match="renewBefore 8760h must be shorter than lifetime 8760h"):
        policy_for(sample_objects({"mesh/ca.yaml": lasting}), "cluster-a")


# -- chains ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cluster", SAMPLE_CLUSTERS)
def test_sample_cluster_chain_verifies(cluster, rsa_root, tmp_path):
    policy = policy_for(sample_objects(), cluster)
    target = DirTarget(tmp_path / "out")
    assert reconcile(target, rsa_root, cluster, policy, NOW).action == CREATE
    secret = target.read(cluster)
    assert secret["type"] == "Opaque" and secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "galleon"
    assert sorted(secret["data"]) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    annotations = secret["metadata"]["annotations"]
    assert annotations["galleon.io/ca-root-fingerprint"] == rsa_root.fingerprint
    assert annotations["galleon.io/ca-policy-hash"] == policy.hash
    data = values(secret)
    intermediate = x509.load_pem_x509_certificate(data["ca-cert.pem"])
    assert data["cert-chain.pem"] == data["ca-cert.pem"] + pem(rsa_root.cert)
    assert data["root-cert.pem"] == pem(rsa_root.cert)
    assert annotations["galleon.io/ca-not-after"] == intermediate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")

    # The profile of Istio's tools/certs intermediates.
    assert intermediate.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == cluster
    assert intermediate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Intermediate CA"
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = intermediate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.digital_signature
    san = intermediate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    with pytest.raises(x509.ExtensionNotFound):
        intermediate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert isinstance(intermediate.public_key(), ec.EllipticCurvePublicKey)
    assert intermediate.not_valid_after_utc - NOW == timedelta(hours=8760)

    leaf, _ = workload(data)
    verifier = PolicyBuilder().store(Store([rsa_root.cert])).time(NOW).build_client_verifier()
    verified = verifier.verify(leaf, [intermediate])
    assert verified.chain == [leaf, intermediate, rsa_root.cert]
    assert verified.subjects == [x509.UniformResourceIdentifier(WORKLOAD_URI)]

    files = tmp_path / "pem"
    files.mkdir()
    for name, content in data.items():
        (files / name).write_bytes(content)
    (files / "leaf.pem").write_bytes(pem(leaf))
    result = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslclient",
                             "-CAfile", files / "root-cert.pem", "-untrusted", files / "ca-cert.pem",
                             files / "leaf.pem"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    # And the chain as istiod hands it to workloads, with the root only as the trust anchor.
    result = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", files / "root-cert.pem",
                             "-untrusted", files / "cert-chain.pem", files / "leaf.pem"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_leaf_under_another_root_does_not_verify(root, rsa_root, policy):
    data = {k: v.encode() for k, v in issue(root, "cluster-a", policy, NOW).data().items()}
    leaf, _ = workload(data)
    verifier = PolicyBuilder().store(Store([rsa_root.cert])).time(NOW).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [x509.load_pem_x509_certificate(data["ca-cert.pem"])])


def test_rsa_intermediate_under_an_ecdsa_root(root, policy):
    rsa_policy = dataclasses.replace(policy, key_algorithm="RSA_4096")
    data = {k: v.encode() for k, v in issue(root, "cluster-a", rsa_policy, NOW).data().items()}
    intermediate = x509.load_pem_x509_certificate(data["ca-cert.pem"])
    assert intermediate.public_key().key_size == 4096
    leaf, _ = workload(data)
    verifier = PolicyBuilder().store(Store([root.cert])).time(NOW).build_client_verifier()
    assert verifier.verify(leaf, [intermediate]).chain == [leaf, intermediate, root.cert]
    secret = secret_manifest(issue(root, "cluster-a", rsa_policy, NOW), root, rsa_policy)
    assert plan(secret, root, "cluster-a", policy, NOW).reasons[:1] == (
        "its key is RSA_4096; the policy asks for ECDSA_P256",)


# -- TLS between clusters ----------------------------------------------------------------------------------

def _mtls(tmp_path: Path, client: tuple, client_trust: bytes, server: tuple, server_trust: bytes) -> str | None:
    """One mutual-TLS exchange on loopback; None when it succeeds, else what failed."""
    def context(kind, identity, trust, name):
        (cert, key), chain = identity
        path = tmp_path / f"{name}.pem"
        path.write_bytes(pem(cert) + chain + key_pem(key))
        ctx = ssl.SSLContext(kind)
        ctx.load_cert_chain(path)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.load_verify_locations(cadata=trust.decode())
        return ctx

    server_ctx = context(ssl.PROTOCOL_TLS_SERVER, server, server_trust, "server")
    client_ctx = context(ssl.PROTOCOL_TLS_CLIENT, client, client_trust, "client")
    client_ctx.check_hostname = False  # workloads are named by SPIFFE URI, checked below
    outcome: dict = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome["peer"] = tls.getpeercert()["subjectAltName"]
                tls.sendall(tls.recv(4) + b"-pong")
        except (OSError, ssl.SSLError) as exc:
            outcome["server"] = str(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_ctx.wrap_socket(raw) as tls:
            tls.sendall(b"ping")
            answer = tls.recv(16)
            peer = tls.getpeercert()["subjectAltName"]
    except (OSError, ssl.SSLError) as exc:
        answer, peer = b"", None
        outcome["client"] = str(exc)
    thread.join()
    listener.close()
    if answer == b"ping-pong" and outcome.get("peer") == (("URI", WORKLOAD_URI + "/client"),) and peer:
        return None
    return f"client: {outcome.get('client')}; server: {outcome.get('server')}"


def test_workloads_of_two_clusters_speak_mtls_through_the_shared_root(rsa_root, policy, tmp_path):
    target = DirTarget(tmp_path / "out")
    for cluster in ("cluster-a", "cluster-b"):
        reconcile(target, rsa_root, cluster, dataclasses.replace(policy, cluster=cluster), NOW)
    a, b = values(target.read("cluster-a")), values(target.read("cluster-b"))
    assert a["ca-cert.pem"] != b["ca-cert.pem"]
    client = (workload(a, WORKLOAD_URI + "/client"), a["ca-cert.pem"])
    server = (workload(b, WORKLOAD_URI + "/server"), b["ca-cert.pem"])
    # Each side trusts only the root bundle its own cluster's Secret publishes.
    assert _mtls(tmp_path, client, a["root-cert.pem"], server, b["root-cert.pem"]) is None

    foreign = init_root(tmp_path / "foreign", ECDSA, NOW)
    # A server under a foreign root refuses the client's certificate, and the other way round.
    error = _mtls(tmp_path, client, a["root-cert.pem"], server, pem(foreign.cert))
    # (the client then sees the server's "unknown ca" alert or, racing it, the connection's end)
    assert error and "server: [SSL: CERTIFICATE_VERIFY_FAILED]" in error, error
    error = _mtls(tmp_path, client, pem(foreign.cert), server, b["root-cert.pem"])
    assert error and "client: [SSL: CERTIFICATE_VERIFY_FAILED]" in error, error


# -- reconcile ---------------------------------------------------------------------------------------------

def test_second_reconcile_writes_nothing(root, target, policy):
    assert reconcile(target, root, "cluster-a", policy, NOW).action == CREATE
    path = target.file("cluster-a")
    before = path.read_bytes(), path.stat().st_mtime_ns
    assert path.stat().st_mode & 0o777 == 0o600  # the manifest holds the CA key
    again = reconcile(target, root, "cluster-a", policy, NOW + timedelta(days=1))
    assert (again.action, again.reasons) == (NONE, ())
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["cacerts.yaml"]  # no temporary file left


def test_near_expiry_reissues(root, target, policy):
    reconcile(target, root, "cluster-a", policy, NOW)
    first = values(target.read("cluster-a"))["ca-cert.pem"]
    due = NOW + timedelta(hours=8760 - 720)
    assert reconcile(target, root, "cluster-a", policy, due - timedelta(seconds=1)).action == NONE
    decided = reconcile(target, root, "cluster-a", policy, due)
    assert decided.action == REISSUE and "within renewBefore 720h" in decided.reasons[0]
    renewed = x509.load_pem_x509_certificate(values(target.read("cluster-a"))["ca-cert.pem"])
    assert renewed.not_valid_after_utc == due + timedelta(hours=8760) and pem(renewed) != first
    assert reconcile(target, root, "cluster-a", policy, due).action == NONE


def test_intermediates_stop_at_the_root_without_reissuing_forever(root, target, policy):
    late = root.not_after - timedelta(days=10)
    assert reconcile(target, root, "cluster-a", policy, late).action == CREATE
    cert = x509.load_pem_x509_certificate(values(target.read("cluster-a"))["ca-cert.pem"])
    assert cert.not_valid_after_utc == root.not_after
    decided = reconcile(target, root, "cluster-a", policy, late + timedelta(days=1))
    assert decided.action == NONE and "rotate the root" in decided.warnings[0]
    assert reconcile(target, root, "cluster-a", policy, root.not_after).action == REFUSE


def test_changed_policy_reissues(root, target, policy):
    reconcile(target, root, "cluster-a", policy, NOW)
    same = dataclasses.replace(policy, lifetime="525600m", source="elsewhere")  # the same policy, spelled otherwise
    assert reconcile(target, root, "cluster-a", same, NOW).action == NONE
    shorter = dataclasses.replace(policy, lifetime="4380h")
    decided = reconcile(target, root, "cluster-a", shorter, NOW)
    assert decided.action == REISSUE and decided.reasons == (
        f"the policy changed ({policy.source}: hash {policy.hash}, now {shorter.hash})",)
    assert reconcile(target, root, "cluster-a", shorter, NOW).action == NONE
    renamed = dataclasses.replace(shorter, organization="Acme")
    assert reconcile(target, root, "cluster-a", renamed, NOW).action == REISSUE
    subject = x509.load_pem_x509_certificate(values(target.read("cluster-a"))["ca-cert.pem"]).subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme"


def test_swapped_key_is_detected_and_repaired(root, target, policy):
    reconcile(target, root, "cluster-a", policy, NOW)
    secret = target.read("cluster-a")
    stranger = key_pem(ec.generate_private_key(ec.SECP256R1()))
    secret["data"]["ca-key.pem"] = base64.b64encode(stranger).decode()
    target.write("cluster-a", secret)
    decided = reconcile(target, root, "cluster-a", policy, NOW)
    assert decided.action == REISSUE and decided.reasons == ("ca-key.pem does not match ca-cert.pem",)
    repaired = values(target.read("cluster-a"))
    key = serialization.load_pem_private_key(repaired["ca-key.pem"], password=None)
    assert repaired["ca-key.pem"] != stranger
    assert key.public_key() == x509.load_pem_x509_certificate(repaired["ca-cert.pem"]).public_key()
    assert reconcile(target, root, "cluster-a", policy, NOW).action == NONE


def test_other_tampering_is_detected(root, target, policy, tmp_path):
    reconcile(target, root, "cluster-a", policy, NOW)
    good = target.read("cluster-a")
    other = init_root(tmp_path / "other", ECDSA, NOW)
    assert "the intermediate is not signed by the current root" in " ".join(
        plan(good, other, "cluster-a", policy, NOW).reasons)
    chain = dict(good, data=dict(good["data"], **{"cert-chain.pem": good["data"]["ca-cert.pem"]}))
    assert plan(chain, root, "cluster-a", policy, NOW).reasons == (
        "cert-chain.pem is not the intermediate followed by the current root",)
    missing = dict(good, data={k: v for k, v in good["data"].items() if k != "ca-key.pem"})
    assert plan(missing, root, "cluster-a", policy, NOW).reasons == ("ca-key.pem is missing",)
    noise = dict(good, data=dict(good["data"], **{"ca-cert.pem": "%%%"}))
    assert plan(noise, root, "cluster-a", policy, NOW).action == REISSUE


def test_a_secret_galleon_did_not_write_is_refused_unless_adopted(root, target, policy):
    foreign = secret_manifest(issue(root, "cluster-a", policy, NOW), root, policy)
    foreign["metadata"]["labels"] = {"team": "mesh"}
    foreign["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "owner": "x"}
    foreign["data"]["istio-generated"] = ""
    target.write("cluster-a", foreign)
    before = target.file("cluster-a").read_bytes()
    refused = reconcile(target, root, "cluster-a", policy, NOW)
    assert refused.action == REFUSE and "--adopt" in refused.reasons[0]
    assert target.file("cluster-a").read_bytes() == before
    adopted = reconcile(target, root, "cluster-a", policy, NOW, adopt=True)
    assert adopted.action == REISSUE and any("istio-generated" in r for r in adopted.reasons)
    written = target.read("cluster-a")
    assert written["metadata"]["labels"] == {"team": "mesh", "app.kubernetes.io/managed-by": "galleon"}
    assert "istio-generated" not in written["data"]
    assert set(written["metadata"]["annotations"]) == {
        "owner", "galleon.io/ca-root-fingerprint", "galleon.io/ca-not-after", "galleon.io/ca-policy-hash"}
    assert reconcile(target, root, "cluster-a", policy, NOW).action == NONE


def test_dry_run_writes_nothing_and_shows_no_key(root, target, policy):
    decided = reconcile(target, root, "cluster-a", policy, NOW, dry_run=True)
    assert decided.action == CREATE and not target.file("cluster-a").exists()
    assert root.fingerprint in decided.describe()
    reconcile(target, root, "cluster-a", policy, NOW)
    later = NOW + timedelta(hours=8760)
    bytes_before = target.file("cluster-a").read_bytes()
    decided = reconcile(target, root, "cluster-a", policy, later, dry_run=True)
    assert decided.action == REISSUE and target.file("cluster-a").read_bytes() == bytes_before
    text = decided.describe()
    assert "expired at" in text and decided.current.fingerprint in text
    for key in (values(target.read("cluster-a"))["ca-key.pem"], key_pem(root.key)):
        for line in key.decode().splitlines()[1:-1]:  # the base64 body of each private key
            assert line not in text
    assert "PRIVATE" not in text


def test_dir_target_errors_are_one_line(tmp_path, root, policy):
    target = DirTarget(tmp_path / "out")
    path = target.file("cluster-a")
    path.parent.mkdir(parents=True)
    path.write_text("data: [unclosed\n  ca-key.pem: c2VjcmV0\n")
    with pytest.raises(CAError, match=r"cacerts\.yaml: invalid YAML at line 1, column 7: .*; fix or remove it$") as caught:
        reconcile(target, root, "cluster-a", policy, NOW)
    assert "c2VjcmV0" not in str(caught.value)  # where the parser stopped, not the key it stopped at
    path.write_text(yaml.safe_dump({"kind": "ConfigMap"}))
    with pytest.raises(CAError, match="is not a Secret manifest"):
        target.read("cluster-a")
    with pytest.raises(CAError, match="cannot be a directory name"):
        target.file("../x")
    assert isinstance(target_from(f"dir:{tmp_path}"), DirTarget)
    with pytest.raises(CAError, match="unknown target"):
        target_from("s3://bucket")


def planted_link(target: DirTarget, at: str, elsewhere: Path) -> Path:
    """A symbolic link at ``at`` (cluster, namespace, kind or file) of cluster-a's manifest, to
    ``elsewhere`` (made a folder when the link stands for one); the link's path."""
    file = target.file("cluster-a")
    link = {"cluster": file.parents[2], "namespace": file.parents[1], "kind": file.parent, "file": file}[at]
    link.parent.mkdir(parents=True, exist_ok=True)
    if at != "file":
        elsewhere.mkdir()
    link.symlink_to(elsewhere)
    return link


@pytest.mark.parametrize("at", ["cluster", "namespace", "kind", "file"])
def test_a_dir_target_never_writes_or_reads_through_a_symbolic_link(root, target, policy, tmp_path, at):
    elsewhere = tmp_path / "elsewhere"
    link = planted_link(target, at, elsewhere)
    refused = f"{link} is a symbolic link; Galleon does not write through links in a dir: target"
    with pytest.raises(CAError) as raised:
        reconcile(target, root, "cluster-a", policy, NOW)
    assert str(raised.value) == refused
    with pytest.raises(CAError, match="is a symbolic link"):
        target.write("cluster-a", {"kind": "Secret"})  # without a read first
    assert not elsewhere.exists() or not list(elsewhere.rglob("*"))  # no key written outside the target
    if at == "file":  # a manifest kept elsewhere is not read through the link either
        elsewhere.write_text(yaml.safe_dump({"kind": "Secret", "data": {"ca-key.pem": "c2VjcmV0"}}))
        with pytest.raises(CAError, match="is a symbolic link"):
            target.read("cluster-a")


def test_the_key_file_is_0600_whatever_the_umask(root, target, policy):
    old = os.umask(0)
    try:
        reconcile(target, root, "cluster-a", policy, NOW)
    finally:
        os.umask(old)
    assert target.file("cluster-a").stat().st_mode & 0o777 == 0o600


KILLED_WRITER = """
import os, signal, sys
from reconciler.ca import DirTarget
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed as the temporary file is complete
DirTarget(sys.argv[1]).write("cluster-a", {"kind": "Secret", "data": {"ca-key.pem": "c2VjcmV0"}})
"""


def test_a_write_killed_midway_leaves_a_temporary_file_the_next_run_removes(root, policy, tmp_path):
    from tests.conftest import ROOT, SAMPLE_REPO
    from tests.test_cli import galleon
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, out], cwd=ROOT)
    assert killed.returncode == -9
    folder = DirTarget(out).file("cluster-a").parent
    left = list(folder.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".cacerts.yaml.") and left[0].stat().st_mode & 0o777 == 0o600
    other = folder.parents[2] / "cluster-b" / "istio-system" / "Secret"
    other.mkdir(parents=True)
    (other / left[0].name).write_text("another cluster's, not this run's to remove")
    run = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "root", "--target", f"dir:{out}",
                  "--cluster", "cluster-a")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "removed temporary files an interrupted write left" in run.stderr and "files=1" in run.stderr
    assert "temporary" not in run.stdout
    assert [p.name for p in folder.iterdir()] == ["cacerts.yaml"]
    assert [p.name for p in other.iterdir()] == [left[0].name]


def test_openssl_reads_the_root_files(root, tmp_path):
    result = subprocess.run(["openssl", "pkey", "-in", tmp_path / "root" / "root-key.pem", "-pubout"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    public = root.cert.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert result.stdout == public


def test_the_package_loads_each_name_when_used_and_a_preview_without_cryptography():
    """reconciler.ca loads its names lazily: each exported name is what its module defines (never the
    module itself, whatever was imported first), and reading policies for a preview does not load
    cryptography."""
    script = """
import sys
import reconciler.ca.preview, reconciler.ca.targets  # submodules first: their names must still win
print("cryptography" in sys.modules)
import reconciler.ca as ca, types
assert sorted(ca.__all__) == sorted(["CAError", *ca._MODULES]), ca.__all__
bad = [n for n in ca.__all__ if isinstance(getattr(ca, n), types.ModuleType)]
assert not bad, bad
"""
    preview_only = subprocess.run([sys.executable, "-c", "import sys, reconciler.ca.preview; "
                                   "print('cryptography' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert preview_only.stdout.strip() == "False", preview_only.stderr
    everything = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert everything.returncode == 0 and everything.stdout.strip() == "True", everything.stderr
