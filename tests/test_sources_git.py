"""Git sources against real repositories built with pygit2 (no mocks, no git binary)."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

from compiler.snapshot import Snapshot
from tests.gitutil import Gitlink, Link, ambiguous_prefix, annotated_tag, checkout, commit, init, lightweight_tag
from reconciler.sources import (DirectorySource, LocalGitSource, RemoteGitSource, SourceError,
                                open_source)

HEX40 = re.compile(r"^[0-9a-f]{40}$")

MESH_V1 = b"apiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {dnsSuffix: v1}\n"
MESH_V2 = MESH_V1.replace(b"v1}", b"v2}")
MESH_V3 = MESH_V1.replace(b"v1}", b"v3}")
EAST = b"kind: Cluster\nmetadata: {name: east}\n"
DEEP = b"kind: ServiceEntry\nmetadata: {name: deep}\n"
INNER = b"kind: Gateway\nmetadata: {name: inner}\n"
HIDDEN = b"kind: Cluster\nmetadata: {name: hidden}\n"

# The tree of the newest commit on main: what every reader must see, and must not.
TREE_V3 = {
    "mesh.yaml": MESH_V3,
    "clusters/east/cluster.yaml": EAST,
    "clusters/west/deep/er/services.yml": DEEP,
    "folder.yaml/inner.yaml": INNER,  # a folder named like a YAML file is still a folder
    "README.md": b"# config\n",
    "notes.txt": b"kind: not-config\n",
    "mesh.yaml.bak": b"old\n",
    "yaml": b"a file named yaml\n",
    "clusters/east/values.json": b"{}\n",
    ".github/workflows/ci.yaml": HIDDEN,
    ".hidden.d/x.yml": HIDDEN,
    "clusters/.internal/secret.yaml": HIDDEN,
    "clusters/west/deep/.cache/stale.yml": HIDDEN,
}
EXPECTED_V3 = {
    "mesh.yaml": MESH_V3,
    "clusters/east/cluster.yaml": EAST,
    "clusters/west/deep/er/services.yml": DEEP,
    "folder.yaml/inner.yaml": INNER,
}


@dataclass
class History:
    path: Path
    repo: pygit2.Repository
    c1: pygit2.Oid
    c2: pygit2.Oid
    c3: pygit2.Oid
    feature: pygit2.Oid


@pytest.fixture
def history(tmp_path: Path) -> History:
    """main: c1 -> c2 -> c3 (HEAD); feature forks from c1; v1 (lightweight) on c1, v2 (annotated) on c2."""
    path = tmp_path / "repo"
    repo = init(path)
    c1 = commit(repo, {"mesh.yaml": MESH_V1}, message="one")
    c2 = commit(repo, {"mesh.yaml": MESH_V2}, message="two")
    c3 = commit(repo, TREE_V3, message="three")
    feature = commit(repo, {"mesh.yaml": MESH_V1, "feature.yaml": b"kind: Feature\n"},
                     branch="feature", parents=[c1], message="feature")
    lightweight_tag(repo, "v1", c1)
    annotated_tag(repo, "v2", c2)
    return History(path, repo, c1, c2, c3, feature)


def local(history: History) -> LocalGitSource:
    source = open_source(str(history.path))
    assert isinstance(source, LocalGitSource)
    return source


# --- local repositories: revisions ---------------------------------------------------------------

def test_head_is_the_newest_commit_of_the_current_branch(history: History) -> None:
    snap = local(history).snapshot()
    assert isinstance(snap, Snapshot)
    assert snap.revision == str(history.c3)
    assert HEX40.match(snap.revision)
    assert snap.files == EXPECTED_V3
    assert snap.origin == str(history.path)


def test_explicit_head_equals_default(history: History) -> None:
    source = local(history)
    assert source.snapshot("HEAD") == source.snapshot(None) == source.snapshot()


@pytest.mark.parametrize("rev, commit_name", [
    ("main", "c3"),
    ("refs/heads/main", "c3"),
    ("feature", "feature"),
    ("v1", "c1"),                # lightweight tag
    ("refs/tags/v1", "c1"),
    ("v2", "c2"),                # annotated tag, peeled to its commit
    ("v2^{commit}", "c2"),
    ("HEAD~2", "c1"),
    ("main^", "c2"),
    ("main~1", "c2"),
    ("feature^{}", "feature"),
])
def test_revision_forms(history: History, rev: str, commit_name: str) -> None:
    snap = local(history).snapshot(rev)
    assert snap.revision == str(getattr(history, commit_name))


def test_annotated_tag_revision_is_the_commit_not_the_tag_object(history: History) -> None:
    tag_object = history.repo.references["refs/tags/v2"].target
    assert tag_object != history.c2  # really an annotated tag
    snap = local(history).snapshot("v2")
    assert snap.revision == str(history.c2)
    assert snap.files == {"mesh.yaml": MESH_V2}


def test_full_commit_id(history: History) -> None:
    snap = local(history).snapshot(str(history.c1))
    assert snap.revision == str(history.c1)
    assert snap.files == {"mesh.yaml": MESH_V1}


def test_short_commit_id(history: History) -> None:
    short = str(history.c2)[:7]
    snap = local(history).snapshot(short)
    assert snap.revision == str(history.c2)  # always the full id, never what was typed
    assert snap.files == {"mesh.yaml": MESH_V2}


def test_each_revision_has_its_own_files(history: History) -> None:
    source = local(history)
    assert source.snapshot("HEAD~2").files == {"mesh.yaml": MESH_V1}
    assert source.snapshot("main^").files == {"mesh.yaml": MESH_V2}
    assert source.snapshot("feature").files == {"mesh.yaml": MESH_V1, "feature.yaml": b"kind: Feature\n"}


def test_same_revision_gives_equal_snapshots(history: History) -> None:
    assert local(history).snapshot("main") == local(history).snapshot(str(history.c3))


def test_a_snapshot_takes_the_blobs_the_one_before_had_without_reading_them_again(history: History) -> None:
    source = local(history)
    old = source.snapshot("feature")
    new = source.snapshot("HEAD~2")  # c1: mesh.yaml as on feature, and nothing else
    assert new.files == {"mesh.yaml": MESH_V1}
    assert new.files["mesh.yaml"] is old.files["mesh.yaml"]  # the same bytes object: not inflated again
    head = source.snapshot("main")
    assert head.files == EXPECTED_V3 and head.files["mesh.yaml"] is not new.files["mesh.yaml"]
    assert source.snapshot("HEAD~2") == local(history).snapshot(str(history.c1))


def test_unknown_revision_is_named(history: History) -> None:
    with pytest.raises(SourceError, match=r"no-such-branch"):
        local(history).snapshot("no-such-branch")


@pytest.mark.parametrize("rev", ["HEAD~10", "deadbeefdeadbeef", "0" * 40, "main^^^^^^", "v9"])
def test_unresolvable_revisions_are_source_errors(history: History, rev: str) -> None:
    with pytest.raises(SourceError) as info:
        local(history).snapshot(rev)
    assert rev in str(info.value)


def test_a_tree_is_not_a_revision(history: History) -> None:
    with pytest.raises(SourceError, match=r"HEAD\^\{tree\}"):
        local(history).snapshot("HEAD^{tree}")


def test_ambiguous_short_id(history: History) -> None:
    prefix = ambiguous_prefix(history.repo)
    with pytest.raises(SourceError, match="ambiguous") as info:
        local(history).snapshot(prefix)
    assert prefix in str(info.value)


# --- local repositories: which files --------------------------------------------------------------

def test_yaml_and_yml_in_nested_folders_are_read(history: History) -> None:
    files = local(history).snapshot().files
    assert files["clusters/east/cluster.yaml"] == EAST
    assert files["clusters/west/deep/er/services.yml"] == DEEP
    assert files["folder.yaml/inner.yaml"] == INNER


def test_non_yaml_files_are_excluded(history: History) -> None:
    files = local(history).snapshot().files
    for name in ("README.md", "notes.txt", "mesh.yaml.bak", "yaml", "clusters/east/values.json"):
        assert name not in files


def test_dot_folders_are_skipped_at_any_depth(history: History) -> None:
    files = local(history).snapshot().files
    assert not [path for path in files if any(part.startswith(".") for part in path.split("/"))]
    assert HIDDEN not in files.values()


def test_files_are_sorted_by_path(history: History) -> None:
    paths = list(local(history).snapshot().files)
    assert paths == sorted(paths)


def test_submodule_entries_are_skipped(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"mesh.yaml": MESH_V1, "vendor.yaml": Gitlink("1" * 40), "deps/lib": Gitlink("2" * 40)})
    assert LocalGitSource(tmp_path / "repo").snapshot().files == {"mesh.yaml": MESH_V1}


def test_a_damaged_object_is_a_source_error_not_wrong_bytes(tmp_path: Path) -> None:
    """libgit2's re-hashing of each object read is off (sources/git.py): a damaged loose object still
    fails, in its zlib stream, and is reported as a damaged repository."""
    repo = init(tmp_path / "repo")
    commit(repo, {"mesh.yaml": MESH_V1 * 50})
    blob = repo.revparse_single("main").tree["mesh.yaml"].id
    stored = tmp_path / "repo" / ".git" / "objects" / str(blob)[:2] / str(blob)[2:]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"cannot read HEAD .*damaged: check it with `git fsck`"):
        LocalGitSource(tmp_path / "repo").snapshot()


def test_empty_commit_gives_no_files(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    oid = commit(repo, {"README.md": b"nothing here\n"})
    snap = LocalGitSource(tmp_path / "repo").snapshot()
    assert snap.revision == str(oid)
    assert snap.files == {}


def test_reading_a_commit_does_not_touch_the_working_tree(history: History) -> None:
    checkout(history.repo)
    work = history.path
    assert (work / "mesh.yaml").read_bytes() == MESH_V3
    (work / "mesh.yaml").write_bytes(b"kind: Edited\n")
    (work / "untracked.yaml").write_bytes(b"kind: Untracked\n")
    (work / "clusters/east/cluster.yaml").unlink()

    snap = local(history).snapshot()

    assert snap.files == EXPECTED_V3
    assert "untracked.yaml" not in snap.files
    # and the working files are left exactly as they were
    assert (work / "mesh.yaml").read_bytes() == b"kind: Edited\n"
    assert (work / "untracked.yaml").exists()
    assert not (work / "clusters/east/cluster.yaml").exists()
    # an old revision is read from the object database, not checked out
    assert local(history).snapshot("v1").files == {"mesh.yaml": MESH_V1}
    assert (work / "mesh.yaml").read_bytes() == b"kind: Edited\n"
    assert history.repo.head.target == history.c3


def test_bare_repository_opened_directly(tmp_path: Path) -> None:
    path = tmp_path / "mesh.git"
    repo = init(path, bare=True)
    oid = commit(repo, TREE_V3)
    source = open_source(str(path))
    assert isinstance(source, LocalGitSource)
    snap = source.snapshot()
    assert snap.revision == str(oid)
    assert snap.files == EXPECTED_V3


def test_empty_repository_says_it_has_no_commits(tmp_path: Path) -> None:
    init(tmp_path / "repo")
    source = open_source(str(tmp_path / "repo"))
    assert isinstance(source, LocalGitSource)
    with pytest.raises(SourceError, match="no commits"):
        source.snapshot()


def test_empty_bare_repository_says_it_has_no_commits(tmp_path: Path) -> None:
    init(tmp_path / "mesh.git", bare=True)
    with pytest.raises(SourceError, match="no commits"):
        LocalGitSource(tmp_path / "mesh.git").snapshot("HEAD")


def test_empty_repository_unknown_branch_is_named(tmp_path: Path) -> None:
    init(tmp_path / "repo")
    with pytest.raises(SourceError, match="main"):
        LocalGitSource(tmp_path / "repo").snapshot("main")


def test_local_source_on_a_plain_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a readable Git repository"):
        LocalGitSource(tmp_path)


# --- committed symbolic links ---------------------------------------------------------------------

def test_links_inside_the_repository_are_read_with_the_target_bytes(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {
        "base.yaml": MESH_V1,
        "link.yaml": Link("base.yaml"),
        "sub/up.yaml": Link("../base.yaml"),
        "sub/chain.yml": Link("../link.yaml"),          # a link to a link
        "sub/dotted.yaml": Link("./../sub/../base.yaml"),
        "data/real.txt": DEEP,
        "alias.yaml": Link("data/real.txt"),            # a YAML-named link to a non-YAML file
        "other/deep.yaml": EAST,
        "nested/far.yaml": Link("../other/deep.yaml"),
    })
    files = LocalGitSource(tmp_path / "repo").snapshot().files
    assert files == {
        "base.yaml": MESH_V1,
        "link.yaml": MESH_V1,
        "sub/up.yaml": MESH_V1,
        "sub/chain.yml": MESH_V1,
        "sub/dotted.yaml": MESH_V1,
        "alias.yaml": DEEP,
        "other/deep.yaml": EAST,
        "nested/far.yaml": EAST,
    }


@pytest.mark.parametrize("path, target", [
    ("evil.yaml", "../outside.yaml"),
    ("passwd.yaml", "/etc/passwd"),
    ("abs.yaml", "/tmp/outside.yaml"),
    ("sub/evil.yaml", "../../outside.yaml"),
    ("sneaky.yaml", "sub/../../outside.yaml"),
    ("parent.yaml", ".."),
])
def test_links_out_of_the_repository_are_refused(tmp_path: Path, path: str, target: str) -> None:
    (tmp_path / "outside.yaml").write_bytes(b"kind: Outside\n")  # exists on disk: must still not be read
    repo = init(tmp_path / "repo")
    commit(repo, {"base.yaml": MESH_V1, "sub/ok.yaml": EAST, path: Link(target)})
    with pytest.raises(SourceError, match="outside") as info:
        LocalGitSource(tmp_path / "repo").snapshot()
    assert path in str(info.value)
    assert "Traceback" not in str(info.value)


def test_chain_ending_outside_is_refused(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"a.yaml": Link("b.yaml"), "b.yaml": Link("../outside.yaml")})
    with pytest.raises(SourceError, match="outside"):
        LocalGitSource(tmp_path / "repo").snapshot()


def test_broken_link_is_a_source_error(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"base.yaml": MESH_V1, "broken.yaml": Link("missing.yaml")})
    with pytest.raises(SourceError, match="broken") as info:
        LocalGitSource(tmp_path / "repo").snapshot()
    assert "broken.yaml" in str(info.value)


def test_link_into_a_missing_folder_is_broken(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"base.yaml": MESH_V1, "x.yaml": Link("nowhere/base.yaml")})
    with pytest.raises(SourceError, match="broken"):
        LocalGitSource(tmp_path / "repo").snapshot()


def test_link_to_a_folder_is_a_source_error(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"clusters/east.yaml": EAST, "all.yaml": Link("clusters")})
    with pytest.raises(SourceError, match="not a file"):
        LocalGitSource(tmp_path / "repo").snapshot()


def test_link_loop_is_a_source_error(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"a.yaml": Link("b.yaml"), "b.yaml": Link("a.yaml")})
    with pytest.raises(SourceError, match="symbolic links"):
        LocalGitSource(tmp_path / "repo").snapshot()


def test_link_through_a_linked_folder_is_followed(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"real/base.yaml": MESH_V1, "cur": Link("real"), "mesh.yaml": Link("cur/base.yaml")})
    files = LocalGitSource(tmp_path / "repo").snapshot().files
    assert files["mesh.yaml"] == MESH_V1


def test_links_that_are_not_config_files_are_ignored(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {
        "base.yaml": MESH_V1,
        "passwd": Link("/etc/passwd"),             # not a YAML name: never followed
        ".github/evil.yaml": Link("/etc/passwd"),  # in a dot-folder: never looked at
        "broken.txt": Link("missing"),
    })
    assert LocalGitSource(tmp_path / "repo").snapshot().files == {"base.yaml": MESH_V1}


def test_links_are_resolved_in_the_requested_revision(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"base.yaml": MESH_V1, "link.yaml": Link("base.yaml")})
    commit(repo, {"base.yaml": MESH_V2, "link.yaml": Link("base.yaml")})
    source = LocalGitSource(tmp_path / "repo")
    assert source.snapshot("HEAD~1").files["link.yaml"] == MESH_V1
    assert source.snapshot("HEAD").files["link.yaml"] == MESH_V2


# --- remote repositories over file:// -------------------------------------------------------------

@dataclass
class Remote:
    path: Path
    repo: pygit2.Repository
    url: str
    state: Path


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    path = tmp_path / "server" / "mesh.git"
    repo = init(path, bare=True)
    commit(repo, {"mesh.yaml": MESH_V1, "clusters/east.yaml": EAST, "README.md": b"x\n"})
    return Remote(path, repo, path.as_uri(), tmp_path / "state")


def remote_source(remote: Remote) -> RemoteGitSource:
    source = open_source(remote.url, remote.state)
    assert isinstance(source, RemoteGitSource)
    return source


def tip(remote: Remote, branch: str = "main") -> str:
    return str(remote.repo.references[f"refs/heads/{branch}"].target)


def test_first_refresh_fetches_then_nothing_changes(remote: Remote) -> None:
    source = remote_source(remote)
    assert source.refresh() is True
    assert source.refresh() is False
    assert source.refresh() is False
    snap = source.snapshot()
    assert snap.revision == tip(remote)
    assert snap.files == {"mesh.yaml": MESH_V1, "clusters/east.yaml": EAST}
    assert source.path.is_dir()
    assert source.path.is_relative_to(remote.state / "git")
    assert pygit2.Repository(str(source.path)).is_bare


def test_snapshot_before_any_fetch_is_a_source_error(remote: Remote) -> None:
    source = remote_source(remote)
    with pytest.raises(SourceError, match="nothing fetched"):
        source.snapshot()
    with pytest.raises(SourceError):
        source.snapshot("main")


def test_new_commit_on_the_remote_is_fetched(remote: Remote) -> None:
    source = remote_source(remote)
    assert source.refresh() is True
    before = source.snapshot()

    new = commit(remote.repo, {"mesh.yaml": MESH_V2, "clusters/west.yaml": DEEP})

    assert source.refresh() is True
    after = source.snapshot()
    assert after.revision == str(new) != before.revision
    assert after.files == {"mesh.yaml": MESH_V2, "clusters/west.yaml": DEEP}
    assert source.snapshot("main~1") == before  # history came along
    assert source.refresh() is False


def test_all_branches_and_tags_are_readable_by_name(remote: Remote) -> None:
    first = remote.repo.references["refs/heads/main"].target
    second = commit(remote.repo, {"mesh.yaml": MESH_V2})
    feature = commit(remote.repo, {"mesh.yaml": MESH_V3}, branch="feature", parents=[first])
    release = commit(remote.repo, {"mesh.yaml": MESH_V1, "r.yaml": EAST}, branch="release/1.0", parents=[first])
    lightweight_tag(remote.repo, "v1", first)
    annotated_tag(remote.repo, "v2", second)

    source = remote_source(remote)
    assert source.refresh() is True
    assert source.snapshot("main").revision == str(second)
    assert source.snapshot("feature").revision == str(feature)
    assert source.snapshot("feature").files == {"mesh.yaml": MESH_V3}
    assert source.snapshot("release/1.0").revision == str(release)
    assert source.snapshot("v1").revision == str(first)
    assert source.snapshot("refs/tags/v1").files["mesh.yaml"] == MESH_V1
    assert source.snapshot("v2").revision == str(second)
    assert source.snapshot(str(feature)[:7]).revision == str(feature)
    assert set(source.refs()) == {"refs/heads/main", "refs/heads/feature", "refs/heads/release/1.0",
                                  "refs/tags/v1", "refs/tags/v2"}


def test_force_pushed_branch_is_followed(remote: Remote) -> None:
    old_root = remote.repo.references["refs/heads/main"].target
    old_tip = commit(remote.repo, {"mesh.yaml": MESH_V2})
    source = remote_source(remote)
    source.refresh()
    assert source.snapshot().revision == str(old_tip)

    # rewrite history: main now points at an unrelated root commit
    rewritten = commit(remote.repo, {"mesh.yaml": MESH_V3, "new.yaml": DEEP}, parents=[])
    remote.repo.references.create("refs/heads/main", rewritten, force=True)
    assert not remote.repo.descendant_of(rewritten, old_tip)

    assert source.refresh() is True
    snap = source.snapshot("main")
    assert snap.revision == str(rewritten)
    assert snap.files == {"mesh.yaml": MESH_V3, "new.yaml": DEEP}
    assert source.snapshot().revision == str(rewritten)
    assert source.refs()["refs/heads/main"] == str(rewritten)
    with pytest.raises(SourceError):
        source.snapshot("main~1")  # the new history has a single commit
    assert old_root != rewritten


@pytest.mark.parametrize("kind", ["lightweight", "annotated"])
def test_force_moved_tag_is_followed(remote: Remote, kind: str) -> None:
    first = remote.repo.references["refs/heads/main"].target
    second = commit(remote.repo, {"mesh.yaml": MESH_V2})
    make_tag = lightweight_tag if kind == "lightweight" else annotated_tag
    make_tag(remote.repo, "stable", first)
    source = remote_source(remote)
    source.refresh()
    assert source.snapshot("stable").revision == str(first)

    remote.repo.references.delete("refs/tags/stable")
    make_tag(remote.repo, "stable", second)

    assert source.refresh() is True
    assert source.snapshot("stable").revision == str(second)
    assert source.snapshot("stable").files == {"mesh.yaml": MESH_V2}


def test_deleted_remote_branch_disappears(remote: Remote) -> None:
    feature = commit(remote.repo, {"mesh.yaml": MESH_V3}, branch="feature", parents=[])
    source = remote_source(remote)
    source.refresh()
    assert source.snapshot("feature").revision == str(feature)

    remote.repo.references.delete("refs/heads/feature")

    assert source.refresh() is True
    assert "refs/heads/feature" not in source.refs()
    assert "refs/heads/main" in source.refs()
    with pytest.raises(SourceError, match="feature"):
        source.snapshot("feature")
    assert source.snapshot("main").revision == tip(remote)


def test_deleted_remote_tag_disappears(remote: Remote) -> None:
    annotated_tag(remote.repo, "v1", remote.repo.references["refs/heads/main"].target)
    source = remote_source(remote)
    source.refresh()
    assert "refs/tags/v1" in source.refs()

    remote.repo.references.delete("refs/tags/v1")

    assert source.refresh() is True
    assert "refs/tags/v1" not in source.refs()
    with pytest.raises(SourceError, match="v1"):
        source.snapshot("v1")


def test_head_is_the_remote_default_branch(tmp_path: Path) -> None:
    path = tmp_path / "server" / "trunk.git"
    repo = init(path, bare=True, head="trunk")
    trunk = commit(repo, {"mesh.yaml": MESH_V1}, branch="trunk")
    main = commit(repo, {"mesh.yaml": MESH_V2}, branch="main", parents=[])
    master = commit(repo, {"mesh.yaml": MESH_V3}, branch="master", parents=[])
    assert len({trunk, main, master}) == 3

    source = open_source(path.as_uri(), tmp_path / "state")
    assert source.refresh() is True
    assert source.snapshot().revision == str(trunk)
    assert source.snapshot("HEAD").files == {"mesh.yaml": MESH_V1}
    assert source.snapshot("main").revision == str(main)


def test_change_of_remote_default_branch_is_followed(remote: Remote) -> None:
    other = commit(remote.repo, {"mesh.yaml": MESH_V3}, branch="trunk", parents=[])
    source = remote_source(remote)
    source.refresh()
    assert source.snapshot().revision == tip(remote, "main")

    remote.repo.set_head("refs/heads/trunk")
    source.refresh()
    assert source.snapshot().revision == str(other)


def test_change_of_remote_default_branch_is_reported_by_refresh(remote: Remote) -> None:
    commit(remote.repo, {"mesh.yaml": MESH_V3}, branch="trunk", parents=[])
    source = remote_source(remote)
    assert source.refresh() is True
    before = source.snapshot().revision

    remote.repo.set_head("refs/heads/trunk")
    changed = source.refresh()

    assert source.snapshot().revision != before
    assert changed is True


def test_remote_that_does_not_exist(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere" / "mesh.git").as_uri()
    source = open_source(url, tmp_path / "state")
    assert isinstance(source, RemoteGitSource)
    with pytest.raises(SourceError, match="fetch failed") as info:
        source.refresh()
    assert "nowhere" in str(info.value)
    with pytest.raises(SourceError, match="nothing fetched"):
        source.snapshot()
    assert list((tmp_path / "state" / "git").iterdir()) == []  # no empty mirror left behind
    # The daemon fetches again: once the remote is there, the mirror is made anew.
    commit(init(tmp_path / "nowhere" / "mesh.git", bare=True), {"mesh.yaml": MESH_V1})
    assert source.refresh() is True
    assert source.snapshot().files == {"mesh.yaml": MESH_V1}


def test_remote_that_is_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "mesh.yaml").write_bytes(MESH_V1)
    source = open_source((tmp_path / "plain").as_uri(), tmp_path / "state")
    with pytest.raises(SourceError):
        source.refresh()


def test_empty_remote_fetches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "server" / "empty.git"
    init(path, bare=True)
    source = open_source(path.as_uri(), tmp_path / "state")
    assert source.refresh() is False
    with pytest.raises(SourceError, match="nothing fetched"):
        source.snapshot()


def test_last_fetch_is_kept_when_the_remote_goes_away(remote: Remote) -> None:
    source = remote_source(remote)
    source.refresh()
    good = source.snapshot()
    shutil.rmtree(remote.path)

    with pytest.raises(SourceError, match="fetch failed"):
        source.refresh()
    assert source.snapshot() == good


def test_state_dir_is_reused_between_sources(remote: Remote) -> None:
    first = remote_source(remote)
    assert first.refresh() is True
    assert first.path.is_dir()

    second = remote_source(remote)
    assert second.path == first.path
    assert second.path.is_dir()
    assert list((remote.state / "git").iterdir()) == [first.path]
    # the mirror already holds everything: readable before any fetch, and nothing new to fetch
    assert second.snapshot().revision == tip(remote)
    assert second.refresh() is False
    assert second.snapshot() == first.snapshot()


def test_reused_mirror_sees_commits_made_meanwhile(remote: Remote) -> None:
    remote_source(remote).refresh()
    new = commit(remote.repo, {"mesh.yaml": MESH_V2})
    again = remote_source(remote)
    assert again.snapshot().revision != str(new)  # not fetched yet
    assert again.refresh() is True
    assert again.snapshot().revision == str(new)


def test_different_urls_get_different_mirrors(tmp_path: Path) -> None:
    state = tmp_path / "state"
    a = open_source("https://a.example.invalid/org/mesh.git", state)
    b = open_source("https://b.example.invalid/org/mesh.git", state)
    assert isinstance(a, RemoteGitSource) and isinstance(b, RemoteGitSource)
    assert a.path != b.path
    assert a.path.parent == b.path.parent == state / "git"
    assert a.path.name.startswith("mesh-")


def test_credentials_in_a_url_are_not_shown(tmp_path: Path) -> None:
    source = open_source("https://user:s3cret@git.example.invalid/org/mesh.git", tmp_path / "state")
    assert "s3cret" not in source.location
    assert "s3cret" not in str(source.path)
    assert source.location.endswith("git.example.invalid/org/mesh.git")


def test_remote_needs_a_state_dir() -> None:
    with pytest.raises(SourceError, match="state"):
        open_source("https://git.example.invalid/org/mesh.git")


# --- open_source: which kind of source ------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://git.example.invalid/org/mesh.git",
    "http://git.example.invalid/mesh",
    "ssh://git@git.example.invalid/org/mesh.git",
    "git@git.example.invalid:org/mesh.git",
])
def test_open_source_picks_remote_for_urls(tmp_path: Path, url: str) -> None:
    source = open_source(url, tmp_path / "state")
    assert isinstance(source, RemoteGitSource)
    assert source.url == url


def test_open_source_picks_remote_for_file_url(remote: Remote) -> None:
    assert isinstance(open_source(remote.url, remote.state), RemoteGitSource)


def test_open_source_picks_local_for_a_repository_root(history: History) -> None:
    assert isinstance(open_source(str(history.path)), LocalGitSource)
    assert isinstance(open_source(str(history.path), history.path.parent / "state"), LocalGitSource)


def test_open_source_picks_directory_inside_a_checkout(history: History) -> None:
    checkout(history.repo)
    folder = history.path / "clusters"
    (folder / "east" / "uncommitted.yaml").write_bytes(b"kind: Draft\n")

    source = open_source(str(folder))

    assert isinstance(source, DirectorySource)
    snap = source.snapshot()
    assert snap.revision.startswith("sha256:")
    assert snap.files == {
        "east/cluster.yaml": EAST,
        "east/uncommitted.yaml": b"kind: Draft\n",
        "west/deep/er/services.yml": DEEP,
    }


def test_open_source_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing"))


def test_open_source_file_path_reads_that_file(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_bytes(MESH_V1)
    snapshot = open_source(str(tmp_path / "mesh.yaml")).snapshot()
    assert snapshot.files == {str(tmp_path / "mesh.yaml"): MESH_V1}
