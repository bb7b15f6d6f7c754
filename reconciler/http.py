"""Health, metrics and debug endpoints over plain HTTP, and the POST routes (the webhook).

The server runs an event loop of its own on its own thread, so a connection costs a socket and
bounded buffers, not a thread. Every GET answer is computed on the daemon's event loop (``_ask``)
so it sees a consistent state, never one half updated.

What a client can make the server hold is bounded (HttpLimits): connections open at once (past the
limit, the one slowest to send its request makes room, so stalled clients cannot starve the
probes), the request head, the body (framed by a valid Content-Length only, refused unread when
over the cap), and the time to send each and to take the answer. ``/debug/*`` shows the mesh's
configuration and its proxies: it answers loopback peers, or a request with the bearer token of
--debug-token-file. A route that raises costs its request a 500, and the log a line at most every
few seconds.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from http.client import responses
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import structlog

from .security.gate import is_loopback_host

log = structlog.get_logger("galleon.http")

# path -> a function of the query that returns (status, content type, body); run on the event loop.
Route = Callable[[dict[str, list[str]]], tuple[int, str, bytes]]
# path -> a function of the request's headers (lower-case names) and body, for POST; run on the
# server's thread (it must only hand work to the loop, e.g. with call_soon_threadsafe).
PostRoute = Callable[[dict[str, str], bytes], tuple[int, str, bytes]]

DEBUG_PREFIX = "/debug/"
MAX_HEAD = 16 << 10  # request line and headers together; a bearer token or a Git host's headers fit
MAX_HEADERS = 100
ROUTE_TIMEOUT = 30.0  # the daemon's loop may be busy publishing; a page that waits longer is not coming


@dataclass(frozen=True)
class HttpLimits:
    max_body: int = 1 << 20  # a push notice is a few KB; GitHub's own cap (25 MB) is not needed here
    timeout: float = 10.0  # to send the request head; then to send the body; then to take the answer
    # open at once; beyond, the one slowest to send its request is dropped (408), or when every
    # one is being answered, the newcomer gets 503
    max_connections: int = 64


class _Refused(Exception):
    """A request answered before (or instead of) its route."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **fields) -> None:
        super().__init__(message)
        self.answer = error_body(status, message, **fields)
        self.headers = headers or {}


def json_body(status: int, data) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def error_body(status: int, message: str, **fields) -> tuple[int, str, bytes]:
    """One line, so that a client's log or a curl on a terminal shows it whole."""
    return status, "application/json", (json.dumps({"error": message, **fields}, sort_keys=True) + "\n").encode()


def text_body(status: int, text: str) -> tuple[int, str, bytes]:
    return status, "text/plain; charset=utf-8", text.encode()


def load_token(path: Path) -> bytes:
    """The /debug/ bearer token from a file (never the command line, where `ps` shows it). Raises ValueError."""
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"--debug-token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ValueError(f"--debug-token-file {path}: the file is empty; write a random token in it")
    if b"\n" in token:
        raise ValueError(f"--debug-token-file {path}: the token must be one line")
    return token


