from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from compiler.model import Mesh, build_mesh
from compiler.snapshot import Snapshot
from compiler.revision import load
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REPO = ROOT / "sample-repo"


def pytest_configure(config):
    # Commands keep mirrors and parsed files in the state directory: one of the run's own, not the
    # user's ~/.cache/galleon. Tests that look at those name theirs with --state-dir.
    os.environ["GALLEON_STATE_DIR"] = tempfile.mkdtemp(prefix="galleon-tests-state-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.pop("GALLEON_STATE_DIR", ""), ignore_errors=True)


def snapshot_of(files: dict[str, str | bytes], revision: str = "test") -> Snapshot:
    return Snapshot(revision, {name: data.encode() if isinstance(data, str) else data
                               for name, data in files.items()})


def check(text: str, name: str = "mesh.yaml"):
    """Validate one file given as (dedented) text; returns the findings."""
    return load(snapshot_of({name: textwrap.dedent(text).lstrip("\n")})).findings


def with_pod(running: str, service: str, version: str, address: str, cluster: str, name: str = "") -> str:
    """The text of one of sample-repo's running/CLUSTER.yaml with one more pod of a Bookinfo service:
    a running, ready Pod at ``address``, and that address in the service's EndpointSlice there."""
    name = name or f"{service}-{version}-added"
    docs = running.split("---\n")
    slices = [i for i, doc in enumerate(docs)
              if "kind: EndpointSlice" in doc and f"kubernetes.io/service-name: {service}\n" in doc]
    assert len(slices) == 1, f"{cluster} has no EndpointSlice of {service}"
    docs[slices[0]] += (f"  - addresses: [{address}]\n    conditions: {{ready: true}}\n"
                        f"    targetRef: {{kind: Pod, namespace: bookinfo, name: {name}}}\n")
    pod = (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bookinfo\n  labels:\n"
           f"    app: {service}\n    version: {version}\n    security.istio.io/tlsMode: istio\n"
           f"    topology.istio.io/cluster: {cluster}\nspec:\n  serviceAccountName: bookinfo-{service}\n"
           f"status:\n  phase: Running\n  podIP: {address}\n  conditions:\n    - {{type: Ready, status: \"True\"}}\n")
    return "---\n".join(docs) + "---\n" + pod


def sample_files() -> dict[str, bytes]:
    return {p.relative_to(SAMPLE_REPO).as_posix(): p.read_bytes() for p in sorted(SAMPLE_REPO.rglob("*.y*ml"))}


@pytest.fixture
def sample_snapshot() -> Snapshot:
    return Snapshot("sample", sample_files())


def mesh_from(files: dict[str, str | bytes], revision: str = "test") -> Mesh:
    """The typed mesh of files that must validate clean (the findings are shown when they do not)."""
    result = load(snapshot_of(files, revision))
    assert result.valid, "\n".join(f.text() for f in result.findings)
    return build_mesh(result.objects, revision)


@pytest.fixture(scope="session")
def sample_mesh() -> Mesh:
    return mesh_from(sample_files(), "sample")


# The smallest federation most compiler tests start from: one network, one cluster in it.
ONE_CLUSTER = """\
apiVersion: galleon.io/v1alpha1
kind: MeshNetworks
metadata: {name: mesh-networks, namespace: istio-system}
spec:
  networks:
    network-1:
      endpoints: [{fromRegistry: cluster-a}]
      gateways: [{address: 192.0.2.10, port: 15443}]
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: cluster-a, namespace: istio-system}
spec: {network: network-1, locality: us-east/us-east-1a}
"""


@pytest.fixture
def standin():
    """A Kubernetes API stand-in (tests/kube/standin.py; no kube-apiserver can be installed here)."""
    from tests.kube.standin import KubeStandIn
    with KubeStandIn() as server:
        yield server


def compiled_from(messages: dict, revision: str = "test"):
    """A compiled view holding these messages (type URL -> list), serialized as a compile serializes
    them: for tests of what reads compiled views (diffs, traffic shares) without a mesh."""
    from compiler.cache import digest, serialize
    from compiler.cache import ViewUnits
    from compiler.xds import CompiledView, Resource
    from compiler.xds_types import BY_URL, TYPES
    resources: dict = {t.url: {} for t in TYPES}
    for url, items in messages.items():
        for message in items:
            data = serialize(message)
            name = BY_URL[url].name_of(message)
            resources[url][name] = Resource(name, digest(data), (data,), revision)
    from compiler.locality import Locality
    from compiler.view import ProxyView
    view = ProxyView("cluster-a", "network-1", Locality("", "", ""), "sidecar", "default")
    return CompiledView(view, revision, {u: dict(sorted(r.items())) for u, r in resources.items()}, ViewUnits())
