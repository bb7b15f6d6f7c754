"""The plain-directory source against real folders, links and special files."""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from compiler.snapshot import Snapshot
from reconciler.sources import DirectorySource, SourceError, open_source

REVISION = re.compile(r"^sha256:[0-9a-f]{40}$")

MESH = b"apiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
EAST = b"kind: Cluster\nmetadata: {name: east}\n"
DEEP = b"kind: ServiceEntry\nmetadata: {name: deep}\n"
HIDDEN = b"kind: Cluster\nmetadata: {name: hidden}\n"


def write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write(tmp_path / "config", {
        "mesh.yaml": MESH,
        "clusters/east/cluster.yaml": EAST,
        "clusters/west/deep/er/services.yml": DEEP,
        "folder.yaml/inner.yaml": DEEP,
        "README.md": b"# config\n",
        "notes.txt": b"kind: not-config\n",
        "mesh.yaml.bak": b"old\n",
        "yaml": b"a file named yaml\n",
        ".github/workflows/ci.yaml": HIDDEN,
        ".hidden.d/x.yml": HIDDEN,
        "clusters/.internal/secret.yaml": HIDDEN,
        "clusters/west/deep/.cache/stale.yml": HIDDEN,
    })


EXPECTED = {
    "mesh.yaml": MESH,
    "clusters/east/cluster.yaml": EAST,
    "clusters/west/deep/er/services.yml": DEEP,
    "folder.yaml/inner.yaml": DEEP,
}


def test_open_source_gives_a_directory_source(config: Path) -> None:
    source = open_source(str(config))
    assert isinstance(source, DirectorySource)
    assert source.location == str(config)


def test_files_and_nested_folders(config: Path) -> None:
    snap = DirectorySource(config).snapshot()
    assert isinstance(snap, Snapshot)
    assert snap.files == EXPECTED
    assert snap.origin == str(config)
    assert list(snap.files) == sorted(snap.files)


def test_non_yaml_files_are_excluded(config: Path) -> None:
    files = DirectorySource(config).snapshot().files
    for name in ("README.md", "notes.txt", "mesh.yaml.bak", "yaml"):
        assert name not in files


def test_dot_folders_are_skipped_at_any_depth(config: Path) -> None:
    files = DirectorySource(config).snapshot().files
    assert not [path for path in files if any(part.startswith(".") for part in path.split("/"))]
    assert HIDDEN not in files.values()


def test_empty_directory(tmp_path: Path) -> None:
    snap = DirectorySource(tmp_path).snapshot()
    assert snap.files == {}
    assert REVISION.match(snap.revision)


def test_missing_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="missing"):
        DirectorySource(tmp_path / "missing").snapshot()


def test_file_name_that_is_not_utf8_gives_no_traceback(tmp_path: Path) -> None:
    root = tmp_path / "config"
    root.mkdir()
    (root / "mesh.yaml").write_bytes(MESH)
    with open(os.fsencode(root) + b"/bad\xff.yaml", "wb") as handle:
        handle.write(EAST)
    try:
        snap = DirectorySource(root).snapshot()
    except SourceError as exc:
        assert "bad" in str(exc)
    else:
        assert REVISION.match(snap.revision)
        assert snap.files["mesh.yaml"] == MESH
        assert EAST in snap.files.values()


# --- revision -------------------------------------------------------------------------------------

def test_revision_is_a_content_hash(config: Path) -> None:
    assert REVISION.match(DirectorySource(config).snapshot().revision)


def test_revision_is_stable_when_nothing_changes(config: Path) -> None:
    first = DirectorySource(config).snapshot()
    os.utime(config / "mesh.yaml", (1, 1))  # a touch is not a change
    second = DirectorySource(config).snapshot()
    assert second.revision == first.revision
    assert second == first


def test_revision_does_not_depend_on_where_the_folder_is(config: Path, tmp_path: Path) -> None:
    copy = write(tmp_path / "elsewhere" / "copy", {path: data for path, data in EXPECTED.items()})
    assert DirectorySource(copy).snapshot().revision == DirectorySource(config).snapshot().revision


