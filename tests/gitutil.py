"""Build real Git repositories with pygit2 for tests: no subprocess, no global config, fixed clocks.

``files`` arguments map POSIX paths to ``bytes`` (a regular blob), ``Link("target")``
(a committed symbolic link: filemode LINK, blob content = the target path) or
``Gitlink(oid)`` (a submodule entry).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

BASE_TIME = 1_700_000_000


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Gitlink:
    oid: str


Entry = bytes | Link | Gitlink


def signature(time: int = BASE_TIME) -> pygit2.Signature:
    """A fixed identity at a fixed time (UTC): the same inputs always give the same object ids."""
    return pygit2.Signature("Galleon Tests", "tests@galleon.invalid", time, 0)


def init(path: Path, *, bare: bool = False, head: str = "main") -> pygit2.Repository:
    """A new repository whose HEAD is the (unborn) branch ``head``."""
    return pygit2.init_repository(str(path), bare=bare, initial_head=head)


def write_tree(repo: pygit2.Repository, files: dict[str, Entry]) -> pygit2.Oid:
    """Write nested trees for ``files`` and return the root tree's id."""
    nested: dict[str, dict | Entry] = {}
    for path, entry in files.items():
        parts = path.split("/")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            assert isinstance(node, dict), f"{path}: a parent is a file"
        node[parts[-1]] = entry
    return _write(repo, nested)


def _write(repo: pygit2.Repository, node: dict) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    for name, entry in node.items():
        if isinstance(entry, dict):
            builder.insert(name, _write(repo, entry), FileMode.TREE)
        elif isinstance(entry, Link):
            builder.insert(name, repo.create_blob(entry.target.encode()), FileMode.LINK)
        elif isinstance(entry, Gitlink):
            builder.insert(name, pygit2.Oid(hex=entry.oid), FileMode.COMMIT)
        else:
            builder.insert(name, repo.create_blob(entry), FileMode.BLOB)
    return builder.write()


def commit(repo: pygit2.Repository, files: dict[str, Entry], *, branch: str | None = "main",
           parents: list[pygit2.Oid] | None = None, message: str = "commit") -> pygit2.Oid:
    """Commit ``files`` (the whole tree) and move ``refs/heads/<branch>`` to it.

    ``parents`` defaults to the branch's current tip (none for a new branch).
    Give other ``parents`` (or ``[]``) to rewrite history: the branch is moved
    anyway, as a force-push leaves it on a server.
    """
    ref = f"refs/heads/{branch}" if branch else None
    if parents is None:
        parents = [repo.references[ref].target] if ref and ref in repo.references else []
    # a minute after the newest parent: deterministic, whatever ran before
    sig = signature(max((repo[p].commit_time for p in parents), default=BASE_TIME - 60) + 60)
    oid = repo.create_commit(None, sig, sig, message, write_tree(repo, files), parents)
    if ref:
        repo.references.create(ref, oid, force=True)
    return oid


def lightweight_tag(repo: pygit2.Repository, name: str, target: pygit2.Oid) -> None:
    repo.references.create(f"refs/tags/{name}", target)


def annotated_tag(repo: pygit2.Repository, name: str, target: pygit2.Oid,
                  message: str = "release") -> pygit2.Oid:
    return repo.create_tag(name, target, pygit2.enums.ObjectType.COMMIT,
                           signature(repo[target].commit_time + 30), message)


def checkout(repo: pygit2.Repository) -> None:
    """Make a non-bare repository's working files match HEAD."""
    repo.checkout_head(strategy=pygit2.enums.CheckoutStrategy.FORCE)


def ambiguous_prefix(repo: pygit2.Repository, length: int = 4) -> str:
    """Create dangling commits until two ids share their first ``length`` hex digits; return that prefix."""
    seen: dict[str, pygit2.Oid] = {}
    tree = write_tree(repo, {})
    for i in itertools.count():
        sig = signature(BASE_TIME)
        oid = repo.create_commit(None, sig, sig, f"filler {i}", tree, [])
        prefix = str(oid)[:length]
        if prefix in seen:
            return prefix
        seen[prefix] = oid
    raise AssertionError("unreachable")
