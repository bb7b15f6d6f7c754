"""The README's main command (``make run`` = scripts/demo.py) works: it shows the configured split over
the pods the live registry lists, and a pod written into the registry reaches Envoy, in EDS alone,
and takes traffic, without a commit."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

REQUESTS = 300


def test_the_demo_sends_requests_through_envoy_as_sample_repo_routes_them(tmp_path):
    cache = tmp_path / "cache"  # the user's state directory, as galleon serve defaults to it
    result = subprocess.run([sys.executable, "scripts/demo.py", "--requests", str(REQUESTS)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "GALLEON_STATE_DIR": str(cache)})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert not cache.exists()  # its last known good snapshot would stand for cluster-a there
    assert "ready: serving sha256:" in out
    assert "registry cluster-a: synced" in out
    assert "/debug/registryz: cluster-a: synced, 2 pods, 2 EndpointSlices (2 endpoints), 1 Node" in out
    before, _, after = out.partition("==> a third pod starts")
    assert after, out

    # Before: the two pods of sample-registry/, 90/10 as sample-repo/demo/hello.yaml says.
    counts = {answer: int(n) for n, answer in re.findall(r"(\d+) x '(hello from [^']+)'", before)}
    assert set(counts) == {"hello from v1", "hello from v2"}, out
    assert sum(counts.values()) == REQUESTS, out
    assert abs(counts["hello from v1"] / REQUESTS - 0.9) <= 0.06, counts

    # The new pod: Envoy has its endpoint, pushed in EDS alone, and it takes part of v1's share.
    assert re.search(r"Envoy sees endpoint outbound\|18080\|v1\|hello\.demo\.svc\.cluster\.local::127\.0\.0\.1:18083"
                     r"  \d+\.\d\d s after the write", after), out
    assert "Envoy ACKed a new ClusterLoadAssignment; Cluster, Listener, RouteConfiguration unchanged" in after, out
    assert "cluster-a: synced, 3 pods, 3 EndpointSlices (3 endpoints)" in after, out
    counts = {answer: int(n) for n, answer in re.findall(r"(\d+) x '(hello from [^']+)'", after)}
    assert set(counts) == {"hello from v1", "hello from v1 (new pod)", "hello from v2"}, out
    assert sum(counts.values()) == REQUESTS, out
    v1 = counts["hello from v1"] + counts["hello from v1 (new pod)"]
    assert abs(v1 / REQUESTS - 0.9) <= 0.06, counts
    assert counts["hello from v1 (new pod)"] >= 0.2 * v1, counts  # its pods share v1 (least request: ~half each)
