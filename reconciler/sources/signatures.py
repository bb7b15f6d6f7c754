"""Commit signature verification: is a head signed by one of the keys the operator trusts?

With signature keys configured, a revision is applied only when its commit carries a good SSH
or OpenPGP signature by one of those keys. Anything else (unsigned, signed by another key,
changed after signing, signed for another purpose, expired or revoked key) is an unverified
head: it is not applied and the verdict says why, so that write access to the repository alone
cannot change the mesh.

SSH signatures (Git's ``gpg.format = ssh``) are checked here as OpenSSH's PROTOCOL.sshsig
specifies, with ``cryptography``: the signature must be valid for the public key it embeds, be
made for the ``git`` namespace (a signature made with ``ssh-keygen -Y sign -n file`` for
something else cannot be replayed onto a commit), and that key must be one of the given keys.
OpenPGP signatures are checked by ``gpg`` in a throw-away home holding only the given keys.
"""
from __future__ import annotations

import base64
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pygit2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

SSH_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
SSHSIG_MAGIC = b"SSHSIG"
SSHSIG_VERSION = 1
GIT_NAMESPACE = b"git"
SSHSIG_HASHES = {b"sha256": hashes.SHA256, b"sha512": hashes.SHA512}
# RFC 5656: each curve has its own hash; RFC 8332: RSA signatures name theirs (SHA-1 "ssh-rsa" is refused).
ECDSA_HASHES = {"ecdsa-sha2-nistp256": hashes.SHA256, "ecdsa-sha2-nistp384": hashes.SHA384,
                "ecdsa-sha2-nistp521": hashes.SHA512}
RSA_HASHES = {"rsa-sha2-256": hashes.SHA256, "rsa-sha2-512": hashes.SHA512}
SSH_KEY_TYPES = {"ssh-ed25519", "ssh-rsa", *ECDSA_HASHES}

PGP_SIGNATURE = b"-----BEGIN PGP SIGNATURE-----"
PGP_PUBLIC_KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
GPG_TIMEOUT_S = 30
# gpg status keywords that condemn a signature, checked in this order (DETAILS in GnuPG's docs).
GPG_FAILURES = (("BADSIG", "bad GPG signature: the commit was changed after it was signed"),
                ("EXPKEYSIG", "the signing GPG key has expired"),
                ("REVKEYSIG", "the signing GPG key has been revoked"),
                ("EXPSIG", "the GPG signature has expired"))


class SignatureError(Exception):
    """A key file cannot be used; the message is one line for people."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    method: str  # "ssh", "gpg", or "none" (unsigned, or a signature format not read here)
    signer: str  # who signed as far as known: a name and a fingerprint; "" when unknown
    reason: str  # one line for people


class _Wire:
    """Reads the SSH wire encoding (RFC 4251): uint32 and length-prefixed strings."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ValueError("truncated")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError("trailing bytes")


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class _SSHSig(NamedTuple):
    public_key: bytes
    namespace: bytes
    reserved: bytes
    hash_algorithm: bytes
    signature: bytes


def _parse_sshsig(armored: bytes) -> _SSHSig:
    text = armored.decode("ascii").strip()
    begin, end = SSH_ARMOR
    if not (text.startswith(begin) and text.endswith(end)):
        raise ValueError("no SSH SIGNATURE armor")
    blob = _Wire(base64.b64decode("".join(text[len(begin):-len(end)].split()), validate=True))
    if blob.take(len(SSHSIG_MAGIC)) != SSHSIG_MAGIC or blob.uint32() != SSHSIG_VERSION:
        raise ValueError("not an SSHSIG version 1 blob")
    sig = _SSHSig(*(blob.string() for _ in _SSHSig._fields))
    blob.end()
    return sig


