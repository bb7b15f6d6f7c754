"""`galleon validate` as a user runs it: a real process, its output and its exit code."""
from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from tests.conftest import ROOT, SAMPLE_REPO

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<level>error|warning) (?P<code>[A-Z]+\d{4}) "
                  r"(?P<kind>\S+) (?P<ns>\S+)/(?P<name>\S+): (?P<message>.+)$")


def galleon(*args: str, cwd=ROOT, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "GALLEON_STATE_DIR": str(cwd / ".state-test")} if cwd != ROOT else None
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_sample_repo_is_valid_and_summarized():
    result = galleon("validate", SAMPLE_REPO, "--summary")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cluster-c" in result.stdout and "network-2" in result.stdout
    assert "reviews.bookinfo.svc.cluster.local" in result.stdout
    assert re.search(r"Cross-cluster names .*\n  ratings\.bookinfo\.global +240\.0\.\d+\.\d+\n", result.stdout)
    assert "valid" in result.stderr and "0 errors" in result.stderr


def write_repo(path, files: dict[str, str]):
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


BROKEN = {
    "vs.yaml": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: ns}\n"
               "spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: missing.example.com}\n      weight: -1\n",
    "b/se.yaml": "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\n"
                 "spec:\n  hsots: [x]\n",
}


def test_errors_exit_1_with_one_line_per_finding(tmp_path):
    result = galleon("validate", write_repo(tmp_path, BROKEN))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["file"], m["line"], m["code"]) for m in parsed] == [
        ("b/se.yaml", "4", "IST0106"), ("b/se.yaml", "5", "IST0106"),
        ("vs.yaml", "8", "IST0101"), ("vs.yaml", "9", "GAL0103")]
    assert "'hosts' is required" in parsed[0]["message"] and "did you mean 'hosts'" in parsed[1]["message"]
    assert parsed[2]["kind"] == "VirtualService" and parsed[2]["ns"] == "ns" and parsed[2]["name"] == "a"
    assert "INVALID" in result.stderr


