"""`galleon ca init-root` and `galleon ca reconcile` as an operator runs them, with the dir: target."""
from __future__ import annotations

import os
import stat

from tests.conftest import SAMPLE_REPO
from tests.test_cli import galleon


def test_init_root_then_reconcile_every_cluster_then_nothing_to_do(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    made = galleon("ca", "init-root", root)
    assert made.returncode == 0 and "sha256:" in made.stdout
    assert stat.S_IMODE(os.stat(root / "root-key.pem").st_mode) == 0o600
    again = galleon("ca", "init-root", root)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    first = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", root, "--target", f"dir:{out}", "--all-clusters")
    assert first.returncode == 0, first.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml"))
    assert written == [f"cluster-{c}/istio-system/Secret/cacerts.yaml" for c in "abc"]
    assert first.stdout.count(": create") == 3 and "BEGIN" not in first.stdout  # no key material printed
    before = {p: p.read_bytes() for p in out.rglob("*.yaml")}

    second = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", root, "--target", f"dir:{out}", "--cluster",
                     "cluster-b", "--dry-run")
    assert second.returncode == 0 and "cluster-b istio-system/cacerts: none" in second.stdout
    third = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", root, "--target", f"dir:{out}", "--all-clusters")
    assert third.stdout.count(": none") == 3
    assert {p: p.read_bytes() for p in out.rglob("*.yaml")} == before


def test_bad_input_is_one_line(tmp_path):
    galleon("ca", "init-root", tmp_path / "root")
    common = ["ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "root"]
    for args, words in (((f"dir:{tmp_path}",), "--cluster NAME"),
                        ((f"dir:{tmp_path}", "--cluster", "cluster-a", "--all-clusters"), "--all-clusters, not both"),
                        ((f"dir:{tmp_path}", "--all-clusters", "--root-ca-secret", "istio-system/root"),
                         "--root-ca-secret NAMESPACE/NAME, not both"),
                        ((f"dir:{tmp_path}", "--cluster", "cluster-z"), "not a Cluster"),
                        (("kube:x", "--all-clusters"), "unknown target"),
                        (("dir:", "--all-clusters"), "unknown target")):
        result = galleon(*common, "--target", *args)
        assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    missing = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "nope", "--target", f"dir:{tmp_path}",
                      "--all-clusters")
    assert missing.returncode == 2 and "galleon ca init-root" in missing.stderr


def test_the_kube_target_writes_each_clusters_secret_through_its_context(tmp_path):
    """Against tests/kube/standin.py, a stand-in for kube-apiserver (none can be installed here): one
    stand-in per cluster, reached through the contexts the sample's Cluster objects name."""
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    galleon("ca", "init-root", tmp_path / "root")
    with KubeStandIn() as a, KubeStandIn() as b, KubeStandIn() as c:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kind-cluster-a": a, "kind-cluster-b": b,
                                                                "kind-cluster-c": c})
        argv = ["ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "root", "--target", "kube",
                "--kubeconfig", kubeconfig, "--all-clusters"]
        first = galleon(*argv)
        assert first.returncode == 0 and first.stdout.count(": create") == 3, first.stdout + first.stderr
        for server in (a, b, c):
            secret = server.get("secrets", "istio-system", "cacerts")
            assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "galleon"
            assert set(secret["data"]) == {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"}
        writes = len([r for s in (a, b, c) for r in s.requests if r.method != "GET"])
        second = galleon(*argv)
        assert second.returncode == 0 and second.stdout.count(": none") == 3
        assert len([r for s in (a, b, c) for r in s.requests if r.method != "GET"]) == writes


def test_the_root_can_come_from_a_kubernetes_secret(tmp_path):
    """The root in a Secret of the Kubernetes API stand-in (tests/kube/standin.py), read with --root-ca-secret."""
    import base64

    from tests.kube.standin import KubeStandIn
    galleon("ca", "init-root", tmp_path / "root")
    with KubeStandIn() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", contexts=("management",))
        data = {key: base64.b64encode((tmp_path / "root" / key).read_bytes()).decode()
                for key in ("root-cert.pem", "root-key.pem")}
        kube.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                  "metadata": {"name": "galleon-root", "namespace": "istio-system"}})
        argv = ["ca", "reconcile", SAMPLE_REPO, "--root-ca-secret", "istio-system/galleon-root", "--kubeconfig",
                kubeconfig, "--target", f"dir:{tmp_path / 'out'}", "--cluster", "cluster-a"]
        made = galleon(*argv)
        assert made.returncode == 0 and ": create" in made.stdout, made.stdout + made.stderr
        fingerprint = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "root", "--target",
                              f"dir:{tmp_path / 'out'}", "--cluster", "cluster-a")
        assert ": none" in fingerprint.stdout  # the same root, whichever way it was read
        for ref, words in (("istio-system/missing", "no such Secret"), ("nonsense", "not NAMESPACE/NAME")):
            argv[argv.index("--root-ca-secret") + 1] = ref
            result = galleon(*argv)
            assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1
        both = galleon(*argv, "--root-ca", tmp_path / "root")
        assert both.returncode == 2 and "--root-ca DIR or --root-ca-secret" in both.stderr