class Throttled:
    """A log event at most ``burst`` times in a row, then once every ``every`` seconds, each line
    counting those held back since the one before: a flood of requests cannot flood the log.
    Called from one thread (the HTTP server's)."""

    def __init__(self, logger, level: str, event: str, burst: int = 10, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.level, self.event = logger, level, event
        self.burst, self.every, self.clock = burst, every, clock
        self._tokens, self._at, self._held = float(burst), clock(), 0

    def __call__(self, **fields) -> None:
        now = self.clock()
        self._tokens, self._at = min(self.burst, self._tokens + (now - self._at) / self.every), now
        if self._tokens < 1:
            self._held += 1
            return
        self._tokens -= 1
        if self._held:
            fields["held_back"], self._held = self._held, 0
        getattr(self.logger, self.level)(self.event, **fields)


class HttpServer:
    def __init__(self, routes: dict[str, Route], loop: asyncio.AbstractEventLoop,
                 posts: dict[str, PostRoute] | None = None, token: bytes | None = None,
                 limits: HttpLimits = HttpLimits()) -> None:
        self.routes, self.loop, self.posts, self.token, self.limits = routes, loop, posts or {}, token, limits
        self._failed = Throttled(log, "error", "http route failed")
        # every open connection, oldest first: True while it is still sending its request (the
        # server's loop's alone)
        self._open: dict[asyncio.StreamWriter, bool] = {}
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], object] | None = None  # once listening

    def start(self, address: str) -> int:
        """Listen on ``address``; the port. Raises OSError."""
        host, _, port = address.rpartition(":")
        listening: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=asyncio.run, name="galleon-http", daemon=True,
                                        args=(self._serve(host.strip("[]") or "127.0.0.1", int(port), listening),))
        self._thread.start()
        try:
            return listening.result()
        except OSError as exc:  # asyncio words a bind error its own way: the system's words for its errno
            why = os.strerror(exc.errno) if (exc.errno or 0) > 0 else exc.strerror or exc
            raise OSError(f"cannot listen on {address}: {why}") from None

    def stop(self) -> None:
        if self._thread is not None and self._stop is not None:
            self._stop()
            self._thread.join(timeout=5)

    async def _serve(self, host: str, port: int, listening: concurrent.futures.Future) -> None:
        try:
            server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        except OSError as exc:
            listening.set_exception(exc)
            return
        loop, stopping = asyncio.get_running_loop(), asyncio.Event()
        self._stop = lambda: loop.call_soon_threadsafe(stopping.set)
        listening.set_result(server.sockets[0].getsockname()[1])
        async with server:
            await stopping.wait()
        # asyncio.run cancels the connections still open when this returns

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # drain() then returns only once the answer is all sent, so closing never waits on a client
        writer.transport.set_write_buffer_limits(high=0)
        try:
            answer, headers = await self._answer(reader, writer)
            writer.write(_answer_bytes(*answer, headers))
            await asyncio.wait_for(writer.drain(), self.limits.timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or would not take its answer
        finally:
            self._open.pop(writer, None)
            writer.transport.abort()

    def _make_room(self) -> bool:
        """Whether a new connection fits in the limit, once the one that has been sending its
        request longest is dropped if need be: a flood of stalled clients then only displaces
        itself, and a probe, whose request takes a millisecond, is still answered."""
        if len(self._open) < self.limits.max_connections:
            return True
        slowest = next((writer for writer, reading in self._open.items() if reading), None)
        if slowest is None:
            return False
        del self._open[slowest]
        # a few bytes go out at once; abort() then wakes its reader with an end of stream
        dropped = error_body(408, "dropped for a newer connection: the request took too long")
        slowest.write(_answer_bytes(*dropped, {}))
        slowest.transport.abort()
        return True

    async def _answer(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> tuple[tuple[int, str, bytes], dict[str, str]]:
        """The answer to the connection's request and its extra headers; raises OSError or
        IncompleteReadError when the client goes away before it has said what it wants."""
        if not self._make_room():
            return error_body(503, f"{self.limits.max_connections} requests are being answered; try again"), {}
        self._open[writer] = True
        peer = writer.get_extra_info("peername")
        try:
            return await self._request(reader, writer, peer[0] if peer else ""), {}
        except _Refused as refused:
            return refused.answer, refused.headers
        except (OSError, asyncio.IncompleteReadError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must cost one request, never the server
            self._failed(path="-", error=f"{type(exc).__name__}: {exc}")
            return error_body(500, f"internal error: {type(exc).__name__}: {exc}"), {}

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       peer: str) -> tuple[int, str, bytes]:
        """The answer to one request; raises _Refused for one refused before its route."""
        try:
            async with asyncio.timeout(self.limits.timeout):
                method, target, headers = await _read_head(reader)
        except TimeoutError:
            raise _Refused(408, f"the request head took over {self.limits.timeout:g} s") from None
        try:
            url = urlsplit(target)
        except ValueError:
            raise _Refused(400, f"the request target {target[:80]!r} is not a URL") from None
        if method not in ("GET", "POST"):
            raise _Refused(405, f"{method} is not served; use GET, or POST for /hook", {"Allow": "GET, POST"})
        if url.path.startswith(DEBUG_PREFIX) and not is_loopback_host(peer):
            self._authorize(headers.get("authorization"))
        table = sorted(self.routes if method == "GET" else self.posts)
        if url.path not in table:
            noun = "endpoint" if method == "GET" else "POST endpoint"
            return error_body(404, f"no {noun} {url.path}", endpoints=table)
        body = await self._read_body(reader, writer, method, headers)
        self._open[writer] = False
        try:
            if method == "GET":
                return await self._ask(self.routes[url.path], parse_qs(url.query))
            return self.posts[url.path](headers, body)
        except Exception as exc:  # noqa: BLE001 - a debug page must not take the daemon down
            self._failed(path=url.path, error=f"{type(exc).__name__}: {exc}")
            return error_body(500, f"{url.path} failed: {type(exc).__name__}: {exc}")

    def _authorize(self, authorization: str | None) -> None:
        if self.token is None:
            raise _Refused(401, f"{DEBUG_PREFIX}* answers loopback peers only",
                           hint="start galleon serve with --debug-token-file FILE to let a bearer token in")
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise _Refused(401, f"{DEBUG_PREFIX}* answers loopback peers, or Authorization: Bearer TOKEN",
                           {"WWW-Authenticate": 'Bearer realm="galleon debug"'},
                           hint="send the token in the daemon's --debug-token-file, or ask from its host")
        # the head was read as latin-1, so this gives back the bytes the client sent
        if not hmac.compare_digest(self.token, given.strip().encode("latin-1")):
            raise _Refused(401, "the bearer token is not the one in --debug-token-file",
                           {"WWW-Authenticate": 'Bearer realm="galleon debug", error="invalid_token"'})

    async def _read_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                         headers: dict[str, str]) -> bytes:
        if "transfer-encoding" in headers:
            raise _Refused(411, "Transfer-Encoding is not accepted; send the body with a Content-Length")
        if "content-length" not in headers:
            if method == "POST":
                raise _Refused(411, "a POST needs a Content-Length")
            return b""
        length = _content_length(headers["content-length"], self.limits.max_body)
        if length > self.limits.max_body:
            raise _Refused(413, f"the body is over {self.limits.max_body} bytes")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(self.limits.timeout):
                await writer.drain()
                return await reader.readexactly(length)
        except TimeoutError:
            raise _Refused(408, f"the body took over {self.limits.timeout:g} s") from None

    async def _ask(self, route: Route, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        async def run():
            return route(query)
        asked = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(asked), ROUTE_TIMEOUT)
        except TimeoutError:
            return error_body(503, f"the daemon did not answer within {ROUTE_TIMEOUT:g} s; try again")


def _answer_bytes(status: int, kind: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"HTTP/1.1 {status} {responses.get(status, '')}", f"Content-Type: {kind}",
            f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """(method, target, headers by lower-case name, repeated ones joined with commas). The head is
    read as latin-1, as HTTP/1.1 defines its bytes; nothing past its blank line is consumed."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            read = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _Refused(431, f"the request head is over {MAX_HEAD} bytes") from None
        size += len(read)
        if size > MAX_HEAD or len(lines) > MAX_HEADERS:
            raise _Refused(431, f"the request head is over {MAX_HEAD} bytes or {MAX_HEADERS} headers")
        if read in (b"\r\n", b"\n"):
            break
        lines.append(read.decode("latin-1").rstrip("\r\n"))
    request = lines[0].split(" ") if lines else []
    if len(request) != 3 or not request[2].startswith("HTTP/1."):
        raise _Refused(400, "not an HTTP/1.x request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _Refused(400, f"malformed header line {line[:80]!r}")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return request[0], request[1], headers


def _content_length(value: str, cap: int) -> int:
    """Content-Length's value; repeated ones (as headers or a list) must agree. Raises _Refused."""
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        raise _Refused(400, f"Content-Length has several values: {value[:80]!r}")
    (text,) = values
    if not (text.isascii() and text.isdigit()):
        raise _Refused(400, f"Content-Length {text[:80]!r} is not a number of bytes")
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(cap)) else cap + 1
