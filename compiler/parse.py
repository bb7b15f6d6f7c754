"""YAML to Kubernetes-style objects, with a source line for every field.

Documents are composed with libyaml's C parser and turned into plain Python
values by a small walker of our own, which records the line of every field
path as it goes, so a finding can point at ``.spec.http[0].route[1].weight``
rather than at the document. The walker also bounds alias expansion (YAML
bombs) and nesting depth, and rejects duplicate keys, which PyYAML would
silently collapse.
"""
from __future__ import annotations

import difflib
import hashlib
import operator
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import yaml
from yaml.constructor import SafeConstructor

from . import flow_colons
from .errors import InputError
from .findings import Finding, Level
from .kinds import CLUSTER_LABEL, LIST, NAMESPACE, NODE, PER_CLUSTER_KINDS, api_version, is_kubernetes, is_ours, shown_kind
from .schemas import served_versions, written_kind, written_kinds
from .snapshot import Snapshot

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 100
DEFAULT_NAMESPACE = "default"

CODE_YAML = "GAL0001"
STOPPED_AT = "invalid YAML,"  # how the finding after which a file is read no further begins
CODE_DUPLICATE_OBJECT = "GAL0002"
CODE_UNKNOWN_KIND = "GAL0003"
CODE_MALFORMED = "GAL0004"
CODE_DUPLICATE_KEY = "GAL0005"

Path = tuple[str | int, ...]


class UnreadableFile(InputError):
    """A file that cannot be read as YAML text at all: the source is unusable."""

    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")
        self.file = file
        self.message = message


