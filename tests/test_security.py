"""reconciler/security: identities from certificates and service-account names, the refs a Preview
may read, loopback peers, and TLS files read again when they change (a real handshake each time)."""
from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from reconciler.security.gate import Gate, Denied, is_loopback_host, is_loopback_peer
from reconciler.security.identity import from_certificate, from_username, parse_spiffe
from reconciler.security.tls import ReloadingCredentials, TlsError
from tests.certs import issue, root_in


def test_identities_in_istios_form_only():
    assert parse_spiffe("spiffe://cluster.local/ns/bookinfo/sa/reviews").namespace == "bookinfo"
    for other in ("spiffe://cluster.local/ns/bookinfo", "spiffe://td/sa/x/ns/y", "https://x/ns/a/sa/b",
                  "spiffe://td/ns//sa/x"):
        assert parse_spiffe(other) is None
    token = from_username("system:serviceaccount:shop:web", "east")
    assert (token.namespace, token.service_account, token.cluster) == ("shop", "web", "east")
    assert from_username("system:node:worker-1", "east") is None


def test_a_certificate_names_its_spiffe_id(tmp_path):
    root = root_in(tmp_path / "root")
    cert, _ = issue(root, tmp_path, "w", spiffe="spiffe://example.org/ns/shop/sa/web", dns=("web.shop",))
    identity = from_certificate(cert.read_bytes())
    assert identity.spiffe == "spiffe://example.org/ns/shop/sa/web" and identity.how == "mtls"
    plain, _ = issue(root, tmp_path, "plain", dns=("web.shop",))
    assert from_certificate(plain.read_bytes()) is None


def test_loopback():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost") and is_loopback_host("[::1]")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("10.0.0.1") and not is_loopback_host("example")
    assert is_loopback_peer("ipv4:127.0.0.1:5000") and is_loopback_peer("ipv6:[::1]:5000")
    assert not is_loopback_peer("ipv4:192.168.1.9:5000")


def test_previews_only_of_the_refs_allowed():
    gate = Gate("east")
    for allowed in ("main", "refs/heads/feature", "refs/pull/12/head", "refs/merge-requests/3/head", None):
        gate.check_ref(allowed)
    with pytest.raises(Denied, match="not allowed here"):
        gate.check_ref("0123456789abcdef0123456789abcdef01234567")  # any commit, pushed anywhere: no
    strict = Gate("east", preview_refs=("refs/heads/main",))
    strict.check_ref("main")
    with pytest.raises(Denied):
        strict.check_ref("private-wip")


def handshake(port: int, roots: bytes) -> str:
    """The serial of the certificate a TLS handshake with the server on ``port`` gets."""
    import socket
    import ssl

    from cryptography import x509
    context = ssl.create_default_context(cadata=roots.decode())
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return str(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number)


def test_tls_files_are_read_again_when_they_change(tmp_path):
    root = root_in(tmp_path / "root")
    roots = (tmp_path / "root" / "root-cert.pem").read_bytes()
    cert, key = issue(root, tmp_path, "server", dns=("localhost",))
    credentials = ReloadingCredentials(cert, key)

    async def run():
        server = grpc.aio.server()
        port = server.add_secure_port("127.0.0.1:0", credentials.server_credentials())
        await server.start()
        try:
            first = await asyncio.to_thread(handshake, port, roots)
            assert await asyncio.to_thread(handshake, port, roots) == first
            new_cert, new_key = issue(root, tmp_path / "..", "rotated", dns=("localhost",))
            os.replace(new_key, key)
            os.replace(new_cert, cert)  # a rotation, as the CA reconciler or cert-manager writes it
            second = await asyncio.to_thread(handshake, port, roots)
            assert second != first
            cert.write_text("not a certificate")  # half written: the previous one stays
            assert await asyncio.to_thread(handshake, port, roots) == second
        finally:
            await server.stop(0)
    asyncio.run(run())


def test_unusable_tls_files_are_one_line_errors(tmp_path):
    root = root_in(tmp_path / "root")
    cert, key = issue(root, tmp_path, "a", dns=("localhost",))
    other_cert, other_key = issue(root, tmp_path, "b", dns=("localhost",))
    with pytest.raises(TlsError, match="is not the key of the certificate"):
        ReloadingCredentials(cert, other_key)
    with pytest.raises(TlsError, match="No such file"):
        ReloadingCredentials(tmp_path / "missing.pem", key)
