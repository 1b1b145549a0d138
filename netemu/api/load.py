"""Loading Kubernetes manifests: multi-document YAML files, JSON files and directories.

Loading only reads files. Each document becomes a typed, frozen resource
together with an `Origin` that can point at the line of every field, so that
any later stage can report `file:line` for a field path. All structural errors
(YAML or JSON syntax, duplicate keys, missing or unknown apiVersion/kind,
unknown fields, wrong types) are collected and raised together.

Speed: YAML is composed by libyaml (PyYAML's CSafeLoader, whose nodes keep
their marks) and JSON is parsed by the json module; the line of each field is
only worked out when a diagnostic needs it (`Origin.line_of`), by composing
that one document again. Bounds: a file's size, a YAML document's nodes, the
nesting depth and alias expansion are limited (see the constants below),
and only regular files are read, so no input can exhaust memory or hang.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydantic
import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from netemu.api.apps import (
    DaemonSet,
    Deployment,
    ReplicaSet,
    ReplicationController,
    StatefulSet,
)
from netemu.api.base import K8sModel
from netemu.api.batch import CronJob, Job
from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.core import (
    ConfigMap,
    Endpoints,
    EndpointSlice,
    Namespace,
    Node,
    Pod,
    Secret,
    Service,
)
from netemu.api.errors import Diagnostic, FieldPath, InputError, format_field_path
from netemu.api.generic import (
    BUILTIN_GROUPS,
    BUILTIN_KINDS,
    NOT_OBJECT_GROUPS,
    GenericObject,
    builtin_kind,
    generic_model,
    split_api_version,
)
from netemu.api.networking import Ingress, IngressClass
from netemu.heap import gc_paused

# (apiVersion, kind) → type. The only place that says which kinds netemu reads.
KINDS: dict[tuple[str, str], type[K8sModel]] = {
    ("v1", "Service"): Service,
    ("v1", "Pod"): Pod,
    ("v1", "Node"): Node,
    ("v1", "Namespace"): Namespace,
    ("v1", "ConfigMap"): ConfigMap,
    ("v1", "Secret"): Secret,
    ("apps/v1", "Deployment"): Deployment,
    ("apps/v1", "ReplicaSet"): ReplicaSet,
    ("apps/v1", "DaemonSet"): DaemonSet,
    ("apps/v1", "StatefulSet"): StatefulSet,
    ("v1", "ReplicationController"): ReplicationController,
    ("v1", "Endpoints"): Endpoints,
    ("batch/v1", "Job"): Job,
    ("batch/v1", "CronJob"): CronJob,
    ("discovery.k8s.io/v1", "EndpointSlice"): EndpointSlice,
    ("networking.k8s.io/v1", "Ingress"): Ingress,
    ("networking.k8s.io/v1", "IngressClass"): IngressClass,
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"): KubeProxyConfiguration,
    ("netemu/v1alpha1", "Lab"): Lab,
}
API_VERSIONS_OF_KIND = {kind: api for api, kind in KINDS}

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# A file is read whole, and its objects take about ten times its size in memory, so
# its size is bounded. A `kubectl get services,endpointslices -A -o json` dump of
# 10,000 Services with 5 endpoints each is about 24 MB (kubectl indents by 4): 32 MiB
# fits it and keeps a file's objects within a few hundred MB. (The API server itself
# takes at most 3 MiB per object, its request body limit; files hold many.)
MAX_FILE_BYTES = 32 * 1024 * 1024
# libyaml composes a whole document before anything can look at it, and a node (with
# its two marks) takes up to about 800 bytes: the nodes of one YAML document (the text
# between two `---` lines) are bounded apart, by an estimate made before composing
# (every line, value separator and sequence entry counted as if it began nodes).
# 500,000 is about 400 MB at worst; a manifest is estimated at a few hundred nodes, a
# `kubectl get -o yaml` List of 3,000 Services with their EndpointSlices at 480,000. Bigger
# dumps load as JSON (about ten times smaller in memory) or as one document per object.
MAX_YAML_NODES = 500_000
# No Kubernetes object nests deeper than a few dozen levels (a pod template's probe's
# HTTP header is 10), while Python stages after loading (pydantic, dumping objects
# back) recurse once per level. Kubernetes' own decoders stop at 10,000 levels
# (go-yaml: "exceeded max depth of 10000"; encoding/json likewise); netemu stops far
# earlier, where no real manifest goes.
MAX_DEPTH = 100

# go-yaml's defence against "billion laughs" alias bombs (gopkg.in/yaml.v2 decode.go,
# the fix for CVE-2019-11253, used by sigs.k8s.io/yaml and so by kubectl and the API
# server): a document whose decoding is mostly alias expansion is refused. Once more
# than 100 of over 1,000 decoded nodes came from aliases, their share may be at most
# 99% up to 400,000 decoded nodes, falling linearly to 10% at 4,000,000.
_ALIAS_RANGE_LOW = 400_000
_ALIAS_RANGE_HIGH = 4_000_000


def _allowed_alias_ratio(decoded: int) -> float:
    if decoded <= _ALIAS_RANGE_LOW:
        return 0.99
    if decoded >= _ALIAS_RANGE_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _ALIAS_RANGE_LOW) / (_ALIAS_RANGE_HIGH - _ALIAS_RANGE_LOW)


# kubectl decodes a stream as JSON when it starts with "{" (after blanks), else as YAML
# (k8s.io/apimachinery/pkg/util/yaml: YAMLOrJSONDecoder, hasJSONPrefix).
_JSON_START = re.compile(r"[ \t\r\n]*\{")
_JSON_BLANKS = re.compile(r"[ \t\r\n]*")
# A line that starts or ends a YAML document; no document's text spans one.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's composer (when PyYAML was built with it; the pure-Python one
    otherwise) with a quicker tag resolver: libyaml asks Python to resolve every node,
    which took a third of the time. The same tags as SafeLoader's resolver, which has
    no path resolvers (so descending and ascending do nothing): plain scalars are
    matched once per distinct text and remembered."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                tag = self._plain_tags.get(value)
                if tag is None:
                    tag = self._plain_tags[value] = super().resolve(kind, value, implicit)
                return tag
            return _STR
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


class _Lines:
    """The line table of one document, built on first use by `compute`."""

    def __init__(self, compute: Callable[[], dict[FieldPath, int]]) -> None:
        self._compute: Callable[[], dict[FieldPath, int]] | None = compute
        self._table: dict[FieldPath, int] = {}

    def table(self) -> dict[FieldPath, int]:
        if self._compute is not None:
            compute, self._compute = self._compute, None
            try:
                self._table = compute()
            except (yaml.YAMLError, RecursionError, ValueError):
                self._table = {}  # lines are a courtesy: the document's own line remains
        return self._table


class Origin:
    """Where a document came from, and the line of each of its fields.

    `lines` maps field paths to lines; it is worked out from the file's text
    the first time a line is asked for. A document inside a `kind: List` sees
    the List's table under its own prefix (`("items", i)`)."""

    __slots__ = ("_line", "_lines", "_prefix", "file")

    def __init__(
        self,
        file: str,
        line: int | None,
        lines: dict[FieldPath, int] | _Lines | None = None,
        prefix: FieldPath = (),
    ) -> None:
        self.file = file
        self._line = line
        if lines is None:
            lines = {}
        self._lines = lines
        self._prefix = prefix

    @property
    def line(self) -> int:
        if self._line is None:
            self._line = self._table().get(self._prefix, 0)
        return self._line

    @property
    def lines(self) -> dict[FieldPath, int]:
        table = self._table()
        if not self._prefix:
            return table
        n = len(self._prefix)
        return {path[n:]: line for path, line in table.items() if path[:n] == self._prefix}

    def _table(self) -> dict[FieldPath, int]:
        return self._lines.table() if isinstance(self._lines, _Lines) else self._lines

    def line_of(self, path: FieldPath) -> int:
        """Line of the deepest existing prefix of `path` (the field, or its parent)."""
        table = self._table()
        full = self._prefix + path
        for end in range(len(full), len(self._prefix) - 1, -1):
            found = table.get(full[:end])
            if found is not None:
                return found
        return self.line

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Origin):
            return NotImplemented
        return (self.file, self.line) == (other.file, other.line)

    def __hash__(self) -> int:
        return hash((self.file, self.line))

    def __repr__(self) -> str:
        return f"Origin(file={self.file!r}, line={self.line})"


