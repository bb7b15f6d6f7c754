"""The daemon's HTTP surface under the probes of issue 23, over real sockets against a real
``galleon serve``: each probe gets its answer within its budget (memory, time, threads, log lines)."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.request
from collections import Counter

import pytest
import structlog

from reconciler.http import HttpLimits, HttpServer, Throttled, load_token, text_body
from reconciler.security.gate import is_loopback_host
from tests.conftest import SAMPLE_REPO
from tests.e2e.daemon import Galleon
from tests.test_cli import galleon
from tests.test_cli_serve import last_line_error

SECRET = b"0123456789abcdef0123456789abcdef"
TOKEN = "debug-7c1e5b2a9f"
TIMEOUT = 2.0  # the daemon's --http-timeout here
CONNECTIONS = 48  # its --http-max-connections: fewer than the stalled clients below


def local_address() -> str | None:
    """One of this machine's addresses that is not loopback (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if is_loopback_host(address) else address


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    files = tmp_path_factory.mktemp("http")
    (files / "secret").write_bytes(SECRET)
    (files / "token").write_text(TOKEN + "\n")
    with Galleon(SAMPLE_REPO, "cluster-a", "--http", "0.0.0.0:0", "--webhook-secret-file", str(files / "secret"),
                 "--debug-token-file", str(files / "token"), "--http-timeout", str(TIMEOUT),
                 "--http-max-connections", str(CONNECTIONS), state_dir=files / "state") as running:
        running.port = int(running.http.rpartition(":")[2])
        yield running


