"""Commit signature verification against commits signed by the real ssh-keygen and gpg."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pygit2
import pytest

from reconciler.sources.signatures import SignatureError, SignaturePolicy, Verdict
from tests.gitutil import init, signature, write_tree

SSH_KEYS = {  # name -> ssh-keygen arguments
    "ed25519": ["-t", "ed25519"],
    "ecdsa-p256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa-p384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa-p521": ["-t", "ecdsa", "-b", "521"],
    "rsa": ["-t", "rsa", "-b", "2048"],  # the smallest ssh-keygen accepts quickly; the size is irrelevant here
    "stranger": ["-t", "ed25519"],
}
SIGNER = "Galleon Signer <signer@galleon.invalid>"
OTHER = "Someone Else <else@galleon.invalid>"
EXPIRED = "Former Signer <former@galleon.invalid>"
MESH = {"mesh.yaml": b"kind: MeshConfig\nmetadata: {name: mesh}\n"}


def run(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(args, input=stdin, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory) -> dict[str, Path]:
    """Private key paths by name; the public key is beside each, as ssh-keygen writes it."""
    folder = tmp_path_factory.mktemp("ssh")
    for name, args in SSH_KEYS.items():
        run("ssh-keygen", "-q", *args, "-N", "", "-C", f"{name}@galleon.invalid", "-f", str(folder / name))
    return {name: folder / name for name in SSH_KEYS}


@pytest.fixture(scope="module")
def gnupg(tmp_path_factory):
    """A GnuPG home with three signing keys (one expired) and their exported public keys."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--passphrase", ""]
    run(*gpg, "--quick-gen-key", SIGNER, "ed25519", "sign", "never")
    run(*gpg, "--quick-gen-key", OTHER, "ed25519", "sign", "never")
    # Made in 2020 and valid for a day: its signatures were good then, its key is expired now.
    run(*gpg, "--faked-system-time", "20200101T000000!", "--quick-gen-key", EXPIRED, "ed25519", "sign", "1d")
    exported = {}
    for uid in (SIGNER, OTHER, EXPIRED):
        exported[uid] = home / f"{uid.split()[0].lower()}.asc"
        exported[uid].write_bytes(run(*gpg, "--armor", "--export", uid))
    yield home, exported
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@pytest.fixture(scope="module")
def policy(ssh_keys, gnupg) -> SignaturePolicy:
    """Every SSH key but the stranger's, and the signer's GPG key."""
    pubs = [key.with_suffix(".pub") for name, key in ssh_keys.items() if name != "stranger"]
    return SignaturePolicy.load(pubs, [gnupg[1][SIGNER]])


@pytest.fixture
def repo(tmp_path) -> pygit2.Repository:
    return init(tmp_path / "config")


def signed_commit(repo: pygit2.Repository, sign: Callable[[bytes], bytes], *, tamper: bool = False) -> pygit2.Oid:
    """A commit of MESH signed by ``sign`` over its content, as ``git commit -S`` does."""
    who = signature()
    content = repo.create_commit_string(who, who, "mesh: reviewed change\n", write_tree(repo, MESH), [])
    armored = sign(content.encode()).decode()
    if tamper:
        content = content.replace("reviewed change", "unreviewed change")
    return repo.create_commit_with_signature(content, armored)


def ssh_sign(key: Path, namespace: str = "git", *options: str) -> Callable[[bytes], bytes]:
    return lambda payload: run("ssh-keygen", "-Y", "sign", "-f", str(key), "-n", namespace, *options, stdin=payload)


def gpg_sign(home: Path, uid: str, *options: str) -> Callable[[bytes], bytes]:
    return lambda payload: run("gpg", "--batch", "--homedir", str(home), "--local-user", uid, *options,
                               "--detach-sign", "--armor", stdin=payload)