@dataclass(frozen=True)
class Loaded:
    """A typed resource and where it was written."""

    obj: K8sModel
    origin: Origin

    @property
    def ref(self) -> str:
        return object_ref(self.obj)

    def diagnostic(self, path: FieldPath, message: str) -> Diagnostic:
        return Diagnostic(
            self.origin.file,
            self.origin.line_of(path),
            self.ref,
            format_field_path(path),
            message,
        )


def object_ref(obj: K8sModel) -> str:
    """`Kind/name` as error messages and tables show it."""
    kind = getattr(obj, "kind", type(obj).__name__)
    meta = getattr(obj, "metadata", None)
    name = getattr(meta, "name", None) if meta is not None else None
    if isinstance(meta, dict):
        name = meta.get("name")
    return f"{kind}/{name or '<unnamed>'}"


# ---------------------------------------------------------------- files


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus manifest files found under directories (sorted).
    Under a directory only regular files (or links to them) named *.yaml, *.yml or
    *.json are taken; FIFOs, devices and sockets there are skipped."""
    return _manifest_files(paths)[0]


def _manifest_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in MANIFEST_SUFFIXES and f.is_file())
            if not found:
                # As kubectl: "error reading [dir]: recognized file extensions are [...]".
                problems.append(
                    Diagnostic(
                        str(p),
                        0,
                        "",
                        "",
                        "no manifest files in this directory: recognized file extensions "
                        "are [.json .yaml .yml]",
                    )
                )
            files.extend(found)
        else:
            files.append(p)
    return files, problems


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(mode: int) -> str:
    """Why a file of this mode is not read, or "" for a regular file."""
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return f"not a regular file ({kind}): manifests are read from regular files only"


def _too_large(size: int) -> str:
    return (
        f"file too large: {size:,} bytes; netemu reads at most {MAX_FILE_BYTES:,} bytes "
        f"({MAX_FILE_BYTES // 2**20} MiB) per file: split it into several files"
    )


def read_manifest(path: Path) -> bytes | tuple[int, str]:
    """The bytes of a manifest file, or (line, why) it cannot be read: line 0 for a
    file without lines (missing, unreadable, not a regular file), 1 for a regular
    file refused whole. Checked before any byte is read: the file is regular (never
    a FIFO that blocks or a device that never ends) and of bounded size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return 0, "no such file or directory"
    except OSError as exc:
        return 0, f"cannot read: {exc.strerror}"
    if why := _not_regular(info.st_mode):
        return 0, why
    if info.st_size > MAX_FILE_BYTES:
        return 1, _too_large(info.st_size)
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the check above,
        # opening it does not wait for a writer; fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return 0, f"cannot read: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        if why := _not_regular(os.fstat(fd).st_mode):
            return 0, why
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return 1, _too_large(len(data))
    return data


