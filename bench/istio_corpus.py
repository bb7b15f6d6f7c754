"""Measure Galleon against Istio's own material (a measurement that prints figures, not a test).

Galleon's rule is "accept what Istio accepts; flag what Istio's analyzers flag, with Istio's code
and level". This script checks that rule on configuration nobody on the project wrote, read
straight from two Git snapshots (no work tree needed):

1. ``analyzers``: Istio's analyzer test grid (``pkg/config/analysis/analyzers/analyzers_test.go``,
   ``testGrid``). Each test case is one configuration: its ``inputFiles`` (its
   ``meshNetworksFile``, Istio's mesh networks format, is wrapped as a Galleon MeshNetworks named
   ``istio-system/meshnetworks``, the origin Istio gives it; its ``meshConfigFile`` is noted, not
   read). Message names map to codes and levels with ``pkg/config/analysis/msg/messages.yaml``.
2. ``validation``: Istio's CRD validation cases (``pkg/config/validation/testdata/crds/*-valid.yaml``
   and ``*-invalid.yaml``) of the kinds Galleon reads. Istio validates each object on its own, so
   each object is one configuration (its own file, at its own lines; the ``_err`` key the test
   data adds is commented out).
3. ``samples``: every folder of ``samples/`` holding Kubernetes YAML. Bookinfo specially:
   ``samples/bookinfo/platform/kube/bookinfo.yaml`` with each ``samples/bookinfo/networking/*.yaml``
   in turn, plus the rules of ``destination-rule-all.yaml`` the file does not redefine (the step
   Bookinfo's docs take before any routing file: it defines the subsets they route to), unless
   ``--bookinfo-literal`` is given.
4. ``book``: every folder of the "Istio in Action" examples holding Kubernetes YAML.

A folder (parts 3 and 4) is one configuration, unless two of its files define the same object
(the same kind, namespace and name: successive versions of one object, which ``kubectl apply``
replaces in turn). Then each such file is a configuration of its own, with what the folder's other
files define that it does not: what applying the whole folder, that file last, leaves (the other
files' documents that define an object already taken are blanked, their lines kept, so findings
keep their lines; files in name order). Helm templates, files that are not YAML and YAML that holds
no Kubernetes object are skipped, and listed. Objects without a namespace are in ``default``, as
Galleon reads them, but for the book's, which the book applies with ``kubectl apply -n
istioinaction`` (its fully qualified hosts name that namespace): those get that namespace, written
into their metadata (a line more where the metadata is a block). The book's services
(``services/*/kubernetes/``), which a reader deploys before any chapter's files, are under every
other folder's configuration, as Bookinfo's platform manifests are under its networking files.

Figures, per part and in total:

- configurations, files and objects read (objects: Kubernetes documents; "Galleon objects": those
  of the kinds Galleon reads); files Galleon refuses (``compiler.parse.UnreadableFile``) are
  counted and left out of their configuration.
- **Galleon errors**, each counted once per part however many configurations give it, and how many
  of them are justified, and why; the rest are **false errors** (Galleon errors on configurations
  Istio accepts), printed grouped by code. Parts 2 (``-valid``), 3 and 4: Istio accepts these
  configurations as a cluster would run them (a sample may name a Service the cluster has, such as
  ``istiod``), so every error is false, but one an *intrinsic* oracle (below: IST0109, IST0111,
  IST0145, conflicts among the configuration's own objects that Istio's analyzer reports whatever
  the cluster holds) predicts: two files of one folder may be alternatives never applied together. Part 1: each test case runs ONE of Istio's analyzers on input
  Istio's validation never saw, so an error is justified, in this order, by:

  1. **Istio's expected messages**: some test case reading the same file expects its code on its
     object (kind, namespace, name). (The figure ``justified_errors``, as before.)
  2. **an oracle**: one of Istio's rules, computed by this script from its own reading of the
     configuration's YAML (PyYAML, with lines; never Galleon's output), predicts the same code on
     the same object (at the same line for IST0101): IST0101 host not found (DestinationHostAnalyzer:
     no ServiceEntry host or Service ``name.ns.svc.cluster.local`` the VirtualService sees, short
     hosts expanded with its namespace, exportTo as Istio reads it), subset not found
     (DestinationRuleAnalyzer), gateway not found (GatewayAnalyzer: no Istio or Kubernetes Gateway of
     that namespace/name); IST0109 (two mesh VirtualServices, both exported everywhere, list the same
     FQDN host; other exportTo: no verdict); IST0111 (two Sidecars of one namespace without a
     workloadSelector, or with one without labels); IST0145 (two Gateways of equal selectors have a server
     on the same port number, with an identical host and bind). Where this reading and Istio's test
     harness differ, the oracle justifies less: objects without a namespace are in ``default``, and
     the ingress Service Istio's harness adds counts as declared. Each oracle is also checked on
     Istio's own test cases of the analyzer it stands for: what it predicts there that Istio does
     not expect is printed (none, at the time of writing).
  3. **the reviewed list** (``istio_corpus_reviewed.txt``): errors reviewed by hand against the
     specs of Istio's validation and analyzers and Kubernetes' API, each with its reason; listed only
     where Istio's webhook or CRD, another of Istio's analyzers or Kubernetes' API clearly refuses
     or flags the same input. An entry applies only while its line still holds the text it names;
     an entry that meets no error is printed.

  An error two configurations give is false when either leaves it unjustified. Figures: errors,
  justified by each source (by oracle, by reason), false; ``--all`` lists every justified error.
- Part 1, **Istio's messages on the kinds Galleon reads** (VirtualService, DestinationRule, Gateway,
  ServiceEntry, WorkloadEntry, Sidecar of networking.istio.io; v1 Service and Pod; apps
  Deployment; MeshNetworks): how many, how many Galleon reports (same code on the same
  kind/namespace/name, any level), how many at the same level; the missed ones by code.
- Part 2, ``-invalid``: how many objects Istio rejects that Galleon flags with at least one error;
  the others are printed with the error Istio gives.
- Part 3, **Bookinfo**: one line per configuration (``bookinfo.yaml`` with each networking file):
  Galleon's errors and warnings (findings of any other level), and how many have no error.

Run it from the repository root with the project's virtualenv (it reads the compiler on
``sys.path``, so ``PYTHONPATH`` picks a worktree)::

    .venv/bin/python bench/istio_corpus.py                       # all four parts
    .venv/bin/python bench/istio_corpus.py /path/to/istio/repo --book /path/to/book/repo
    .venv/bin/python bench/istio_corpus.py --only analyzers      # or 1..4, validation, samples, book
    .venv/bin/python bench/istio_corpus.py --verbose             # every finding of every configuration
    .venv/bin/python bench/istio_corpus.py --only 1 --all        # every false, justified and missed one
    .venv/bin/python bench/istio_corpus.py --json                # the figures as one JSON document

The repositories are Git directories (bare or not); their ``HEAD`` is read with pygit2. The
script exits 0 whatever the figures, 2 when a repository cannot be read.
"""
from __future__ import annotations

import argparse
import json
import posixpath
import re
import signal
import sys
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import pygit2  # noqa: E402
import yaml  # noqa: E402

import compiler  # noqa: E402

from compiler.findings import Finding, Level  # noqa: E402
from compiler.parse import UnreadableFile  # noqa: E402
from compiler.schemas import served_versions  # noqa: E402
from compiler.snapshot import Snapshot  # noqa: E402
from compiler.revision import load  # noqa: E402

ISTIO_REPO = "/work/.mirror/istio+istio/repo"
BOOK_REPO = "/work/.mirror/istioinaction+book-source-code/repo"
BOOK_NAMESPACE = "istioinaction"  # the book applies its files with `kubectl apply -n istioinaction`
BOOK_PLATFORM = r"services/[^/]+/kubernetes/"  # the book's services, deployed before any chapter's files
ANALYZERS_DIR = "pkg/config/analysis/analyzers"
ANALYZERS_TEST = f"{ANALYZERS_DIR}/analyzers_test.go"
MESSAGES = "pkg/config/analysis/msg/messages.yaml"
VALIDATION_DIR = "pkg/config/validation/testdata/crds"
BOOKINFO_PLATFORM = "samples/bookinfo/platform/kube/bookinfo.yaml"
BOOKINFO_NETWORKING = "samples/bookinfo/networking"
BOOKINFO_RULES = f"{BOOKINFO_NETWORKING}/destination-rule-all.yaml"

PARTS = ("analyzers", "validation", "samples", "book")
ISTIO_GROUP = "networking.istio.io"
ISTIO_KINDS = ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry", "Sidecar")
# The kinds whose Istio messages Galleon should give: kind -> the API group it must come from.
READ_KINDS = {**{k: ISTIO_GROUP for k in ISTIO_KINDS}, "Service": "", "Pod": "", "Deployment": "apps",
              "MeshNetworks": None}
DEFAULT_NAMESPACE = "default"
MESHNETWORKS_ORIGIN = ("MeshNetworks", "istio-system", "meshnetworks")


# --------------------------------------------------------------------------- reading a snapshot

class Tree:
    """The files of one repository's HEAD commit."""

    def __init__(self, path: str):
        self.path = path
        self.repo = pygit2.Repository(path)
        self.tree = self.repo.revparse_single("HEAD").peel(pygit2.Tree)
        self.commit = str(self.repo.revparse_single("HEAD").peel(pygit2.Commit).id)

    def read(self, path: str) -> bytes | None:
        try:
            obj = self.tree[path]
        except KeyError:
            return None
        blob = self.repo[obj.id]
        return blob.data if isinstance(blob, pygit2.Blob) else None

    def files(self, under: str = "") -> list[str]:
        """Every blob path under a folder, sorted."""
        if under:
            try:
                start = self.repo[self.tree[under].id]
            except KeyError:
                return []
        else:
            start = self.tree
        out: list[str] = []
        self._walk(start, under, out)
        return sorted(out)

    def _walk(self, tree, prefix: str, out: list[str]) -> None:
        for entry in tree:
            path = f"{prefix}/{entry.name}" if prefix else entry.name
            if entry.type_str == "tree":
                self._walk(self.repo[entry.id], path, out)
            elif entry.type_str == "blob":
                out.append(path)