def gpg_fingerprint(home: Path, uid: str) -> str:
    listing = run("gpg", "--batch", "--homedir", str(home), "--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def fingerprint(key: Path) -> str:
    """What ssh-keygen itself calls the key: '256 SHA256:... comment (ED25519)'."""
    return run("ssh-keygen", "-l", "-f", str(key.with_suffix(".pub"))).split()[1].decode()


@pytest.mark.parametrize("name", ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa"])
def test_ssh_signature_by_an_allowed_key_is_good(policy, ssh_keys, repo, name):
    verdict = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys[name])))
    assert verdict == Verdict(True, "ssh", f"{name}@galleon.invalid ({fingerprint(ssh_keys[name])})",
                              "good SSH signature by an allowed key")


def test_ssh_signature_with_sha256_message_hash_is_good(policy, ssh_keys, repo):
    verdict = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys["ed25519"], "git", "-O", "hashalg=sha256")))
    assert verdict.ok, verdict


def test_ssh_signature_by_another_key_is_refused(policy, ssh_keys, repo):
    verdict = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys["stranger"])))
    stranger = fingerprint(ssh_keys["stranger"])
    assert verdict == Verdict(False, "ssh", stranger,
                              f"signed by SSH key {stranger}, which is not one of the allowed keys")


@pytest.mark.parametrize("name", ["ed25519", "ecdsa-p256", "rsa"])
def test_ssh_signature_over_a_changed_commit_is_bad(policy, ssh_keys, repo, name):
    verdict = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys[name]), tamper=True))
    assert (verdict.ok, verdict.method) == (False, "ssh")
    assert verdict.reason == "bad SSH signature: the commit was changed after it was signed"


def test_ssh_signature_for_another_namespace_is_refused(policy, ssh_keys, repo):
    verdict = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys["ed25519"], "file")))
    assert (verdict.ok, verdict.reason) == (False, "the SSH signature was made for namespace 'file', not 'git'")


def test_malformed_ssh_signature_is_refused(policy, ssh_keys, repo):
    def truncated(payload: bytes) -> bytes:
        lines = ssh_sign(ssh_keys["ed25519"])(payload).splitlines()
        return b"\n".join(lines[:2] + lines[-1:])
    verdict = policy.verify(repo, signed_commit(repo, truncated))
    assert (verdict.ok, verdict.method) == (False, "ssh")
    assert verdict.reason.startswith("malformed SSH signature")


def test_unsigned_commit_is_refused(policy, repo):
    who = signature()
    oid = repo.create_commit(None, who, who, "unsigned", write_tree(repo, MESH), [])
    assert policy.verify(repo, oid) == Verdict(False, "none", "", "the commit is not signed")


@pytest.mark.parametrize("commit_id", ["0" * 40, "not-hex", "tree"])
def test_what_is_not_a_commit_gets_a_verdict(policy, repo, commit_id):
    if commit_id == "tree":
        commit_id = str(write_tree(repo, MESH))
    assert policy.verify(repo, commit_id) == Verdict(False, "none", "", f"{commit_id} is not a commit in the repository")


def test_gpg_signature_by_the_given_key_is_good(policy, gnupg, repo):
    home, _ = gnupg
    verdict = policy.verify(repo, signed_commit(repo, gpg_sign(home, SIGNER)))
    assert verdict == Verdict(True, "gpg", f"{SIGNER} ({gpg_fingerprint(home, SIGNER)})",
                              "good GPG signature by an allowed key")
    # A daemon verifies every new head: no gpg-agent may be left behind for each one.
    assert "galleon-gpg-" not in run("ps", "-eo", "args").decode()


def test_gpg_signature_by_a_key_not_given_is_refused(policy, gnupg, repo):
    home, _ = gnupg
    verdict = policy.verify(repo, signed_commit(repo, gpg_sign(home, OTHER)))
    assert (verdict.ok, verdict.method) == (False, "gpg")
    assert verdict.reason == f"signed by GPG key {verdict.signer}, which is not one of the allowed keys"


def test_gpg_signature_over_a_changed_commit_is_bad(policy, gnupg, repo):
    home, _ = gnupg
    verdict = policy.verify(repo, signed_commit(repo, gpg_sign(home, SIGNER), tamper=True))
    assert (verdict.ok, verdict.reason) == (False, "bad GPG signature: the commit was changed after it was signed")
    assert verdict.signer.startswith(SIGNER)