def decode_text(data: bytes, file: str) -> str | Diagnostic:
    """UTF-8 text (a byte order mark dropped), or a diagnostic at the line of the first
    byte that is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        return Diagnostic(
            file,
            line,
            "",
            "",
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column} ({exc.reason}); "
            "manifests are UTF-8 text",
        )


def load_paths(paths: Iterable[str | Path], notes: list[str] | None = None) -> list[Loaded]:
    """Load every document of every file; raise InputError with all problems.
    No object at all in the input is itself an error, as for `kubectl apply`.
    `notes` gets one line per document skipped (no object) and per kind stored
    but not emulated (see `stored_not_emulated`)."""
    loaded, problems = load_paths_partly(paths, notes)
    if problems:
        raise InputError(problems)
    return loaded


def load_paths_partly(
    paths: Iterable[str | Path], notes: list[str] | None = None
) -> tuple[list[Loaded], list[Diagnostic]]:
    """Every object that loads, and the problems of those that do not: what
    loads can still be checked (netemu.api.validate), so that one broken
    document does not hide the other documents' errors."""
    if notes is None:
        notes = []
    skipped: list[Diagnostic] = []
    paths = list(paths)
    files, problems = _manifest_files(paths)
    loaded: list[Loaded] = []
    with gc_paused():
        for f in files:
            data = read_manifest(f)
            if isinstance(data, tuple):
                problems.append(Diagnostic(str(f), data[0], "", "", data[1]))
                continue
            text = decode_text(data, str(f))
            if isinstance(text, Diagnostic):
                problems.append(text)
                continue
            docs, doc_problems = load_text(text, str(f), skipped)
            loaded.extend(docs)
            problems.extend(doc_problems)
    problems.extend(resolve_custom_kinds(loaded))
    notes.extend(f"notice: {note}" for note in sorted(skipped))
    notes.extend(stored_not_emulated(loaded))
    if not loaded and not problems:
        where = str(paths[0]) if paths else "<no files>"
        problems.append(
            Diagnostic(
                where,
                1 if files else 0,
                "",
                "",
                "no objects in the input (kubectl: no objects passed to apply): every file "
                "holds only empty documents or comments",
            )
        )
    return loaded, problems


def stored_not_emulated(loaded: Iterable[Loaded]) -> list[str]:
    """One warning line per generic kind in `loaded`: stored, not emulated."""
    counts: dict[tuple[str, str], int] = {}
    defined: set[tuple[str, str]] = set()  # (group, kind) of the CRDs in the input
    for item in loaded:
        if isinstance(item.obj, GenericObject):
            key = (item.obj.kind, item.obj.api_version)
            counts[key] = counts.get(key, 0) + 1
            spec = (item.obj.model_extra or {}).get("spec")
            if item.obj.kind == "CustomResourceDefinition" and isinstance(spec, dict):
                names = spec.get("names")
                if isinstance(names, dict):
                    defined.add((str(spec.get("group")), str(names.get("kind"))))
    lines = []
    for (kind, api_version), n in sorted(counts.items()):
        objects = "1 object" if n == 1 else f"{n} objects"
        group = split_api_version(api_version)[0]
        custom = ""
        if group not in BUILTIN_GROUPS:
            custom = ", custom resource"
            if (group, kind) not in defined:
                custom += " without its CustomResourceDefinition in the input"
        lines.append(f"warning: {kind} ({api_version}{custom}): {objects} stored, not emulated")
    return lines


def resolve_custom_kinds(loaded: Iterable[Loaded]) -> list[Diagnostic]:
    """Custom resources against the CustomResourceDefinitions in the same input:
    a CRD gives its kind's scope, plural and short names; a version the CRD
    does not serve is an error, as kubectl's "no matches for kind". A custom
    resource whose CRD is not in the input is kept (namespaced), with the
    kind's warning: kubectl would refuse it on a cluster without the CRD, but
    real bundles install CRDs separately and should load here as they are."""
    items = list(loaded)
    crds: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        obj = item.obj
        if isinstance(obj, GenericObject) and obj.kind == "CustomResourceDefinition":
            spec = (obj.model_extra or {}).get("spec")
            if not isinstance(spec, dict) or not isinstance(spec.get("names"), dict):
                continue
            names = spec["names"]
            if isinstance(spec.get("group"), str) and isinstance(names.get("kind"), str):
                crds[(spec["group"], names["kind"])] = spec
    for (_, kind), spec in crds.items():
        names = spec["names"]
        short = names.get("shortNames")
        generic_model(
            kind,
            namespaced=spec.get("scope") != "Cluster",
            plural=names.get("plural") if isinstance(names.get("plural"), str) else "",
            short_names=tuple(s for s in short if isinstance(s, str))
            if isinstance(short, list)
            else (),
        )
    problems: list[Diagnostic] = []
    for item in items:
        obj = item.obj
        if not isinstance(obj, GenericObject):
            continue
        group, version = split_api_version(obj.api_version)
        spec = crds.get((group, obj.kind))
        if spec is None or not isinstance(spec.get("versions"), list):
            continue
        served = [
            v.get("name")
            for v in spec["versions"]
            if isinstance(v, dict) and v.get("served", True) is not False
        ]
        if version not in served:
            expected = " or ".join(repr(f"{group}/{v}") for v in served)
            problems.append(
                item.diagnostic(
                    ("apiVersion",),
                    f'no matches for kind "{obj.kind}" in version "{obj.api_version}": its '
                    f"CustomResourceDefinition serves {expected or 'no version'}",
                )
            )
    return problems