def is_yaml(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


# --------------------------------------------------------------------------- YAML documents

@dataclass
class Doc:
    """One Kubernetes object of a file (the items of a v1 List each count as one)."""

    file: str
    api_version: str
    kind: str
    namespace: str | None  # None when the YAML does not say
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace or DEFAULT_NAMESPACE, self.name)


def load_documents(data: bytes) -> list:
    """The file's documents as PyYAML reads them; raises yaml.YAMLError or UnicodeDecodeError."""
    return list(yaml.safe_load_all(data.decode("utf-8")))


def mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def kube_docs(file: str, documents: list) -> list[Doc]:
    out: list[Doc] = []
    for body in documents:
        if not isinstance(body, dict):
            continue
        if body.get("kind") == "List" and isinstance(body.get("items"), list):
            out += kube_docs(file, body["items"])
            continue
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            continue
        meta = mapping(body.get("metadata"))
        namespace = meta.get("namespace")
        out.append(Doc(file, api_version, kind, namespace if isinstance(namespace, str) else None,
                       str(meta.get("name", ""))))
    return out


def split_documents(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each ``---``-separated document, keeping every line."""
    chunks: list[tuple[int, list[str]]] = [(1, [])]
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if re.match(r"---(\s|$)", line):
            chunks.append((number + 1, []))
        else:
            chunks[-1][1].append(line)
    return [(start, "".join(lines)) for start, lines in chunks]


def has_content(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


@dataclass
class FileInfo:
    """What one input file holds, or why it is skipped."""

    path: str
    data: bytes
    docs: list[Doc] = field(default_factory=list)
    skipped: str = ""  # why it is not Kubernetes YAML; empty when it is


HELM = re.compile(r"\{\{-?\s*(\.Values|\.Release|\.Chart|include|template|if|range|toYaml)\b")


def inspect_file(tree: Tree, path: str) -> FileInfo:
    data = tree.read(path)
    if data is None:
        return FileInfo(path, b"", skipped="not a file in the snapshot")
    parts = path.split("/")
    chart = "templates" in parts[:-1] and tree.read(
        "/".join(parts[:parts.index("templates")] + ["Chart.yaml"])) is not None
    if chart or HELM.search(data.decode("utf-8", "replace")):
        return FileInfo(path, data, skipped="Helm template")
    try:
        docs = kube_docs(path, load_documents(data))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        return FileInfo(path, data, skipped=f"not YAML ({type(exc).__name__})")
    if not docs:
        return FileInfo(path, data, skipped="no Kubernetes object (no apiVersion and kind)")
    return FileInfo(path, data, docs)


def safe_docs(file: str, data: bytes) -> list[Doc]:
    """The file's objects; when PyYAML cannot read the whole file, those of the documents it can."""
    try:
        return kube_docs(file, load_documents(data))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        pass
    docs: list[Doc] = []
    for _start, text in split_documents(data.decode("utf-8", "replace")):
        try:
            docs += kube_docs(file, [yaml.safe_load(text)])
        except (yaml.YAMLError, RecursionError):
            continue
    return docs


# --------------------------------------------------------------------------- running Galleon

@dataclass
class Run:
    findings: list[Finding]
    galleon_objects: set[tuple[str, int]]  # (file, line) of each object Galleon read
    unreadable: dict[str, str]             # file -> why Galleon refused it
    crash: str = ""                        # Galleon raised something else: its last lines


def run_galleon(name: str, files: dict[str, bytes]) -> Run:
    """Validate the files as one snapshot; files Galleon refuses are dropped and noted."""
    files = dict(files)
    unreadable: dict[str, str] = {}
    while True:
        try:
            result = load(Snapshot(f"corpus:{name}", files))
        except UnreadableFile as exc:
            if exc.file not in files:  # cannot make progress: report, do not loop
                return Run([], set(), unreadable, f"UnreadableFile for unknown file: {exc}")
            unreadable[exc.file] = exc.message
            del files[exc.file]
            continue
        except Exception:  # noqa: BLE001 -- a measurement must survive any input
            return Run([], set(), unreadable, traceback.format_exc(limit=3).strip().splitlines()[-1])
        objects = {(o.file, o.line) for o in result.parsed.objects}
        return Run(list(result.findings), objects, unreadable)


def finding_key(f: Finding) -> tuple:
    return (f.file, f.line, f.code, f.kind, f.namespace, f.name, f.message)


def finding_line(f: Finding) -> str:
    return f"{f.file}:{f.line} {f.level.value} {f.code} {f.kind} {f.namespace}/{f.name}: {f.message}"


# --------------------------------------------------------------------------- the figures of a part

@dataclass
class Configuration:
    name: str
    files: dict[str, bytes]
    notes: list[str] = field(default_factory=list)
    run: Run | None = None
    bookinfo: str = ""  # a Bookinfo configuration: its networking file


@dataclass(frozen=True)
class Justification:
    """Why a Galleon error on configuration Istio's tests accept is not a false error (part 1 only):
    ``source`` is ``expected`` (a test case reading the file expects the code on the object), ``oracle``
    (one of this script's oracles predicts it; ``label`` names the oracle) or ``reviewed`` (the reviewed
    list; ``label`` is the reason); ``why`` details this finding's case."""

    source: str
    label: str
    why: str = ""


SOURCES = ("expected", "oracle", "reviewed")


@dataclass
class PartResult:
    name: str
    configurations: list[Configuration] = field(default_factory=list)
    docs: dict[str, list[Doc]] = field(default_factory=dict)  # every file read -> its objects
    skipped: dict[str, str] = field(default_factory=dict)     # file -> why
    errors: dict[tuple, Finding] = field(default_factory=dict)  # every Galleon error, once per part
    # finding key -> {configuration giving it -> its justification there (None: not justified)}
    error_reasons: dict[tuple, dict[str, Justification | None]] = field(default_factory=lambda: defaultdict(dict))
    warnings: dict[tuple, Finding] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)          # input this script could not use
    extra: dict = field(default_factory=dict)                  # part-specific figures
    lists: dict = field(default_factory=dict)                  # part-specific lists to print

    def execute(self, config: Configuration) -> Run:
        config.run = run_galleon(config.name, config.files)
        for file in config.files:
            if file not in self.docs:
                self.docs[file] = safe_docs(file, config.files[file])
        if config.run.crash:
            self.problems.append(f"{config.name}: Galleon raised {config.run.crash}")
        self.configurations.append(config)
        return config.run

    def record(self, config: Configuration, f: Finding, justification: Justification | None = None) -> None:
        if f.level is not Level.ERROR:
            self.warnings.setdefault(finding_key(f), f)
            return
        key = finding_key(f)
        self.errors.setdefault(key, f)
        self.error_reasons[key][config.name] = justification

    def justification(self, key: tuple) -> Justification | None:
        """An error's justification: None (a false error) when some configuration giving it leaves it
        unjustified; else the strongest source among its configurations (expected, oracle, reviewed)."""
        reasons = list(self.error_reasons.get(key, {}).values())
        given = [r for r in reasons if r is not None]
        if not given or len(given) < len(reasons):
            return None
        return min(given, key=lambda r: SOURCES.index(r.source))

    @property
    def false_errors(self) -> dict[tuple, Finding]:
        return {k: f for k, f in self.errors.items() if self.justification(k) is None}

    @property
    def false_error_configs(self) -> set[str]:
        return {c for k in self.errors for c, r in self.error_reasons[k].items() if r is None}

    def justified(self, source: str) -> dict[tuple, tuple[Finding, Justification]]:
        out = {}
        for key, f in self.errors.items():
            j = self.justification(key)
            if j is not None and j.source == source:
                out[key] = (f, j)
        return out

    def mixed(self) -> list[Finding]:
        """Errors justified in one configuration and not in another (counted false)."""
        return [f for k, f in self.errors.items() if len({r is None for r in self.error_reasons[k].values()}) > 1]

    def figures(self) -> dict:
        unreadable = {file for c in self.configurations if c.run for file in c.run.unreadable}
        galleon_objects = {o for c in self.configurations if c.run for o in c.run.galleon_objects}
        false_errors = self.false_errors
        by = {s: self.justified(s) for s in SOURCES}
        return {
            "configurations": len(self.configurations),
            "files": len(self.docs),
            "objects": sum(len(d) for d in self.docs.values()),
            "galleon_objects": len(galleon_objects),
            "skipped_files": len(self.skipped),
            "unreadable_files": len(unreadable),
            "galleon_crashes": sum(1 for c in self.configurations if c.run and c.run.crash),
            "errors": len(self.errors),
            "false_errors": len(false_errors),
            "objects_with_false_errors": len({(f.file, f.kind, f.namespace, f.name) for f in false_errors.values()}),
            "configurations_with_false_errors": len(self.false_error_configs),
            "justified_errors": len(by["expected"]),  # by Istio's expected messages
            "errors_not_named_by_istio": len(self.errors) - len(by["expected"]),
            "justified_by_oracle": dict(sorted(Counter(j.label for _f, j in by["oracle"].values()).items())),
            "justified_by_review": dict(sorted(Counter(j.label for _f, j in by["reviewed"].values()).items())),
            "justified_in_some_configurations_only": len(self.mixed()),
            "warnings": len(self.warnings),
            **self.extra,
        }


# --------------------------------------------------------------------------- part 1: analyzer test grid