def test_gpg_signature_by_an_expired_key_is_refused(gnupg, repo):
    home, exported = gnupg
    policy = SignaturePolicy.load([], [exported[EXPIRED]])
    sign = gpg_sign(home, EXPIRED, "--faked-system-time", "20200101T010000!")
    verdict = policy.verify(repo, signed_commit(repo, sign))
    assert (verdict.ok, verdict.reason) == (False, "the signing GPG key has expired")
    assert verdict.signer.startswith(EXPIRED)


def test_gpg_signature_without_gpg_keys_is_refused(ssh_keys, gnupg, repo):
    policy = SignaturePolicy.load([ssh_keys["ed25519"].with_suffix(".pub")], [])
    verdict = policy.verify(repo, signed_commit(repo, gpg_sign(gnupg[0], SIGNER)))
    assert verdict == Verdict(False, "gpg", "", "signed with OpenPGP, but no GPG keys were given")


def test_keys_from_allowed_signers_and_multi_key_files(ssh_keys, repo, tmp_path):
    ed25519, rsa = (ssh_keys[name].with_suffix(".pub").read_text().split() for name in ("ed25519", "rsa"))
    keys = tmp_path / "allowed_signers"
    keys.write_text(f"# release managers\n\nalice@example.com,bob@example.com {ed25519[0]} {ed25519[1]}\n"
                    f"  {rsa[0]} {rsa[1]} ci key\n")
    policy = SignaturePolicy.load([keys], [])
    alice = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys["ed25519"])))
    ci = policy.verify(repo, signed_commit(repo, ssh_sign(ssh_keys["rsa"])))
    assert alice.ok and alice.signer == f"alice@example.com,bob@example.com ({fingerprint(ssh_keys['ed25519'])})"
    assert ci.ok and ci.signer == f"ci key ({fingerprint(ssh_keys['rsa'])})"


def bad_key_files(ssh_keys, folder: Path) -> dict[str, tuple[str, list[Path], list[Path]]]:
    """Name -> (expected message after the path, SSH key files, GPG key files)."""
    good = ssh_keys["ed25519"].with_suffix(".pub").read_text().split()
    texts = {
        "garbage.pub": "hello world\n",
        "truncated.pub": f"{good[0]} {good[1][:40]}\n",
        "mismatch.pub": f"ssh-rsa {good[1]}\n",
        "dsa.pub": "ssh-dss AAAAB3NzaC1kc3M= x\n",
        "options.pub": f'alice@example.com namespaces="git" {good[0]} {good[1]}\n',
        "empty.pub": "# nothing here\n",
        "not-armored.asc": "mQINBGV...\n",
        "broken.asc": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "secret.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    expected = {
        "garbage.pub": ":1: not an OpenSSH public key",
        "truncated.pub": ":1: malformed ssh-ed25519 public key",
        "mismatch.pub": ":1: not an OpenSSH public key",
        "dsa.pub": ":1: ssh-dss keys are not supported (ed25519, ecdsa or rsa)",
        "options.pub": ':1: allowed_signers options (namespaces="git") are not supported',
        "empty.pub": ": no SSH public key in the file",
        "not-armored.asc": ": not an ASCII-armored OpenPGP public key",
        "broken.asc": ": malformed OpenPGP public key",
        "secret.asc": ": is a private key",
    }
    cases = {name: (message, [folder / name], []) if name.endswith(".pub") else (message, [], [folder / name])
             for name, message in expected.items()}
    cases["private-ssh-key"] = (": is a private key", [ssh_keys["ed25519"]], [])
    cases["missing"] = (": cannot read the SSH public key file: No such file or directory",
                        [folder / "missing.pub"], [])
    return cases


def test_unusable_key_files_raise_one_line_errors(ssh_keys, tmp_path):
    for name, (message, ssh, gpg) in bad_key_files(ssh_keys, tmp_path).items():
        with pytest.raises(SignatureError) as raised:
            SignaturePolicy.load(ssh, gpg)
        text = str(raised.value)
        assert text.startswith(str((ssh + gpg)[0]) + message), (name, text)
        assert "\n" not in text, name


def test_no_key_files_at_all_is_an_error():
    with pytest.raises(SignatureError, match="no public key files given"):
        SignaturePolicy.load([], [])