# ---------------------------------------------------------------- text


def load_text(
    text: str, file: str, notes: list[Diagnostic] | None = None
) -> tuple[list[Loaded], list[Diagnostic]]:
    """Parse a YAML text (or JSON, for a `.json` file or a text that starts with `{`)
    into typed resources and diagnostics. Documents that are no objects (a
    Kustomization, a Helm values file) are skipped, each with a notice in `notes`."""
    if notes is None:
        notes = []
    looks_json = _JSON_START.match(text) is not None
    result = _load_json(text, file, notes) if file.endswith(".json") or looks_json else None
    loaded, problems = result if result is not None else _load_yaml(text, file, notes)
    # A parser that stops at the end of the text marks the line after the last one:
    # the problem is on the file's last line.
    last = max(1, text.count("\n") + (0 if text.endswith("\n") or not text else 1))
    return loaded, [replace(d, line=last) if d.line > last else d for d in problems]


def _load_json(
    text: str, file: str, notes: list[Diagnostic]
) -> tuple[list[Loaded], list[Diagnostic]] | None:
    """A stream of JSON values, or None for a text that is no JSON and whose file is not
    named *.json (then it is read as YAML, of which a flow mapping is part)."""
    dupes = 0  # objects with a repeated key so far

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal dupes
        made = dict(items)
        if len(made) != len(items):
            dupes += 1
        return made

    decoder = json.JSONDecoder(object_pairs_hook=pairs)
    values: list[tuple[Any, int, int, bool]] = []  # (value, start, end, has duplicates)
    index = _skip_blanks(text, 0)
    while index < len(text):
        before = dupes
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            if not values and not file.endswith(".json"):
                return None
            return [], [Diagnostic(file, exc.lineno, "", "", f"invalid JSON: {exc.msg}")]
        except RecursionError:  # the json module's own guard, at about 1,000 levels
            return [], [Diagnostic(file, text.count("\n", 0, index) + 1, "", "", _too_deep())]
        values.append((value, index, end, dupes > before))
        index = _skip_blanks(text, end)
    loaded: list[Loaded] = []
    problems: list[Diagnostic] = []
    line = 1
    last = 0
    for value, start, end, repeated in values:
        line += text.count("\n", last, start)
        last = start
        if _deeper_than(value, MAX_DEPTH):
            problems.append(Diagnostic(file, line, "", "", _too_deep()))
            continue
        lines = _Lines(_slice_lines(text, start, end, line - 1, 0))
        if repeated:  # rare: which keys, and their lines
            problems.extend(_json_duplicates(text, file, value, start, end, line))
        item_lines = _json_item_lines(text, start) if _is_list(value) else None
        _to_documents(value, file, line, lines, (), loaded, problems, item_lines, notes)
    return loaded, problems


def _json_duplicates(
    text: str, file: str, value: Any, start: int, end: int, line: int
) -> list[Diagnostic]:
    """The repeated keys of the JSON value at text[start:end], found by composing its
    text; a List's items one by one (never a whole large dump at once)."""
    parts = [(start, end, value)]
    items = value.get("items") if _is_list(value) else None
    if isinstance(items, list):
        spans = _json_item_spans(text, start)
        parts = [(b, e, item) for (b, e), item in zip(spans, items, strict=False)]
    found: list[Diagnostic] = []
    last, at_line = start, line
    for begin, stop, part in parts:
        at_line += text.count("\n", last, begin)
        last = begin
        ref = _raw_ref(part)
        for path, at in _duplicates_in(text, begin, stop, at_line - 1):
            found.append(Diagnostic(file, at, ref, format_field_path(path), "duplicate field"))
    return found


def _is_list(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "List"


def _json_item_lines(text: str, start: int) -> ItemLines:
    """Per-item line tables of the List object written at text[start:]: the items'
    spans are found (at the json module's speed) only when a line is first asked for."""
    spans: list[tuple[int, int]] | None = None

    def of_item(i: int) -> tuple[_Lines, int | None]:
        def compute() -> dict[FieldPath, int]:
            nonlocal spans
            if spans is None:
                spans = _json_item_spans(text, start)
            if i >= len(spans):
                return {}
            begin, end = spans[i]
            return _slice_lines(text, begin, end, text.count("\n", 0, begin), 0)()

        return _Lines(compute), None

    return of_item


def _json_item_spans(text: str, start: int) -> list[tuple[int, int]]:
    """(start, end) of each value in the "items" array of the JSON object at `start`
    (the last "items", as json.loads keeps the last of repeated keys)."""
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    index = _skip_blanks(text, start) + 1  # past "{"
    while True:
        index = _skip_blanks(text, index)
        if text.startswith("}", index):
            return spans
        key, index = decoder.raw_decode(text, index)  # a key is a JSON string
        index = _skip_blanks(text, _skip_blanks(text, index) + 1)  # past ":"
        if key == "items" and text.startswith("[", index):
            spans = []
            index = _skip_blanks(text, index + 1)
            while not text.startswith("]", index):
                _, end = decoder.raw_decode(text, index)
                spans.append((index, end))
                index = _skip_blanks(text, end)
                if text.startswith(",", index):
                    index = _skip_blanks(text, index + 1)
            index += 1
        else:
            _, index = decoder.raw_decode(text, index)
        index = _skip_blanks(text, index)
        if text.startswith(",", index):
            index += 1


def _yaml_item_lines(text: str, node: yaml.Node) -> ItemLines | None:
    """Per-item line tables of a List document, each from its item's own text."""
    if not isinstance(node, MappingNode):
        return None
    items = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "items"]
    if not items or not isinstance(items[-1], SequenceNode):
        return None
    nodes = items[-1].value

    def of_item(i: int) -> tuple[_Lines, int | None]:
        mark, end = nodes[i].start_mark, nodes[i].end_mark
        compute = _slice_lines(text, mark.index, end.index, mark.line, mark.column)
        return _Lines(compute), mark.line + 1

    return of_item