@dataclass
class Expected:
    message: str       # msg.X
    code: str
    level: str         # Istio's: error, warning, info
    kind: str
    namespace: str | None
    name: str

    @property
    def origin(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace or DEFAULT_NAMESPACE, self.name)

    def text(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass
class TestCase:
    name: str
    line: int
    input_files: list[str]
    mesh_config: str = ""
    mesh_networks: str = ""
    analyzer: str = ""
    expected: list[tuple[str, str]] = field(default_factory=list)  # (msg name, origin text)


def strip_go_comments(src: str) -> str:
    """Go source with comments blanked (newlines kept), string literals untouched."""
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in "\"'`":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if c != "`" and src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(src: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (comments already stripped)."""
    depth, i = 0, start
    while i < len(src):
        c = src[i]
        if c in "\"`":
            j = i + 1
            while j < len(src) and src[j] != c:
                j += 2 if c == '"' and src[j] == "\\" else 1
            i = j
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced braces")


def top_level_items(src: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each ``{...}`` element directly inside the braces at start..end."""
    items, i = [], start + 1
    while i < end:
        c = src[i]
        if c == "{":
            j = matching_brace(src, i)
            items.append((i, j))
            i = j + 1
        elif c in "\"`":
            i = matching_quote(src, i) + 1
        else:
            i += 1
    return items


def matching_quote(src: str, i: int) -> int:
    q, j = src[i], i + 1
    while j < len(src) and src[j] != q:
        j += 2 if q == '"' and src[j] == "\\" else 1
    return j


def go_string(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    return json.loads(literal)


GO_STRING = r'"(?:[^"\\\n]|\\.)*"|`[^`]*`'
CASE_FIELDS = ("name", "inputFiles", "meshConfigFile", "meshNetworksFile", "analyzer", "expected", "skipAll")


def parse_case(text: str, line: int, problems: list[str]) -> TestCase | None:
    """One ``{...}`` element of testGrid; None (and a problem noted) when it cannot be read."""
    body = text[1:-1]
    where = f"{ANALYZERS_TEST}:{line}"
    keys = re.findall(r"(?:^|,)\s*(\w+)\s*:", flatten_braces(body))
    unknown = [k for k in keys if k not in CASE_FIELDS]
    if unknown:
        problems.append(f"{where}: test case has fields this script does not read: {', '.join(unknown)}")
    name = re.search(rf"\bname\s*:\s*({GO_STRING})", body)
    files = re.search(r"\binputFiles\s*:\s*\[\]string\s*\{", body)
    if name is None or files is None:
        problems.append(f"{where}: test case without a literal name or inputFiles; skipped")
        return None
    files_end = matching_brace(body, files.end() - 1)
    files_text = body[files.end():files_end]
    input_files = [go_string(s) for s in re.findall(GO_STRING, files_text)]
    if re.sub(GO_STRING, "", files_text).strip(" \t\n,"):
        problems.append(f"{where}: inputFiles holds more than string literals; read only the literals")
    case = TestCase(go_string(name.group(1)), line, input_files)
    for key, attr in (("meshConfigFile", "mesh_config"), ("meshNetworksFile", "mesh_networks")):
        m = re.search(rf"\b{key}\s*:\s*({GO_STRING})", body)
        if m:
            setattr(case, attr, go_string(m.group(1)))
        elif re.search(rf"\b{key}\s*:", body):
            problems.append(f"{where}: {key} is not a string literal; ignored")
    analyzer = re.search(r"\banalyzer\s*:", body)
    case.analyzer = value_at(body, analyzer.end()) if analyzer else "?"
    expected = re.search(r"\bexpected\s*:\s*\[\]message\s*\{", body)
    if expected is None:
        problems.append(f"{where}: no literal expected list; read as expecting nothing")
        return case
    exp_end = matching_brace(body, expected.end() - 1)
    for start, end in top_level_items(body, expected.end() - 1, exp_end):
        item = body[start:end + 1]
        m = re.fullmatch(rf"\{{\s*msg\.(\w+)\s*,\s*({GO_STRING})\s*,?\s*\}}", item, re.S)
        if m is None:
            problems.append(f"{where}: expected message not read: {' '.join(item.split())}")
            continue
        case.expected.append((m.group(1), go_string(m.group(2))))
    rest = body[expected.end():exp_end]
    for start, end in reversed(top_level_items(body, expected.end() - 1, exp_end)):
        rest = rest.replace(body[start:end + 1], "")
    if rest.strip(" \t\n,"):
        problems.append(f"{where}: expected list holds something other than {{msg.X, \"origin\"}}: {rest.strip()[:60]}")
    return case


def value_at(body: str, start: int) -> str:
    """The Go expression from ``start`` to the next comma outside braces, brackets and strings."""
    depth, i = 0, start
    while i < len(body):
        c = body[i]
        if c in "\"`":
            i = matching_quote(body, i)
        elif c in "{([":
            depth += 1
        elif c in "})]":
            if depth == 0:
                break
            depth -= 1
        elif c == "," and depth == 0:
            break
        i += 1
    return " ".join(body[start:i].split())


def flatten_braces(body: str) -> str:
    """The text at depth 0 only (nested braces and strings removed), to find a case's field names."""
    out, depth, i = [], 0, 0
    while i < len(body):
        c = body[i]
        if c in "\"`":
            i = matching_quote(body, i) + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0:
            out.append(c)
        i += 1
    return "".join(out)


def parse_test_grid(src: str, problems: list[str]) -> list[TestCase]:
    src = strip_go_comments(src)
    m = re.search(r"\bvar\s+testGrid\s*=\s*\[\]testCase\s*\{", src)
    if m is None:
        problems.append(f"{ANALYZERS_TEST}: no `var testGrid = []testCase{{` found")
        return []
    end = matching_brace(src, m.end() - 1)
    cases = []
    for start, stop in top_level_items(src, m.end() - 1, end):
        line = src.count("\n", 0, start) + 1
        try:
            case = parse_case(src[start:stop + 1], line, problems)
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"{ANALYZERS_TEST}:{line}: test case not read ({exc})")
            continue
        if case is not None:
            cases.append(case)
    return cases


def load_messages(tree: Tree) -> dict[str, tuple[str, str]]:
    """msg name -> (code, level), from messages.yaml."""
    data = tree.read(MESSAGES)
    doc = yaml.safe_load(data) if data else {}
    return {m["name"]: (m["code"], str(m["level"]).lower())
            for m in (doc or {}).get("messages", []) if isinstance(m, dict) and "name" in m}


def parse_origin(text: str) -> tuple[str, str | None, str]:
    kind, _, rest = text.strip().partition(" ")
    namespace, _, name = rest.rpartition("/")
    return kind, namespace or None, name


def wrap_mesh_networks(data: bytes) -> bytes:
    """Istio's mesh networks file as a Galleon MeshNetworks with the origin Istio gives it."""
    kind, namespace, name = MESHNETWORKS_ORIGIN
    body = "".join(f"  {line}" if line.strip() else line
                   for line in data.decode("utf-8", "replace").splitlines(keepends=True))
    return (f"apiVersion: galleon.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\nspec:\n{body}").encode()


def resolve_origin(exp: Expected, docs: list[Doc], has_mesh_networks: bool) -> tuple[str | None, bool]:
    """(the API group of the input object the origin names, or None; whether it was found)."""
    if (exp.kind, exp.namespace, exp.name) == MESHNETWORKS_ORIGIN:
        return None, has_mesh_networks
    same = [d for d in docs if d.kind == exp.kind and d.name == exp.name]
    exact = [d for d in same if d.namespace == exp.namespace]
    if not exact and exp.namespace == DEFAULT_NAMESPACE:
        exact = [d for d in same if d.namespace is None]
    chosen = exact or same
    return (chosen[0].group, True) if chosen else (None, False)


def reads_kind(exp: Expected, group: str | None, found: bool) -> bool:
    if exp.kind not in READ_KINDS:
        return False
    want = READ_KINDS[exp.kind]
    return want is None or not found or group == want


def case_files(case: TestCase) -> list[str]:
    return case.input_files + ([case.mesh_networks] if case.mesh_networks else [])


def expected_messages(case: TestCase, messages: dict[str, tuple[str, str]], problems: list[str]) -> list[Expected]:
    out = []
    for msg_name, origin in case.expected:
        code, level = messages.get(msg_name, ("?", "?"))
        if code == "?":
            problems.append(f"{case.name}: msg.{msg_name} is not in {MESSAGES}")
        out.append(Expected(msg_name, code, level, *parse_origin(origin)))
    return out


def case_configuration(tree: Tree, case: TestCase, problems: list[str]) -> Configuration:
    """A test case's input files (its mesh networks file wrapped) as one configuration."""
    config = Configuration(f"{case.name} ({ANALYZERS_TEST}:{case.line})", {})
    for path in case_files(case):
        data = tree.read(posixpath.join(ANALYZERS_DIR, path))
        if data is None:
            problems.append(f"{case.name}: input file {path} not in the snapshot")
        elif path == case.mesh_networks:
            config.files[path] = wrap_mesh_networks(data)
            config.notes.append(f"meshNetworksFile {path} wrapped as galleon.io MeshNetworks "
                                f"{MESHNETWORKS_ORIGIN[1]}/{MESHNETWORKS_ORIGIN[2]} (lines +6)")
        else:
            config.files[path] = data
    if case.mesh_config:
        config.notes.append(f"meshConfigFile {case.mesh_config} not read (Istio MeshConfig, not an object)")
    return config


@dataclass
class Score:
    """One expected Istio message on a kind Galleon reads, and whether Galleon gives it."""

    case: TestCase
    expected: Expected
    reported: bool
    same_level: bool


def score_case(case: TestCase, expected: list[Expected], docs: list[Doc], run: Run,
               unresolved: list[str]) -> list[Score]:
    scores = []
    for exp in expected:
        group, found = resolve_origin(exp, docs, bool(case.mesh_networks))
        if not found:
            unresolved.append(f"{case.name}: {exp.code} {exp.text()}")
        if not reads_kind(exp, group, found):
            continue
        hits = [f for f in run.findings if f.code == exp.code and (f.kind, f.namespace, f.name) == exp.origin]
        scores.append(Score(case, exp, bool(hits), any(f.level.value == exp.level for f in hits)))
    return scores


# --------------------------------------------------------------------------- part 1: independent oracles
#
# Each test case of part 1 runs ONE Istio analyzer, so a Galleon error its expected messages do not
# name may still be what ANOTHER of Istio's analyzers gives on the same input. The oracles below say
# so for a few simple rules, from this script's own reading of the YAML (PyYAML, with lines), never
# from Galleon's output. Each is Istio's rule as its source states it (``pkg/config/analysis/
# analyzers/virtualservice/{destinationhosts,destinationrules,gateways,conflictingmeshgatewayhosts}.go``,
# ``gateway/conflictinggateway.go``, ``util/``; the sections cited are those of the spec written from
# that source for this project, analyzers.md). Where this reading and Istio's test harness differ,
# the oracle takes the side that justifies less: an object without a namespace is in ``default`` (as
# ``istioctl analyze`` and Galleon read it, where the harness keeps ``""``), and the Service Istio's
# harness adds (``istio-system/istio-ingressgateway``) counts as declared.

class LocatedMap(dict):
    """A YAML mapping with the line of its start and of each of its (scalar) keys."""

    line = 0
    key_lines: dict


class LocatedList(list):
    """A YAML sequence with the line of its start and of each of its items."""

    line = 0
    item_lines: list


class LocatedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, keeping the (1-based) line of every mapping, key and sequence item."""


def _located_map(loader: LocatedLoader, node: yaml.MappingNode):
    data = LocatedMap()
    data.line, data.key_lines = node.start_mark.line + 1, {}
    yield data
    data.update(loader.construct_mapping(node))
    for key_node, _value in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            data.key_lines.setdefault(key_node.value, key_node.start_mark.line + 1)


def _located_list(loader: LocatedLoader, node: yaml.SequenceNode):
    data = LocatedList()
    data.line, data.item_lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


LocatedLoader.add_constructor("tag:yaml.org,2002:map", _located_map)
LocatedLoader.add_constructor("tag:yaml.org,2002:seq", _located_list)


def seq(value) -> list:
    return value if isinstance(value, list) else []


def key_line(value, key, default: int) -> int:
    """The line of ``value[key]`` (a mapping's key or a sequence's item), else ``default``."""
    if isinstance(value, LocatedMap):
        return value.key_lines.get(key, default)
    if isinstance(value, LocatedList) and isinstance(key, int) and 0 <= key < len(value.item_lines):
        return value.item_lines[key]
    return default


def line_of(value, default: int = 0) -> int:
    return value.line if isinstance(value, (LocatedMap, LocatedList)) else default


@dataclass
class Obj:
    """One Kubernetes object as the oracles read it: its body with lines, its namespace defaulted."""

    file: str
    group: str
    kind: str
    namespace: str
    name: str
    body: dict

    @property
    def spec(self) -> dict:
        return mapping(self.body.get("spec"))

    @property
    def ref(self) -> tuple[str, str, str, str]:
        return (self.file, self.kind, self.namespace, self.name)

    def text(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def located_objects(file: str, data: bytes) -> list[Obj]:
    """The file's objects (a List's items each), with lines; the documents PyYAML cannot read are left out."""
    try:
        documents = list(yaml.load_all(data.decode("utf-8"), Loader=LocatedLoader))  # noqa: S506 (safe loader)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        documents = []
        for start, text in split_documents(data.decode("utf-8", "replace")):
            try:  # padded with empty lines, so its lines are the file's
                documents.append(yaml.load("\n" * (start - 1) + text, Loader=LocatedLoader))  # noqa: S506
            except (yaml.YAMLError, RecursionError):
                continue
    out: list[Obj] = []
    for body in _flatten_lists(documents):
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            continue
        meta = mapping(body.get("metadata"))
        namespace = meta.get("namespace")
        out.append(Obj(file, api_version.rpartition("/")[0], kind,
                       namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE,
                       str(meta.get("name", "")), body))
    return out


def _flatten_lists(documents: list) -> list[dict]:
    out = []
    for body in documents:
        if isinstance(body, dict) and body.get("kind") == "List" and isinstance(body.get("items"), list):
            out += _flatten_lists(body["items"])
        elif isinstance(body, dict):
            out.append(body)
    return out


def of_kind(objs: list[Obj], group: str, kind: str) -> list[Obj]:
    return [o for o in objs if o.group == group and o.kind == kind]


@dataclass(frozen=True)
class Verdict:
    """An Istio message an oracle predicts: code, object, line (None: any line of the object), why."""

    oracle: str
    code: str
    ref: tuple[str, str, str, str]  # (file, kind, namespace, name)
    line: int | None
    why: str

    def covers(self, f: Finding) -> bool:
        return (f.code == self.code and (f.file, f.kind, f.namespace, f.name) == self.ref
                and (self.line is None or self.line == f.line))


# Istio's host rules (analyzers.md §1.5)

def to_fqdn(namespace: str, host: str) -> str:
    """``util.ConvertHostToFQDN``: a host without a dot (and not a wildcard) is a Service of the namespace."""
    return host if host.startswith("*") or "." in host else f"{host}.{namespace}.svc.cluster.local"


def resource_name(namespace: str, host: str) -> tuple[str, str]:
    """``util.GetResourceNameFromHost``: (namespace, name) of ``name.ns.svc.cluster.local``, else (namespace, host)."""
    m = re.fullmatch(r"(.+)\.(.+)\.svc\.cluster\.local", host)
    return (m.group(2), m.group(1)) if m else (namespace, host)


def strip_star(host: str) -> str:
    return host[1:] if host.startswith("*") else host


def export_scopes(namespace: str, export_to) -> list[str]:
    """The scopes a ServiceEntry or Service is stored under (``InitServiceEntryHostMap``)."""
    values = [e for e in seq(export_to) if isinstance(e, str)]
    if not values or "*" in values:
        return ["*"]
    return [namespace if e == "." else e for e in values]


INGRESS_SERVICE = ("*", "istio-ingressgateway.istio-system.svc.cluster.local")  # Istio's harness adds it


def declared_hosts(objs: list[Obj]) -> set[tuple[str, str]]:
    """(scope, FQDN) of every ServiceEntry host and Kubernetes Service (``InitServiceEntryHostMap``)."""
    out = {INGRESS_SERVICE}
    for se in of_kind(objs, ISTIO_GROUP, "ServiceEntry"):
        scopes = export_scopes(se.namespace, se.spec.get("exportTo"))
        out |= {(s, to_fqdn(se.namespace, h)) for h in seq(se.spec.get("hosts")) if isinstance(h, str) for s in scopes}
    for svc in of_kind(objs, "", "Service"):
        annotation = mapping(mapping(svc.body.get("metadata")).get("annotations")).get("networking.istio.io/exportTo")
        values = [v.strip() for v in annotation.split(",") if v.strip()] if isinstance(annotation, str) else []
        scopes = [svc.namespace if v == "." else v for v in values] or ["*"]
        out |= {(s, f"{svc.name}.{svc.namespace}.svc.cluster.local") for s in scopes}
    return out


def host_found(declared: set[tuple[str, str]], namespace: str, export_to, host: str) -> bool:
    """``util.GetDestinationHost``: the host, expanded with the VirtualService's namespace, under a scope
    it sees (``*``; its own namespace, or its exportTo's); or a wildcard host of scope ``*`` or its namespace."""
    fqdn = to_fqdn(namespace, host)
    values = [e for e in seq(export_to) if isinstance(e, str)]
    scopes = {"*"} | ({namespace if e == "." else e for e in values} if values else {namespace})
    if any((scope, fqdn) in declared for scope in scopes):
        return True
    return any(h.startswith("*") and scope in ("*", namespace) and strip_star(host).endswith(strip_star(h))
               for scope, h in declared)


def destinations(vs: Obj):
    """(what, destination, line of the host field, line of the subset field) of each route destination
    (``tcp``, ``tls``, ``http`` routes) and mirror (``http[].mirror``, ``http[].mirrors[].destination``)."""
    for section in ("tcp", "tls", "http"):
        for rule in seq(vs.spec.get(section)):
            for item in seq(mapping(rule).get("route")):
                dest = mapping(mapping(item).get("destination"))
                yield "host", dest, _field_line(dest, "host", item), _field_line(dest, "subset", item)
    for rule in seq(vs.spec.get("http")):
        rule = mapping(rule)
        mirrors = [rule.get("mirror")] if "mirror" in rule else []
        for value in mirrors + [mapping(m).get("destination") for m in seq(rule.get("mirrors"))]:
            dest = mapping(value)
            if dest:
                yield "mirror host", dest, _field_line(dest, "host", dest), _field_line(dest, "subset", dest)


def _field_line(dest: dict, key: str, outer) -> int:
    return key_line(dest, key, line_of(dest, line_of(outer)))


Prediction = tuple  # (object's ref, line or None, why): what an oracle function returns, per message


def oracle_hosts(objs: list[Obj]) -> list[Prediction]:
    """IST0101 "Referenced host not found" (Istio's DestinationHostAnalyzer, analyzers.md §2.1-A/B): a
    destination whose host no ServiceEntry host or Kubernetes Service the VirtualService sees declares."""
    declared = declared_hosts(objs)
    out = []
    for vs in of_kind(objs, ISTIO_GROUP, "VirtualService"):
        for what, dest, host_line, _subset_line in destinations(vs):
            host = dest.get("host") if isinstance(dest.get("host"), str) else ""
            if host and not host_found(declared, vs.namespace, vs.spec.get("exportTo"), host):
                out.append((vs.ref, host_line, f"{what} {host!r}: no ServiceEntry or Service declares "
                                               f"{to_fqdn(vs.namespace, host)!r} where {vs.text()} sees it"))
    return out


def oracle_subsets(objs: list[Obj]) -> list[Prediction]:
    """IST0101 "host+subset in destinationrule" (Istio's DestinationRuleAnalyzer, §2.1-D/E): a destination's
    subset that no DestinationRule of the same host (as ``GetResourceNameFromHost`` names it) defines."""
    known = {(resource_name(dr.namespace, str(dr.spec.get("host"))), mapping(s).get("name"))
             for dr in of_kind(objs, ISTIO_GROUP, "DestinationRule") if isinstance(dr.spec.get("host"), str)
             for s in seq(dr.spec.get("subsets")) if isinstance(mapping(s).get("name"), str)}
    out = []
    for vs in of_kind(objs, ISTIO_GROUP, "VirtualService"):
        for what, dest, _host_line, subset_line in destinations(vs):
            host, subset = dest.get("host"), dest.get("subset")
            if isinstance(host, str) and isinstance(subset, str) and subset \
                    and (resource_name(vs.namespace, host), subset) not in known:
                out.append((vs.ref, subset_line, f"{what} {host!r} subset {subset!r}: no DestinationRule defines it"))
    return out


K8S_GATEWAY_GROUP = "gateway.networking.k8s.io"


def oracle_gateways(objs: list[Obj]) -> list[Prediction]:
    """IST0101 "Referenced gateway not found" (Istio's GatewayAnalyzer, §2.1-F): a ``gateways`` entry other
    than ``mesh`` that names (``ns/name``, else the VirtualService's namespace and the entry) no Istio
    Gateway and no Kubernetes (gateway.networking.k8s.io) Gateway."""
    gateways = {(g.namespace, g.name)
                for g in of_kind(objs, ISTIO_GROUP, "Gateway") + of_kind(objs, K8S_GATEWAY_GROUP, "Gateway")}
    out = []
    for vs in of_kind(objs, ISTIO_GROUP, "VirtualService"):
        entries = vs.spec.get("gateways")
        for i, entry in enumerate(seq(entries)):
            if not isinstance(entry, str) or entry == "mesh" or "~istio-autogenerated-k8s-gateway~" in entry:
                continue
            namespace, _, name = entry.partition("/") if "/" in entry else (vs.namespace, "", entry)
            if (namespace, name) not in gateways:
                out.append((vs.ref, key_line(entries, i, 0), f"gateway {entry!r}: no Gateway {namespace}/{name}"))
    return out


def oracle_mesh_hosts(objs: list[Obj]) -> list[Prediction]:
    """IST0109 (Istio's ConflictingMeshGatewayHostsAnalyzer, §2.2), only its simplest case: two mesh
    VirtualServices (no ``gateways``, or ``mesh`` among them), both exported everywhere (no exportTo, or
    ``*``), list the same host (expanded with each one's namespace). Other exportTo: no verdict."""
    by_host: dict[str, list[Obj]] = defaultdict(list)
    for vs in of_kind(objs, ISTIO_GROUP, "VirtualService"):
        gateways, exports = seq(vs.spec.get("gateways")), seq(vs.spec.get("exportTo"))
        if (not gateways or "mesh" in gateways) and (not exports or "*" in exports):
            for host in {to_fqdn(vs.namespace, h) for h in seq(vs.spec.get("hosts")) if isinstance(h, str)}:
                by_host[host].append(vs)
    out = []
    for host, group in sorted(by_host.items()):
        if len({vs.ref for vs in group}) > 1:
            names = ", ".join(sorted({vs.text() for vs in group}))
            out += [(vs.ref, None, f"host {host!r} of {names}") for vs in group]
    return out


def selector_text(gateway: Obj) -> str:
    """``labels.SelectorFromSet(selector).String()``: ``key=value`` sorted, joined by commas."""
    labels = mapping(gateway.spec.get("selector"))
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items(), key=lambda kv: str(kv[0])))


