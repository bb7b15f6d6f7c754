"""Webhook verification (reconciler/webhook.py), with signatures computed as GitHub and GitLab do."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from reconciler.webhook import WebhookRejected, load_secret, verify

SECRET = b"s3cret-s3cret-s3cret"
BODY = b'{"ref": "refs/heads/main"}'


def signed(secret: bytes = SECRET, body: bytes = BODY) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_each_git_hosts_proof_is_accepted():
    assert verify(SECRET, {"x-hub-signature-256": signed()}, BODY) == "github"
    assert verify(SECRET, {"x-galleon-signature": signed().upper().replace("SHA256=", "sha256=")}, BODY) == "generic"
    assert verify(SECRET, {"x-gitlab-token": SECRET.decode()}, BODY) == "gitlab"


@pytest.mark.parametrize("headers, status", [
    ({"x-hub-signature-256": signed(b"another-secret-entirely")}, 401),
    ({"x-hub-signature-256": signed(body=b"{}")}, 401),  # signed another body
    # a header of the wrong shape proves nothing either; text a server read as latin-1 is no exception
    ({"x-hub-signature-256": "sha1=abc"}, 401),
    ({"x-hub-signature-256": "sha256=" + "\u00e9" * 64}, 401),
    ({"x-galleon-signature": "sha256=" + signed()[7:-1] + "\u0660"}, 401),  # an Arabic-Indic digit
    ({"x-gitlab-token": "guess"}, 401),
    ({"x-gitlab-token": "\u00e9\u2603"}, 401),
    ({}, 401),
])
def test_anything_else_is_refused(headers, status):
    with pytest.raises(WebhookRejected) as refused:
        verify(SECRET, headers, BODY)
    assert refused.value.status == status


def test_the_secret_comes_from_a_file_and_must_be_long_enough(tmp_path):
    (tmp_path / "good").write_bytes(SECRET + b"\n")
    assert load_secret(tmp_path / "good") == SECRET
    (tmp_path / "short").write_text("short")
    for path, words in ((tmp_path / "short", "shorter than 16"), (tmp_path / "missing", "No such file")):
        with pytest.raises(ValueError, match=words):
            load_secret(path)