def test_revision_changes_when_content_changes(config: Path) -> None:
    before = DirectorySource(config).snapshot().revision
    (config / "clusters/east/cluster.yaml").write_bytes(EAST + b"spec: {network: n1}\n")
    after = DirectorySource(config).snapshot().revision
    assert REVISION.match(after)
    assert after != before


def test_revision_changes_when_a_file_is_renamed(config: Path) -> None:
    before = DirectorySource(config).snapshot()
    (config / "mesh.yaml").rename(config / "mesh2.yaml")
    after = DirectorySource(config).snapshot()
    assert sorted(after.files.values()) == sorted(before.files.values())  # same bytes, other name
    assert after.revision != before.revision


def test_revision_changes_when_a_file_is_moved_to_another_folder(config: Path) -> None:
    before = DirectorySource(config).snapshot().revision
    (config / "clusters/east/cluster.yaml").rename(config / "clusters/cluster.yaml")
    assert DirectorySource(config).snapshot().revision != before


def test_revision_changes_when_a_file_is_added_or_removed(config: Path) -> None:
    before = DirectorySource(config).snapshot().revision
    (config / "extra.yaml").write_bytes(b"")
    added = DirectorySource(config).snapshot().revision
    assert added != before
    (config / "extra.yaml").unlink()
    assert DirectorySource(config).snapshot().revision == before


def test_revision_distinguishes_where_bytes_are_split_between_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a", {"x.yaml": b"ab", "y.yaml": b"c"})
    b = write(tmp_path / "b", {"x.yaml": b"a", "y.yaml": b"bc"})
    assert DirectorySource(a).snapshot().revision != DirectorySource(b).snapshot().revision


def test_revision_ignores_files_that_are_not_read(config: Path) -> None:
    before = DirectorySource(config).snapshot().revision
    (config / "README.md").write_bytes(b"changed\n")
    (config / ".github/workflows/ci.yaml").write_bytes(b"changed\n")
    assert DirectorySource(config).snapshot().revision == before


# --- revisions other than the working files -------------------------------------------------------

@pytest.mark.parametrize("rev", ["main", "HEAD~1", "v1.0", "0123456"])
def test_a_git_revision_is_refused(config: Path, rev: str) -> None:
    with pytest.raises(SourceError, match="Git repository") as info:
        DirectorySource(config).snapshot(rev)
    assert rev in str(info.value)


def test_head_means_the_working_files(config: Path) -> None:
    source = DirectorySource(config)
    assert source.snapshot("HEAD") == source.snapshot(None) == source.snapshot()


def test_refresh_is_harmless(config: Path) -> None:
    source = DirectorySource(config)
    before = source.snapshot()
    source.refresh()
    assert source.snapshot() == before


# --- symbolic links -------------------------------------------------------------------------------

def test_link_to_a_file_inside_is_read(config: Path) -> None:
    (config / "link.yaml").symlink_to("mesh.yaml")
    (config / "clusters/east/up.yml").symlink_to("../../mesh.yaml")
    (config / "alias.yaml").symlink_to(config / "README.md")  # absolute, inside, non-YAML target
    files = DirectorySource(config).snapshot().files
    assert files["link.yaml"] == MESH
    assert files["clusters/east/up.yml"] == MESH
    assert files["alias.yaml"] == b"# config\n"


def test_link_to_a_folder_inside_is_not_read_twice(config: Path) -> None:
    (config / "again").symlink_to("clusters", target_is_directory=True)
    files = DirectorySource(config).snapshot().files
    assert files == EXPECTED  # the real folder is read; the link adds nothing


def test_root_given_through_a_link(config: Path, tmp_path: Path) -> None:
    (tmp_path / "via").symlink_to(config, target_is_directory=True)
    (config / "link.yaml").symlink_to("mesh.yaml")
    files = DirectorySource(tmp_path / "via").snapshot().files
    assert files == {**EXPECTED, "link.yaml": MESH}