def server_bind(server: dict) -> str:
    bind = server.get("bind")
    return bind if isinstance(bind, str) else ""


def server_hosts(gateway: Obj) -> dict[str, dict[str, str]]:
    """Port number (as text, ``0`` when absent) -> {host: bind} of the Gateway's LAST server on that port
    (a later server on a port replaces an earlier one in Istio's map)."""
    out: dict[str, dict[str, str]] = {}
    for server in seq(gateway.spec.get("servers")):
        server = mapping(server)
        port = str(mapping(server.get("port")).get("number") or 0)
        bind = server_bind(server)
        out[port] = {h: bind for h in seq(server.get("hosts")) if isinstance(h, str)}
    return out


def oracle_gateway_conflicts(objs: list[Obj]) -> list[Prediction]:
    """IST0145 (Istio's ConflictingGatewayAnalyzer, §2.14), its intended rule: a Gateway has a server whose
    port number, one host (the same string) and bind are those of another Gateway of an equal selector."""
    gateways = of_kind(objs, ISTIO_GROUP, "Gateway")
    known = {g.ref: server_hosts(g) for g in gateways}
    out = []
    for gateway in gateways:
        for server in seq(gateway.spec.get("servers")):
            server = mapping(server)
            port = str(mapping(server.get("port")).get("number") or 0)
            bind = server_bind(server)
            hosts = [h for h in seq(server.get("hosts")) if isinstance(h, str)]
            others = sorted(o.text() for o in gateways if o.ref != gateway.ref
                            and selector_text(o) == selector_text(gateway)
                            and any(known[o.ref].get(port, {}).get(h, None) == bind for h in hosts))
            if others:
                out.append((gateway.ref, None, f"port {port}, hosts {hosts} also served by {', '.join(others)} "
                                               f"(selector {selector_text(gateway)!r})"))
    return out