def _skip_blanks(text: str, index: int) -> int:
    match = _JSON_BLANKS.match(text, index)
    return match.end() if match is not None else index


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON data nests deeper than `limit`: level by level, containers only."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below += [c for c in children if type(c) is dict or type(c) is list]
        level = below
    return False


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep: no Kubernetes object nests so deep"


def _load_yaml(
    text: str, file: str, notes: list[Diagnostic]
) -> tuple[list[Loaded], list[Diagnostic]]:
    loaded: list[Loaded] = []
    problems: list[Diagnostic] = []
    # A character YAML forbids: the same check (and message) as PyYAML's reader,
    # over the whole text at once before any document is composed.
    bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        problems.append(
            Diagnostic(
                file,
                line,
                "",
                "",
                f"invalid YAML: unacceptable character #x{ord(bad.group()):04x}: "
                "special characters are not allowed",
            )
        )
        return loaded, problems
    if big := _largest_document(text):
        nodes, line = big
        problems.append(
            Diagnostic(
                file,
                line,
                "",
                "",
                f"YAML document too large: about {nodes:,} nodes; netemu composes at most "
                f"{MAX_YAML_NODES:,} per YAML document: split it with `---` lines, or give "
                "it as JSON",
            )
        )
        return loaded, problems
    if (deep := _nesting_beyond_libyaml(text)) is not None:
        problems.append(Diagnostic(file, deep, "", "", _too_deep()))
        return loaded, problems
    anchors = "&" in text  # without an anchor there is no alias: a faster build
    for node, error in _compose(text, file):
        if error is not None:
            problems.append(error)
            break
        assert node is not None
        start = node.start_mark
        doc_line = start.line + 1
        builder = _Builder(anchors)
        try:
            data = builder.build(node, 1)
        except _Refused as exc:
            problems.append(Diagnostic(file, exc.line, "", "", exc.message))
            continue
        lines: dict[FieldPath, int] | _Lines
        if builder.dupes or not builder.plain:
            # Rare: the line table now, from the node at hand, with the duplicate keys.
            table: dict[FieldPath, int] = {}
            dupes: list[tuple[FieldPath, int]] = []
            _record_lines(node, (), table, dupes)
            lines = table
        else:
            dupes = []
            lines = _Lines(
                _slice_lines(text, start.index, node.end_mark.index, start.line, start.column)
            )
        if not builder.plain:
            try:
                data = _Constructor.construct(node)
            except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag, an unhashable key
                mark = exc.problem_mark or exc.context_mark
                line = mark.line + 1 if mark is not None else doc_line
                problems.append(Diagnostic(file, line, "", "", f"invalid YAML: {exc.problem}"))
                continue
        if data is None:
            continue
        item_lines = _yaml_item_lines(text, node) if isinstance(lines, _Lines) else None
        _to_documents(data, file, doc_line, lines, (), loaded, problems, item_lines, notes)
        ref = _raw_ref(data)
        for path, line in dupes:
            problems.append(Diagnostic(file, line, ref, format_field_path(path), "duplicate field"))
    return loaded, problems


@functools.cache
def _libyaml_bounds_nesting() -> bool:
    """Whether the composer refuses deep nesting itself: libyaml from 0.2.6 stops at
    1,000 levels, the pure-Python composer at Python's recursion limit. An older
    libyaml would recurse (in C) as deep as the text goes."""
    try:
        yaml.compose("[" * 1100 + "]" * 1100, Loader=_FastLoader)
    except (yaml.YAMLError, RecursionError):
        return True
    return False


def _nesting_beyond_libyaml(text: str) -> int | None:
    """With a composer that does not bound nesting, the line where a text nests more
    than MAX_DEPTH levels, found from libyaml's events (which need no recursion)."""
    if _libyaml_bounds_nesting():
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_FastLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return int(event.start_mark.line) + 1 if event.start_mark else 0
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # composing reports it
    return None


def _largest_document(text: str) -> tuple[int, int] | None:
    """(estimated nodes, line) of the first document estimated above MAX_YAML_NODES."""
    if len(text) <= MAX_YAML_NODES:  # fewer characters than that: fewer nodes too
        return None
    start = 0
    for marker in [*_DOCUMENT_MARKER.finditer(text), None]:
        end = len(text) if marker is None else marker.start()
        if end - start > MAX_YAML_NODES:
            nodes = (
                text.count("\n", start, end)
                + 2 * text.count(":", start, end)
                + text.count(",", start, end)
                + text.count("-", start, end)
                + text.count("[", start, end)
                + text.count("{", start, end)
            )
            if nodes > MAX_YAML_NODES:
                return nodes, text.count("\n", 0, start) + 1
        if marker is not None:
            start = marker.end()
    return None


