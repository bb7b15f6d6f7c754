"""`galleon ca rotate-root` (reconciler/ca/rotate.py): the three phases across the sample repository's
three clusters, with real keys, cryptography's X.509 verification and Debian's openssl, the dir:
target, and once through the kube target against the API stand-in."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from reconciler.ca import DirTarget, load_root
from reconciler.ca.x509util import stamp
from tests.conftest import SAMPLE_REPO
from tests.test_ca import NOW, pem, values, workload
from tests.test_cli import galleon

CLUSTERS = [f"cluster-{c}" for c in "abc"]
ROTATION = "galleon.io/ca-rotation"


@pytest.fixture
def mesh(tmp_path):
    """Two roots, and every sample cluster's cacerts under the old one (dir: target)."""
    for name in ("old", "new"):
        assert galleon("ca", "init-root", tmp_path / name).returncode == 0
    made = reconcile(tmp_path, "old")
    assert made.returncode == 0 and made.stdout.count(": create") == 3, made.stdout + made.stderr
    return tmp_path


def rotate(tmp_path: Path, *extra) -> subprocess.CompletedProcess:
    result = galleon("ca", "rotate-root", SAMPLE_REPO, "--root-ca", tmp_path / "old", "--new-root-ca",
                     tmp_path / "new", "--target", f"dir:{tmp_path / 'out'}", *extra)
    assert "PRIVATE" not in result.stdout + result.stderr  # never any key material
    return result


def reconcile(tmp_path: Path, root: str) -> subprocess.CompletedProcess:
    return galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / root, "--target",
                   f"dir:{tmp_path / 'out'}", "--all-clusters")


def files(tmp_path: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.yaml"))}


def secrets(tmp_path: Path) -> dict[str, dict]:
    return {cluster: DirTarget(tmp_path / "out").read(cluster) for cluster in CLUSTERS}


def fingerprint(directory: Path) -> str:
    return load_root(directory).fingerprint


def trusted(leaf: x509.Certificate, intermediate: x509.Certificate, bundle: bytes, tmp_path: Path) -> bool:
    """Whether cryptography and openssl both accept ``leaf`` via ``intermediate`` under ``bundle`` (they must agree)."""
    verifier = PolicyBuilder().store(Store(x509.load_pem_x509_certificates(bundle))).time(NOW).build_client_verifier()
    try:
        verifier.verify(leaf, [intermediate])
        by_cryptography = True
    except VerificationError:
        by_cryptography = False
    for name, content in (("bundle.pem", bundle), ("ca.pem", pem(intermediate)), ("leaf.pem", pem(leaf))):
        (tmp_path / name).write_bytes(content)
    by_openssl = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", tmp_path / "bundle.pem",
                                 "-untrusted", tmp_path / "ca.pem", tmp_path / "leaf.pem"],
                                capture_output=True).returncode == 0
    assert by_cryptography == by_openssl
    return by_cryptography