def oracle_default_sidecars(objs: list[Obj]) -> list[Prediction]:
    """IST0111 (Istio's sidecar.SelectorAnalyzer): a namespace holds two or more Sidecars without a
    workloadSelector (none, or one without labels); each of them is reported."""
    by_namespace: dict[str, list[Obj]] = defaultdict(list)
    for sidecar in of_kind(objs, ISTIO_GROUP, "Sidecar"):
        if not mapping(mapping(sidecar.spec.get("workloadSelector")).get("labels")):
            by_namespace[sidecar.namespace].append(sidecar)
    out = []
    for namespace, group in sorted(by_namespace.items()):
        if len({sc.ref for sc in group}) > 1:
            names = ", ".join(sorted({sc.text() for sc in group}))
            out += [(sc.ref, None, f"Sidecars without workloadSelector in namespace {namespace!r}: {names}")
                    for sc in group]
    return out


@dataclass(frozen=True)
class Oracle:
    """One of Istio's rules, computed from the configuration: its name, code, the Istio analyzer it
    stands for (as the test grid names it, to check it on that analyzer's own test cases), its function.
    ``intrinsic``: the rule compares the configuration's own objects with each other, so Istio's
    analyzer gives the message whatever the cluster holds (a conflict no Service or pod can resolve):
    such a prediction justifies an error in parts 3 and 4 too."""

    label: str
    code: str
    analyzer: str
    predict: Callable[[list[Obj]], list[Prediction]]
    intrinsic: bool = False

    def verdicts(self, objs: list[Obj]) -> list[Verdict]:
        return [Verdict(self.label, self.code, ref, line, why) for ref, line, why in self.predict(objs)]


ORACLES: tuple[Oracle, ...] = (
    Oracle("IST0101 host not found", "IST0101", "virtualservice.DestinationHostAnalyzer", oracle_hosts),
    Oracle("IST0101 subset not found", "IST0101", "virtualservice.DestinationRuleAnalyzer", oracle_subsets),
    Oracle("IST0101 gateway not found", "IST0101", "virtualservice.GatewayAnalyzer", oracle_gateways),
    Oracle("IST0109 mesh VirtualServices of one host", "IST0109", "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
           oracle_mesh_hosts, intrinsic=True),
    Oracle("IST0145 Gateways of one selector serve one host on one port", "IST0145",
           "gateway.ConflictingGatewayAnalyzer", oracle_gateway_conflicts, intrinsic=True),
    Oracle("IST0111 Sidecars without selector in one namespace", "IST0111", "sidecar.SelectorAnalyzer",
           oracle_default_sidecars, intrinsic=True),
)


ORACLE_CODES = {o.label: o.code for o in ORACLES}


def oracle_verdicts(files: dict[str, bytes], problems: list[str], intrinsic: bool = False) -> dict[str, list[Verdict]]:
    """Each oracle's verdicts on a configuration (by label), or only the intrinsic ones'; an oracle failing
    on odd input gives none (noted)."""
    objs = [o for path, data in files.items() for o in located_objects(path, data)]
    out: dict[str, list[Verdict]] = {}
    for oracle in ORACLES:
        if intrinsic and not oracle.intrinsic:
            continue
        try:
            out[oracle.label] = oracle.verdicts(objs)
        except Exception as exc:  # noqa: BLE001 -- an oracle must never stop the measurement
            out[oracle.label] = []
            problems.append(f"oracle {oracle.label!r} failed on {', '.join(files)}: {type(exc).__name__}: {exc}")
    return out


@dataclass
class OracleCheck:
    """An oracle against Istio's own test cases of the analyzer it stands for: the messages it predicts
    there (code on object), how many Istio expects, and those it predicts that Istio does not expect."""

    cases: int = 0
    predicted: int = 0
    confirmed: int = 0
    istio_expects: int = 0  # messages of the oracle's code that Istio expects in those cases
    contradicted: list[str] = field(default_factory=list)


def check_oracles(checks: dict[str, OracleCheck], case: TestCase, expected: list[Expected],
                  verdicts: dict[str, list[Verdict]]) -> None:
    """Compare, on a test case running an analyzer an oracle stands for, the oracle's predictions with the
    case's expected messages of its code (sets of (code, object): Istio's test does not count lines)."""
    for oracle in ORACLES:
        if not re.search(rf"&{re.escape(oracle.analyzer)}\b", case.analyzer):
            continue
        check = checks.setdefault(oracle.label, OracleCheck())
        predicted = {(v.code, *v.ref[1:]) for v in verdicts.get(oracle.label, [])}
        wanted = {(e.code, *e.origin) for e in expected if e.code == oracle.code}
        check.cases += 1
        check.predicted += len(predicted)
        check.confirmed += len(predicted & wanted)
        check.istio_expects += len(wanted)
        check.contradicted += [f"{case.name}: {code} {kind} {ns}/{name}"
                               for code, kind, ns, name in sorted(predicted - wanted)]


# --------------------------------------------------------------------------- part 1: the reviewed list

REVIEWED_FILE = Path(__file__).resolve().with_name("istio_corpus_reviewed.txt")
REVIEWED_ENTRY = re.compile(r'(\S+):(\d+) (\S+) (\S+) (\S+)/(\S+) "(.*)" (\S+)')


@dataclass(frozen=True)
class ReviewedEntry:
    """One reviewed Galleon error: where, what, the text its line must hold, the reason's key."""

    file: str
    line: int
    code: str
    kind: str
    namespace: str
    name: str
    text: str
    reason: str

    def matches(self, f: Finding) -> bool:
        return (f.file, f.line, f.code, f.kind, f.namespace, f.name) == \
            (self.file, self.line, self.code, self.kind, self.namespace, self.name)

    def label(self) -> str:
        return f"{self.file}:{self.line} {self.code} {self.kind} {self.namespace}/{self.name}"


