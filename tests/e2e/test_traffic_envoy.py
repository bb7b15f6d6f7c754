"""The traffic-share model of ``galleon diff`` (compiler/diff/traffic.py) against a real Envoy.

``service_shares`` predicts, from a compiled proxy view, the fraction of requests to a service that
lands on each endpoint. Here the same directory is compiled by the model and served by a real
``galleon serve`` process to a real Envoy (bootstrapped by ``galleon bootstrap``, listening on
loopback); requests go through Envoy to real HTTP backends on 127.0.0.x that answer with their own
address, and the observed fraction per backend must match the prediction within a binomial tolerance.

One mesh holds three services on the same port (one listener, one virtual host each), each with its
own backends, so the cases do not disturb each other:

- ``split``: a VirtualService sends 70/30 to two subsets; v1 has two endpoints in two localities
  with weights 1 and 3 (no locality weighting: endpoint weights decide).
- ``spread``: five endpoints in four localities with endpoint weights 1..5, and a DestinationRule
  ``localityLbSetting.distribute`` of 50/30/20 (the 20 split over two eu-west zones).
- ``failover``: outlierDetection gives Istio's failover priorities (local zone, same region, other
  region); the caller's zone's backends are stopped, Envoy ejects them, and traffic must go where
  ``service_shares(..., caller_locality)`` says.

Envoy's LEAST_REQUEST (Istio's default) picks among equal weights by power of two random choices
and among unequal weights by an EDF schedule, and route weights are random: the comparison is of
aggregated counts per backend over a few thousand requests, never of a sequence.
"""
from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from compiler.revision import load
from compiler.diff.traffic import service_shares
from compiler.view import make_view
from compiler.xds import compile_view
from compiler.xds_types import CLUSTER, ENDPOINT
from reconciler.sources import open_source
from tests.e2e.daemon import GALLEON, Galleon
from tests.e2e.backends import Backend
from tests.e2e.envoy import Envoy, answers, wait_for
from tests.ports import free_port

pytestmark = pytest.mark.e2e

CLUSTER_NAME = "cluster-a"
CALLER_LOCALITY = "us-east/us-east-1a"  # cluster-a's locality, so the sidecar's
NODE = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
REQUESTS = 2000

SPLIT = "split.default.svc.cluster.local"
SPREAD = "spread.default.svc.cluster.local"
FAILOVER = "failover.default.svc.cluster.local"

# Backends per service: (address, locality, endpoint weight, version label). Addresses in 127.0.0.0/8
# are all loopback on Linux; each backend also gets its own free port.
BACKENDS = {
    SPLIT: [("127.0.0.111", "us-east/us-east-1a", 1, "v1"),
            ("127.0.0.112", "us-east/us-east-1b", 3, "v1"),
            ("127.0.0.113", "eu-west/eu-west-1a", 1, "v2")],
    SPREAD: [("127.0.0.121", "us-east/us-east-1a", 1, "v1"),
             ("127.0.0.122", "us-east/us-east-1a", 3, "v1"),
             ("127.0.0.123", "us-east/us-east-1b", 5, "v1"),
             ("127.0.0.124", "eu-west/eu-west-1a", 2, "v1"),
             ("127.0.0.125", "eu-west/eu-west-1b", 4, "v1")],
    FAILOVER: [("127.0.0.131", "us-east/us-east-1a", 1, "v1"),
               ("127.0.0.132", "us-east/us-east-1a", 1, "v1"),
               ("127.0.0.133", "us-east/us-east-1b", 1, "v1"),
               ("127.0.0.134", "us-east/us-east-1b", 3, "v1"),
               ("127.0.0.135", "eu-west/eu-west-1a", 1, "v1")],
}


def _obj(api: str, kind: str, name: str, spec: dict, namespace: str = "default") -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


ISTIO, GALLEON_API = "networking.istio.io/v1", "galleon.io/v1alpha1"


