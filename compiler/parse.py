"""YAML to Kubernetes-style objects, with a source line for every field.

Documents are composed with libyaml's C parser and turned into plain Python
values by a small walker of our own, which records the line of every field
path as it goes, so a finding can point at ``.spec.http[0].route[1].weight``
rather than at the document. The walker also bounds alias expansion (YAML
bombs) and nesting depth, and rejects duplicate keys, which PyYAML would
silently collapse.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .findings import Finding, Level
from .schemas import served_versions
from .snapshot import Snapshot

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 100
DEFAULT_NAMESPACE = "default"

CODE_YAML = "GAL0001"
CODE_DUPLICATE_OBJECT = "GAL0002"
CODE_UNKNOWN_KIND = "GAL0003"
CODE_MALFORMED = "GAL0004"
CODE_DUPLICATE_KEY = "GAL0005"

Path = tuple[str | int, ...]


class UnreadableFile(Exception):
    """A file that cannot be read as YAML text at all: the source is unusable."""

    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")
        self.file = file
        self.message = message


def format_path(path: Path) -> str:
    """``('spec', 'http', 0, 'route')`` -> ``.spec.http[0].route``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "."


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
    lines: dict[Path, int] = field(repr=False)
    revision: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return self.line


@dataclass
class ParseResult:
    objects: list[SourceObject]
    findings: list[Finding]


_TAG = "tag:yaml.org,2002:"
_AS_TEXT = {_TAG + "timestamp", _TAG + "binary"}
_constructor = SafeConstructor()


class _Bomb(Exception):
    pass