@dataclass
class Review:
    """The reviewed list (``istio_corpus_reviewed.txt``): reasons by key, entries, and which entries met
    a Galleon error (an entry no error meets, or whose line no longer holds its text, is reported)."""

    reasons: dict[str, str] = field(default_factory=dict)
    entries: list[ReviewedEntry] = field(default_factory=list)
    used: set[ReviewedEntry] = field(default_factory=set)
    stale: set[ReviewedEntry] = field(default_factory=set)  # met an error, but the line has changed

    @classmethod
    def load(cls, path: Path, problems: list[str]) -> "Review":
        review = cls()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            problems.append(f"reviewed list not read ({exc}): no error is justified by review")
            return review
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            reason = re.fullmatch(r"reason ([\w-]+): (.+)", line)
            listed = REVIEWED_ENTRY.fullmatch(line)
            if reason:
                review.reasons[reason.group(1)] = reason.group(2)
            elif listed:
                file, line_no, *rest = listed.groups()
                review.entries.append(ReviewedEntry(file, int(line_no), *rest))
            else:
                problems.append(f"{path.name}:{number}: not a reason nor an entry; ignored")
        for entry in review.entries:
            if entry.reason not in review.reasons:
                problems.append(f"{path.name}: {entry.label()}: unknown reason {entry.reason!r}; ignored")
        return review

    def reason(self, f: Finding, files: dict[str, bytes]) -> str | None:
        """The reason key of the entry naming this error, when the line still holds the entry's text."""
        for entry in self.entries:
            if entry.matches(f) and entry.reason in self.reasons:
                lines = files.get(f.file, b"").decode("utf-8", "replace").splitlines()
                if 0 < f.line <= len(lines) and entry.text in lines[f.line - 1]:
                    self.used.add(entry)
                    return entry.reason
                self.stale.add(entry)
        return None

    def unmet(self) -> list[str]:
        return ([f"{e.label()}: met no Galleon error" for e in self.entries if e not in self.used | self.stale]
                + [f"{e.label()}: line no longer holds {e.text!r}; not applied"
                   for e in sorted(self.stale, key=ReviewedEntry.label)])


def justify(f: Finding, expected: set[tuple], verdicts: dict[str, list[Verdict]], review: Review,
            files: dict[str, bytes]) -> Justification | None:
    """Why an error on a part-1 configuration is not false, trying in turn Istio's expected messages (the
    code on the object, in any test case reading the file), the oracles' verdicts, the reviewed list."""
    if (f.code, f.kind, f.namespace, f.name) in expected:
        return Justification("expected", "Istio's expected messages")
    for verdict in (v for vs in verdicts.values() for v in vs):
        if verdict.covers(f):
            return Justification("oracle", verdict.oracle, verdict.why)
    reason = review.reason(f, files)
    return Justification("reviewed", reason, review.reasons[reason]) if reason else None


def part_analyzers(tree: Tree, verbose: bool) -> PartResult:
    part = PartResult("analyzers")
    src = tree.read(ANALYZERS_TEST)
    if src is None:
        part.problems.append(f"{ANALYZERS_TEST} not in the snapshot")
        return part
    messages = load_messages(tree)
    cases = parse_test_grid(src.decode("utf-8", "replace"), part.problems)
    expected = {id(c): expected_messages(c, messages, part.problems) for c in cases}
    justified: dict[str, set[tuple]] = defaultdict(set)  # input file -> {(code, kind, ns, name)}
    for case in cases:
        for path in case_files(case):
            justified[path] |= {(e.code, *e.origin) for e in expected[id(case)]}

    review = Review.load(REVIEWED_FILE, part.problems)
    checks: dict[str, OracleCheck] = {}
    served = {kind for _group, kind in served_versions()}
    scores: list[Score] = []
    unresolved: list[str] = []
    for case in cases:
        config = case_configuration(tree, case, part.problems)
        run = part.execute(config)
        verdicts = oracle_verdicts(config.files, part.problems)
        check_oracles(checks, case, expected[id(case)], verdicts)
        for f in run.findings:
            part.record(config, f, justify(f, justified[f.file], verdicts, review, config.files))
        docs = [d for p in case.input_files for d in part.docs.get(p, [])]
        scores += score_case(case, expected[id(case)], docs, run, unresolved)
        if verbose:
            print_configuration(config)

    part.extra.update({
        "test_cases_read": len(cases),
        "istio_messages": sum(len(e) for e in expected.values()),
        "istio_messages_on_read_kinds": len(scores),
        "reported_by_galleon": sum(1 for s in scores if s.reported),
        "reported_same_level": sum(1 for s in scores if s.same_level),
        # the kinds Galleon's own schemas serve today (it may not yet read every kind above)
        "istio_messages_on_served_kinds": sum(1 for s in scores if s.expected.kind in served),
        "reported_on_served_kinds": sum(1 for s in scores if s.reported and s.expected.kind in served),
    })
    part.lists["missed"] = [(s.expected.code, f"{s.expected.code} {s.expected.message} ({s.expected.level})",
                             f"{s.case.name}: {s.expected.text()}") for s in scores if not s.reported]
    part.lists["other_level"] = [(s.expected.code, f"{s.expected.code} {s.expected.message} "
                                  f"(Istio: {s.expected.level})", f"{s.case.name}: {s.expected.text()}")
                                 for s in scores if s.reported and not s.same_level]
    part.lists["unresolved_origins"] = unresolved
    part.lists["reviewed_unmet"] = review.unmet()
    part.lists["reasons"] = review.reasons
    part.lists["oracle_checks"] = checks
    part.lists["mesh_files"] = sorted({n for c in part.configurations for n in c.notes})
    return part


# --------------------------------------------------------------------------- part 2: CRD validation cases

