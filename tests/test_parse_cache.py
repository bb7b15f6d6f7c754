"""The cache of parsed files (reconciler/parse_cache.py, compiler/records.py), on a real disk.

What matters is that a revision read through the cache gives exactly what parsing it gives
(objects, lines, findings, a preview), that only unchanged files are taken from it, and that
nothing a damaged, foreign or unwritable cache holds ever reaches the output.
"""
from __future__ import annotations

import marshal
import os
import time

import pytest

from compiler import parse as parse_module
from compiler import records
from compiler.parse import parse
from compiler.snapshot import Snapshot
from compiler.revision import load
from compiler.validate.framework import LOCAL_STAMP
from reconciler import parse_cache
from reconciler.cli import main
from reconciler.parse_cache import ParseCache
from tests import gitutil
from tests.conftest import sample_files
from tests.test_cli import BROKEN, write_repo
from tests.test_corpus import CASES

VS_TO_REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-reviews, namespace: bookinfo}
spec:
  hosts: [front.bookinfo.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.bookinfo.svc.cluster.local, port: {number: 9080}}
"""


def corpus_snapshot() -> Snapshot:
    """Every invalid case at once: parse errors, schema errors and every analyzer's findings."""
    return Snapshot("corpus", {f"{case.stem}/{case.name}": case.read_bytes() for case in CASES})


def findings_text(result) -> list[str]:
    return [f.text() for f in result.findings]


def no_parsing(monkeypatch):
    """Make parsing a file fail, so a test shows that a file came from the cache."""
    def refuse(file, data, known):
        raise AssertionError(f"{file} was parsed, not read from the cache")
    monkeypatch.setattr(parse_module, "_parse_file", refuse)


def read_through(cache: ParseCache, snapshot: Snapshot):
    result = load(snapshot, stored=cache.stored(snapshot))
    cache.keep(result.parsed)
    return result


@pytest.mark.parametrize("snapshot", [Snapshot("sample", sample_files()), corpus_snapshot()], ids=["sample", "corpus"])
def test_a_revision_read_back_from_the_cache_is_the_revision_parsed(snapshot, tmp_path, monkeypatch):
    parsed = load(snapshot)
    first = read_through(ParseCache(tmp_path, print), snapshot)  # writes the records
    no_parsing(monkeypatch)
    again = read_through(ParseCache(tmp_path, print), snapshot)  # a new run: every file from the cache
    assert findings_text(again) == findings_text(first) == findings_text(parsed)
    assert bool(parsed.findings) == (snapshot.revision == "corpus"), "the corpus has findings; the sample none"
    for before, after in zip(parsed.parsed.objects, again.parsed.objects, strict=True):
        assert (after.key, after.body, after.file, after.line, after.document, after.digest) == \
               (before.key, before.body, before.file, before.line, before.document, before.digest)
        assert after.line_of(("spec",)) == before.line_of(("spec",))


def test_a_record_is_plain_data_that_marshal_stores(sample_snapshot):
    result = parse(sample_snapshot)
    load(sample_snapshot)  # not these objects: records must hold without validation too
    for file, parsed in result.files.items():
        record = records.file_record(parsed)
        assert marshal.loads(marshal.dumps(record)) == record
        restored = records.restore(file, parsed.data, record)
        assert [o.body for o in restored.objects] == [o.body for o in parsed.objects]


def test_only_the_changed_file_is_parsed_again(tmp_path, monkeypatch):
    files = dict(sample_files())
    cache = ParseCache(tmp_path, print)
    read_through(cache, Snapshot("one", files))
    changed = next(name for name in files if name.endswith(".yaml"))
    files[changed] = files[changed] + b"\n# a comment\n"
    parsed_now: list[str] = []
    real = parse_module._parse_file

    def counting(file, data, known):
        parsed_now.append(file)
        return real(file, data, known)
    monkeypatch.setattr(parse_module, "_parse_file", counting)
    result = read_through(ParseCache(tmp_path, print), Snapshot("two", files))
    assert parsed_now == [changed]
    assert result.valid


def test_a_check_that_depends_on_other_files_is_found_again_and_stored_again(tmp_path, monkeypatch):
    """The VirtualService's file does not change, but the host it routes to goes: its stored problems
    were found against other facts, so it is checked again, and the new result is what is stored."""
    files = {**sample_files(), "extra/vs.yaml": VS_TO_REVIEWS.encode()}
    assert read_through(ParseCache(tmp_path, print), Snapshot("one", files)).valid
    without = {name: data for name, data in files.items() if name != "bookinfo/reviews.yaml"}
    assert len(without) < len(files)
    fresh = load(Snapshot("two", without))
    assert any(f.code == "IST0101" and f.file == "extra/vs.yaml" for f in fresh.findings)
    assert findings_text(read_through(ParseCache(tmp_path, print), Snapshot("two", without))) == findings_text(fresh)
    stored = ParseCache(tmp_path, print).stored(Snapshot("two", without))["extra/vs.yaml"].objects[0].checks
    assert "destination-host-not-found" in str(stored[LOCAL_STAMP][1])  # the problem found the second time
    no_parsing(monkeypatch)
    assert findings_text(read_through(ParseCache(tmp_path, print), Snapshot("two", without))) == findings_text(fresh)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "other format"])