def _compose(text: str, file: str) -> Iterator[tuple[yaml.Node | None, Diagnostic | None]]:
    """Each document's root node, composed by libyaml; on a syntax error, a last
    (None, diagnostic) with PyYAML's own message, as netemu always reported it."""
    loader = _FastLoader(text)
    resume = (0, 0, 0)  # index, line, column after the last document composed
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                end = node.end_mark
                resume = (end.index, end.line, end.column)
                yield node, None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = str(exc.problem)
        if "maximum nesting depth" in problem:
            yield None, Diagnostic(file, line, "", "", _too_deep())
            return
        yield (
            None,
            _pure_python_error(text, file, resume)
            or Diagnostic(file, line, "", "", f"invalid YAML: {problem}"),
        )
    except RecursionError:  # the pure-Python composer, without libyaml
        yield None, Diagnostic(file, resume[1] + 1, "", "", _too_deep())
    finally:
        loader.dispose()


def _pure_python_error(text: str, file: str, resume: tuple[int, int, int]) -> Diagnostic | None:
    """PyYAML's pure-Python message for the first syntax error after `resume`
    (libyaml words some errors differently); None if it finds none."""
    index, line, column = resume
    try:
        for _ in yaml.compose_all(" " * column + text[index:], Loader=yaml.SafeLoader):
            pass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = mark.line + 1 + line if mark is not None else 0
        return Diagnostic(file, at, "", "", f"invalid YAML: {exc.problem}")
    except RecursionError:
        return Diagnostic(file, line + 1, "", "", _too_deep())
    return None


def _slice_lines(
    text: str, start: int, end: int, line: int, column: int
) -> Callable[[], dict[FieldPath, int]]:
    """How to find the lines of the document written at text[start:end]."""

    def compute() -> dict[FieldPath, int]:
        node = yaml.compose(" " * column + text[start:end], Loader=_FastLoader)
        table: dict[FieldPath, int] = {}
        if node is not None:
            _record_lines(node, (), table, [], offset=line)
        return table

    return compute


def _duplicates_in(text: str, start: int, end: int, line: int) -> list[tuple[FieldPath, int]]:
    try:
        node = yaml.compose(text[start:end], Loader=_FastLoader)
    except yaml.YAMLError:
        return []
    dupes: list[tuple[FieldPath, int]] = []
    if node is not None:
        _record_lines(node, (), {}, dupes, offset=line)
    return dupes


class _Refused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_BUILDING = object()


class _Builder:
    """Plain data from a composed document, as PyYAML's SafeConstructor would build
    it, in one pass that also bounds the document: nesting depth and alias expansion
    (go-yaml's rule, above). Anything unusual (merge keys, explicit or unknown tags,
    keys that are not scalars) clears `plain`: the caller then builds the document
    with SafeConstructor itself, with its messages."""

    def __init__(self, anchors: bool) -> None:
        # Only a document with anchors can share nodes: then each node built is kept
        # (by identity) to count an alias's expansion instead of building it again.
        self.built: dict[int, Any] | None = {} if anchors else None
        self.sizes: dict[int, int] = {}
        self.decoded = 0
        self.aliased = 0
        self.plain = True
        self.dupes = False

    def build(self, node: yaml.Node, depth: int, used_at: int = 0) -> Any:
        """`node` as data; `used_at` is the line of its key (or of its sequence), where
        an alias is reported: an alias's node is its anchor's node, with its marks."""
        self.decoded += 1
        cls = node.__class__
        if cls is ScalarNode:
            assert isinstance(node, ScalarNode)
            return self.scalar(node)
        if depth > MAX_DEPTH:
            raise _Refused(node.start_mark.line + 1, _too_deep())
        built = self.built
        if built is not None:
            key = id(node)
            found = built.get(key)
            if found is _BUILDING:
                raise _Refused(
                    used_at or node.start_mark.line + 1,
                    "invalid YAML: an alias refers to a node that contains it (recursive data)",
                )
            if found is not None:
                self.count_alias(node, used_at)
                return found
            built[key] = _BUILDING
        result: Any
        if cls is MappingNode:
            result = {}
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                value = self.build(value_node, depth + 1, key_node.start_mark.line + 1)
                if key_node.__class__ is not ScalarNode or key_node.tag == _MERGE:
                    self.plain = False
                    self.build(key_node, depth + 1)
                    continue
                self.decoded += 1
                raw = key_node.value
                if raw in seen:
                    self.dupes = True
                seen.add(raw)
                result[self.scalar(key_node)] = value
        elif cls is SequenceNode:
            line = node.start_mark.line + 1
            result = [self.build(item, depth + 1, line) for item in node.value]
        else:
            self.plain = False
            result = None
        if node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            self.plain = False  # !!set, !!omap, !!pairs or a tag of the user's
        if built is not None:
            built[key] = result
        return result

    def scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _INT:
            return _Constructor.shared.construct_yaml_int(node)
        if tag == _BOOL:
            return _Constructor.shared.construct_yaml_bool(node)
        if tag == _NULL:
            return None
        if tag == _FLOAT:
            return _Constructor.shared.construct_yaml_float(node)
        self.plain = False  # timestamps, binary, tags of the user's
        return None

    def count_alias(self, node: yaml.Node, used_at: int) -> None:
        """An alias: go-yaml decodes (and counts) its whole expansion again."""
        size = self.size(node)
        self.decoded += size - 1
        self.aliased += size
        if (
            self.aliased > 100
            and self.decoded > 1000
            and self.aliased / self.decoded > _allowed_alias_ratio(self.decoded)
        ):
            raise _Refused(
                used_at or node.start_mark.line + 1,
                "invalid YAML: document contains excessive aliasing (as Kubernetes refuses "
                "it): its aliases expand to far more than it holds",
            )

    def size(self, node: yaml.Node) -> int:
        """How many nodes `node` expands to, aliases included (each shared node counted once
        per use); memoised, so linear in the document."""
        sizes = self.sizes
        key = id(node)
        if key in sizes:
            return sizes[key]
        total = 1
        if isinstance(node, MappingNode):
            for k, v in node.value:
                total += self.size(k) + self.size(v)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                total += self.size(item)
        sizes[key] = total
        return total