def comment_out_err(text: str) -> str:
    """The document with its top-level ``_err`` key (and its continuation lines) commented out."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("_err:"):
            inside = True
        elif inside and (not line.strip() or not line[0].isspace()):
            inside = False
        out.append("#" + line if inside else line)
    return "".join(out)


def validation_files(tree: Tree) -> list[str]:
    """The -valid and -invalid files holding a kind Galleon reads."""
    out = []
    for path in tree.files(VALIDATION_DIR):
        if not re.search(r"-(valid|invalid)\.ya?ml$", path):
            continue
        docs = safe_docs(path, tree.read(path) or b"")
        if any(d.group == ISTIO_GROUP and d.kind in ISTIO_KINDS for d in docs):
            out.append(path)
    return out


def object_configurations(path: str, data: bytes) -> list[tuple[Configuration, dict]]:
    """Each object of a validation file as a configuration of its own (the file with only that
    document, at its own lines), with the object as PyYAML reads it (for its ``_err``)."""
    out = []
    for start, text in split_documents(data.decode("utf-8", "replace")):
        if not has_content(text):
            continue
        try:
            body = mapping(yaml.safe_load(text))
        except yaml.YAMLError:
            body = {}
        meta = mapping(body.get("metadata"))
        label = f"{path}:{start} {body.get('kind', '?')} {meta.get('name', '?')}"
        content = "\n" * (start - 1) + comment_out_err(text)
        out.append((Configuration(label, {path: content.encode()}), body))
    return out


def part_validation(tree: Tree, verbose: bool) -> PartResult:
    part = PartResult("validation")
    invalid_total, invalid_flagged, missed = 0, 0, []
    flagged_by: Counter[str] = Counter()
    for path in validation_files(tree):
        valid = path.endswith(("-valid.yaml", "-valid.yml"))
        data = tree.read(path) or b""
        part.docs[path] = safe_docs(path, data)  # the file's objects, not the one-document copies
        for config, body in object_configurations(path, data):
            run = part.execute(config)
            errors = [f for f in run.findings if f.level is Level.ERROR]
            for f in run.findings:
                if valid or f.level is not Level.ERROR:
                    part.record(config, f)
            if not valid:
                invalid_total += 1
                if errors or run.unreadable:
                    invalid_flagged += 1
                    flagged_by.update({f.code for f in errors})
                else:
                    missed.append(f"{config.name}: Istio: {body.get('_err', '?')}")
            if verbose:
                print_configuration(config)
    part.extra.update({"invalid_objects": invalid_total, "invalid_flagged": invalid_flagged,
                       "valid_objects": len(part.configurations) - invalid_total})
    part.lists["invalid_not_flagged"] = missed
    part.lists["invalid_flagged_by"] = sorted(flagged_by.items())
    return part


# --------------------------------------------------------------------------- parts 3 and 4: folders

def without_objects(data: bytes, taken: set[tuple]) -> tuple[bytes, set[tuple]]:
    """The file with each document that defines an object in ``taken`` blanked, every line kept
    (so findings keep their lines); and the objects it still defines."""
    out: list[str] = []
    kept: set[tuple] = set()
    document: list[str] = []

    def flush() -> None:
        keys = {d.key for d in safe_docs("-", "".join(document).encode())}
        if keys & taken:
            out.extend("\n" for _ in document)
        else:
            out.extend(document)
            kept.update(keys)

    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        if re.match(r"---(\s|$)", line):
            flush()
            document = []
            out.append(line)
        else:
            document.append(line)
    flush()
    return "".join(out).encode(), kept


def compose(primary: list[FileInfo], others: list[FileInfo]) -> tuple[dict[str, bytes], int]:
    """``primary`` as written, then what each of ``others`` (in order) defines that is not yet
    defined: what ``kubectl apply`` of every file, the primary ones last, leaves. Also returns how
    many files lost documents that way."""
    files = {i.path: i.data for i in primary}
    taken = {d.key for i in primary for d in i.docs}
    trimmed = 0
    for info in others:
        data, kept = without_objects(info.data, taken)
        if kept:
            files[info.path] = data
            taken |= kept
        trimmed += data != info.data
    return files, trimmed


def folder_configurations(infos: list[FileInfo], label: str) -> list[Configuration]:
    """One configuration for the folder, or, when files redefine an object, one per such file."""
    if not infos:
        return []
    owners: dict[tuple, set[str]] = defaultdict(set)
    for info in infos:
        for doc in info.docs:
            owners[doc.key].add(info.path)
    variants = [i for i in infos if any(len(owners[d.key]) > 1 for d in i.docs)]
    if not variants:
        return [Configuration(label, {i.path: i.data for i in infos})]
    configs = []
    for variant in variants:
        files, trimmed = compose([variant], [i for i in infos if i is not variant])
        configs.append(Configuration(f"{label} [{posixpath.basename(variant.path)}]", files,
                                     [f"{trimmed} other files without the objects it redefines"]))
    return configs


def yaml_folders(tree: Tree, under: str = "") -> dict[str, list[str]]:
    folders: dict[str, list[str]] = defaultdict(list)
    for path in tree.files(under):
        if is_yaml(path) and not any(p.startswith(".") for p in path.split("/")):
            folders[posixpath.dirname(path)].append(path)
    return dict(sorted(folders.items()))


def inspect_all(part: PartResult, tree: Tree, paths: list[str]) -> list[FileInfo]:
    infos = []
    for path in paths:
        info = inspect_file(tree, path)
        if info.skipped:
            part.skipped[path] = info.skipped
        else:
            part.docs[path] = info.docs  # the file as written, whatever a configuration leaves out
            infos.append(info)
    return infos


def bookinfo_configurations(part: PartResult, tree: Tree, literal: bool) -> list[Configuration]:
    platform = inspect_file(tree, BOOKINFO_PLATFORM)
    if platform.skipped:
        part.problems.append(f"{BOOKINFO_PLATFORM}: {platform.skipped}")
        return []
    rules = inspect_file(tree, BOOKINFO_RULES)
    part.docs[platform.path] = platform.docs
    context = [] if literal or rules.skipped else [rules]
    configs = []
    for info in inspect_all(part, tree, yaml_folders(tree, BOOKINFO_NETWORKING).get(BOOKINFO_NETWORKING, [])):
        files, _trimmed = compose([platform, info], [r for r in context if r.path != info.path])
        configs.append(Configuration(f"bookinfo + {posixpath.basename(info.path)}", files,
                                     bookinfo=posixpath.basename(info.path)))
    rules_note = f", and the rules of {posixpath.basename(BOOKINFO_RULES)} it does not redefine" if context else ""
    part.lists["bookinfo_heading"] = f"{posixpath.basename(BOOKINFO_PLATFORM)} with each networking file{rules_note}"
    return configs


def bookinfo_rows(configs: list[Configuration]) -> list[dict]:
    """Per Bookinfo configuration: its networking file, Galleon's errors and warnings (any other level),
    the errors by code; a configuration Galleon could not run counts one error (its crash)."""
    rows = []
    for config in configs:
        if not config.bookinfo or config.run is None:
            continue
        errors = [f for f in config.run.findings if f.level is Level.ERROR]
        rows.append({"file": config.bookinfo, "errors": len(errors) + bool(config.run.crash),
                     "warnings": len(config.run.findings) - len(errors),
                     "codes": dict(Counter(f.code for f in errors))})
    return rows


def in_namespace(data: bytes, namespace: str) -> bytes:
    """The file as ``kubectl apply -n NAMESPACE`` applies it: every object whose metadata names no
    namespace gets this one (written into its metadata; a block-style metadata gains a line)."""
    out = []
    for _start, text in split_documents(data.decode("utf-8", "replace")):
        if re.search(r"^metadata:", text, re.M) and not re.search(r"^  namespace:|^metadata:\s*\{[^}]*namespace:",
                                                                   text, re.M):
            text = re.sub(r"^metadata:\s*\{", f"metadata: {{namespace: {namespace}, ", text, count=1, flags=re.M)
            text = re.sub(r"^metadata:\s*$", f"metadata:\n  namespace: {namespace}", text, count=1, flags=re.M)
        out.append(text)
    return "---\n".join(out).encode()


def _apply_namespace(info: FileInfo, namespace: str | None) -> None:
    if namespace is not None:
        info.data = in_namespace(info.data, namespace)
        info.docs = safe_docs(info.path, info.data)


def part_folders(name: str, tree: Tree, under: str, verbose: bool, bookinfo_literal: bool = False,
                 namespace: str | None = None, platform: str | None = None) -> PartResult:
    """Each folder as a configuration (see the module's docstring); with ``platform`` (a regular
    expression of paths), the files it matches are deployed first, under every other folder's files,
    as a reader of the book deploys its services before a chapter's configuration."""
    part = PartResult(name)
    configs: list[Configuration] = []
    folders = yaml_folders(tree, under)
    base = [] if platform is None else \
        inspect_all(part, tree, [path for paths in folders.values() for path in paths if re.match(platform, path)])
    for info in base:
        _apply_namespace(info, namespace)
    for folder, paths in folders.items():
        if name == "samples" and folder == BOOKINFO_NETWORKING:
            configs += bookinfo_configurations(part, tree, bookinfo_literal)
            continue
        infos = inspect_all(part, tree, paths)
        for info in infos:
            _apply_namespace(info, namespace)
        for config in folder_configurations(infos, folder or "."):
            if base and not all(re.match(platform or "", path) for path in config.files):
                primary = [FileInfo(path, data, safe_docs(path, data)) for path, data in config.files.items()]
                config.files, _trimmed = compose(primary, [i for i in base if i.path not in config.files])
            configs.append(config)
    for config in configs:
        run = part.execute(config)
        verdicts = oracle_verdicts(config.files, part.problems, intrinsic=True)
        for f in run.findings:
            verdict = next((v for vs in verdicts.values() for v in vs if v.covers(f)), None)
            part.record(config, f, None if verdict is None else Justification("oracle", verdict.oracle, verdict.why))
        if verbose:
            print_configuration(config)
    part.lists["bookinfo"] = bookinfo_rows(configs)
    return part


# --------------------------------------------------------------------------- output

def print_configuration(config: Configuration) -> None:
    run = config.run
    print(f"--- {config.name}: {len(config.files)} files, "
          f"{len(run.findings) if run else 0} findings")
    for note in config.notes:
        print(f"    note: {note}")
    if run:
        for file, why in run.unreadable.items():
            print(f"    unreadable: {file}: {why}")
        if run.crash:
            print(f"    Galleon raised: {run.crash}")
        for f in run.findings:
            print(f"    {finding_line(f)}")


def grouped(rows: list[tuple[str, str, str]], limit: int | None) -> list[str]:
    """rows of (sort key, group heading, line) -> lines, groups largest first."""
    groups: dict[str, list[str]] = defaultdict(list)
    for _key, heading, line in rows:
        groups[heading].append(line)
    out = []
    for heading, lines in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        out.append(f"  {heading}: {len(lines)}")
        shown = lines if limit is None else lines[:limit]
        out += [f"      {line}" for line in shown]
        if len(shown) < len(lines):
            out.append(f"      ... {len(lines) - len(shown)} more (--all to list them)")
    return out


def false_error_rows(part: PartResult) -> list[tuple[str, str, str]]:
    rows = []
    for f in sorted(part.false_errors.values(), key=Finding.sort_key):
        rows.append((f.code, f.code, f"{f.file}:{f.line} {f.code} {f.kind} {f.namespace}/{f.name}: {f.message}"))
    return rows


def print_part(part: PartResult, limit: int | None) -> None:
    fig = part.figures()
    print(f"\n=== part {PARTS.index(part.name) + 1}: {part.name}")
    print(f"configurations {fig['configurations']}, files {fig['files']}, objects {fig['objects']} "
          f"(Galleon objects {fig['galleon_objects']}); skipped files {fig['skipped_files']}, "
          f"unreadable to Galleon {fig['unreadable_files']}, Galleon crashes {fig['galleon_crashes']}")
    for problem in part.problems:
        print(f"  input problem: {problem}")
    for path, why in sorted(part.skipped.items()):
        print(f"  skipped: {path}: {why}")
    unreadable = sorted({(file, why) for c in part.configurations if c.run for file, why in c.run.unreadable.items()})
    for file, why in unreadable:
        print(f"  unreadable to Galleon: {file}: {why}")
    for note in part.lists.get("mesh_files", []):
        print(f"  note: {note}")
    print_errors(part, fig, limit)
    warnings = Counter(f.code for f in part.warnings.values())
    print(f"Galleon warnings: {fig['warnings']} ({', '.join(f'{c} {n}' for c, n in sorted(warnings.items()))})")
    if part.name == "analyzers":
        print_istio_messages(part, fig, limit)
    if part.name == "validation":
        print(f"objects Istio accepts {fig['valid_objects']}; objects Istio rejects {fig['invalid_objects']}, "
              f"Galleon flags {fig['invalid_flagged']} with an error "
              f"({', '.join(f'{c} {n}' for c, n in part.lists['invalid_flagged_by'])})")
        for line in part.lists["invalid_not_flagged"]:
            print(f"  not flagged: {line}")
    if part.lists.get("bookinfo"):
        print_bookinfo(part.lists["bookinfo"], part.lists.get("bookinfo_heading", ""))


def print_errors(part: PartResult, fig: dict, limit: int | None) -> None:
    """Galleon's errors: how many, how many each source justifies (part 1), the false ones by code."""
    print(f"Galleon errors {fig['errors']}: justified by Istio's expected messages {fig['justified_errors']}, "
          f"by an oracle {sum(fig['justified_by_oracle'].values())}, by the reviewed list "
          f"{sum(fig['justified_by_review'].values())}; false {fig['false_errors']}")
    if part.name != "analyzers":
        print("  (Istio accepts these objects as a cluster runs them: every error is false but those an intrinsic\n"
              "   oracle justifies, a conflict among the configuration's own objects that Istio's analyzer reports)")
        print_justified(part, "oracle", "by an intrinsic oracle:", {}, limit)
    else:
        print(f"  (each test case runs one analyzer on input Istio's validation never saw; of the "
              f"{fig['errors_not_named_by_istio']} errors no test case's\n   expected messages name, an oracle or "
              f"the reviewed list shows those another of Istio's analyzers,\n   Istio's validation or Kubernetes' "
              f"API gives on the same input)")
        print_justified(part, "oracle", "by an oracle (Istio's rule computed from the YAML):", {}, limit)
        print_justified(part, "reviewed", f"by the reviewed list ({REVIEWED_FILE.name}):",
                        part.lists.get("reasons", {}), limit)
        if fig["justified_in_some_configurations_only"]:
            print(f"  justified in one configuration and not in another, so counted false: "
                  f"{fig['justified_in_some_configurations_only']}")
    print(f"Galleon errors on configurations Istio accepts (false errors): {fig['false_errors']} "
          f"(in {fig['configurations_with_false_errors']} configurations, "
          f"on {fig['objects_with_false_errors']} objects)")
    print("\n".join(grouped(false_error_rows(part), limit)))