def _service_entry(host: str, port: int, backends: dict[str, Backend]) -> dict:
    return _obj(ISTIO, "ServiceEntry", host.split(".")[0], {
        "hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
        "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": address, "ports": {"http": backends[address].port}, "locality": locality,
                       "weight": weight, "labels": {"version": version}, "network": "network-1"}
                      for address, locality, weight, version in BACKENDS[host]]})


def mesh_files(port: int, backends: dict[str, Backend]) -> dict[str, str]:
    mesh = [
        _obj(GALLEON_API, "MeshNetworks", "mesh-networks", {"networks": {
            "network-1": {"endpoints": [{"fromRegistry": CLUSTER_NAME}],
                          "gateways": [{"address": "192.0.2.10", "port": 15443}]}}}, "istio-system"),
        _obj(GALLEON_API, "Cluster", CLUSTER_NAME, {"network": "network-1", "locality": CALLER_LOCALITY},
             "istio-system"),
    ]
    plain = {"mode": "DISABLE"}
    split = [
        _service_entry(SPLIT, port, backends),
        _obj(ISTIO, "DestinationRule", "split", {
            "host": SPLIT, "trafficPolicy": {"tls": plain},
            "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]}),
        _obj(ISTIO, "VirtualService", "split", {"hosts": [SPLIT], "http": [{"route": [
            {"destination": {"host": SPLIT, "subset": "v1"}, "weight": 70},
            {"destination": {"host": SPLIT, "subset": "v2"}, "weight": 30}]}]}),
    ]
    spread = [
        _service_entry(SPREAD, port, backends),
        _obj(ISTIO, "DestinationRule", "spread", {"host": SPREAD, "trafficPolicy": {
            "tls": plain,
            "loadBalancer": {"localityLbSetting": {"enabled": True, "distribute": [
                {"from": "us-east/us-east-1a/*",
                 "to": {"us-east/us-east-1a/*": 50, "us-east/us-east-1b/*": 30, "eu-west/*": 20}}]}}}}),
    ]
    failover = [
        _service_entry(FAILOVER, port, backends),
        _obj(ISTIO, "DestinationRule", "failover", {"host": FAILOVER, "trafficPolicy": {
            "tls": plain,
            # One failed request ejects a host for longer than the test runs; every host may go.
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "300s",
                                 "maxEjectionPercent": 100}}}),
    ]
    return {name: yaml.safe_dump_all(docs, sort_keys=False)
            for name, docs in (("mesh.yaml", mesh), ("split.yaml", split), ("spread.yaml", spread),
                               ("failover.yaml", failover))}


class Setup:
    """The mesh directory, its backends, galleon serve, one sidecar Envoy, and the model's view."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.backends = {address: Backend(address, address) for rows in BACKENDS.values() for address, *_ in rows}
        source = root / "mesh"
        source.mkdir()
        for name, text in mesh_files(self.port, self.backends).items():
            (source / name).write_text(text)
        revision = load(open_source(str(source)).snapshot())
        assert revision.valid, "\n".join(f.text() for f in revision.findings)
        self.mesh = revision.mesh
        view = make_view(self.mesh, CLUSTER_NAME, NODE, {}, CALLER_LOCALITY, listen_address="127.0.0.1")
        self.config = compile_view(self.mesh, view)
        self.galleon = Galleon(source, CLUSTER_NAME)
        self.envoy: Envoy | None = None

    def start(self) -> "Setup":
        self.galleon.start()
        boot = subprocess.run(
            [*GALLEON, "bootstrap", "--cluster", CLUSTER_NAME, "--node-id", NODE, "--ads", self.galleon.ads,
             "--admin", "127.0.0.1:0", "--listen-address", "127.0.0.1", "--locality", CALLER_LOCALITY,
             "--sds-socket", str(self.root / "no-sds.sock")],
            check=True, capture_output=True, text=True).stdout
        self.envoy = Envoy(boot, self.root).start()
        self.envoy.wait_live(15)
        for host in BACKENDS:
            wait_for(lambda: set(answers(self.port, host, 3)) <= set(self.predicted(host)), 10,
                     lambda: f"no route to {host}: {answers(self.port, host, 3)}\n{self.galleon.log()}")
        return self

    def predicted(self, host: str, caller_locality: str | None = None) -> dict[str, float]:
        """Predicted share per backend address (with no ``places``, a destination's place is its address)."""
        shares = service_shares(self.config, host, self.port, caller_locality, {})
        assert shares is not None, f"the model finds no route to {host}"
        by_address: Counter = Counter()
        for destination, share in shares.items():
            by_address[destination.place] += share
        return dict(by_address)

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.galleon.process is not None:
            self.galleon.stop()
        for backend in self.backends.values():
            backend.stop()


def assert_shares(observed: Counter, predicted: dict[str, float], label: str) -> None:
    """Every destination's observed fraction within 4 binomial standard deviations (at least 3
    percentage points) of the prediction, and nothing observed where nothing is predicted."""
    total = sum(observed.values())
    table = "\n".join(f"  {d:<16} predicted {predicted.get(d, 0):6.1%}  observed {observed.get(d, 0) / total:6.1%}"
                      f" ({observed.get(d, 0)})" for d in sorted(set(predicted) | set(observed)))
    print(f"{label}, {total} requests:\n{table}")  # shown with -s or -rP
    unexpected = set(observed) - {d for d, p in predicted.items() if p > 0}
    assert not unexpected, f"{label}: requests went where the model sends none:\n{table}"
    for destination, share in predicted.items():
        tolerance = max(4 * math.sqrt(share * (1 - share) / total), 0.03)
        assert abs(observed[destination] / total - share) <= tolerance, \
            f"{label}: {destination} off by more than {tolerance:.1%}:\n{table}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    s = Setup(tmp_path_factory.mktemp("traffic"))
    try:
        yield s.start()
    finally:
        s.close()


def test_a_weighted_split_over_subsets_then_endpoint_weights(setup):
    v1, v2 = (f"outbound|{setup.port}|{v}|{SPLIT}" for v in ("v1", "v2"))
    # What the model reads: 70/30 route weights, v1's two endpoints weighted 1 and 3 in two localities.
    predicted = setup.predicted(SPLIT)
    assert predicted == pytest.approx({"127.0.0.111": 0.7 * 0.25, "127.0.0.112": 0.7 * 0.75, "127.0.0.113": 0.3})
    assert not setup.config.messages(CLUSTER)[v1].common_lb_config.HasField("locality_weighted_lb_config")
    endpoints = setup.envoy.endpoints()
    assert [(a, w) for a, _, w in endpoints[v1]] == [("127.0.0.111", 1), ("127.0.0.112", 3)]
    assert [(a, w) for a, _, w in endpoints[v2]] == [("127.0.0.113", 1)]
    assert_shares(answers(setup.port, SPLIT, REQUESTS), predicted, "70/30 split")


def test_locality_weights_from_distribute_then_endpoint_weights(setup):
    name = f"outbound|{setup.port}||{SPREAD}"
    cluster = setup.config.messages(CLUSTER)[name]
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    compiled = {(g.locality.region, g.locality.zone): (g.load_balancing_weight.value, g.priority)
                for g in setup.config.messages(ENDPOINT)[name].endpoints}
    # 50/30 for the two us-east zones; eu-west's 20 divided 2:4 by endpoint weight, rounded up (7 + 14).
    assert compiled == {("us-east", "us-east-1a"): (50, 0), ("us-east", "us-east-1b"): (30, 0),
                        ("eu-west", "eu-west-1a"): (7, 0), ("eu-west", "eu-west-1b"): (14, 0)}
    assert _envoy_locality_weights(setup.envoy, name) == {
        ("us-east", "us-east-1a"): 50, ("us-east", "us-east-1b"): 30,
        ("eu-west", "eu-west-1a"): 7, ("eu-west", "eu-west-1b"): 14}
    predicted = setup.predicted(SPREAD)
    assert predicted == pytest.approx({"127.0.0.121": 50 / 101 / 4, "127.0.0.122": 50 / 101 * 3 / 4,
                                       "127.0.0.123": 30 / 101, "127.0.0.124": 7 / 101, "127.0.0.125": 14 / 101})
    assert_shares(answers(setup.port, SPREAD, REQUESTS), predicted, "distribute 50/30/20")


def test_failover_when_the_callers_locality_is_down(setup):
    name = f"outbound|{setup.port}||{FAILOVER}"
    priorities = {(g.locality.zone, g.priority) for g in setup.config.messages(ENDPOINT)[name].endpoints}
    assert priorities == {("us-east-1a", 0), ("us-east-1b", 1), ("eu-west-1a", 2)}
    # All healthy: priority 0 (the caller's zone) takes everything.
    assert setup.predicted(FAILOVER) == pytest.approx({"127.0.0.131": 0.5, "127.0.0.132": 0.5})
    assert_shares(answers(setup.port, FAILOVER, 400), setup.predicted(FAILOVER), "failover, all healthy")

    local = [address for address, locality, *_ in BACKENDS[FAILOVER] if locality == CALLER_LOCALITY]
    for address in local:
        setup.backends[address].stop()
    # Envoy notices only by failing requests to them (each failure is retried elsewhere). One failure
    # ejects a host, but Envoy hands health changes that follow within its update_merge_window (1 s by
    # default, Galleon does not set it) to the workers' load balancers only when the window ends:
    # until then the second host ejected is still picked. Wait for both ejections to reach the workers,
    # seen as a batch of requests that tries no stopped host.
    stats = f"cluster.{name}."
    predicted = setup.predicted(FAILOVER, CALLER_LOCALITY)

    def settled() -> bool:
        failures = setup.envoy.stats().get(stats + "upstream_cx_connect_fail", 0)
        seen = answers(setup.port, FAILOVER, 20)
        after = setup.envoy.stats()
        return (after.get(stats + "outlier_detection.ejections_active") == len(local)
                and after.get(stats + "upstream_cx_connect_fail", 0) == failures and set(seen) <= set(predicted))

    wait_for(settled, 10, lambda: f"stopped hosts still picked: {setup.envoy.stats()}", interval=0.1)
    before = setup.envoy.stats()
    # Priority 0 has no healthy host (and Istio's panic threshold is 0): priority 1, the same region's
    # other zone, takes everything, by endpoint weight; priority 2 (eu-west) gets nothing.
    assert predicted == pytest.approx({"127.0.0.133": 0.25, "127.0.0.134": 0.75})
    assert_shares(answers(setup.port, FAILOVER, REQUESTS), predicted, "failover, caller's zone down")
    after = setup.envoy.stats()
    for counter in ("upstream_cx_connect_fail", "upstream_rq_retry"):  # no request tried a stopped host
        assert after.get(stats + counter, 0) == before.get(stats + counter, 0), counter


def _envoy_locality_weights(envoy: Envoy, cluster: str) -> dict[tuple[str, str], int]:
    """The locality weights Envoy holds for a cluster (EDS part of its config dump)."""
    dump = json.loads(envoy.get("/config_dump?include_eds&resource=dynamic_endpoint_configs"))
    for config in dump["configs"]:
        assignment = config["endpoint_config"]
        if assignment["cluster_name"] == cluster:
            return {(g["locality"].get("region", ""), g["locality"].get("zone", "")): g.get("load_balancing_weight", 1)
                    for g in assignment["endpoints"]}
    raise AssertionError(f"Envoy has no assignment for {cluster}")
