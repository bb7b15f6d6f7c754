"""Fixtures shared by the end-to-end tests that run Envoy on `galleon serve`."""
from __future__ import annotations

import pytest

from tests.e2e.sds import SdsServer


@pytest.fixture
def sds():
    """The SDS stand-in for Istio's node agent (workload certificate and root for Envoy)."""
    with SdsServer() as server:
        yield server


@pytest.fixture
def mesh():
    """test_ads_envoy's two-cluster test mesh with its local backends."""
    from tests.e2e.test_ads_envoy import Mesh
    m = Mesh()
    yield m
    m.close()
