"""``POST /hook``: a Git host says the repository changed, so the daemon fetches now.

A request is accepted only when it proves it knows the shared secret, in one of the forms Git
hosts use: GitHub's ``X-Hub-Signature-256: sha256=HMAC`` (HMAC-SHA256 of the body), GitLab's
``X-Gitlab-Token: SECRET``, or the generic ``X-Galleon-Signature: sha256=HMAC`` (GitHub's scheme,
for anything that can compute an HMAC). Comparisons take constant time. The body is not trusted
for anything else: the daemon fetches and reads the repository itself.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Mapping

SIGNED_HEADERS = {"x-hub-signature-256": "github", "x-galleon-signature": "generic"}
TOKEN_HEADER = "x-gitlab-token"
HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class WebhookRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def load_secret(path: Path) -> bytes:
    """The shared secret from a file (never the command line, where `ps` shows it). Raises ValueError."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"--webhook-secret-file {path}: {exc.strerror or exc}") from None
    if len(secret) < 16:
        raise ValueError(f"--webhook-secret-file {path}: the secret is shorter than 16 bytes; use a random one")
    return secret


def verify(secret: bytes, headers: Mapping[str, str], body: bytes) -> str:
    """The sender's kind ("github", "gitlab", "generic") when the request carries proof of the secret;
    raises WebhookRejected (401) otherwise, also for a header of the wrong shape: whoever sent it does
    not prove the secret either. ``headers`` keys are lower case; values are any text (a header's
    bytes read as latin-1)."""
    for header, sender in SIGNED_HEADERS.items():
        if header in headers:
            scheme, _, given = headers[header].strip().partition("=")
            if scheme != "sha256" or not HEX_SHA256.fullmatch(given):
                raise WebhookRejected(401, f"{header} must be sha256=<hex HMAC-SHA256 of the body>")
            expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
            # both ASCII now: compare_digest refuses other text rather than comparing it
            if not hmac.compare_digest(expected, given.lower()):
                raise WebhookRejected(401, f"{header} does not match the body and the shared secret")
            return sender
    if TOKEN_HEADER in headers:
        # latin-1 gives back the bytes the client sent (reconciler/http.py reads headers so)
        if not hmac.compare_digest(secret, headers[TOKEN_HEADER].strip().encode("latin-1", "replace")):
            raise WebhookRejected(401, f"{TOKEN_HEADER} is not the shared secret")
        return "gitlab"
    raise WebhookRejected(401, "no X-Hub-Signature-256, X-Gitlab-Token or X-Galleon-Signature header")