class _Constructor(yaml.SafeLoader):
    """SafeLoader that builds plain data from an already composed node."""

    shared: yaml.SafeLoader

    @classmethod
    def construct(cls, node: yaml.Node) -> Any:
        loader = cls("")
        return loader.construct_document(node)


_Constructor.shared = _Constructor("")


def _record_lines(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    dupes: list[tuple[FieldPath, int]],
    ancestors: frozenset[int] = frozenset(),
    offset: int = 0,
) -> None:
    lines.setdefault(path, node.start_mark.line + 1 + offset)
    if id(node) in ancestors:
        return  # an alias to an enclosing node: the data is recursive
    ancestors = ancestors | {id(node)}
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                dupes.append((child, key_node.start_mark.line + 1 + offset))
                continue
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1 + offset
            _record_lines(value_node, child, lines, dupes, ancestors, offset)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines, dupes, ancestors, offset)


# ---------------------------------------------------------------- documents


# The line table of a List's item i and its line (None: found with the table), so
# that a diagnostic about one item of a large dump composes that item's text only.
ItemLines = Callable[[int], tuple[_Lines, int | None]]


def _to_documents(
    data: Any,
    file: str,
    line: int | None,
    lines: dict[FieldPath, int] | _Lines,
    prefix: FieldPath,
    loaded: list[Loaded],
    problems: list[Diagnostic],
    item_lines: ItemLines | None = None,
    notes: list[Diagnostic] | None = None,
) -> None:
    """One document's objects: the object itself, or each item of a `kind: List` (as
    `kubectl get -o yaml|json` writes several objects, and `kubectl apply` reads)."""
    if notes is None:
        notes = []
    origin = Origin(file, line, lines, prefix)
    if isinstance(data, dict) and data.get("kind") == "List" and data.get("apiVersion") == "v1":
        items = data.get("items")
        for name in data:
            if name not in ("apiVersion", "kind", "metadata", "items"):
                problems.append(
                    Diagnostic(file, origin.line_of((name,)), "List", str(name), "unknown field")
                )
        if not isinstance(items, list):
            problems.append(
                Diagnostic(
                    file,
                    origin.line_of(("items",)),
                    "List",
                    "items",
                    f"expected a list of objects, got {_show(items)}",
                )
            )
            return
        for i, item in enumerate(items):
            if item_lines is not None:
                own, item_line = item_lines(i)
                _to_documents(item, file, item_line, own, (), loaded, problems, None, notes)
                continue
            item_line = None if isinstance(lines, _Lines) else lines.get((*prefix, "items", i))
            _to_documents(
                item, file, item_line, lines, (*prefix, "items", i), loaded, problems, None, notes
            )
        return
    result = _to_resource(data, origin)
    if isinstance(result, Loaded):
        loaded.append(result)
    elif isinstance(result, Diagnostic):
        notes.append(result)
    else:
        problems.extend(result)