def format_path(path: Path) -> str:
    """``('spec', 'http', 0, 'route')`` -> ``.spec.http[0].route``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "."


# Field lines are keyed by strings, not tuples: strings are invisible to the cyclic garbage
# collector, which otherwise spends more time rescanning the tables than building them.
# Control characters keep keys unambiguous even when a key holds dots (label names do).
_KEY, _INDEX = "\x1f", "\x1e"


def _line_key(path: Path) -> str:
    return "".join(f"{_INDEX}{p}" if isinstance(p, int) else f"{_KEY}{p}" for p in path)


def _display(key: str) -> str:
    return re.sub(r"\x1e(\d+)", r"[\1]", key).replace(_KEY, ".") or "."


@dataclass(eq=False)
class SourceObject:
    """One Kubernetes-style object as written, with where every field came from."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str
    body: dict[str, Any]
    file: str
    line: int
    file_lines: "FileLines" = field(repr=False)
    document: int = 0
    # Where in its document the object is: () for a whole document, ("items", i) for a List's item.
    at: Path = ()
    # What the schema check and each local analyzer found in this object, with the facts an analyzer
    # read (validate.schema, validate.framework): kept while a later parse shares the object.
    checks: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What names an object uniquely: its kind, namespace and name, and for the Kubernetes kinds
        that live in a cluster, the cluster its ``topology.istio.io/cluster`` label names (the same
        Service in two clusters is two objects, and one service: Istio's namespace sameness)."""
        cluster = self.labels.get(CLUSTER_LABEL, "") if self.kind in PER_CLUSTER_KINDS else ""
        # a Namespace is in none: a metadata.namespace written on one is dropped (the API server's rule)
        namespace = "" if self.kind in (NAMESPACE, NODE) else self.namespace
        return (self.group, self.kind, namespace, self.name, cluster)

    @cached_property
    def labels(self) -> dict[str, str]:
        metadata = self.body.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        return labels if isinstance(labels, dict) else {}

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def shown_kind(self) -> str:
        """The kind as findings and previews name it (kinds.shown_kind): as written, qualified by its
        group where Galleon knows it by another name (``Gateway.gateway.networking.k8s.io``)."""
        return shown_kind(self.group, written_kind(self.group, self.kind), self.kind)

    @cached_property
    def digest(self) -> str:
        """Equal for two parses exactly when the object's text, file and line are unchanged (a List's
        items share their document's text: an edit of one item counts for all)."""
        return f"{self.file}:{self.line}:{self.file_lines.digest(self.document)}"

    @cached_property
    def spec(self) -> dict[str, Any]:
        # Read hundreds of thousands of times by the analyzers and the model; a body never changes.
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        lines = self.file_lines.of(self.document)
        path = self.at + tuple(path)
        for end in range(len(path), len(self.at), -1):
            line = lines.get(_line_key(path[:end]))
            if line is not None:
                return line
        return self.line


@dataclass(frozen=True)
class FileParse:
    """One file's objects and findings on its own, before objects are checked against other files'.
    compiler/records.py turns one into plain data and back, for a cache kept between runs."""

    data: bytes
    objects: list[SourceObject]
    findings: list[Finding]


@dataclass
class ParseResult:
    objects: list[SourceObject]
    findings: list[Finding]
    files: dict[str, FileParse] = field(default_factory=dict, repr=False)


_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_AS_TEXT = {_TAG + "timestamp", _TAG + "binary"}
_constructor = SafeConstructor()


class _Loader(yaml.CSafeLoader):
    """libyaml's parser, with tags resolved by our builder rather than by the composer.

    libyaml's composer calls ``resolve``, ``descend_resolver`` and ``ascend_resolver`` for every
    node; as C builtins instead of Python methods they take a tenth of the instructions of a
    parse off (callgrind). ``slice`` keeps the composer's arguments, ``(kind, value, implicit)``,
    as the node's tag, from which ``_Builder.build`` resolves plain scalars as PyYAML's SafeLoader
    does (YAML 1.1, as Kubernetes reads YAML). Explicit tags (``!!int 3``, ``!custom``) stay strings.
    """

    resolve = slice
    descend_resolver = operator.is_
    ascend_resolver = tuple


_resolvers = yaml.CSafeLoader.yaml_implicit_resolvers.get


def _is_merge(node: yaml.Node) -> bool:
    """A merge key: ``<<`` written plain (its only implicit resolution), or tagged ``!!merge``."""
    tag = node.tag
    return node.__class__ is yaml.ScalarNode and (
        tag == _MERGE or (tag.__class__ is slice and tag.step[0] and node.value == "<<"))


class _Bomb(Exception):
    pass


class _Cycle(Exception):
    """An alias inside the node it names (``a: &a [*a]``), or a mapping merging itself
    (``a: &a {b: 1, <<: *a}``): a value without end, which no Kubernetes object can be."""

    def __init__(self, line: int, merge: bool = False):
        what = "this merge key (<<) merges a mapping that holds it" if merge else "this alias names a node that holds it"
        super().__init__(f"invalid YAML: {what}, a cycle without end; refer to another anchor")
        self.line = line


def _cycle(root: yaml.Node) -> _Cycle | None:
    """The first alias that refers back to a node holding it, if any (composed aliases are the very
    node they name). Only asked once a document is too deep or too large to read, so reading stays as
    fast; each node is walked once, however many aliases share it (a YAML bomb shares them all)."""
    holding: set[int] = set()  # the nodes on the way down to the one being walked
    done: set[int] = set()

    def walk(node: yaml.Node) -> _Cycle | None:
        holding.add(id(node))
        # (child, where it is written): a mapping's key says where an alias stands; the alias node
        # itself carries its anchor's place
        children = [(c, key) for key, value in node.value for c in (key, value)] \
            if isinstance(node, yaml.MappingNode) else [(c, c) for c in node.value]
        for child, written in children:
            if id(child) in holding:
                return _Cycle(written.start_mark.line + 1)
            if isinstance(child, yaml.CollectionNode) and id(child) not in done and len(holding) <= MAX_DEPTH:
                found = walk(child)
                if found is not None:
                    return found
        holding.discard(id(node))
        done.add(id(node))
        return None

    return walk(root) if isinstance(root, yaml.CollectionNode) else None


class _Builder:
    """Turns one composed document into Python values; with ``record``, also the line of every field."""

    def __init__(self, budget: int, record: bool = False, strings: dict[str, str] | None = None):
        self.budget = budget
        self.lines: dict[str, int] | None = {} if record else None
        self.duplicate_keys: list[tuple[str, int]] = []
        # Each distinct text once per file (field names, labels, ports repeat thousands of times): less
        # memory, and marshal writes a string met again as a reference (compiler/records.py), so a
        # record of a mesh is half the size and reads back twice as fast.
        self.strings: dict[str, str] = {} if strings is None else strings
        self._merging: set[int] = set()  # the mappings whose merge keys are being expanded

    def build(self, node: yaml.Node, key: str, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Bomb("anchors and aliases expand it far beyond its size (a YAML bomb?)")
        if depth > MAX_DEPTH:
            raise _Bomb(f"nesting deeper than {MAX_DEPTH} levels")
        kind = node.__class__
        if kind is yaml.ScalarNode:
            tag = node.tag
            if tag.__class__ is not slice:
                value = self._scalar(node, tag)
                return self.strings.setdefault(value, value) if value.__class__ is str else value
            value = node.value
            if tag.step[0]:  # plain: its text may be a bool, a number, null...
                for resolved, regexp in _resolvers(value[:1], ()):
                    if regexp.match(value):
                        return self._scalar(node, resolved)
            return self.strings.setdefault(value, value)
        if kind is yaml.MappingNode:
            return self._mapping(node.value, key, depth)
        lines = self.lines
        if lines is None:
            return [self.build(item, key, depth + 1) for item in node.value]
        out = []
        for index, item in enumerate(node.value):
            item_key = f"{key}{_INDEX}{index}"
            lines[item_key] = item.start_mark.line + 1
            out.append(self.build(item, item_key, depth + 1))
        return out

    def _mapping(self, pairs: list, key: str, depth: int) -> dict:
        out: dict = {}
        lines = self.lines
        nulls = False
        for key_node, value_node in pairs:
            if key_node.value == "<<" and _is_merge(key_node):  # the comparison spares a call per key
                return self._mapping(self._merged(pairs), key, depth)
            # Keys stay as written: Kubernetes objects are JSON, whose keys are strings.
            name = self.strings.setdefault(key_node.value, key_node.value) \
                if key_node.__class__ is yaml.ScalarNode else "<complex key>"
            if lines is not None:
                child = f"{key}{_KEY}{name}"
                lines[child] = key_node.start_mark.line + 1
            else:
                child = key
            if name in out:
                self.duplicate_keys.append((child, key_node.start_mark.line + 1))
            value = out[name] = self.build(value_node, child, depth + 1)
            nulls = nulls or value is None
        # A field set to null is a field not set, as Kubernetes reads objects (kubectl and the API
        # server drop it): `annotations:` with nothing after it is no error.
        return {k: v for k, v in out.items() if v is not None} if nulls else out

    def _merged(self, pairs: list) -> list:
        """YAML merge keys (<<: *base): the merged pairs come first so the mapping's own keys win."""
        merged: list = []
        own: list = []
        self._merging.add(id(pairs))
        for key_node, value_node in pairs:
            if _is_merge(key_node):
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        if id(source.value) in self._merging:
                            raise _Cycle(key_node.start_mark.line + 1, merge=True)
                        self.budget -= len(source.value)
                        merged.extend(p for p in self._flat(source.value))
            else:
                own.append((key_node, value_node))
        self._merging.discard(id(pairs))
        own_keys = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        seen: set = set()
        kept = []
        for key_node, value_node in reversed(merged):  # later merge sources lose to earlier ones
            if key_node.value in own_keys or key_node.value in seen:
                continue
            seen.add(key_node.value)
            kept.append((key_node, value_node))
        return list(reversed(kept)) + own

    def _flat(self, pairs: list) -> list:
        return self._merged(pairs) if any(_is_merge(k) for k, _ in pairs) else pairs

    @staticmethod
    def _scalar(node: yaml.ScalarNode, tag: str) -> Any:
        if tag in _AS_TEXT or not tag.startswith(_TAG):
            return node.value  # timestamps and custom tags stay text, as Kubernetes reads them
        construct = SafeConstructor.yaml_constructors.get(tag)
        if construct is None:
            return node.value
        return construct(_constructor, node)


def _decode(file: str, data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableFile(file, f"{len(data):,} bytes is over the {MAX_FILE_BYTES // 2**20} MB limit "
                                   "for one YAML file; split it into several files")
    if b"\0" in data:
        raise UnreadableFile(file, "is a binary file, not YAML text (it holds NUL bytes); "
                                   "remove it or rename it so it does not end in .yaml/.yml")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableFile(file, f"line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                                   f"{exc.start}); save the file as UTF-8") from None
    return flow_colons.quoted(text)


# For these, libyaml gives up far from the mistake (often at the end of the file); the place the
# unclosed bracket or quote was opened is where the user must look.
_OPENED_AT = ("while parsing a flow", "while scanning a quoted scalar")


def yaml_problem(exc: yaml.YAMLError) -> tuple[int, str]:
    """The line to look at for a YAML error, and what is wrong there from its column on, on one line
    and without the text around it (PyYAML quotes the line, and a kubeconfig's lines hold tokens)."""
    problem = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None) or ""
    opened = getattr(exc, "context_mark", None) if context.startswith(_OPENED_AT) else None
    mark = opened or problem or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = f"column {column}: {getattr(exc, 'problem', None) or ' '.join(str(exc).split())}"
    if context:
        what += f" ({context}"
        if opened and problem:
            what += " opened here" + (f"; the parser gave up at line {problem.line + 1}" if problem.line != opened.line
                                      else "")
        what += ")"
    return line, what


def read_document(file: str, data: bytes) -> Any:
    """The one YAML document of a file that holds one object (a ``dir:`` registry's manifest, a
    kubeconfig), read by the repository's rules: aliases and nesting bounded (a file of a few hundred
    bytes must not take a daemon's memory), a key given twice refused, a field set to null not set,
    timestamps kept as text. Raises UnreadableFile, whose message says where (never the text: a
    kubeconfig's lines hold tokens)."""
    text = _decode(file, data)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        line, what = yaml_problem(exc)
        raise UnreadableFile(file, f"invalid YAML at line {line}, {what}") from None
    except RecursionError:
        raise UnreadableFile(file, f"nesting too deep to read (over {MAX_DEPTH} levels)") from None
    if node is None:
        return None
    builder = _Builder(_budget(data), record=True)  # (one object: its lines name a key given twice)
    try:
        body = builder.build(node, "")
    except (_Bomb, _Cycle, RecursionError) as exc:
        cycle = _the_cycle(file, node, exc)
        raise UnreadableFile(file, f"line {cycle.line}: {cycle}") from None
    if builder.duplicate_keys:
        path, line = builder.duplicate_keys[0]
        raise UnreadableFile(file, f"line {line}: {_twice(path)}")
    return body


def _the_cycle(file: str, node: yaml.Node, exc: Exception) -> _Cycle:
    """The cycle that made a document unreadable; UnreadableFile when it was not one (a bomb of
    aliases, or nesting too deep)."""
    cycle = exc if isinstance(exc, _Cycle) else _cycle(node)
    if cycle is None:
        raise UnreadableFile(file, f"line {node.start_mark.line + 1}: "
                                   f"{exc if isinstance(exc, _Bomb) else 'nesting too deep to read'}") from None
    return cycle


def _twice(path: str) -> str:
    return f"key {_display(path)} is given twice in one mapping; YAML keeps only the last, remove one"


def _yaml_error(file: str, exc: yaml.YAMLError) -> Finding:
    """The finding of invalid YAML, after which no more of the file is read."""
    line, what = yaml_problem(exc)
    return Finding(file, line, Level.ERROR, CODE_YAML, f"{STOPPED_AT} {what}")


def stopped_files(findings: Iterable[Finding]) -> set[str]:
    """The files whose reading stopped at invalid YAML: what follows the error in them is not read
    (a document refused on its own, an alias cycle say, leaves the others read)."""
    return {f.file for f in findings if f.code == CODE_YAML and f.message.startswith(STOPPED_AT)}


_GROUP_VERSION = re.compile(r"(?:([a-z0-9.-]+)/)?([a-z0-9]+)")


def parse(snapshot: Snapshot, previous: ParseResult | None = None,
          stored: Mapping[str, FileParse] | None = None) -> ParseResult:
    """Every object of every YAML file in the snapshot, and what was wrong with them.

    With ``previous`` (another revision's result), a file whose bytes are unchanged keeps its
    parsed objects instead of being read again: a preview reads two revisions that mostly share
    their files. ``stored``, files' parses kept between runs (records.py), are used the same way.

    Raises UnreadableFile for a file that is not YAML text at all (binary,
    not UTF-8, too large, a YAML bomb): the source as a whole cannot be used.
    """
    known = readable_kinds()
    reusable = previous.files if previous is not None else {}
    stored = stored or {}
    files: dict[str, FileParse] = {}
    for file, data in snapshot.files.items():
        kept = [p for p in (reusable.get(file), stored.get(file)) if p is not None and p.data == data]
        files[file] = kept[0] if kept else _parse_file(file, data, known)
    objects: list[SourceObject] = []
    findings: list[Finding] = []
    seen: dict[tuple, SourceObject] = {}
    for file, parsed in files.items():
        findings += parsed.findings
        for obj in parsed.objects:
            first = seen.get(obj.key)
            if first is not None:
                findings.append(Finding(file, obj.line, Level.ERROR, CODE_DUPLICATE_OBJECT,
                                        f"defined twice: here and at {first.file}:{first.line}; "
                                        "names must be unique per kind and namespace",
                                        obj.shown_kind, obj.namespace, obj.name))
                continue
            seen[obj.key] = obj
            objects.append(obj)
    return ParseResult(objects, findings, files)


def readable_kinds() -> dict[tuple[str, str], tuple[str, tuple[str, ...]]]:
    """(group, kind as written) -> (the kind Galleon knows it as, its served versions)."""
    versions = served_versions()
    return {written: (kind, versions[(written[0], kind)]) for written, kind in written_kinds().items()}


def _budget(data: bytes) -> int:
    # Without aliases a file cannot hold more nodes than it has bytes; allow generous reuse.
    return 2 * len(data) + 10_000


class FileLines:
    """The field lines of one file's documents, found only when first asked for.

    Most objects never need a field line (only findings and previews do), so
    the first pass builds values alone, and this re-reads the file once, on
    demand, recording every field's line.
    """

    def __init__(self, text: str, budget: int, spans: Sequence[tuple[int, int]] = (), digests: Sequence[str] = ()):
        self._text = text
        self._budget = budget
        self._documents: list[_Builder] | None = None
        self._spans = spans  # each document's (start, end) in the text
        self._digests: dict[int, str] = dict(enumerate(digests))

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._spans)

    @property
    def digests(self) -> tuple[str, ...]:
        """Every document's digest, in order."""
        return tuple(self.digest(document) for document in range(len(self._spans)))

    def digest(self, document: int) -> str:
        """A hash of one document's text: what an incremental compile compares (computed on demand)."""
        found = self._digests.get(document)
        if found is None:
            start, end = self._spans[document]
            found = self._digests[document] = hashlib.sha256(self._text[start:end].encode()).hexdigest()[:24]
        return found

    def _builder(self, document: int) -> _Builder | None:
        if self._documents is None:
            self._documents = []
            try:
                for node in yaml.compose_all(self._text, Loader=_Loader):
                    builder = _Builder(self._budget, record=True)
                    builder.build(node, "")
                    self._documents.append(builder)
            except (yaml.YAMLError, _Bomb, _Cycle, RecursionError):
                pass  # the first pass reported it; the documents before it keep their lines
        return self._documents[document] if document < len(self._documents) else None

    def of(self, document: int) -> dict[str, int]:
        builder = self._builder(document)
        return builder.lines if builder is not None and builder.lines is not None else {}

    def duplicate_keys(self, document: int) -> list[tuple[str, int]]:
        builder = self._builder(document)
        return builder.duplicate_keys if builder else []


def file_lines(file: str, data: bytes, spans: Sequence[tuple[int, int]], digests: Sequence[str]) -> FileLines:
    """The field lines of a file already parsed once, whose documents are at ``spans`` and have ``digests``."""
    return FileLines(_decode(file, data), _budget(data), spans, digests)


def _parse_file(file: str, data: bytes, known) -> FileParse:
    objects: list[SourceObject] = []
    findings: list[Finding] = []
    text = _decode(file, data)
    budget = _budget(data)
    spans: list[tuple[int, int]] = []  # filled as documents are read
    strings: dict[str, str] = {}
    file_lines = FileLines(text, budget, spans)
    documents = yaml.compose_all(text, Loader=_Loader)
    # One document at a time: only its nodes are held (a whole file's take about 50 bytes per byte of
    # YAML), and the documents before a syntax error are still checked.
    while True:
        try:
            node = next(documents, None)
        except yaml.YAMLError as exc:
            findings.insert(0, _yaml_error(file, exc))
            break
        except RecursionError:
            raise UnreadableFile(file, f"nesting too deep to read (over {MAX_DEPTH} levels)") from None
        if node is None:
            break
        document = len(spans)
        spans.append((node.start_mark.index, node.end_mark.index))
        builder = _Builder(budget, strings=strings)
        try:
            body = builder.build(node, "")
        except (_Bomb, _Cycle, RecursionError) as exc:
            cycle = _the_cycle(file, node, exc)
            findings.append(Finding(file, cycle.line, Level.ERROR, CODE_YAML, str(cycle)))
            continue
        budget = builder.budget
        if body is None:
            continue  # an empty document (between two ---) holds nothing
        line = node.start_mark.line + 1
        if builder.duplicate_keys:
            for path, key_line in file_lines.duplicate_keys(document):
                findings.append(Finding(file, key_line, Level.ERROR, CODE_DUPLICATE_KEY, _twice(path)))
        objects += _objects(file, line, body, file_lines, document, known, findings)
    return FileParse(data, objects, findings)


def _objects(file, line, body, file_lines, document, known, findings) -> list[SourceObject]:
    """The objects one document holds: itself, or a v1 List's items; [] with findings when it is not
    an object, and silently for a kind of another product (a repository of manifests holds many)."""
    if isinstance(body, dict) and (body.get("apiVersion"), body.get("kind")) == LIST:
        items = body.get("items")
        if not isinstance(items, list):
            findings.append(Finding(file, line, Level.ERROR, CODE_MALFORMED,
                                    "a v1 List needs items: a list of objects", "List"))
            return []
        lines = file_lines.of(document)
        return [obj for i, item in enumerate(items)
                if (obj := _to_object(file, lines.get(_line_key(("items", i)), line), item, file_lines, document,
                                      known, findings, ("items", i))) is not None]
    obj = _to_object(file, line, body, file_lines, document, known, findings)
    return [] if obj is None else [obj]


def _group_version(api_version) -> tuple[str, str] | None:
    """``networking.istio.io/v1`` -> (``networking.istio.io``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    match = _GROUP_VERSION.fullmatch(api_version) if isinstance(api_version, str) else None
    return None if match is None else (match.group(1) or "", match.group(2))


def _likeness(group: str, home: str) -> float:
    return difflib.SequenceMatcher(None, group, home).ratio()


def _alike(group: str, home: str) -> bool:
    """Whether ``group`` is most likely a misspelling of ``home`` (not another product's kind of the
    same name, such as App Mesh's VirtualService)."""
    return _likeness(group, home) > 0.8


def _home(group: str, homes: list[str]) -> str | None:
    """Of the groups that have a kind of this name (a Gateway is Istio's or Gateway API's), the one a
    document writing it under ``group`` most likely meant: Istio's (or Galleon's) when ``group`` is
    one of theirs or one of Kubernetes' own (``v1 Gateway``, ``security.istio.io/v1 Gateway`` mean
    Istio's, as before Galleon read Gateway API's), else the most alike."""
    ours = is_ours(group) or is_kubernetes(group)
    return max(sorted(homes), key=lambda home: (ours and is_ours(home), _likeness(group, home)), default=None)


def _to_object(file, line, body, file_lines, document, known, findings, at: Path = ()) -> SourceObject | None:
    def malformed(message, path: Path = (), kind="-", namespace="-", name="-"):
        where = file_lines.of(document).get(_line_key(at + path), line) if path else line
        findings.append(Finding(file, where, Level.ERROR, CODE_MALFORMED, message, kind, namespace, name))

    if not isinstance(body, dict):
        malformed(f"a document must be a mapping with apiVersion, kind and metadata, not a {type(body).__name__}")
        return None
    written, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(kind, str) or not kind:
        malformed("kind is missing; every document needs apiVersion, kind and metadata.name")
        return None
    group_version = _group_version(written)
    if group_version is None:
        malformed(f"apiVersion is missing or not GROUP/VERSION: {written!r}", ("apiVersion",), kind)
        return None
    group, version = group_version
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    name = metadata.get("name")
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    shown = (namespace if isinstance(namespace, str) and namespace else "-",
             name if isinstance(name, str) and name else "-")
    found = known.get((group, kind))
    if found is None:
        home = _home(group, [g for g, k in known if k == kind])
        if home is not None and (is_ours(group) or is_kubernetes(group) or _alike(group, home)):
            malformed(f"{kind} belongs to {home or 'the core group'}, not {group or 'the core group'}; use "
                      f"apiVersion: {api_version(home, known[(home, kind)][1][0])}", ("apiVersion",), kind, *shown)
        elif is_ours(group):
            findings.append(Finding(file, line, Level.WARNING, CODE_UNKNOWN_KIND,
                                    f"{written} {kind} is not a kind Galleon reads; ignored", kind, *shown))
        return None
    known_as, versions = found
    named = shown_kind(group, kind, known_as)  # as findings name the object (SourceObject.shown_kind)
    if not isinstance(name, str) or not name:
        malformed("metadata.name is required", ("metadata",), named)
        return None
    if not isinstance(namespace, str) or not namespace:
        malformed(f"metadata.namespace must be a non-empty string, not {namespace!r}",
                  ("metadata", "namespace"), named, "-", name)
        return None
    if version not in versions:
        malformed(f"{written} is not a served version of {kind}; use one of "
                  + ", ".join(api_version(group, v) for v in versions), ("apiVersion",), named, namespace, name)
        return None
    return SourceObject(group, version, known_as, namespace, name, body, file, line, file_lines, document, at=at)

