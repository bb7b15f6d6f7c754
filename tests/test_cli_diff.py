"""`galleon diff` as CI runs it: a real process on a real Git repository, its output and exit codes."""
from __future__ import annotations

import json

import pytest

from tests import gitutil
from tests.conftest import SAMPLE_REPO, sample_files
from tests.test_cli import galleon

REVIEWS = "bookinfo/reviews.yaml"


@pytest.fixture
def repo(tmp_path):
    """main: the sample; weights: a weight change; broken: a dangling subset; noop: a comment."""
    repository = gitutil.init(tmp_path / "mesh")
    files = sample_files()
    gitutil.commit(repository, files)
    for branch, old, new in (("weights", b"weight: 50", b"weight: 30"), ("broken", b"subset: v3", b"subset: v9"),
                             ("noop", b"# reviews:", b"# the reviews:")):
        changed = {**files, REVIEWS: files[REVIEWS].replace(old, new, 1)}
        assert changed != files
        gitutil.commit(repository, changed, branch=branch, parents=[repository.references["refs/heads/main"].target])
    return tmp_path / "mesh"


def test_exit_codes_default_and_kubectl_style(repo):
    assert galleon("diff", repo, "main", "weights").returncode == 0
    assert galleon("diff", repo, "main", "noop").returncode == 0
    assert galleon("diff", repo, "main", "weights", "--exit-code").returncode == 1
    assert galleon("diff", repo, "main", "noop", "--exit-code").returncode == 0
    broken = galleon("diff", repo, "main", "broken")
    assert broken.returncode == 1 and "HEAD is invalid" in broken.stdout and "has errors" in broken.stderr
    assert galleon("diff", repo, "main", "broken", "--exit-code").returncode == 3


def test_unreadable_input_is_exit_2_with_one_line(repo):
    for args, message in ((("main", "nope"), "unknown revision 'nope'"),
                          (("main", "weights", "--cluster", "cluster-z"), "not a Cluster at either revision"),
                          (("main", "weights", "--max-bytes", "100"), "--max-bytes must be at least")):
        result = galleon("diff", repo, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    for base, head in (("HEAD~1", "HEAD"), ("HEAD", "HEAD~1")):
        directory = galleon("diff", SAMPLE_REPO, base, head)
        assert directory.returncode == 2 and directory.stderr.count("\n") == 1, directory.stderr
        assert "not a Git repository; galleon diff compares two revisions of one" in directory.stderr
        assert "--rev" not in directory.stderr  # diff has no --rev


def test_json_is_deterministic_and_written_to_a_file(repo, tmp_path):
    out = tmp_path / "preview.json"
    first = galleon("diff", repo, "main", "weights", "--format", "json", "-o", out, "--cluster", "cluster-a")
    assert first.returncode == 0 and first.stdout == ""
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["clusters"]] == ["cluster-a"]
    (shift,) = data["biggest_shifts"]
    # weights 50/40/10 -> 30/40/10: v1 goes from 50 % to 30/80 = 37.5 % (weights need not sum to 100)
    assert shift["service"] == "reviews.bookinfo.svc.cluster.local:9080" and shift["shift"] == 12.5
    again = galleon("diff", repo, "main", "weights", "--format", "json", "--cluster", "cluster-a")
    assert again.stdout == out.read_text()


def test_an_output_file_that_cannot_be_written_is_one_line(repo, tmp_path):
    (tmp_path / "notes.txt").write_text("kept\n")
    result = galleon("diff", repo, "main", "weights", "-o", tmp_path / "notes.txt" / "preview.md")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert f"-o {tmp_path}/notes.txt/preview.md: {tmp_path}/notes.txt is a file, not a folder" in result.stderr


def test_help_explains_the_command():
    result = galleon("diff", "--help")
    assert result.returncode == 0
    for words in ("BASE", "HEAD", "--max-bytes", "--exit-code", "traffic", "65,535"):
        assert words in result.stdout
    assert "plain directory" not in result.stdout  # SOURCE is a Git repository
