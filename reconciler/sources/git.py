"""Git sources: read any revision straight from the object database, never a checkout.

A local repository is opened where it is. A remote one is mirrored into a
bare repository under the state directory (every branch and tag, force-pushes
and deletions included) and fetched again on ``refresh``.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pygit2
from pygit2.enums import CredentialType, FetchPrune, FileMode, FileStatus, ObjectType, Option, RepositoryOpenFlag

from compiler.snapshot import Snapshot

from .base import Source, SourceError, is_config_file

# libgit2 hashes every object it reads again (SHA-1 with collision detection: 0.25 s for the 28 MB
# of a large mesh, two thirds of reading it); git does not. Objects are hashed when fetched (the
# indexer hashes each one received), and each stored object's zlib stream carries its own checksum.
pygit2.option(Option.ENABLE_STRICT_HASH_VERIFICATION, False)

MAX_LINK_HOPS = 8
MIRROR_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
CONNECT_TIMEOUT_MS = 10_000
IO_TIMEOUT_MS = 60_000


class _GitSource(Source):
    repo: pygit2.Repository
    # The blobs of the last snapshot read, by id: the next one (a new commit, a preview's HEAD) shares
    # most of them, and inflating 28 MB of unchanged blobs again took 0.2 s. Replaced, never mutated.
    _blobs: dict[pygit2.Oid, bytes] = {}

    def resolve(self, rev: str | None) -> pygit2.Commit:
        rev = rev or "HEAD"
        try:
            obj = self.repo.revparse_single(rev)
            return obj.peel(pygit2.Commit)
        except KeyError:
            raise SourceError(self._unknown(rev)) from None
        except (ValueError, pygit2.GitError) as exc:
            if "ambiguous" in str(exc):
                raise SourceError(f"{self.location}: revision {rev!r} is ambiguous; give more of the commit id") from None
            raise SourceError(self._unknown(rev)) from None

    def _unknown(self, rev: str) -> str:
        if rev == "HEAD" and self.repo.head_is_unborn:
            return f"{self.location}: the repository has no commits yet"
        return f"{self.location}: unknown revision {rev!r} (not a branch, tag or commit)"

    def head(self, rev: str | None = None) -> str | None:
        return str(self.resolve(rev).id)

    def snapshot(self, rev: str | None = None) -> Snapshot:
        commit = self.resolve(rev)
        blobs: dict[pygit2.Oid, bytes] = {}
        try:
            files = read_tree(self.repo, commit.tree, self.location, self._blobs, blobs)
        except pygit2.GitError as exc:  # an object that does not inflate: a damaged object database
            raise SourceError(f"{self.location}: cannot read {rev or 'HEAD'} ({exc}); the repository is "
                              "damaged: check it with `git fsck`, or clone it again") from None
        self._blobs = blobs
        return Snapshot(str(commit.id), files, self.location)


def read_tree(repo: pygit2.Repository, tree: pygit2.Tree, location: str, known: dict[pygit2.Oid, bytes],
              read: dict[pygit2.Oid, bytes]) -> dict[str, bytes]:
    """The YAML blobs of a tree by path, dot-folders skipped, in-tree symlinks resolved. A blob in
    ``known`` is taken from there (the same bytes object), not read again; ``read`` gets every blob
    taken, by id."""
    files: dict[str, bytes] = {}
    pending = [("", tree)]
    while pending:
        prefix, current = pending.pop()
        for entry in current:
            path = prefix + entry.name
            if entry.type == ObjectType.TREE:
                if not entry.name.startswith("."):
                    pending.append((path + "/", repo[entry.id]))
            elif entry.type == ObjectType.BLOB and is_config_file(entry.name):
                if entry.filemode == FileMode.LINK:
                    files[path] = _follow_link(repo, tree, path, repo[entry.id].data, location)
                else:
                    data = known.get(entry.id)
                    files[path] = read[entry.id] = data if data is not None else repo[entry.id].data
    return files


def _follow_link(repo, tree, path: str, target: bytes, location: str) -> bytes:
    """The bytes a committed symlink leads to, following links anywhere along the way (as a checkout would)."""
    hops = 0

    def fail(why: str):
        raise SourceError(f"{location}: {path}: symbolic link {why}")

    def resolve(link_path: str, link_target: bytes) -> str:
        nonlocal hops
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise SourceError(f"{location}: {path}: more than {MAX_LINK_HOPS} symbolic links in a row (a loop?)")
        text = link_target.decode("utf-8", "replace")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), text))
        if text.startswith("/") or resolved == ".." or resolved.startswith("../"):
            fail(f"to {text} points outside the repository (not followed); commit the file itself instead")
        return resolved

    pending = resolve(path, target).split("/")
    done: list[str] = []
    while pending:
        part = pending.pop(0)
        current = "/".join(done + [part])
        try:
            entry = tree[current]
        except KeyError:
            fail(f"to {target.decode('utf-8', 'replace')} is broken")
        if entry.filemode == FileMode.LINK:
            pending = resolve(current, repo[entry.id].data).split("/") + pending
            done = []
        elif pending and entry.type != ObjectType.TREE:
            fail(f"to {target.decode('utf-8', 'replace')} is broken")
        else:
            done.append(part)
    if entry.type != ObjectType.BLOB:
        fail(f"to {target.decode('utf-8', 'replace')} is not a file")
    return repo[entry.id].data


class LocalGitSource(_GitSource):
    def __init__(self, path: Path):
        self.location = str(path)
        try:
            self.repo = pygit2.Repository(str(path), RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError as exc:
            raise SourceError(f"{path}: not a readable Git repository: {exc}") from None

    def uncommitted(self) -> list[str] | None:
        """The files a read would take (read_tree's rule) that differ in the working tree from its HEAD
        (edited, added, deleted), which a read of a revision does not see; none for a bare repository,
        None when the working tree cannot be compared (a damaged index)."""
        if self.repo.is_bare:
            return []
        try:
            status = self.repo.status(untracked_files="all")
        except pygit2.GitError:
            return None
        return sorted(path for path, flags in status.items()
                      if flags != FileStatus.IGNORED and is_config_file(path)
                      and not any(part.startswith(".") for part in path.split("/")[:-1]))

    @staticmethod
    def is_repository(path: Path) -> bool:
        """Only the repository's own folder counts, so a plain folder inside a checkout is a directory source."""
        try:
            pygit2.Repository(str(path), RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError:
            return False
        return True


@dataclass
class GitCredentials:
    """How to authenticate to a remote. Secrets come from the environment, never from arguments."""

    token_env: str = "GALLEON_GIT_TOKEN"
    username: str | None = None
    ssh_key: Path | None = None
    ssh_passphrase_env: str = "GALLEON_GIT_SSH_PASSPHRASE"
    known_hosts: Path | None = None
    progress: Callable[[int, int, int], None] | None = field(default=None, repr=False)


class _Callbacks(pygit2.RemoteCallbacks):
    def __init__(self, url: str, creds: GitCredentials):
        super().__init__()
        self.url = url
        self.creds = creds
        self.offered: set[str] = set()

    def credentials(self, url, username_from_url, allowed_types):
        if allowed_types & CredentialType.SSH_KEY and self.creds.ssh_key and "ssh" not in self.offered:
            self.offered.add("ssh")
            key = Path(self.creds.ssh_key)
            public = key.with_name(key.name + ".pub")
            return pygit2.Keypair(username_from_url or self.creds.username or "git",
                                  str(public) if public.exists() else None, str(key),
                                  os.environ.get(self.creds.ssh_passphrase_env, ""))
        token = os.environ.get(self.creds.token_env)
        if allowed_types & CredentialType.USERPASS_PLAINTEXT and token and "token" not in self.offered:
            self.offered.add("token")
            return pygit2.UserPass(self.creds.username or username_from_url or "x-access-token", token)
        if self.offered:
            raise SourceError(f"{self.url}: authentication failed with the "
                              f"{' and '.join(sorted(self.offered))} credentials given")
        if allowed_types & CredentialType.SSH_KEY:
            raise SourceError(f"{self.url}: the server wants an SSH key; pass --ssh-key FILE")
        raise SourceError(f"{self.url}: the server wants credentials; put a token in ${self.creds.token_env}")

    def certificate_check(self, certificate, valid, host):
        # libgit2 checks TLS certificates, and SSH host keys against ~/.ssh/known_hosts
        # (our own file when --known-hosts is given); an unknown host is refused.
        if not valid:
            raise SourceError(f"{self.url}: the identity of {host.decode(errors='replace')} could not be "
                              "verified (unknown SSH host key or untrusted TLS certificate); "
                              "add the host to --known-hosts")
        return True

    def transfer_progress(self, stats):
        if self.creds.progress:
            self.creds.progress(stats.received_objects, stats.total_objects, stats.received_bytes)


def redact(url: str) -> str:
    """``url`` without the user name and password it may carry (a token)."""
    return re.sub(r"//[^/@]*@", "//***@", url)


class RemoteGitSource(_GitSource):
    """A mirror of a remote repository, kept in ``state_dir/git/``."""

    def __init__(self, url: str, state_dir: Path, creds: GitCredentials):
        self.url = url
        self.location = redact(url)
        self.creds = creds
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", url.rsplit("/", 1)[-1].removesuffix(".git"))[:40] or "repo"
        self.path = Path(state_dir) / "git" / f"{slug}-{digest}"
        pygit2.settings.server_connect_timeout = CONNECT_TIMEOUT_MS
        pygit2.settings.server_timeout = IO_TIMEOUT_MS
        if creds.known_hosts:
            self._use_known_hosts(Path(state_dir), Path(creds.known_hosts))
        self._created = False  # whether this run made the mirror (removed again if its first fetch fails)
        self._open_mirror()

    def _open_mirror(self) -> None:
        try:
            if self.path.exists():
                self.repo = pygit2.Repository(str(self.path), RepositoryOpenFlag.NO_SEARCH)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.repo = pygit2.init_repository(str(self.path), bare=True)
                self.repo.remotes.create("origin", self.url, MIRROR_REFSPECS[0])
                self.repo.remotes.add_fetch("origin", MIRROR_REFSPECS[1])
                self._created = True
            # libgit2's automatic tag following never moves an existing tag; leave tags to the
            # forced refspec above so a tag moved on the remote is followed too.
            self.repo.config["remote.origin.tagopt"] = "--no-tags"
        except (OSError, pygit2.GitError) as exc:
            raise SourceError(f"{self.path}: cannot open the local mirror of {self.location}: {exc}") from None

    @staticmethod
    def _use_known_hosts(state_dir: Path, known_hosts: Path) -> None:
        if not known_hosts.is_file():
            raise SourceError(f"{known_hosts}: known_hosts file not found")
        home = state_dir / "ssh-home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(known_hosts, home / ".ssh" / "known_hosts")
        pygit2.settings.homedir = str(home)

    def refs(self) -> dict[str, str]:
        """Every branch and tag with its target."""
        return {name: str(self.repo.references[name].target) for name in self.repo.references
                if name.startswith(("refs/heads/", "refs/tags/"))}

    def _state(self) -> tuple[dict[str, str], str | None]:
        return self.refs(), None if self.repo.head_is_unborn else self.repo.head.name

    def refresh(self) -> bool:
        """Fetch every branch and tag; True when any ref moved, appeared or vanished, or HEAD changed branch.
        A mirror this run made is removed again when nothing could be fetched into it: a mistyped or
        unreachable URL leaves no empty mirror behind (and a later fetch makes it anew)."""
        if not self.path.exists():
            self._open_mirror()
        before = self._state()
        try:
            heads = self._fetch()
        except SourceError:
            if self._created and not self.refs():
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        for head in heads:
            if head.name == "HEAD" and head.symref_target and head.symref_target in self.repo.references:
                self.repo.set_head(head.symref_target)
        return self._state() != before

    def _fetch(self) -> list:
        """Fetch into the mirror; the remote's heads. Raises SourceError."""
        remote = self.repo.remotes["origin"]
        try:
            remote.fetch(callbacks=_Callbacks(self.url, self.creds), prune=FetchPrune.PRUNE)
            return remote.list_heads(callbacks=_Callbacks(self.url, self.creds))
        except pygit2.GitError as exc:
            raise SourceError(f"{self.location}: fetch failed: {str(exc).strip()}") from None

    def _fetched(self) -> None:
        if not self.path.exists() or not self.refs():  # (a mirror whose first fetch failed is removed)
            raise SourceError(f"{self.location}: nothing fetched yet (the first fetch has not succeeded)")

    def head(self, rev: str | None = None) -> str | None:
        self._fetched()
        return super().head(rev)

    def snapshot(self, rev: str | None = None) -> Snapshot:
        self._fetched()
        return super().snapshot(rev)
