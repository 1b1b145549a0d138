"""Loading Kubernetes manifests: multi-document YAML files and directories.

Loading only reads files. Each document becomes a typed, frozen resource
together with an `Origin` that remembers the line of every field, so that any
later stage can point at `file:line` for a field path. All structural errors
(YAML syntax, duplicate keys, missing or unknown apiVersion/kind, unknown
fields, wrong types) are collected and raised together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, StatefulSet
from netemu.api.base import K8sModel
from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.core import EndpointSlice, Namespace, Node, Pod, Service
from netemu.api.errors import Diagnostic, FieldPath, InputError, format_field_path

# (apiVersion, kind) → type. The only place that says which kinds netemu reads.
KINDS: dict[tuple[str, str], type[K8sModel]] = {
    ("v1", "Service"): Service,
    ("v1", "Pod"): Pod,
    ("v1", "Node"): Node,
    ("v1", "Namespace"): Namespace,
    ("apps/v1", "Deployment"): Deployment,
    ("apps/v1", "ReplicaSet"): ReplicaSet,
    ("apps/v1", "DaemonSet"): DaemonSet,
    ("apps/v1", "StatefulSet"): StatefulSet,
    ("discovery.k8s.io/v1", "EndpointSlice"): EndpointSlice,
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"): KubeProxyConfiguration,
    ("netemu/v1alpha1", "Lab"): Lab,
}
API_VERSIONS_OF_KIND = {kind: api for api, kind in KINDS}

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Origin:
    """Where a document came from, and the line of each of its fields."""

    file: str
    line: int
    lines: dict[FieldPath, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, path: FieldPath) -> int:
        """Line of the deepest existing prefix of `path` (the field, or its parent)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return self.line


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


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus manifest files found under directories (sorted)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
            )
        else:
            files.append(p)
    return files


def load_paths(paths: Iterable[str | Path]) -> list[Loaded]:
    """Load every document of every file; raise InputError with all problems."""
    loaded: list[Loaded] = []
    problems: list[Diagnostic] = []
    for f in manifest_files(paths):
        if not f.exists():
            problems.append(Diagnostic(str(f), 0, "", "", "no such file or directory"))
            continue
        try:
            text = f.read_text()
        except OSError as exc:
            problems.append(Diagnostic(str(f), 0, "", "", f"cannot read: {exc.strerror}"))
            continue
        except UnicodeDecodeError as exc:
            problems.append(Diagnostic(str(f), 0, "", "", f"cannot read: not UTF-8 text ({exc})"))
            continue
        docs, doc_problems = load_text(text, str(f))
        loaded.extend(docs)
        problems.extend(doc_problems)
    if problems:
        raise InputError(problems)
    return loaded


def load_text(text: str, file: str) -> tuple[list[Loaded], list[Diagnostic]]:
    """Parse a multi-document YAML text into typed resources and diagnostics."""
    loaded: list[Loaded] = []
    problems: list[Diagnostic] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problems.append(Diagnostic(file, line, "", "", f"invalid YAML: {exc.problem}"))
        return loaded, problems
    except yaml.reader.ReaderError as exc:  # a character YAML forbids; no mark, a position
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problems.append(
            Diagnostic(
                file,
                line,
                "",
                "",
                f"invalid YAML: unacceptable character #x{code:04x}: {exc.reason}",
            )
        )
        return loaded, problems
    for node in nodes:
        if node is None:
            continue
        lines: dict[FieldPath, int] = {}
        dupes: list[tuple[FieldPath, int]] = []
        _record_lines(node, (), lines, dupes)
        origin = Origin(file, node.start_mark.line + 1, lines)
        try:
            data = _Loader.construct(node)
        except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag, an unhashable key
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else origin.line
            problems.append(Diagnostic(file, line, "", "", f"invalid YAML: {exc.problem}"))
            continue
        if data is None:
            continue
        result = _to_resource(data, origin)
        if isinstance(result, Loaded):
            loaded.append(result)
            ref = result.ref
        else:
            problems.extend(result)
            ref = _raw_ref(data)
        for path, line in dupes:
            problems.append(Diagnostic(file, line, ref, format_field_path(path), "duplicate field"))
    return loaded, problems


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds plain data from an already composed node."""

    @classmethod
    def construct(cls, node: yaml.Node) -> Any:
        loader = cls("")
        return loader.construct_document(node)


def _record_lines(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    dupes: list[tuple[FieldPath, int]],
    ancestors: frozenset[int] = frozenset(),
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in ancestors:
        return  # an alias to an enclosing node: the data is recursive
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                dupes.append((child, key_node.start_mark.line + 1))
                continue
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines, dupes, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines, dupes, ancestors)


def _raw_ref(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    kind = data.get("kind") or "<no kind>"
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{kind}/{name or '<unnamed>'}"


def _to_resource(data: Any, origin: Origin) -> Loaded | list[Diagnostic]:
    def problem(path: FieldPath, message: str) -> list[Diagnostic]:
        return [
            Diagnostic(
                origin.file, origin.line_of(path), _raw_ref(data), format_field_path(path), message
            )
        ]

    if not isinstance(data, dict):
        return problem((), f"a manifest must be a mapping, got {type(data).__name__}")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if not kind:
        return problem(("kind",), "required field missing")
    if not api_version:
        return problem(("apiVersion",), "required field missing")
    model = KINDS.get((str(api_version), str(kind)))
    if model is None:
        if isinstance(kind, str) and kind in API_VERSIONS_OF_KIND:
            return problem(
                ("apiVersion",),
                f"unknown apiVersion {api_version!r} for kind {kind}; "
                f"expected {API_VERSIONS_OF_KIND[kind]!r}",
            )
        known = ", ".join(sorted(API_VERSIONS_OF_KIND))
        return problem(("kind",), f"unknown kind {kind!r}; netemu reads {known}")
    try:
        obj = model.model_validate(data)
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