@pytest.mark.parametrize("make", [
    pytest.param(lambda root, out: (root / "evil.yaml").symlink_to(out / "secret.yaml"), id="file-absolute"),
    pytest.param(lambda root, out: (root / "evil.yaml").symlink_to("../outside/secret.yaml"), id="file-relative"),
    pytest.param(lambda root, out: (root / "clusters/evil.yml").symlink_to("../../outside/secret.yaml"),
                 id="file-nested"),
    pytest.param(lambda root, out: (root / "passwd.yaml").symlink_to("/etc/passwd"), id="file-etc-passwd"),
    pytest.param(lambda root, out: (root / "ext").symlink_to(out, target_is_directory=True), id="folder"),
    pytest.param(lambda root, out: (root / "clusters/ext").symlink_to("../../outside", target_is_directory=True),
                 id="folder-nested"),
    pytest.param(lambda root, out: (root / "up").symlink_to("..", target_is_directory=True), id="folder-parent"),
    pytest.param(lambda root, out: (root / "sib.yaml").symlink_to("../config2/x.yaml"), id="sibling-same-prefix"),
])
def test_links_pointing_outside_are_refused(config: Path, tmp_path: Path, make) -> None:
    outside = write(tmp_path / "outside", {"secret.yaml": b"kind: Secret\n"})
    write(tmp_path / "config2", {"x.yaml": b"kind: Neighbour\n"})
    make(config, outside)
    with pytest.raises(SourceError, match="outside"):
        DirectorySource(config).snapshot()


def test_outside_link_error_names_the_link(config: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside", {"secret.yaml": b"kind: Secret\n"})
    (config / "evil.yaml").symlink_to("../outside/secret.yaml")
    with pytest.raises(SourceError) as info:
        DirectorySource(config).snapshot()
    assert "evil.yaml" in str(info.value)


def test_broken_link_is_a_source_error(config: Path) -> None:
    (config / "broken.yaml").symlink_to("missing.yaml")
    with pytest.raises(SourceError, match="broken") as info:
        DirectorySource(config).snapshot()
    assert "broken.yaml" in str(info.value)


def test_link_loop_is_a_source_error(config: Path) -> None:
    (config / "a.yaml").symlink_to("b.yaml")
    (config / "b.yaml").symlink_to("a.yaml")
    with pytest.raises(SourceError):
        DirectorySource(config).snapshot()


def test_links_that_are_not_read_are_ignored(config: Path) -> None:
    (config / "passwd").symlink_to("/etc/passwd")               # not a YAML name
    (config / ".github" / "evil.yaml").symlink_to("/etc/passwd")  # inside a dot-folder
    (config / "gone.txt").symlink_to("missing")
    assert DirectorySource(config).snapshot().files == EXPECTED


# --- files that cannot be read --------------------------------------------------------------------

def test_unreadable_file_is_a_source_error(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket cannot be read by anyone, root included.
    monkeypatch.chdir(config / "clusters")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("socket.yaml")
        with pytest.raises(SourceError, match="cannot read") as info:
            DirectorySource(config).snapshot()
    assert "socket.yaml" in str(info.value)

    # chmod 000 blocks reads only for other users than root: checked only where it does.
    (config / "clusters/socket.yaml").unlink()
    locked = config / "locked.yaml"
    locked.write_bytes(MESH)
    locked.chmod(0)
    try:
        try:
            locked.read_bytes()
        except PermissionError:
            with pytest.raises(SourceError, match="cannot read") as info:
                DirectorySource(config).snapshot()
            assert "locked.yaml" in str(info.value)
    finally:
        locked.chmod(0o644)


def test_a_fifo_named_like_yaml_is_refused_without_blocking(config: Path) -> None:
    """A FIFO (or a device) named *.yaml would block every command and the daemon on its read: the
    source refuses it at once, naming it."""
    fifo = config / "clusters" / "pipe.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(SourceError, match="not a regular file") as info:
        DirectorySource(config).snapshot()
    assert time.monotonic() - started < 5 and "pipe.yaml" in str(info.value)