def _raw_ref(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    kind = data.get("kind") or "<no kind>"
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{kind}/{name or '<unnamed>'}"


def _without_nulls(data: Any) -> Any:
    """`data` without the mapping entries whose value is null: the API server
    decodes a JSON null as the field's zero value, so `data: null` (as
    kustomize and Helm render an empty map) is the field left out, and a
    required field given null is missing. Most documents have no null: they
    are returned as they are, after a look that copies nothing."""
    if not _has_null(data):
        return data
    if isinstance(data, dict):
        return {k: _without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_without_nulls(v) for v in data]
    return data


def _has_null(data: Any) -> bool:
    """Whether a null is anywhere in `data` (level by level, no recursion)."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            values: Iterable[Any] = item.values()
        elif isinstance(item, list):
            values = item
        else:
            continue
        for value in values:
            if value is None:
                return True
            if isinstance(value, (dict, list)):
                pending.append(value)
    return False


def _names_an_api_group(api_version: object) -> bool:
    """Whether `api_version` is "group/version" of a kind netemu reads."""
    return (
        isinstance(api_version, str)
        and "/" in api_version
        and any(api == api_version for api, _ in KINDS)
    )


def _to_resource(data: Any, origin: Origin) -> Loaded | list[Diagnostic] | Diagnostic:
    """The typed (or generic) object a document holds, its problems, or (a single
    Diagnostic) a notice that the document is not an object and was skipped."""

    def problem(path: FieldPath, message: str) -> list[Diagnostic]:
        return [
            Diagnostic(
                origin.file, origin.line_of(path), _raw_ref(data), format_field_path(path), message
            )
        ]

    if not isinstance(data, dict):
        return problem((), f"a manifest must be a mapping, got {type(data).__name__}")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if not kind and "metadata" not in data and not _names_an_api_group(api_version):
        # A Helm Chart.yaml or values file beside the manifests: data, not an
        # object. (A Chart.yaml's apiVersion is a bare "v1" or "v2"; one of a
        # group netemu reads, such as kubeproxy.config.k8s.io/v1alpha1, says
        # the document is an object whose kind was left out.)
        return _skipped(origin, "not a Kubernetes object (no kind and no metadata)")
    if not kind:
        return problem(("kind",), "required field missing")
    if not api_version:
        return problem(("apiVersion",), "required field missing")
    model = KINDS.get((str(api_version), str(kind)))
    if model is None:
        if not isinstance(kind, str) or not isinstance(api_version, str):
            known = ", ".join(sorted(API_VERSIONS_OF_KIND))
            return problem(("kind",), f"unknown kind {kind!r}; netemu reads {known}")
        untyped = _untyped_model(api_version, kind, origin, problem)
        if not isinstance(untyped, type):
            return untyped
        model = untyped
    try:
        obj = model.model_validate(_without_nulls(data))
    except pydantic.ValidationError as exc:
        return [
            Diagnostic(
                origin.file,
                origin.line_of(path),
                _raw_ref(data),
                format_field_path(path),
                message,
            )
            for path, message in _explain(exc, data)
        ]
    return Loaded(obj, origin)


def _skipped(origin: Origin, why: str) -> Diagnostic:
    return Diagnostic(origin.file, origin.line, "", "", f"skipped: {why}")


def _untyped_model(
    api_version: str,
    kind: str,
    origin: Origin,
    problem: Callable[[FieldPath, str], list[Diagnostic]],
) -> type[K8sModel] | list[Diagnostic] | Diagnostic:
    """The model of a kind netemu has no type for: a generic one for Kubernetes'
    other built-in kinds and for custom resources; an error (as kubectl's "no
    matches for kind") for a misspelt kind or a version no longer served of a
    built-in group; a skip notice for kustomize's files."""
    group, version = split_api_version(api_version)
    if group in NOT_OBJECT_GROUPS:
        return _skipped(origin, f"{kind} ({api_version}) describes how to build manifests")
    no_match = f'no matches for kind "{kind}" in version "{api_version}"'
    typed_version = API_VERSIONS_OF_KIND.get(kind)
    if typed_version is not None and group in BUILTIN_GROUPS:
        return problem(
            ("apiVersion",),
            f"unknown apiVersion {api_version!r} for kind {kind}; expected {typed_version!r}",
        )
    info = builtin_kind(group, kind)
    if info is not None:
        if version not in info.versions:
            served = " or ".join(repr(f"{group}/{v}" if group else v) for v in info.versions)
            return problem(
                ("apiVersion",),
                f"{no_match}: this version is not served (removed from Kubernetes); "
                f"expected {served}",
            )
        return generic_model(kind, info.namespaced, info.plural, info.short_names)
    if group in BUILTIN_GROUPS:
        known = sorted(
            {k for api, k in KINDS if split_api_version(api)[0] == group}
            | {i.kind for i in BUILTIN_KINDS if i.group == group}
        )
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.6)
        if not close:
            close = [k for k in known if k.lower() == kind.lower()]
        hint = f"; did you mean {close[0]}?" if close else ""
        return problem(("kind",), f"{no_match}{hint}")
    # A custom resource: namespaced unless its CRD in the input says otherwise
    # (resolve_custom_scopes).
    return generic_model(kind, namespaced=True)


_TYPE_NAMES = {
    "int": "an integer",
    "str": "a string",
    "string": "a string",
    "bool": "a boolean",
    "dict": "a mapping",
    "list": "a list",
    "model": "a mapping",
}


def _explain(exc: pydantic.ValidationError, data: Any) -> Iterator[tuple[FieldPath, str]]:
    """Turn pydantic's errors into (field path, message), one per field."""
    grouped: dict[FieldPath, list[dict[str, Any]]] = {}
    for err in exc.errors():
        path = _data_path(err["loc"], data, err["type"])
        grouped.setdefault(path, []).append(dict(err))
    for path, errs in grouped.items():
        yield path, _message(errs)


def _data_path(loc: tuple[int | str, ...], data: Any, err_type: str) -> FieldPath:
    """Keep the part of pydantic's location that names real input fields."""
    path: list[str | int] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
            path.append(str(part))  # a mapping key, even one YAML read as a number
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
            path.append(part)
        elif err_type == "missing" and part == loc[-1] and isinstance(part, str):
            path.append(part)
            break
        else:
            # A union member tag (e.g. "int" or "function-after[...]"): not a field.
            continue
    return tuple(path)


def _message(errs: list[dict[str, Any]]) -> str:
    kinds = {e["type"] for e in errs}
    first = errs[0]
    given = first.get("input")
    if "extra_forbidden" in kinds:
        return "unknown field"
    if "missing" in kinds:
        return "required field missing"
    if "literal_error" in kinds:
        expected = first.get("ctx", {}).get("expected", "")
        return f"unsupported value {given!r}: expected {expected}"
    wanted = []
    for e in errs:
        base = e["type"].split("_")[0]
        name = _TYPE_NAMES.get(base)
        if name and name not in wanted:
            wanted.append(name)
    if wanted:
        return f"expected {' or '.join(wanted)}, got {_show(given)}"
    return "; ".join(str(e["msg"]) for e in errs)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
