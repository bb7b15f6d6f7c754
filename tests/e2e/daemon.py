"""Running ``galleon serve`` as its own process in tests, the way operators run it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.envoy import wait_for

GALLEON = [sys.executable, "-m", "reconciler.cli"]


class Galleon:
    def __init__(self, source: Path | str, cluster: str, *extra: str, state_dir: Path | None = None) -> None:
        self.argv = [*GALLEON, "serve", str(source), "--cluster", cluster, "--ads", "127.0.0.1:0",
                     "--http", "127.0.0.1:0", "--log-level", "debug", *extra]
        # Each daemon its own state directory unless a test shares one on purpose: a last known good
        # snapshot left by another test must not be served here.
        self.argv += ["--state-dir", str(state_dir or tempfile.mkdtemp(prefix="galleon-state-"))]
        self.events: list[dict] = []
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def start(self, wait_ready: bool = True) -> "Galleon":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        env=env, cwd=Path(__file__).resolve().parents[2])
        threading.Thread(target=self._read, daemon=True).start()
        serving = wait_for(lambda: self.event("serving"), 20, lambda: "galleon serve did not start:\n" + self.log())
        self.ads = serving["ads"]
        self.http = "http://" + serving["http"]
        if wait_ready:
            wait_for(lambda: self.get("/readyz")[0] == 200, 20, lambda: "galleon serve not ready:\n" + self.log())
        return self

    def event(self, name: str, **fields) -> dict | None:
        """The newest log event with this name (and these field values)."""
        for event in reversed(self.events):
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event
        return None

    def count(self, name: str) -> int:
        return sum(event.get("event") == name for event in self.events)

    def log(self) -> str:
        return "".join(self.lines[-60:])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, f"{path}: {status} {body}"
        return json.loads(body)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "Galleon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