def test_warnings_alone_exit_0(tmp_path):
    repo = write_repo(tmp_path, {"x.yaml": "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                          "metadata: {name: d}\n"})
    result = galleon("validate", repo)
    assert result.returncode == 0 and "warning GAL0003" in result.stdout


def test_json_has_the_same_findings_and_is_deterministic(tmp_path):
    repo = write_repo(tmp_path, BROKEN)
    first, second = galleon("validate", repo, "--format", "json"), galleon("validate", repo, "--format", "json")
    assert first.returncode == 1 and first.stdout == second.stdout
    doc = json.loads(first.stdout)
    assert doc["valid"] is False and doc["errors"] == 4 and doc["files"] == 2
    assert [(f["file"], f["line"], f["code"], f["level"]) for f in doc["findings"]] == [
        ("b/se.yaml", 4, "IST0106", "error"), ("b/se.yaml", 5, "IST0106", "error"), ("vs.yaml", 8, "IST0101", "error"),
        ("vs.yaml", 9, "GAL0103", "error")]
    assert doc["revision"].startswith("sha256:")


def commit_all(path, message="c"):
    repo = pygit2.Repository(str(path)) if (path / ".git").exists() else pygit2.init_repository(str(path))
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("t", "t@example.com", 1_700_000_000, 0)
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return repo.create_commit("HEAD", sig, sig, message, repo.index.write_tree(), parents)


def test_git_revisions(tmp_path):
    write_repo(tmp_path, BROKEN)
    bad = commit_all(tmp_path)
    (tmp_path / "vs.yaml").unlink()
    (tmp_path / "b/se.yaml").unlink()
    write_repo(tmp_path, {"c.yaml": (SAMPLE_REPO / "mesh" / "clusters.yaml").read_text()})
    (tmp_path / "n.yaml").write_text((SAMPLE_REPO / "mesh" / "networks.yaml").read_text())
    good = commit_all(tmp_path)
    assert galleon("validate", tmp_path).returncode == 0
    assert galleon("validate", tmp_path, "--rev", "HEAD~1").returncode == 1
    assert galleon("validate", tmp_path, "--rev", str(bad)[:8]).returncode == 1
    result = galleon("validate", tmp_path, "--rev", str(good), "--format", "json")
    assert json.loads(result.stdout)["revision"] == str(good)


def test_a_checkout_is_read_at_its_commit_and_its_uncommitted_edits_are_named(tmp_path):
    write_repo(tmp_path, {"c.yaml": (SAMPLE_REPO / "mesh" / "clusters.yaml").read_text()})
    commit_all(tmp_path)
    assert "galleon: warning" not in galleon("validate", tmp_path).stderr
    (tmp_path / "c.yaml").write_text("not: [valid\n")
    (tmp_path / "new.yaml").write_text("kind: Nothing\n")
    (tmp_path / "notes.txt").write_text("not YAML, not said\n")
    result = galleon("validate", tmp_path)
    assert result.returncode == 0, result.stderr  # the commit is what is read
    assert ("is read at its HEAD commit, not as its working tree: 2 YAML files changed since (c.yaml, new.yaml) "
            "are not read") in result.stderr
    assert "galleon: warning" not in galleon("validate", tmp_path, "--rev", "HEAD").stderr  # a revision asked for
    # what a read skips is not named (a dot-folder's files); a damaged index is said, never a traceback
    (tmp_path / "new.yaml").unlink()
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "ci.yaml").write_text("on: push\n")
    assert "1 YAML file changed since (c.yaml) is not read; commit it" in galleon("validate", tmp_path).stderr
    (tmp_path / ".git" / "index").write_bytes(b"not an index")
    damaged = galleon("validate", tmp_path)
    assert damaged.returncode == 0 and "Traceback" not in damaged.stderr, damaged.stderr
    assert "whether files changed since cannot be told" in damaged.stderr


def test_remote_url_is_mirrored_into_the_state_dir(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    write_repo(origin, BROKEN)
    commit_all(origin)
    work = tmp_path / "work"
    work.mkdir()
    result = galleon("validate", f"file://{origin}", "--format", "json", cwd=work)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["errors"] == 4
    (mirror,) = (work / ".state-test" / "git").iterdir()
    # A mirror that holds what was fetched is kept when the remote cannot be reached.
    origin.rename(tmp_path / "moved")
    one_line_error(galleon("validate", f"file://{origin}", cwd=work), "fetch failed")
    assert list(pygit2.Repository(str(mirror)).references)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("galleon: error: "), lines
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_path(tmp_path):
    one_line_error(galleon("validate", tmp_path / "nope"), "nope", "no such file")


def test_a_source_without_yaml_is_refused_not_valid(tmp_path):
    """A mistyped path in CI must not go green: nothing to check is exit 2, not "valid"."""
    (tmp_path / "README.md").write_text("not configuration\n")
    one_line_error(galleon("validate", tmp_path), str(tmp_path), "no .yaml or .yml file")
    one_line_error(galleon("compile", tmp_path, "--cluster", "cluster-a"), "no .yaml or .yml file")
    commit_all(tmp_path)
    one_line_error(galleon("validate", tmp_path, "--rev", "HEAD"), f"{tmp_path} at HEAD", "no .yaml or .yml file")
    one_line_error(galleon("validate", "-", stdin=" \n"), "standard input (-) is empty")


def test_unknown_revision(tmp_path):
    write_repo(tmp_path, BROKEN)
    commit_all(tmp_path)
    one_line_error(galleon("validate", tmp_path, "--rev", "release-9"), "release-9", "unknown revision")


def test_unreachable_remote(tmp_path):
    one_line_error(galleon("validate", f"file://{tmp_path}/absent.git", cwd=tmp_path), "absent.git", "fetch failed")
    assert list((tmp_path / ".state-test" / "git").iterdir()) == []  # no empty mirror left behind


@pytest.mark.parametrize("name, data, words", [
    ("bin.yaml", b"\x00\x01\x02PK", ["bin.yaml", "binary"]),
    ("latin.yaml", b"a: 1\nname: caf\xe9\n", ["latin.yaml", "line 2", "UTF-8"]),
    ("bomb.yaml", ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{','.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefg", "bcdefgh"))).encode(),
     ["bomb.yaml", "YAML bomb"]),
])
def test_unreadable_files(tmp_path, name, data, words):
    (tmp_path / name).write_bytes(data)
    one_line_error(galleon("validate", tmp_path), *words)


def test_file_over_10_mb(tmp_path):
    (tmp_path / "huge.yaml").write_bytes(b"# padding\n" * (1024 * 1024 + 10))
    one_line_error(galleon("validate", tmp_path), "huge.yaml", "10 MB")


def test_symlink_outside_is_not_followed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "secret.yaml").write_text("a: 1\n")
    (repo / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    one_line_error(galleon("validate", repo), "link.yaml", "outside")


def test_help_explains_itself():
    top = galleon("--help")
    assert top.returncode == 0 and "validate" in top.stdout and "Exit codes" in top.stdout
    sub = galleon("validate", "--help")
    assert sub.returncode == 0
    for word in ("--rev", "--format", "FILE:LINE", "--ssh-key", "GALLEON_GIT_TOKEN"):
        assert word in sub.stdout


def test_version_is_the_installed_packages():
    from importlib.metadata import version
    result = galleon("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"galleon {version('galleon')}\n", "")


def test_every_command_is_a_module_that_registers_and_runs_itself():
    """reconciler/cli/ is a dispatcher over one module per command: each adds its own subparser
    (register) and runs it (run); `galleon --help` lists them all, in the dispatcher's order."""
    from reconciler import cli
    helpers = {"__init__", "__main__", "common", "options"}
    names = [module.__name__.rpartition(".")[2] for module in cli.COMMANDS]
    assert sorted(names) == sorted(p.stem for p in (ROOT / "reconciler" / "cli").glob("*.py") if p.stem not in helpers)
    for name, module in zip(names, cli.COMMANDS):
        commands = argparse.ArgumentParser(prog="galleon").add_subparsers()
        assert module.register(commands).prog == f"galleon {name}"
        assert list(inspect.signature(module.run).parameters) == ["args"]
    top = galleon("--help")
    assert top.returncode == 0 and re.findall(r"^    (\S+)", top.stdout, re.MULTILINE) == names


def test_the_parser_is_built_without_the_heavy_modules_commands_import_when_they_run():
    """Every command module is imported for `galleon --help`: none may import Git, gRPC, the
    Kubernetes client, cryptography, jinja2 or the compiler's validation at its top."""
    heavy = ("pygit2", "grpc", "kubernetes", "cryptography", "jinja2", "compiler.validate", "compiler.model")
    script = (f"import sys; from reconciler.cli import build_parser; build_parser(); "
              f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and result.stdout == "[]\n", result.stdout + result.stderr


def test_bad_arguments_exit_2_without_traceback():
    result = galleon("validate", SAMPLE_REPO, "--format", "xml")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "invalid choice" in result.stderr


def test_compile_prints_a_config_dump_deterministically():
    first = galleon("compile", SAMPLE_REPO, "--cluster", "cluster-c")
    second = galleon("compile", SAMPLE_REPO, "--cluster", "cluster-c")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    dump = json.loads(first.stdout)
    assert sorted(dump) == ["clusters", "endpoints", "listeners", "routes"]
    names = [c["name"] for c in dump["clusters"]]
    assert "outbound|9080|v3|reviews.bookinfo.svc.cluster.local" in names
    assert all(c["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster" for c in dump["clusters"])
    reviews = next(e for e in dump["endpoints"] if e["clusterName"] == "outbound|9080||reviews.bookinfo.svc.cluster.local")
    addresses = {ep["endpoint"]["address"]["socketAddress"]["address"]
                 for loc in reviews["endpoints"] for ep in loc["lbEndpoints"]}
    assert "192.0.2.10" in addresses  # network-1's endpoints reach cluster-c through network-1's gateway


def test_compile_router_view_and_output_dir(tmp_path):
    result = galleon("compile", SAMPLE_REPO, "--cluster", "cluster-a", "--node-id",
                     "router~10.1.100.1~ingress.istio-system~istio-system.svc.cluster.local",
                     "--label", "istio=ingressgateway", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clusters.json", "endpoints.json", "listeners.json", "routes.json"]
    listeners = json.loads((tmp_path / "out" / "listeners.json").read_text())
    assert sorted(l["name"] for l in listeners) == ["0.0.0.0_443", "0.0.0.0_80"]
    assert "router in cluster-a" in result.stderr


def test_compile_output_that_cannot_be_a_folder_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("kept\n")
    compile_to = ("compile", SAMPLE_REPO, "--cluster", "cluster-a", "-o")
    one_line_error(galleon(*compile_to, tmp_path / "notes.txt"), "-o", "notes.txt: exists and is not a folder")
    one_line_error(galleon(*compile_to, tmp_path / "notes.txt" / "y"), "notes.txt is a file, not a folder")
    one_line_error(galleon(*compile_to, "/proc/galleon-out"), "/proc/galleon-out", "cannot write")
    assert (tmp_path / "notes.txt").read_text() == "kept\n"


def test_compile_refuses_invalid_revisions_and_unknown_clusters(tmp_path):
    result = galleon("compile", write_repo(tmp_path, BROKEN), "--cluster", "cluster-a")
    assert result.returncode == 1 and result.stdout == "" and "IST0101" in result.stderr
    one_line_error(galleon("compile", SAMPLE_REPO, "--cluster", "cluster-z"), "cluster-z", "cluster-a")
    one_line_error(galleon("compile", SAMPLE_REPO, "--cluster", "cluster-a", "--label", "novalue"), "KEY=VALUE")
    one_line_error(galleon("compile", SAMPLE_REPO, "--cluster", "cluster-a", "--node-id", "bogus"), "node id")
    one_line_error(galleon("compile", SAMPLE_REPO, "--cluster", "cluster-a", "--locality", "a/b/c/d"),
                   "--locality 'a/b/c/d' is not REGION[/ZONE[/SUBZONE]]")


def test_a_reader_that_stops_early_is_not_an_error():
    """`galleon compile ... | head`: the pipe closes under a large output; exit 0, no traceback."""
    process = subprocess.Popen([sys.executable, "-m", "reconciler.cli", "compile", str(SAMPLE_REPO), "--cluster",
                                "cluster-a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()  # the reader is gone before the output comes
    assert process.wait(60) == 0
    assert b"Traceback" not in process.stderr.read()


def test_the_installed_program_leaves_with_its_whole_output_and_exit_code(tmp_path):
    """The `galleon` script ends a one-shot command with os._exit (cli.run): what it printed, more than
    a pipe holds, and the files it wrote must all be there, with the command's exit code."""
    program = Path(sys.executable).parent / "galleon"
    dump = subprocess.run([program, "compile", SAMPLE_REPO, "--cluster", "cluster-c"], capture_output=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert len(dump.stdout) > 65536 and json.loads(dump.stdout)["clusters"]
    (tmp_path / "bad.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                                       "metadata: {name: x, namespace: default}\nspec: {}\n")
    invalid = subprocess.run([program, "validate", tmp_path], capture_output=True, text=True, timeout=120)
    assert invalid.returncode == 1 and "bad.yaml:" in invalid.stderr + invalid.stdout
    out = tmp_path / "out"
    written = subprocess.run([program, "compile", SAMPLE_REPO, "--cluster", "cluster-a", "-o", out],
                             capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    assert json.loads((out / "clusters.json").read_text())


@pytest.mark.parametrize("text, line", [
    ("a: &a {b: 1, <<: *a}\n", 1),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: &s\n  ports:\n  - <<: *s\n", 6),
])
def test_an_anchor_cycle_is_one_line_and_exit_1_not_a_recursion_error(tmp_path, text, line):
    repo = write_repo(tmp_path, {"cycle.yaml": text})
    result = galleon("validate", repo)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    (finding,) = result.stdout.splitlines()
    assert finding.startswith(f"cycle.yaml:{line}: error GAL0001") and "cycle" in finding