def exchange(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the answer's status, headers (lower-case names) and body."""
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        return read_answer(conn)


def read_answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def one_line_error(body: bytes) -> dict:
    assert body.endswith(b"\n") and body.count(b"\n") == 1, body
    answer = json.loads(body)
    assert answer["error"], answer
    return answer


def memory(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory (VmRSS), or its peak since it started (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def signed(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


# --- who may read what -------------------------------------------------------------------------------


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("192.0.2.2", False), ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
    ("", False), ("not an address", False),
])
def test_the_loopback_decision_is_the_peers_address(host, loopback):
    assert is_loopback_host(host) is loopback


def test_probes_are_open_and_debug_pages_need_loopback_or_the_token(daemon):
    assert exchange(daemon.port, b"GET /debug/configz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200  # loopback peer
    address = local_address()
    if address is None:
        pytest.skip("this machine has no address but loopback to ask from")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert exchange(daemon.port, f"GET {path} HTTP/1.1\r\n\r\n".encode(), address)[0] == 200, path
    for path in ("/debug/configz", "/debug/syncz", "/debug/config_dump?proxyID=x", "/debug/registryz", "/debug/x"):
        status, headers, body = exchange(daemon.port, f"GET {path} HTTP/1.1\r\n\r\n".encode(), address)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (path, status)
        assert "--debug-token-file" in one_line_error(body)["hint"]
    for authorization in (f"Bearer {TOKEN}x", "Bearer \xe9t\xe9", f"Basic {TOKEN}", "Bearer"):
        request = f"GET /debug/configz HTTP/1.1\r\nAuthorization: {authorization}\r\n\r\n".encode("latin-1")
        status, _, body = exchange(daemon.port, request, address)
        assert status == 401, authorization
        one_line_error(body)
    request = f"GET /debug/configz HTTP/1.1\r\nAuthorization: bearer {TOKEN}\r\n\r\n".encode()
    status, _, body = exchange(daemon.port, request, address)
    assert status == 200 and json.loads(body)["cluster"] == "cluster-a"


def test_the_debug_token_file_must_be_readable_one_line_and_not_empty(tmp_path):
    (tmp_path / "token").write_bytes(b"  s3cr\xe9t \n")
    assert load_token(tmp_path / "token") == b"s3cr\xe9t"
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("one\ntwo\n")
    for name, words in (("missing", "No such file"), ("empty", "empty"), ("two", "one line")):
        with pytest.raises(ValueError, match=f"--debug-token-file {tmp_path / name}: .*{words}"):
            load_token(tmp_path / name)
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--debug-token-file",
                            tmp_path / "empty"), "--debug-token-file", "empty")
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--http-timeout", "0"), "--http-timeout")


# --- framing: nothing read but what Content-Length says, and only up to the cap ----------------------


def test_content_length_minus_one_is_refused_without_reading_the_body(daemon):
    """The probe: a 400 MiB body after `Content-Length: -1` took the daemon from 90 MB to 916 MB."""
    before = memory(daemon.process.pid)
    chunk = b"x" * (1 << 20)
    for head in (b"POST /hook HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                 b"POST /hook HTTP/1.1\r\nContent-Length: 419430400\r\n\r\n"):
        sent = 0
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as conn:
            try:
                conn.sendall(head)
                while sent < 400:
                    conn.sendall(chunk)
                    sent += 1
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon answered and closed: what the probe wants
            status, _, body = read_answer(conn)
        assert status == (400 if b"-1" in head else 413), body
        one_line_error(body)
        assert sent < 400, "the daemon read the whole body"
    # the peak, since a body read and let go leaves RSS where it was (the probe's 916 MB was a peak)
    grown = memory(daemon.process.pid, "VmHWM") - before
    print(f"\nRSS growth (to its peak) over two refused 400 MiB bodies: {grown / 1e6:.1f} MB")
    assert grown < 50e6


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /hook HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /hook HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),  # latin-1's superscript two: a digit to str.isdigit
    (b"POST /hook HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n12345", 400),
    (b"POST /hook HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n12345", 400),
    (b"POST /hook HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 413),
    (b"POST /hook HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n", 413),
    (b"POST /hook HTTP/1.1\r\n\r\n", 411),
    (b"POST /hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    (b"POST /hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", 411),
    (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (20 << 10) + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS spoken to plain HTTP
    (b"GET http://[::1/healthz HTTP/1.1\r\n\r\n", 400),
    (b"DELETE /healthz HTTP/1.1\r\n\r\n", 405),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
])
def test_a_malformed_request_gets_a_one_line_error(daemon, request_bytes, status):
    got, _, body = exchange(daemon.port, request_bytes)
    assert got == status, body
    one_line_error(body)


def test_the_body_is_read_up_to_content_length_and_no_further(daemon):
    body = b'{"ref": "refs/heads/main"}'
    head = f"POST /hook HTTP/1.1\r\nX-Hub-Signature-256: {signed(body)}\r\nContent-Length: {len(body)}\r\n"
    # identical repeated lengths agree; what follows the body is not part of it (nor read)
    status, _, answer = exchange(daemon.port, (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
                                 + b"GET /debug/configz HTTP/1.1\r\n\r\n" + b"y" * 100_000)
    assert (status, json.loads(answer)) == (202, {"accepted": "github"})
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/hook", data=body, method="POST",
                                     headers={"X-Hub-Signature-256": signed(body), "Expect": "100-continue"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202


@pytest.mark.parametrize("header", [
    b"X-Hub-Signature-256: sha256=" + "\u00e9".encode("latin-1") * 64,
    b"X-Hub-Signature-256: sha256=\xff\xfe" + b"0" * 62,
    "X-Galleon-Signature: sha256=\u00e9t\u00e9".encode("utf-8"),
    b"X-Hub-Signature-256: sha1=da39a3ee5e6b4b0d3255bfef95601890afd80709",
    b"X-Hub-Signature-256: sha256=",
    b"X-Hub-Signature-256: " + b"0" * 64,
    b"X-Gitlab-Token: \xe9\xe9\xe9",
])
def test_a_malformed_signature_is_401_and_no_traceback(daemon, header):
    status, _, body = exchange(daemon.port, b"POST /hook HTTP/1.1\r\n" + header + b"\r\nContent-Length: 2\r\n\r\n{}")
    assert status == 401, body
    one_line_error(body)
    assert "Traceback" not in "".join(daemon.lines)


# --- time and threads: stalled clients cost a socket and are dropped ----------------------------------


def test_stalled_clients_time_out_and_probes_are_answered_meanwhile(daemon):
    """The probe: 200 stalled POSTs held 200 threads, with no timeout."""
    threads_before = threads(daemon.process.pid)

    def stall(i: int) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", daemon.port), timeout=TIMEOUT + 3)
        # half of them stall in the head, half in the body
        conn.sendall(b"POST /hook HTTP/1.1\r\nX-Hub-Signature-256: " if i % 2 else
                     b"POST /hook HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"partial\":")
        return conn

    def healthz() -> float:
        started = time.monotonic()
        status, _, body = exchange(daemon.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"ok\n")
        return time.monotonic() - started

    started = time.monotonic()
    stalled = [stall(i) for i in range(40)]
    beside_40 = healthz()
    assert beside_40 < 1.0 and threads(daemon.process.pid) == threads_before, "a thread per connection"
    # past --http-max-connections, each newer connection drops the one stalled longest
    stalled += [stall(i) for i in range(160)]
    time.sleep(0.1)  # all accepted
    beside_200 = healthz()
    assert beside_200 < 1.0
    answers = []
    for conn in stalled:
        with conn:
            try:
                answers.append(read_answer(conn)[0])
            except ConnectionResetError:
                answers.append("reset")  # dropped before the daemon had read what it sent
    waited = time.monotonic() - started
    print(f"\n/healthz beside 40 stalled clients: {beside_40 * 1000:.1f} ms, beside 200: {beside_200 * 1000:.1f} ms; "
          f"all 200 closed {waited:.2f} s after the first (--http-timeout {TIMEOUT:g}): {Counter(answers)}; "
          f"daemon threads {threads_before}, {threads(daemon.process.pid)} after")
    assert set(answers) <= {408, "reset"} and waited < TIMEOUT + 2.5
    # those still held when the probe came, but the one it dropped, ran out of time
    assert answers[-(CONNECTIONS - 1):] == [408] * (CONNECTIONS - 1)


def test_a_newcomer_gets_503_only_when_every_connection_is_being_answered():
    loop = asyncio.new_event_loop()
    running = threading.Thread(target=loop.run_forever, daemon=True)
    running.start()
    release = threading.Event()

    def slow(_):  # holds the daemon's loop: the second request waits its turn, also past its reading
        release.wait(5)
        return text_body(200, "slow\n")

    server = HttpServer({"/slow": slow}, loop, limits=HttpLimits(max_connections=2))
    port = server.start("127.0.0.1:0")
    try:
        busy = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for conn in busy:
            conn.sendall(b"GET /slow HTTP/1.1\r\n\r\n")
        time.sleep(0.2)
        status, _, body = exchange(port, b"GET /slow HTTP/1.1\r\n\r\n")
        assert status == 503, body
        one_line_error(body)
        release.set()
        assert [read_answer(conn)[0] for conn in busy] == [200, 200]
    finally:
        release.set()
        server.stop()
        loop.call_soon_threadsafe(loop.stop)
        running.join()
        loop.close()


# --- no route raises, and a failing one cannot flood the log ------------------------------------------


@pytest.fixture
def failing_server():
    loop = asyncio.new_event_loop()  # the daemon's, where GET routes run
    running = threading.Thread(target=loop.run_forever, daemon=True)
    running.start()

    def broken(_):
        raise KeyError("no such thing\non a second line")

    def broken_post(headers, body):
        raise UnicodeDecodeError("utf-8", body, 0, 1, "invalid start byte")

    server = HttpServer({"/healthz": lambda _: text_body(200, "ok\n"), "/broken": broken}, loop,
                        {"/hook": broken_post}, limits=HttpLimits(timeout=1.0))
    port = server.start("127.0.0.1:0")
    yield port
    server.stop()
    loop.call_soon_threadsafe(loop.stop)
    running.join()
    loop.close()


def test_a_route_that_raises_answers_500_and_logs_a_bounded_number_of_lines(failing_server):
    with structlog.testing.capture_logs() as logged:
        for i in range(200):
            request = (b"GET /broken HTTP/1.1\r\n\r\n" if i % 2 else
                       b"POST /hook HTTP/1.1\r\nContent-Length: 1\r\n\r\n\xff")
            status, _, body = exchange(failing_server, request)
            assert status == 500
            assert ("KeyError" if i % 2 else "UnicodeDecodeError") in one_line_error(body)["error"]
        assert exchange(failing_server, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200
    failures = [event for event in logged if event["event"] == "http route failed"]
    print(f"\n200 failing requests: {len(failures)} log lines")
    assert 1 <= len(failures) <= 11 and all("exc_info" not in event for event in failures)


def test_throttled_says_how_many_lines_it_held_back():
    now = [0.0]
    logged = []

    class Recorder:
        def warning(self, event, **fields):
            logged.append(fields)

    say = Throttled(Recorder(), "warning", "refused", burst=3, every=10.0, clock=lambda: now[0])
    for _ in range(10):
        say(n=1)
    assert len(logged) == 3
    now[0] = 10.0
    say(n=1)
    say(n=1)
    assert logged[3:] == [{"n": 1, "held_back": 7}] and len(logged) == 4