class _Builder:
    """Turns one composed document into Python values, recording field lines."""

    def __init__(self, budget: int):
        self.budget = budget
        self.lines: dict[Path, int] = {}
        self.duplicate_keys: list[tuple[Path, int]] = []

    def build(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Bomb("anchors and aliases expand it far beyond its size (a YAML bomb?)")
        if depth > MAX_DEPTH:
            raise _Bomb(f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for index, item in enumerate(node.value):
                item_path = path + (index,)
                self.lines[item_path] = item.start_mark.line + 1
                out.append(self.build(item, item_path, depth + 1))
            return out
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict:
        out: dict = {}
        for key_node, value_node in self._pairs(node):
            # Keys stay as written: Kubernetes objects are JSON, whose keys are strings.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            child = path + (key,)
            line = key_node.start_mark.line + 1
            if key in out:
                self.duplicate_keys.append((child, line))
            self.lines[child] = line
            out[key] = self.build(value_node, child, depth + 1)
        return out

    def _pairs(self, node: yaml.MappingNode):
        # YAML merge keys (<<: *base): the merged pairs come first so the node's own keys win.
        merged, own = [], []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        self.budget -= len(source.value)
                        merged.extend(source.value)
            else:
                own.append((key_node, value_node))
        if not merged:
            return own
        own_keys = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        seen: set = set()
        kept = []
        for key_node, value_node in reversed(merged):  # later merge sources lose to earlier ones
            if key_node.value in own_keys or key_node.value in seen:
                continue
            seen.add(key_node.value)
            kept.append((key_node, value_node))
        return list(reversed(kept)) + own

    @staticmethod
    def _scalar(node: yaml.Node) -> Any:
        if node.tag in _AS_TEXT or not node.tag.startswith(_TAG):
            return node.value  # timestamps and custom tags stay text, as Kubernetes reads them
        construct = SafeConstructor.yaml_constructors.get(node.tag)
        if construct is None or not isinstance(node, yaml.ScalarNode):
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
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableFile(file, f"line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                                   f"{exc.start}); save the file as UTF-8") from None


# For these, libyaml gives up far from the mistake (often at the end of the file); the place the
# unclosed bracket or quote was opened is where the user must look.
_OPENED_AT = ("while parsing a flow", "while scanning a quoted scalar")


def _yaml_error(file: str, exc: yaml.YAMLError) -> Finding:
    problem = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None) or ""
    opened = getattr(exc, "context_mark", None) if context.startswith(_OPENED_AT) else None
    mark = opened or problem or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"invalid YAML, column {column}: {getattr(exc, 'problem', None) or exc}"
    if context:
        message += f" ({context}"
        if opened and problem:
            message += f" opened here; the parser gave up at line {problem.line + 1}"
        message += ")"
    return Finding(file, line, Level.ERROR, CODE_YAML, message)


_GROUP_VERSION = re.compile(r"^(?:([a-z0-9.-]+)/)?([a-z0-9]+)$")


def parse(snapshot: Snapshot) -> ParseResult:
    """Every object of every YAML file in the snapshot, and what was wrong with them.

    Raises UnreadableFile for a file that is not YAML text at all (binary,
    not UTF-8, too large, a YAML bomb): the source as a whole cannot be used.
    """
    objects: list[SourceObject] = []
    findings: list[Finding] = []
    seen: dict[tuple, SourceObject] = {}
    known = served_versions()
    for file, data in snapshot.files.items():
        text = _decode(file, data)
        nodes = []
        try:
            # One document at a time, so the documents before a syntax error are still checked.
            for node in yaml.compose_all(text, Loader=yaml.CSafeLoader):
                nodes.append(node)
        except yaml.YAMLError as exc:
            findings.append(_yaml_error(file, exc))
        except RecursionError:
            raise UnreadableFile(file, f"nesting too deep to read (over {MAX_DEPTH} levels)") from None
        # Without aliases a file cannot hold more nodes than it has bytes; allow generous reuse.
        builder_budget = 2 * len(data) + 10_000
        for node in nodes:
            builder = _Builder(builder_budget)
            try:
                body = builder.build(node, ())
            except _Bomb as exc:
                raise UnreadableFile(file, f"line {node.start_mark.line + 1}: {exc}") from None
            builder_budget = builder.budget
            if body is None:
                continue  # an empty document (between two ---) holds nothing
            line = node.start_mark.line + 1
            for path, key_line in builder.duplicate_keys:
                findings.append(Finding(file, key_line, Level.ERROR, CODE_DUPLICATE_KEY,
                                        f"key {format_path(path)} is given twice in one mapping; "
                                        "YAML keeps only the last, remove one"))
            obj = _to_object(file, line, body, builder.lines, snapshot.revision, known, findings)
            if obj is None:
                continue
            first = seen.get(obj.key)
            if first is not None:
                findings.append(Finding(file, line, Level.ERROR, CODE_DUPLICATE_OBJECT,
                                        f"defined twice: here and at {first.file}:{first.line}; "
                                        "names must be unique per kind and namespace",
                                        obj.kind, obj.namespace, obj.name))
                continue
            seen[obj.key] = obj
            objects.append(obj)
    return ParseResult(objects, findings)


def _to_object(file, line, body, lines, revision, known, findings) -> SourceObject | None:
    def malformed(message, path: Path = (), kind="-", namespace="-", name="-"):
        findings.append(Finding(file, lines.get(path, line), Level.ERROR, CODE_MALFORMED, message,
                                kind, namespace, name))

    if not isinstance(body, dict):
        malformed(f"a document must be a mapping with apiVersion, kind and metadata, not a {type(body).__name__}")
        return None
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(kind, str) or not kind:
        malformed("kind is missing; every document needs apiVersion, kind and metadata.name")
        return None
    match = _GROUP_VERSION.match(api_version) if isinstance(api_version, str) else None
    if match is None:
        malformed(f"apiVersion is missing or not GROUP/VERSION: {api_version!r}", ("apiVersion",), kind)
        return None
    group, version = match.group(1) or "", match.group(2)
    versions = known.get((group, kind))
    if versions is None:
        home = next((g for g, k in known if k == kind), None)
        if home is not None:
            malformed(f"{kind} belongs to {home}, not {group or 'the core group'}; use apiVersion: "
                      f"{home}/{known[(home, kind)][0]}", ("apiVersion",), kind)
            return None
        findings.append(Finding(file, line, Level.WARNING, CODE_UNKNOWN_KIND,
                                f"{api_version} {kind} is not a kind Galleon reads; ignored", kind))
        return None
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        malformed("metadata.name is required", ("metadata",), kind)
        return None
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        malformed(f"metadata.namespace must be a non-empty string, not {namespace!r}",
                  ("metadata", "namespace"), kind, "-", name)
        return None
    if version not in versions:
        malformed(f"{group}/{version} is not a served version of {kind}; use one of "
                  + ", ".join(f"{group}/{v}" for v in versions), ("apiVersion",), kind, namespace, name)
        return None
    return SourceObject(group, version, kind, namespace, name, body, file, line, lines, revision)