def test_a_damaged_record_is_a_miss_and_is_written_again(damage, tmp_path):
    snapshot = Snapshot("sample", sample_files())
    expected = findings_text(read_through(ParseCache(tmp_path, print), snapshot))
    victims = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(victims) == len(snapshot.files)
    for victim in victims:
        blob = victim.read_bytes()
        if damage == "truncate":
            victim.write_bytes(blob[: len(blob) // 2])
        elif damage == "flip":
            victim.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
        elif damage == "garbage":
            victim.write_bytes(os.urandom(len(blob)))
        else:  # a well-formed file of another record format
            payload = marshal.dumps((records.FORMAT + 1, (), [], []))
            victim.write_bytes(parse_cache._frame(payload))
    cache = ParseCache(tmp_path, print)
    assert cache.stored(snapshot) == {}
    assert findings_text(read_through(cache, snapshot)) == expected
    assert len(ParseCache(tmp_path, print).stored(snapshot)) == len(snapshot.files)  # rewritten


def test_records_of_another_galleon_live_apart_and_go_when_unused_for_a_week(tmp_path, monkeypatch):
    snapshot = Snapshot("sample", sample_files())
    read_through(ParseCache(tmp_path, print), snapshot)
    ours = parse_cache.salt()
    recent, stale = tmp_path / "recent0000000000", tmp_path / "stale00000000000"
    for folder in (recent, stale):
        (folder / "ab").mkdir(parents=True)
        (folder / "ab" / "record").write_bytes(b"x")
    week_ago = time.time() - parse_cache.UNUSED_SALT_SECONDS - 60
    os.utime(stale, (week_ago, week_ago))
    monkeypatch.setattr(parse_cache, "salt", lambda: "another00000000")
    other = ParseCache(tmp_path, print)
    assert other.stored(snapshot) == {}  # another version's records are not read
    read_through(other, snapshot)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ours, "another00000000", recent.name])


def test_the_least_recently_used_records_go_first_beyond_the_limit(tmp_path):
    # Files of comments alone: records of one size, whatever else the snapshot holds.
    files = {f"f{i}.yaml": f"# file {i}\n".encode() for i in range(6)}
    read_through(ParseCache(tmp_path, print), Snapshot("all", files))
    records_now = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(records_now) == 6 and len({p.stat().st_size for p in records_now}) == 1
    hour_ago = time.time() - 3600
    for path in records_now:
        os.utime(path, (hour_ago, hour_ago))
    small = ParseCache(tmp_path, print, limit_bytes=3 * records_now[0].stat().st_size)
    used = {"f4.yaml": files["f4.yaml"], "f1.yaml": files["f1.yaml"], "new.yaml": b"# new\n"}
    read_through(small, Snapshot("used", used))
    left = ParseCache(tmp_path, print).stored(Snapshot("all", {**files, "new.yaml": b"# new\n"}))
    assert sorted(left) == ["f1.yaml", "f4.yaml", "new.yaml"]


def test_an_unwritable_cache_is_turned_off_with_one_warning(tmp_path):
    blocked = tmp_path / "parses"
    blocked.write_text("a file where the cache's folder would be")
    warnings: list[str] = []
    cache = ParseCache(blocked, warnings.append)
    snapshot = Snapshot("sample", sample_files())
    assert read_through(cache, snapshot).valid
    read_through(cache, Snapshot("other", {**sample_files(), "x.yaml": b"# x\n"}))
    assert len(warnings) == 1 and str(blocked) in warnings[0] and "going on without it" in warnings[0]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_galleon_validate_reads_unchanged_files_from_the_state_dir(tmp_path, capsys, monkeypatch):
    repo, state = write_repo(tmp_path / "repo", BROKEN), tmp_path / "state"
    first = run_cli(capsys, "validate", repo, "--state-dir", state)
    assert first[0] == 1 and len(list((state / "parses").rglob("*/*/*"))) == len(BROKEN)
    no_parsing(monkeypatch)
    assert run_cli(capsys, "validate", repo, "--state-dir", state) == first
    with pytest.raises(AssertionError, match="was parsed"):
        main(["validate", str(repo), "--state-dir", str(state), "--no-cache"])


def test_galleon_validate_no_cache_writes_nothing(tmp_path, capsys):
    repo, state = write_repo(tmp_path / "repo", BROKEN), tmp_path / "state"
    assert run_cli(capsys, "validate", repo, "--state-dir", state, "--no-cache")[0] == 1
    assert not (state / "parses").exists()


def test_a_preview_through_the_cache_is_the_preview_parsed(tmp_path, capsys):
    """`galleon diff` of a weight change in a real Git repository: cold, warm and without the cache."""
    files = sample_files()
    changed = next(n for n, d in files.items() if b"weight: 90" in d)
    repo = gitutil.init(tmp_path / "git")
    first = gitutil.commit(repo, files)
    second = gitutil.commit(repo, {**files, changed: files[changed].replace(b"weight: 90", b"weight: 80")
                                   .replace(b"weight: 10", b"weight: 20")})
    state = tmp_path / "state"
    runs = [run_cli(capsys, "diff", tmp_path / "git", first, second, "--state-dir", state, *extra)
            for extra in ([], [], ["--no-cache"])]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0] == 0 and "10% → **20%**" in runs[0][1]


def test_temporary_files_a_crash_left_go_and_ones_being_written_stay(tmp_path):
    files = {"a.yaml": b"# a\n"}
    read_through(ParseCache(tmp_path, print), Snapshot("a", files))
    folder = next(p for p in tmp_path.rglob("*") if p.is_file()).parent
    old, current = folder / ".left-by-a-crash.tmp", folder / ".being-written.tmp"
    for path in (old, current):
        path.write_bytes(b"half a record")
    long_ago = time.time() - parse_cache.STALE_TEMPORARY_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    read_through(ParseCache(tmp_path, print), Snapshot("b", {**files, "b.yaml": b"# b\n"}))
    assert not old.exists() and current.exists()
