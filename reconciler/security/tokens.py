"""Kubernetes service-account tokens, checked as istiod checks them: a TokenReview
(``authentication.k8s.io/v1``) with the audience proxies are given tokens for (``istio-ca``), sent to
the API server of the cluster the proxy says it is in. Answers are kept for a short while, at most
``MAX_KEPT`` of them, so a reconnecting fleet does not become a TokenReview flood."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Callable

import kubernetes.client
from kubernetes.client.rest import ApiException

from .identity import Identity, from_username

DEFAULT_AUDIENCE = "istio-ca"
KEEP_SECONDS = 60.0
MAX_KEPT = 4096


class TokenRefused(Exception):
    """The token does not authenticate anyone here; the message says why, in one line."""


class TokenReviewer:
    def __init__(self, clients: Callable[[str], kubernetes.client.ApiClient | None],
                 audience: str = DEFAULT_AUDIENCE) -> None:
        self.clients, self.audience = clients, audience
        self._kept: OrderedDict[tuple[str, str], tuple[float, Identity | str]] = OrderedDict()
        self._lock = threading.Lock()

    def review(self, token: str, cluster: str) -> Identity:
        """(blocking) Who ``token`` is, according to ``cluster``'s API server. Raises TokenRefused."""
        key = (hashlib.sha256(token.encode()).hexdigest(), cluster)
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] > now:
                self._kept.move_to_end(key)
                return _answer(kept[1])
        answer = self._ask(token, cluster)
        with self._lock:
            self._kept[key] = (now + KEEP_SECONDS, answer)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)
        return _answer(answer)

    def _ask(self, token: str, cluster: str) -> Identity | str:
        client = self.clients(cluster)
        if client is None:
            return f"no API server of cluster {cluster!r} to check the token with"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]}}
        try:
            response = kubernetes.client.AuthenticationV1Api(client).create_token_review(
                body, _preload_content=False, _request_timeout=5)
            review = json.loads(response.data)
        except ApiException as exc:
            raise TokenRefused(f"cluster {cluster}: TokenReview failed ({exc.status} {exc.reason})") from None
        except Exception as exc:  # noqa: BLE001 - the API server unreachable: not the proxy's fault, not kept
            raise TokenRefused(f"cluster {cluster}: TokenReview failed ({type(exc).__name__}: {exc})") from None
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return f"cluster {cluster} does not authenticate the token: {status.get('error') or 'not authenticated'}"
        if self.audience not in (status.get("audiences") or [self.audience]):
            return f"the token is not for audience {self.audience!r}"
        username = (status.get("user") or {}).get("username", "")
        identity = from_username(username, cluster)
        return identity if identity is not None else f"{username!r} is not a service account"


def _answer(answer: Identity | str) -> Identity:
    if isinstance(answer, str):
        raise TokenRefused(answer)
    return answer
