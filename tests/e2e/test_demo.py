"""The README's main command (``make run`` = scripts/demo.py) works and shows the configured split."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_sends_requests_through_envoy_as_sample_repo_routes_them():
    result = subprocess.run([sys.executable, "scripts/demo.py", "--requests", "300"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {v: int(n) for n, v in re.findall(r"(\d+) x 'hello from (v\d)'", result.stdout)}
    assert sum(counts.values()) == 300, result.stdout
    assert abs(counts["v1"] / 300 - 0.9) <= 0.06, counts
    assert "ready: serving sha256:" in result.stdout
