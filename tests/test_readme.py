"""The README is the user's reference: it must name every finding code the validator can emit."""
from compiler import parse
from compiler.validate import schema
from compiler.validate.framework import ANALYZERS
from tests.conftest import ROOT


def test_every_code_is_documented():
    readme = (ROOT / "README.md").read_text()
    codes = {a.code for a in ANALYZERS} | {schema.CODE} | {
        value for name, value in vars(parse).items() if name.startswith("CODE_")}
    missing = sorted(code for code in codes if f"| {code} |" not in readme)
    assert not missing, f"README's findings table lacks {missing}"


def test_the_diff_worked_example_is_real_output(tmp_path):
    """The README's `galleon diff` example, made again from the same commits."""
    import re

    from compiler.diff import build_preview
    from compiler.revision import load
    from reconciler.preview import render_markdown
    from reconciler.sources import LocalGitSource
    from tests import gitutil
    from tests.conftest import sample_files, with_pod

    readme = (ROOT / "README.md").read_text()
    shown = readme.split("````markdown\n", 1)[1].split("\n````", 1)[0]
    files = sample_files()
    repo = gitutil.init(tmp_path / "repo")
    gitutil.commit(repo, files)
    reviews = files["bookinfo/reviews.yaml"].decode()
    reviews = reviews.replace("weight: 50", "weight: 30", 1).replace("weight: 40", "weight: 60", 1)
    running = with_pod(files["running/cluster-c.yaml"].decode(), "reviews", "v2", "10.3.4.2", "cluster-c",
                       name="reviews-v2-4d2b1")
    gitutil.commit(repo, {**files, "bookinfo/reviews.yaml": reviews.encode(), "running/cluster-c.yaml": running.encode()},
                   branch="canary", parents=[repo.references["refs/heads/main"].target])
    source = LocalGitSource(tmp_path / "repo")
    preview = build_preview(load(source.snapshot("main")), load(source.snapshot("canary")),
                            ["cluster-c"])
    commit_ids = re.compile(r"`[0-9a-f]{12}` → `[0-9a-f]{12}`")
    assert commit_ids.sub("ids", render_markdown(preview).strip()) == commit_ids.sub("ids", shown.strip())