def test_three_phases_in_order_then_reconcile_with_the_new_root_sees_nothing_to_do(mesh):
    old, new = fingerprint(mesh / "old"), fingerprint(mesh / "new")
    old_pem, new_pem = (mesh / "old" / "root-cert.pem").read_bytes(), (mesh / "new" / "root-cert.pem").read_bytes()
    before, unchanged = secrets(mesh), files(mesh)

    dry = rotate(mesh, "--dry-run")
    assert dry.returncode == 0 and "phase 1 of 3 (trust-both) for cluster-a, cluster-b, cluster-c" in dry.stdout
    assert old in dry.stdout and new in dry.stdout and "nothing written (--dry-run)" in dry.stdout
    assert files(mesh) == unchanged

    # Phase 1: every bundle holds both roots; the intermediates and chains are the old ones.
    first = rotate(mesh)
    assert first.returncode == 0 and "next: wait until istiod" in first.stdout, first.stdout + first.stderr
    after_one = secrets(mesh)
    for cluster in CLUSTERS:
        data, was = values(after_one[cluster]), values(before[cluster])
        assert data["root-cert.pem"] == old_pem + new_pem
        assert (data["ca-cert.pem"], data["ca-key.pem"], data["cert-chain.pem"]) == (
            was["ca-cert.pem"], was["ca-key.pem"], was["cert-chain.pem"])
        assert after_one[cluster]["metadata"]["annotations"][ROTATION] == f"{new}:trust-both"
    # The old root still signs: a plain reconcile with it leaves everything alone; with the new one it refuses.
    unchanged = files(mesh)
    plain = reconcile(mesh, "old")
    assert plain.returncode == 0 and plain.stdout.count(": none") == 3, plain.stdout
    early = reconcile(mesh, "new")
    assert early.returncode == 1 and early.stdout.count(": refuse") == 3 and "at phase trust-both" in early.stdout
    assert files(mesh) == unchanged

    # Phase 2: new intermediates under the new root; the bundle stays both roots. A dry run names the
    # intermediates it would issue with their dates, as the real run does those it issued.
    at_one = files(mesh)
    planned = rotate(mesh, "--dry-run")
    assert planned.returncode == 0 and "phase 2 of 3 (switched)" in planned.stdout
    assert [line.split(": would issue")[0].strip() for line in planned.stdout.splitlines()
            if ": would issue a " in line] == list(CLUSTERS), planned.stdout
    assert files(mesh) == at_one
    second = rotate(mesh)
    assert second.returncode == 0 and "phase 2 of 3 (switched)" in second.stdout, second.stdout + second.stderr
    after_two = secrets(mesh)
    for cluster in CLUSTERS:
        data = values(after_two[cluster])
        intermediate = x509.load_pem_x509_certificate(data["ca-cert.pem"])
        intermediate.verify_directly_issued_by(load_root(mesh / "new").cert)
        algorithm = "ECDSA_P256" if isinstance(intermediate.public_key(), ec.EllipticCurvePublicKey) else "RSA_4096"
        assert (f"  {cluster}: issued a {algorithm} intermediate under the new root, valid "
                f"{stamp(intermediate.not_valid_before_utc)} to {stamp(intermediate.not_valid_after_utc)}"
                ) in second.stdout, second.stdout
        assert data["root-cert.pem"] == old_pem + new_pem and data["cert-chain.pem"] == data["ca-cert.pem"] + new_pem
        assert after_two[cluster]["metadata"]["annotations"][ROTATION] == f"{new}:switched"
    # Workloads still holding a certificate from an old intermediate and those with one from a new
    # intermediate trust each other, whichever cluster's bundle they use.
    old_side, new_side = values(before["cluster-a"]), values(after_two["cluster-b"])
    leaves = [(workload(side)[0], x509.load_pem_x509_certificate(side["ca-cert.pem"])) for side in (old_side, new_side)]
    for cluster in CLUSTERS:
        for leaf, intermediate in leaves:
            assert trusted(leaf, intermediate, values(after_two[cluster])["root-cert.pem"], mesh)
    unchanged = files(mesh)
    stale = reconcile(mesh, "old")
    assert stale.returncode == 1 and stale.stdout.count(": refuse") == 3 and "at phase switched" in stale.stdout
    plain = reconcile(mesh, "new")
    assert plain.returncode == 0 and plain.stdout.count(": none") == 3, plain.stdout
    assert files(mesh) == unchanged

    # Phase 3: the new root only; an old intermediate's workload is no longer trusted.
    third = rotate(mesh)
    assert third.returncode == 0 and "phase 3 of 3 (done)" in third.stdout and "done: every cluster" in third.stdout
    for cluster, secret in secrets(mesh).items():
        data = values(secret)
        assert data["root-cert.pem"] == new_pem and data["ca-cert.pem"] == values(after_two[cluster])["ca-cert.pem"]
        assert secret["metadata"]["annotations"][ROTATION] == f"{new}:done"
        assert trusted(*leaves[1], data["root-cert.pem"], mesh)
        assert not trusted(*leaves[0], data["root-cert.pem"], mesh)

    unchanged = files(mesh)
    again = rotate(mesh)
    assert again.returncode == 0 and "the rotation is complete" in again.stdout
    plain = reconcile(mesh, "new")
    assert plain.returncode == 0 and plain.stdout.count(": none") == 3, plain.stdout
    undo = reconcile(mesh, "old")  # the done marker keeps the old root from undoing the rotation
    assert undo.returncode == 1 and undo.stdout.count("the root was rotated to") == 3
    assert files(mesh) == unchanged