def print_justified(part: PartResult, source: str, heading: str, texts: dict[str, str], limit: int | None) -> None:
    """The errors one source justifies, by oracle or reason (counts; each error too with ``--all``)."""
    print(f"  {heading}")
    groups: dict[str, list[str]] = defaultdict(list)
    for f, j in sorted(part.justified(source).values(), key=lambda fj: fj[0].sort_key()):
        groups[j.label].append(f"{f.file}:{f.line} {f.code} {f.kind} {f.namespace}/{f.name}"
                               + (f": {j.why}" if source == "oracle" else ""))
    for label, lines in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"    {label}: {len(lines)}" + (f" -- {texts[label]}" if label in texts else ""))
        if limit is None:
            print("\n".join(f"        {line}" for line in lines))
    for line in part.lists.get("reviewed_unmet", []) if source == "reviewed" else []:
        print(f"    reviewed entry not applied: {line}")


def print_istio_messages(part: PartResult, fig: dict, limit: int | None) -> None:
    print(f"test cases read {fig['test_cases_read']}; Istio messages {fig['istio_messages']}, "
          f"on the kinds Galleon reads {fig['istio_messages_on_read_kinds']}: Galleon reports "
          f"{fig['reported_by_galleon']} (same level {fig['reported_same_level']}); on the kinds Galleon's "
          f"schemas serve today: {fig['istio_messages_on_served_kinds']}, Galleon reports "
          f"{fig['reported_on_served_kinds']}")
    print("Istio's messages Galleon misses, by code:")
    print("\n".join(grouped(part.lists["missed"], limit)))
    if part.lists["other_level"]:
        print("reported at another level than Istio's:")
        print("\n".join(grouped(part.lists["other_level"], limit)))
    for origin in part.lists["unresolved_origins"]:
        print(f"  origin not found in the case's input files (kind decided by name): {origin}")
    print("the oracles on Istio's own test cases of the analyzer each stands for (code on object; what they "
          "predict that Istio does not expect would make them unsound):")
    for label, check in part.lists.get("oracle_checks", {}).items():
        print(f"  {label}: test cases {check.cases}, messages predicted {check.predicted}, expected by Istio "
              f"{check.confirmed}, not expected {len(check.contradicted)} (Istio expects {check.istio_expects} "
              f"of {ORACLE_CODES.get(label, '?')} there)")
        for line in check.contradicted:
            print(f"      predicted, not expected: {line}")


def print_bookinfo(rows: list[dict], heading: str) -> None:
    """One line per Bookinfo configuration: its networking file, Galleon's errors and warnings."""
    print(f"Bookinfo ({heading}): {sum(1 for r in rows if not r['errors'])} of {len(rows)} "
          f"configurations with 0 errors")
    width = max(len(r["file"]) for r in rows)
    for r in rows:
        codes = f"  ({', '.join(f'{c} {n}' for c, n in sorted(r['codes'].items()))})" if r["codes"] else ""
        print(f"  {r['file']:<{width}}  errors {r['errors']:>2}  warnings {r['warnings']:>2}{codes}")


SUMMED = ("configurations", "files", "objects", "galleon_objects", "skipped_files", "unreadable_files",
          "galleon_crashes", "errors", "false_errors", "objects_with_false_errors", "configurations_with_false_errors",
          "justified_errors", "warnings")


def totals(parts: list[PartResult]) -> dict:
    figures = [p.figures() for p in parts]
    out: dict = {k: sum(f[k] for f in figures) for k in SUMMED}
    for key in ("justified_by_oracle", "justified_by_review"):
        out[key] = dict(sorted(sum((Counter(f[key]) for f in figures), Counter()).items()))
    return out


def as_json(parts: list[PartResult], sources: dict) -> dict:
    doc = {"sources": sources, "parts": {}, "total": totals(parts)}
    for part in parts:
        entry = part.figures()
        entry["false_errors_by_code"] = dict(sorted(Counter(f.code for f in part.false_errors.values()).items()))
        entry["false_error_list"] = [f.to_dict() for f in sorted(part.false_errors.values(), key=Finding.sort_key)]
        entry["justified_list"] = [{**f.to_dict(), "source": j.source, "label": j.label, "why": j.why}
                                   for s in SOURCES[1:] for f, j in sorted(part.justified(s).values(),
                                                                           key=lambda fj: fj[0].sort_key())]
        if part.name == "analyzers":
            entry["missed_by_code"] = dict(sorted(Counter(r[0] for r in part.lists["missed"]).items()))
            entry["reasons"] = part.lists.get("reasons", {})
            entry["reviewed_unmet"] = part.lists.get("reviewed_unmet", [])
            checks = part.lists.get("oracle_checks", {})
            entry["oracle_checks"] = {label: vars(check) for label, check in checks.items()}
        if part.name == "validation":
            entry["invalid_not_flagged"] = part.lists["invalid_not_flagged"]
        if part.lists.get("bookinfo"):
            entry["bookinfo"] = part.lists["bookinfo"]
        entry["problems"] = part.problems
        entry["skipped"] = part.skipped
        doc["parts"][part.name] = entry
    return doc


# --------------------------------------------------------------------------- main

def wanted_parts(only: str | None) -> list[str]:
    if not only:
        return list(PARTS)
    chosen = []
    for item in only.split(","):
        item = item.strip()
        if item.isdigit() and 1 <= int(item) <= len(PARTS):
            chosen.append(PARTS[int(item) - 1])
        elif item in PARTS:
            chosen.append(item)
        else:
            raise ValueError(f"--only: {item!r} is not one of 1-4, {', '.join(PARTS)}")
    return chosen


def print_totals(parts: list[PartResult]) -> None:
    total = totals(parts)
    print("\n=== total")
    print(f"configurations {total['configurations']}, files {total['files']}, objects {total['objects']} "
          f"(Galleon objects {total['galleon_objects']}); skipped files {total['skipped_files']}, "
          f"unreadable to Galleon {total['unreadable_files']}, Galleon crashes {total['galleon_crashes']}")
    print(f"Galleon errors {total['errors']}: justified by Istio's expected messages {total['justified_errors']}, "
          f"by an oracle {sum(total['justified_by_oracle'].values())}, by the reviewed list "
          f"{sum(total['justified_by_review'].values())}; false {total['false_errors']}")
    for key, heading in (("justified_by_oracle", "by oracle"), ("justified_by_review", "by reviewed reason")):
        if total[key]:
            print(f"  {heading}: " + ", ".join(f"{label} {n}" for label, n in total[key].items()))
    print(f"Galleon errors on configurations Istio accepts (false errors): {total['false_errors']} "
          f"(in {total['configurations_with_false_errors']} configurations, "
          f"on {total['objects_with_false_errors']} objects)")
    by_code = Counter(f.code for p in parts for f in p.false_errors.values())
    print("  by code: " + ", ".join(f"{c} {n}" for c, n in by_code.most_common()))
    for part in parts:
        fig = part.figures()
        if part.name == "analyzers":
            print(f"Istio's messages on the kinds Galleon reads: {fig['istio_messages_on_read_kinds']}, "
                  f"Galleon reports {fig['reported_by_galleon']} (same level {fig['reported_same_level']})")
        if part.name == "validation":
            print(f"objects Istio rejects that Galleon flags: {fig['invalid_flagged']} of {fig['invalid_objects']}")
        if part.lists.get("bookinfo"):
            rows = part.lists["bookinfo"]
            print(f"Bookinfo configurations with 0 errors: {sum(1 for r in rows if not r['errors'])} of {len(rows)}")


def arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("istio", nargs="?", default=ISTIO_REPO, help=f"Istio's Git directory (default {ISTIO_REPO})")
    ap.add_argument("--book", default=BOOK_REPO,
                    help=f"the Istio in Action examples' Git directory (default {BOOK_REPO})")
    ap.add_argument("--only", help="parts to run, comma-separated: 1-4 or " + ", ".join(PARTS))
    ap.add_argument("--verbose", action="store_true", help="print every finding of every configuration")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    ap.add_argument("--all", action="store_true",
                    help="list every false error and missed message (default: 10 per code), and every "
                         "justified error (default: their counts)")
    ap.add_argument("--bookinfo-literal", action="store_true",
                    help="Bookinfo: bookinfo.yaml and each networking file only, without destination-rule-all.yaml")
    args = ap.parse_args(argv)
    try:
        args.parts = wanted_parts(args.only)
    except ValueError as exc:
        ap.error(str(exc))
    return args


def run_part(name: str, istio: Tree, book: Tree | None, args: argparse.Namespace) -> PartResult:
    verbose = args.verbose and not args.json
    if name == "analyzers":
        return part_analyzers(istio, verbose)
    if name == "validation":
        return part_validation(istio, verbose)
    if name == "samples":
        return part_folders("samples", istio, "samples", verbose, args.bookinfo_literal)
    assert book is not None
    return part_folders("book", book, "", verbose, namespace=BOOK_NAMESPACE, platform=BOOK_PLATFORM)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        istio = Tree(args.istio)
        book = Tree(args.book) if "book" in args.parts else None
    except (pygit2.GitError, KeyError, ValueError) as exc:
        print(f"istio_corpus: cannot read a repository: {exc}", file=sys.stderr)
        return 2
    sources = {"galleon": str(Path(compiler.__file__).resolve().parent.parent),
               "istio": f"{args.istio}@{istio.commit}"}
    if book is not None:
        sources["book"] = f"{args.book}@{book.commit}"
    if not args.json:
        print("Galleon against Istio's material: " + ", ".join(f"{k} {v}" for k, v in sources.items()))
    parts = [run_part(name, istio, book, args) for name in args.parts]
    if args.json:
        print(json.dumps(as_json(parts, sources), indent=2, sort_keys=True))
        return 0
    for part in parts:
        print_part(part, None if args.all else 10)
    print_totals(parts)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    sys.exit(main())
