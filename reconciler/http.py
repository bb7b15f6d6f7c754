"""Health, metrics and debug endpoints over plain HTTP.

The server runs on its own thread; every answer is computed on the daemon's
event loop (``ask``) so it sees a consistent state, never one half updated.
"""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

# path -> a function of the query that returns (status, content type, body); run on the event loop.
Route = Callable[[dict[str, list[str]]], tuple[int, str, bytes]]
# path -> a function of the request's headers (lower-case names) and body, for POST; run on the
# server's thread (it must only hand work to the loop, e.g. with call_soon_threadsafe).
PostRoute = Callable[[dict[str, str], bytes], tuple[int, str, bytes]]
MAX_POST_BODY = 1 << 20


def json_body(status: int, data) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def text_body(status: int, text: str) -> tuple[int, str, bytes]:
    return status, "text/plain; charset=utf-8", text.encode()


class HttpServer:
    def __init__(self, routes: dict[str, Route], loop: asyncio.AbstractEventLoop,
                 posts: dict[str, PostRoute] | None = None) -> None:
        self.routes, self.loop, self.posts = routes, loop, posts or {}
        self._server: ThreadingHTTPServer | None = None

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                url = urlsplit(self.path)
                route = outer.routes.get(url.path)
                if route is None:
                    status, kind, body = json_body(404, {"error": f"no such endpoint {url.path}",
                                                         "endpoints": sorted(outer.routes)})
                else:
                    status, kind, body = outer.ask(route, parse_qs(url.query))
                self.answer(status, kind, body)

            def do_POST(self) -> None:  # noqa: N802
                route = outer.posts.get(urlsplit(self.path).path)
                length = int(self.headers.get("Content-Length") or 0)
                if route is None:
                    self.answer(*json_body(404, {"error": f"no POST endpoint {self.path}",
                                                 "endpoints": sorted(outer.posts)}))
                elif length > MAX_POST_BODY:
                    self.answer(*json_body(413, {"error": f"body over {MAX_POST_BODY} bytes"}))
                else:
                    body = self.rfile.read(length)
                    self.answer(*route({k.lower(): v for k, v in self.headers.items()}, body))

            def answer(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass  # scrapes and probes every few seconds would drown the daemon's own log

        return Handler

    def ask(self, route: Route, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        async def run():
            return route(query)
        try:
            return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)
        except Exception as exc:  # noqa: BLE001 - a debug page must not take the daemon down
            return json_body(500, {"error": f"{type(exc).__name__}: {exc}"})

    def start(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        try:
            self._server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), self._handler())
        except OSError as exc:
            raise OSError(f"cannot listen on {address} for HTTP: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="galleon-http", daemon=True).start()
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