def test_phase_two_waits_for_a_lagging_cluster_and_an_inconsistent_one_is_refused(mesh):
    lagging = DirTarget(mesh / "out").file("cluster-b")
    pre_rotation = lagging.read_bytes()
    assert rotate(mesh).returncode == 0
    lagging.write_bytes(pre_rotation)  # cluster-b back before phase 1
    others = {p: b for p, b in files(mesh).items() if p != lagging}

    caught_up = rotate(mesh)
    assert caught_up.returncode == 0 and "phase 1 of 3 (trust-both) for cluster-b:" in caught_up.stdout
    assert {p: b for p, b in files(mesh).items() if p != lagging} == others  # no one switched
    assert "trust-both" in yaml.safe_load(lagging.read_text())["metadata"]["annotations"][ROTATION]

    # Annotated as trusting both roots, but holding only the old one: the rotation cannot tell what
    # it is, so nothing moves anywhere.
    secret = yaml.safe_load(pre_rotation)
    secret["metadata"]["annotations"][ROTATION] = f"{fingerprint(mesh / 'new')}:trust-both"
    lagging.write_text(yaml.safe_dump(secret))
    unchanged = files(mesh)
    refused = rotate(mesh)
    assert refused.returncode == 1 and "refused: cluster-b cannot move; nothing written" in refused.stdout
    assert "root-cert.pem is not the rotation's bundle" in refused.stdout
    assert files(mesh) == unchanged


def test_refusals_and_bad_input(mesh):
    target = DirTarget(mesh / "out")
    secret = target.read("cluster-c")
    secret["metadata"]["labels"] = {}
    target.write("cluster-c", secret)
    target.file("cluster-a").unlink()
    unchanged = files(mesh)
    refused = rotate(mesh)
    assert refused.returncode == 1 and "refused: cluster-a, cluster-c cannot move" in refused.stdout
    assert "does not exist" in refused.stdout and "Galleon did not write it" in refused.stdout
    assert files(mesh) == unchanged

    same = galleon("ca", "rotate-root", SAMPLE_REPO, "--root-ca", mesh / "old", "--new-root-ca", mesh / "old",
                   "--target", f"dir:{mesh / 'out'}")
    assert same.returncode == 2 and "are the same root" in same.stderr and same.stderr.count("\n") == 1
    missing = galleon("ca", "rotate-root", SAMPLE_REPO, "--root-ca", mesh / "old", "--new-root-ca", mesh / "nope",
                      "--target", f"dir:{mesh / 'out'}")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_the_three_phases_through_the_kube_target(tmp_path):
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    for name in ("old", "new"):
        galleon("ca", "init-root", tmp_path / name)
    new = fingerprint(tmp_path / "new")
    with KubeStandIn() as a, KubeStandIn() as b, KubeStandIn() as c:
        servers = {"cluster-a": a, "cluster-b": b, "cluster-c": c}
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {f"kind-{name}": s for name, s in servers.items()})
        kube = ["--target", "kube", "--kubeconfig", kubeconfig]
        assert galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "old", *kube,
                       "--all-clusters").returncode == 0
        for phase in ("trust-both", "switched", "done"):
            result = galleon("ca", "rotate-root", SAMPLE_REPO, "--root-ca", tmp_path / "old", "--new-root-ca",
                             tmp_path / "new", *kube)
            assert result.returncode == 0 and f"({phase}) for cluster-a, cluster-b, cluster-c" in result.stdout, (
                result.stdout + result.stderr)
            for server in servers.values():
                assert server.get("secrets", "istio-system", "cacerts")["metadata"]["annotations"][ROTATION] == (
                    f"{new}:{phase}")
        final = galleon("ca", "reconcile", SAMPLE_REPO, "--root-ca", tmp_path / "new", *kube, "--all-clusters")
        assert final.returncode == 0 and final.stdout.count(": none") == 3, final.stdout + final.stderr


def test_a_conflict_is_read_again_and_a_cluster_another_run_moved_is_left_as_it_is(mesh):
    """In process, with a target whose write meets a change: the first write of cluster-a finds that
    another run already moved it (kept as is), cluster-b's is retried from the same stage."""
    from reconciler.ca import ConflictError, policy_for, rotate_root
    from tests.test_ca import sample_objects
    old, new = load_root(mesh / "old"), load_root(mesh / "new")
    policies = {cluster: policy_for(sample_objects(), cluster) for cluster in CLUSTERS}
    other_run = DirTarget(mesh / "out")

    class Contended(DirTarget):
        conflicts = {"cluster-a", "cluster-b"}

        def write(self, cluster, secret):
            if cluster in self.conflicts:
                self.conflicts.discard(cluster)
                if cluster == "cluster-a":
                    super().write(cluster, secret)  # the other run's identical write landed first
                raise ConflictError(f"{cluster}: changed since read")
            super().write(cluster, secret)

    rotation = rotate_root(Contended(mesh / "out"), old, new, policies, NOW)
    assert rotation.moving == tuple(CLUSTERS)
    for cluster in CLUSTERS:
        assert other_run.read(cluster)["metadata"]["annotations"][ROTATION] == f"{new.fingerprint}:trust-both"