def _check_ssh_signature(key_blob: bytes, signature: bytes, data: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` (SSH encoding) is ``key_blob``'s over ``data``."""
    key_type = _Wire(key_blob).string().decode()
    if key_type not in SSH_KEY_TYPES:
        raise ValueError(f"{key_type} keys are not supported")
    key = load_ssh_public_key(key_type.encode() + b" " + base64.b64encode(key_blob))
    wire = _Wire(signature)
    sig_type, raw = wire.string().decode(), wire.string()
    wire.end()
    if key_type == "ssh-ed25519" and sig_type == key_type:
        key.verify(raw, data)
    elif key_type in ECDSA_HASHES and sig_type == key_type:
        numbers = _Wire(raw)
        r, s = numbers.mpint(), numbers.mpint()
        numbers.end()
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(ECDSA_HASHES[key_type]()))
    elif key_type == "ssh-rsa" and sig_type in RSA_HASHES:
        key.verify(raw, data, padding.PKCS1v15(), RSA_HASHES[sig_type]())
    else:
        raise ValueError(f"a {sig_type} signature cannot come from a {key_type} key")


def _fingerprint(key_blob: bytes) -> str:
    """As ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def _named(label: str, fingerprint: str) -> str:
    return f"{label} ({fingerprint})" if label else fingerprint


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SignatureError(f"{path}: not a text file (expected {what}s)") from None


def _key_blob(key_type: str, encoded: str) -> bytes | None:
    """The key blob when ``key_type encoded`` is how an OpenSSH public key is written, else None."""
    try:
        blob = base64.b64decode(encoded, validate=True)
        return blob if _Wire(blob).string() == key_type.encode() else None
    except ValueError:
        return None


def _read_ssh_keys(path: Path) -> dict[bytes, str]:
    """Key blob -> label (the allowed_signers principals, else the key's comment)."""
    text = _read_text(path, "SSH public key")
    if "PRIVATE KEY-----" in text:
        raise SignatureError(f"{path}: is a private key; give the public key (the .pub file)")
    keys: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        # A plain key line starts with the key type; an allowed_signers line has principals before it.
        at = next((i for i in range(len(tokens) - 1) if _key_blob(tokens[i], tokens[i + 1])), None)
        if at is None:
            raise SignatureError(f"{where}: not an OpenSSH public key (expected 'ssh-ed25519 AAAA... "
                                 "comment' or an allowed_signers line 'principals ssh-ed25519 AAAA...')")
        key_type, blob = tokens[at], _key_blob(tokens[at], tokens[at + 1])
        if key_type not in SSH_KEY_TYPES:
            raise SignatureError(f"{where}: {key_type} keys are not supported (ed25519, ecdsa or rsa)")
        if at > 1:
            # cert-authority, namespaces=, valid-after= and valid-before= would each narrow or
            # change what the key may sign; ignoring them would trust it more than was meant.
            raise SignatureError(f"{where}: allowed_signers options ({' '.join(tokens[1:at])}) are not "
                                 "supported; give only the principals and the key")
        try:
            load_ssh_public_key(f"{key_type} {tokens[at + 1]}".encode())
        except (ValueError, UnsupportedAlgorithm):
            raise SignatureError(f"{where}: malformed {key_type} public key") from None
        keys.setdefault(blob, tokens[0] if at == 1 else " ".join(tokens[at + 2:]))
    if not keys:
        raise SignatureError(f"{path}: no SSH public key in the file")
    return keys


def _gpg(home: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    # Reading public keys and verifying need no agent; an autostarted one would outlive its
    # throw-away home for a while, one per verification.
    return subprocess.run(["gpg", "--batch", "--no-tty", "--no-autostart", "--homedir", home, *args], input=stdin,
                          capture_output=True, timeout=GPG_TIMEOUT_S)


def _read_gpg_keys(path: Path, home: str) -> tuple[str, set[str]]:
    """The armored text and the primary key fingerprints of an exported OpenPGP public key file."""
    text = _read_text(path, "GPG public key")
    if "PRIVATE KEY BLOCK-----" in text:
        raise SignatureError(f"{path}: is a private key; export the public key with gpg --armor --export")
    if PGP_PUBLIC_KEY not in text:
        raise SignatureError(f"{path}: not an ASCII-armored OpenPGP public key "
                             "(export one with gpg --armor --export KEYID)")
    try:
        listing = _gpg(home, "--with-colons", "--import-options", "show-only", "--import", stdin=text.encode())
    except (OSError, subprocess.SubprocessError) as exc:
        raise SignatureError(f"{path}: cannot run gpg to read the key: {exc}") from None
    records = [line.split(":") for line in listing.stdout.decode(errors="replace").splitlines()]
    # In gpg's colon listing the first fpr record after a pub record is the primary key's.
    fingerprints = {fpr[9] for pub, fpr in zip(records, records[1:]) if pub[0] == "pub" and fpr[0] == "fpr"}
    if listing.returncode != 0 or not fingerprints:
        complaint = listing.stderr.decode(errors="replace").strip().splitlines()
        raise SignatureError(f"{path}: malformed OpenPGP public key"
                             + (f" ({complaint[-1].removeprefix('gpg: ')})" if complaint else ""))
    return text, fingerprints


def _gpg_signer(args: str) -> str:
    """'Name <email> (KEYID)' from the arguments of GOODSIG and its kin: '<keyid> <user id>'."""
    key_id, _, user_id = args.partition(" ")
    return _named(user_id, key_id)


@dataclass(frozen=True)
class SignaturePolicy:
    """The keys whose signatures make a commit verified."""

    ssh_signers: dict[bytes, str]  # key blob -> label
    gpg_fingerprints: frozenset[str]
    gpg_armored: str  # every given GPG key file, imported afresh for each verification

    @classmethod
    def load(cls, ssh_keys: list[Path], gpg_keys: list[Path]) -> SignaturePolicy:
        if not ssh_keys and not gpg_keys:
            raise SignatureError("no public key files given for signature verification")
        ssh: dict[bytes, str] = {}
        for path in ssh_keys:
            for blob, label in _read_ssh_keys(Path(path)).items():
                ssh.setdefault(blob, label)
        armored, fingerprints = [], set()
        with tempfile.TemporaryDirectory(prefix="galleon-gpg-") as home:
            for path in gpg_keys:
                text, found = _read_gpg_keys(Path(path), home)
                armored.append(text)
                fingerprints |= found
        return cls(ssh, frozenset(fingerprints), "\n".join(armored))

    def verify(self, repo: pygit2.Repository, commit_id: str | pygit2.Oid) -> Verdict:
        """Whether ``commit_id`` is signed by one of the keys; never raises for a bad commit."""
        try:
            commit = repo.get(commit_id)
        except (ValueError, TypeError):
            commit = None
        if not isinstance(commit, pygit2.Commit):
            return Verdict(False, "none", "", f"{commit_id} is not a commit in the repository")
        try:
            # libgit2's git_commit_extract_signature: the gpgsig header and the commit without it.
            signature, payload = commit.gpg_signature
        except pygit2.GitError as exc:
            return Verdict(False, "none", "", f"the commit's signature cannot be read: {exc}")
        if signature is None:
            return Verdict(False, "none", "", "the commit is not signed")
        if signature.startswith(SSH_ARMOR[0].encode()):
            return self._verify_ssh(signature, payload)
        if signature.startswith(PGP_SIGNATURE):
            return self._verify_gpg(signature, payload)
        return Verdict(False, "none", "", "the commit's signature is neither SSH nor OpenPGP "
                                          "(X.509 signatures are not supported)")

    def _verify_ssh(self, armored: bytes, payload: bytes) -> Verdict:
        try:
            sig = _parse_sshsig(armored)
        except ValueError as exc:
            return Verdict(False, "ssh", "", f"malformed SSH signature ({exc})")
        signer = _named(self.ssh_signers.get(sig.public_key, ""), _fingerprint(sig.public_key))
        if sig.namespace != GIT_NAMESPACE:
            return Verdict(False, "ssh", signer, f"the SSH signature was made for namespace "
                                                 f"{sig.namespace.decode(errors='replace')!r}, not 'git'")
        if sig.hash_algorithm not in SSHSIG_HASHES:
            return Verdict(False, "ssh", signer, "the SSH signature uses an unknown hash algorithm "
                                                 f"{sig.hash_algorithm.decode(errors='replace')!r}")
        digest = hashes.Hash(SSHSIG_HASHES[sig.hash_algorithm]())
        digest.update(payload)
        signed = (SSHSIG_MAGIC + _string(sig.namespace) + _string(sig.reserved)
                  + _string(sig.hash_algorithm) + _string(digest.finalize()))
        try:
            _check_ssh_signature(sig.public_key, sig.signature, signed)
        except InvalidSignature:
            return Verdict(False, "ssh", signer, "bad SSH signature: the commit was changed after it was signed")
        except (ValueError, UnsupportedAlgorithm) as exc:
            return Verdict(False, "ssh", signer, f"the SSH signature cannot be checked: {exc}")
        if sig.public_key not in self.ssh_signers:
            return Verdict(False, "ssh", signer, f"signed by SSH key {signer}, which is not one of the allowed keys")
        return Verdict(True, "ssh", signer, "good SSH signature by an allowed key")

    def _verify_gpg(self, signature: bytes, payload: bytes) -> Verdict:
        if not self.gpg_fingerprints:
            return Verdict(False, "gpg", "", "signed with OpenPGP, but no GPG keys were given")
        with tempfile.TemporaryDirectory(prefix="galleon-gpg-") as home:
            (Path(home) / "commit.sig").write_bytes(signature)
            (Path(home) / "commit").write_bytes(payload)
            try:
                _gpg(home, "--import", stdin=self.gpg_armored.encode())
                status = _gpg(home, "--status-fd", "1", "--verify",
                              str(Path(home) / "commit.sig"), str(Path(home) / "commit")).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                return Verdict(False, "gpg", "", f"gpg cannot run: {exc}")
        seen: dict[str, str] = {}
        for line in status.decode(errors="replace").splitlines():
            if line.startswith("[GNUPG:] "):
                keyword, _, args = line.removeprefix("[GNUPG:] ").partition(" ")
                seen.setdefault(keyword, args)
        for keyword, why in GPG_FAILURES:
            if keyword in seen:
                return Verdict(False, "gpg", _gpg_signer(seen[keyword]), why)
        if "NO_PUBKEY" in seen:
            return Verdict(False, "gpg", seen["NO_PUBKEY"],
                           f"signed by GPG key {seen['NO_PUBKEY']}, which is not one of the allowed keys")
        # VALIDSIG <fingerprint> <date> <timestamp> <expiry> <version> <reserved> <pubkey algo>
        #          <hash algo> <class> <primary key fingerprint>
        valid = seen.get("VALIDSIG", "").split()
        if "GOODSIG" in seen and len(valid) >= 10 and valid[9] in self.gpg_fingerprints:
            return Verdict(True, "gpg", _named(seen["GOODSIG"].partition(" ")[2], valid[9]),
                           "good GPG signature by an allowed key")
        return Verdict(False, "gpg", "", "gpg did not confirm a good signature by one of the allowed keys")
