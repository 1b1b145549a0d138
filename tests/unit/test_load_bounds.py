"""The front door's bounds: what no input may do (exhaust memory, hang, crash,
split a message), and JSON / `kind: List` input read with the right lines."""

from __future__ import annotations

import os
import resource
import socket
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from netemu.api import load as load_module
from netemu.api import validate as validate_module
from netemu.api.errors import Diagnostic, InputError
from netemu.api.load import load_paths, load_text
from netemu.api.validate import load_and_validate, validate
from netemu.cli import main

ROOT = Path(__file__).parents[2]
LAB = ROOT / "controlplane" / "default" / "lab.yaml"

# The classic 485-byte "billion laughs": nine levels of nine aliases, 9**9 strings.
BOMB = (
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def messages(text: str, file: str = "x.yaml") -> list[str]:
    loaded, found = load_text(text, file)
    assert loaded == []
    return [str(d) for d in found]


def paths_problems(*paths: str | Path) -> list[str]:
    with pytest.raises(InputError) as caught:
        load_paths(paths)
    return [str(d) for d in caught.value.diagnostics]


def ns(name: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"


# ---------------------------------------------------------------- aliases


def test_billion_laughs_is_refused_at_its_alias_without_expanding_it() -> None:
    # As go-yaml: refused at the first alias that tips the share of expanded nodes
    # (d, 9**3 strings), long before the last level.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert messages(BOMB) == [
        "x.yaml:8: invalid YAML: document contains excessive aliasing (as Kubernetes refuses "
        "it): its aliases expand to far more than it holds"
    ]
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000  # 2.4 GB before the bound


def test_ordinary_aliases_load() -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: &l {app: web}\n"
        "spec:\n  selector: *l\n  ports: [{name: http, port: 80}]\n"
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    assert loaded[0].obj.spec.selector == {"app": "web"}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- nesting


def test_deep_yaml_nesting_is_an_error_at_its_line() -> None:
    deep = "[" * 150 + "]" * 150
    assert messages(ns("a") + f"spec:\n  x: {deep}\n") == [
        "x.yaml:6: nested more than 100 levels deep: no Kubernetes object nests so deep"
    ]


def test_very_deep_yaml_nesting_is_the_same_error() -> None:
    # Deeper than libyaml's own limit (1,000 levels), in block style.
    deep = "".join("  " * i + "- \n" for i in range(1500))
    assert messages("items:\n" + deep) == [
        "x.yaml:1001: nested more than 100 levels deep: no Kubernetes object nests so deep"
    ]


def test_deep_nesting_is_found_from_events_with_a_libyaml_that_does_not_bound_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(load_module, "_libyaml_bounds_nesting", lambda: False)
    deep = "".join("  " * i + "- \n" for i in range(150))
    assert messages("items:\n" + deep) == [
        "x.yaml:101: nested more than 100 levels deep: no Kubernetes object nests so deep"
    ]
    loaded, found = load_text(ns("a"), "x.yaml")
    assert found == [] and [item.ref for item in loaded] == ["Namespace/a"]


def test_deep_json_nesting_is_an_error() -> None:
    text = '{"apiVersion": "v1",\n "kind": "Namespace",\n "x": ' + "[" * 150 + "]" * 150 + "}"
    assert messages(text, "x.json") == [
        "x.json:1: nested more than 100 levels deep: no Kubernetes object nests so deep"
    ]
    text = '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert messages(text, "x.json") == [
        "x.json:1: nested more than 100 levels deep: no Kubernetes object nests so deep"
    ]


# ---------------------------------------------------------------- files


def test_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "MAX_FILE_BYTES", 100)
    big = tmp_path / "big.yaml"
    big.write_text(ns("a") + "#" * 200 + "\n")
    assert paths_problems(big) == [
        f"{big}:1: file too large: 252 bytes; netemu reads at most 100 bytes (0 MiB) per file: "
        "split it into several files"
    ]


def test_yaml_document_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "MAX_YAML_NODES", 100)
    text = ns("a") + "---\n" + ns("b") + "  labels: {" + ", ".join(["x: y"] * 30) + "}\n"
    assert messages(text) == [
        "x.yaml:5: YAML document too large: about 106 nodes; netemu composes at most 100 per "
        "YAML document: split it with `---` lines, or give it as JSON"
    ]


def test_a_large_yaml_document_is_refused_before_it_is_composed() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert messages("items:\n" + "- a\n" * 600_000) == [
        "x.yaml:1: YAML document too large: about 1,200,003 nodes; netemu composes at most "
        "500,000 per YAML document: split it with `---` lines, or give it as JSON"
    ]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB


def test_character_device_is_refused() -> None:
    assert paths_problems("/dev/zero") == [
        "/dev/zero:0: not a regular file (a character device): manifests are read from "
        "regular files only"
    ]


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    result: list[list[str]] = []
    reader = threading.Thread(target=lambda: result.append(paths_problems(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert result == [
        [
            f"{fifo}:0: not a regular file (a FIFO (named pipe)): manifests are read from "
            "regular files only"
        ]
    ]


def test_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert paths_problems(path) == [
            f"{path}:0: not a regular file (a socket): manifests are read from regular files only"
        ]


def test_non_regular_files_in_a_directory_are_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "ns.yaml").write_text(ns("a"))
    assert [item.ref for item in load_paths([tmp_path])] == ["Namespace/a"]


def test_bytes_that_are_not_utf8_are_reported_at_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(ns("a").encode() + b"  labels: {k: \xc3\xa9t\xe9}\n")
    assert paths_problems(bad) == [
        f"{bad}:5: not UTF-8 text: byte 0xe9 at column 17 (invalid continuation byte); "
        "manifests are UTF-8 text"
    ]


def test_binary_file_is_refused_with_a_line(tmp_path: Path) -> None:
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"kind: x\n\x00\x01\x02\x03")
    assert paths_problems(binary) == [
        f"{binary}:2: invalid YAML: unacceptable character #x0000: special characters are "
        "not allowed"
    ]


# ---------------------------------------------------------------- empty input


def test_no_objects_at_all_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n---\n")
    assert paths_problems(empty) == [
        f"{empty}:1: no objects in the input (kubectl: no objects passed to apply): every file "
        "holds only empty documents or comments"
    ]


def test_an_empty_file_beside_objects_is_fine(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "ns.yaml").write_text(ns("a"))
    assert [item.ref for item in load_paths([tmp_path])] == ["Namespace/a"]


def test_a_directory_without_manifests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("kind: Namespace\n")
    assert paths_problems(tmp_path) == [
        f"{tmp_path}:0: no manifest files in this directory: recognized file extensions are "
        "[.json .yaml .yml]"
    ]


def test_empty_containers_is_required(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers: []
        """
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    assert [str(d) for d in validate(loaded)] == [
        "x.yaml:5: Pod/p: spec.containers: Required value: a pod needs at least one container"
    ]


# ---------------------------------------------------------------- counts


def workload(kind: str, replicas: int, name: str = "w") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: {kind}
        metadata: {{name: {name}}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec: {{containers: [{{name: c, image: x}}]}}
        """
    )


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "StatefulSet"])
def test_replicas_are_bounded(kind: str) -> None:
    loaded, found = load_text(workload(kind, 1_000_000), "x.yaml")
    assert found == []
    assert [str(d) for d in validate(loaded)] == [
        f"x.yaml:5: {kind}/w: spec.replicas: must be no more than 10,000: each replica is a pod "
        "(in a live lab a network namespace), and no lab needs so many"
    ]


def test_replicas_at_the_bound_are_fine() -> None:
    loaded, _ = load_text(workload("Deployment", 10_000), "x.yaml")
    assert validate(loaded) == []


def test_pods_in_all_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "MAX_PODS", 10)
    text = workload("Deployment", 6, "a") + "---\n" + workload("ReplicaSet", 5, "b")
    loaded, _ = load_text(text, "x.yaml")
    assert [str(d) for d in validate(loaded)] == [
        "x.yaml:15: ReplicaSet/b: spec.replicas: too many pods: the input asks for 11 with this "
        "ReplicaSet; netemu runs at most 10 pods in all"
    ]


def test_nodes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "MAX_NODES", 2)
    loaded = load_paths([LAB])
    more, _ = load_text("apiVersion: v1\nkind: Node\nmetadata: {name: node-3}\n", "n.yaml")
    assert [str(d) for d in validate([*loaded, *more])] == [
        "n.yaml:1: Node/node-3: too many nodes: 3 with this one; netemu builds at most 2 (as "
        "many as Kubernetes supports in a cluster)"
    ]


# ---------------------------------------------------------------- messages


def test_a_name_with_a_line_break_stays_on_one_line() -> None:
    text = 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "bad\\nname\\u2028x"\n'
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    shown = [str(d) for d in validate(loaded)]
    assert len(shown) == 1 and "\n" not in shown[0] and "\u2028" not in shown[0]
    assert shown[0].startswith("x.yaml:4: Namespace/bad\\nname\\u2028x: metadata.name: ")
    diagnostic = Diagnostic("f\tx", 1, "K/a\rb", "f\x1b", "m\x85")
    assert str(diagnostic) == "f\\tx:1: K/a\\rb: f\\x1b: m\\x85"


# ---------------------------------------------------------------- JSON and List


JSON_LIST = """\
{
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "one"}
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "ports": [
                    {"name": "http", "port": "80"}
                ]
            }
        }
    ],
    "metadata": {"resourceVersion": ""}
}
"""


def test_json_list_errors_point_at_their_lines() -> None:
    loaded, found = load_text(JSON_LIST, "dump.json")
    assert [item.ref for item in loaded] == ["Namespace/one"]
    assert loaded[0].origin.line == 5
    assert [str(d) for d in found] == [
        "dump.json:16: Service/web: spec.ports[0].port: expected an integer, got '80'"
    ]


def test_yaml_list_items_load_with_their_lines() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Namespace
            metadata: {name: one}
          - apiVersion: v1
            kind: Namespace
            metadata:
              name: Two
        """
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    assert [(item.ref, item.origin.line) for item in loaded] == [
        ("Namespace/one", 4),
        ("Namespace/Two", 7),
    ]
    shown = [str(d) for d in validate(loaded)]
    assert len(shown) == 1
    assert shown[0].startswith("x.yaml:10: Namespace/Two: metadata.name: a lowercase RFC 1123")


def test_list_items_must_be_a_list_and_unknown_list_fields_are_errors() -> None:
    assert messages("apiVersion: v1\nkind: List\nitem: []\nitems: {}\n") == [
        "x.yaml:3: List: item: unknown field",
        "x.yaml:4: List: items: expected a list of objects, got a mapping",
    ]


def test_json_syntax_error_and_duplicate_key_lines() -> None:
    assert messages('{\n  "kind": "Namespace",\n  "apiVersion" "v1"\n}\n', "x.json") == [
        "x.json:3: invalid JSON: Expecting ':' delimiter"
    ]
    text = '{"apiVersion": "v1", "kind": "Namespace",\n "metadata": {"name": "a",\n "name": "b"}}'
    loaded, found = load_text(text, "x.json")
    assert [str(d) for d in found] == ["x.json:3: Namespace/b: metadata.name: duplicate field"]
    assert [item.ref for item in loaded] == ["Namespace/b"]


def test_a_duplicate_key_in_a_json_list_item_is_reported_for_that_item() -> None:
    text = JSON_LIST.replace(
        '"metadata": {"name": "web"}', '"metadata": {"name": "web"},\n"kind": "Service"'
    )
    loaded, found = load_text(text, "dump.json")
    assert [item.ref for item in loaded] == ["Namespace/one"]
    assert [str(d) for d in found] == [
        "dump.json:14: Service/web: kind: duplicate field",
        "dump.json:17: Service/web: spec.ports[0].port: expected an integer, got '80'",
    ]


def test_a_stream_of_json_objects_loads() -> None:
    text = '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}\n' + (
        '\n{"apiVersion": "v1", "kind": "Namespace",\n "metadata": {"name": 5}}\n'
    )
    loaded, found = load_text(text, "x.json")
    assert [item.ref for item in loaded] == ["Namespace/a"]
    assert [str(d) for d in found] == [
        "x.json:4: Namespace/5: metadata.name: expected a string, got 5"
    ]


def test_a_yaml_flow_mapping_is_still_yaml() -> None:
    loaded, found = load_text("{apiVersion: v1, kind: Namespace, metadata: {name: a}}\n", "x.yaml")
    assert found == [] and [item.ref for item in loaded] == ["Namespace/a"]


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    "command",
    [
        ["validate"],
        ["compile", "--node", "node-1"],
        ["get", "services"],
        [
            "trace",
            "--offline",
            "--node",
            "node-1",
            "--src",
            "10.0.0.1",
            "--dst",
            "10.96.0.1",
            "--dport",
            "80",
        ],
    ],
)
def test_every_offline_command_exits_2_with_file_and_line(
    command: list[str], tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    deep = tmp_path / "deep.json"
    deep.write_text('{"kind": ' + "[" * 5000 + "]" * 5000 + "}")
    args = [*command[:1], "-f", str(LAB), "-f", str(bomb), "-f", str(deep), *command[1:]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [
        f"{bomb}:8: invalid YAML: document contains excessive aliasing (as Kubernetes refuses "
        "it): its aliases expand to far more than it holds",
        f"{deep}:1: nested more than 100 levels deep: no Kubernetes object nests so deep",
        "2 error(s)",
    ]


def test_load_and_validate_of_the_default_lab_still_works() -> None:
    assert [item.ref for item in load_and_validate([LAB])] == ["Lab/default"]


# ---------------------------------------------------------------- libyaml, as before


def test_a_syntax_error_in_a_later_document_has_pyyaml_words_and_line() -> None:
    text = (
        ns("a")
        + "---\n{apiVersion: v1, kind: Namespace, metadata: {name: b}}\n---\n"
        + ("apiVersion: v1\nkind: Service\n  metadata: x\n")
    )
    loaded, found = load_text(text, "x.yaml")
    # libyaml says "mapping values are not allowed in this context"; netemu keeps PyYAML's.
    assert [str(d) for d in found] == [
        "x.yaml:10: invalid YAML: mapping values are not allowed here"
    ]
    assert [item.ref for item in loaded] == ["Namespace/a", "Namespace/b"]


def test_origin_lines_maps_every_field_to_its_line() -> None:
    loaded, _ = load_text("\n" + ns("a") + "  labels:\n    k: v\n", "x.yaml")
    assert loaded[0].origin.lines == {
        (): 2,
        ("apiVersion",): 2,
        ("kind",): 3,
        ("metadata",): 4,
        ("metadata", "name"): 5,
        ("metadata", "labels"): 6,
        ("metadata", "labels", "k"): 7,
    }


def test_an_error_at_the_end_of_the_text_is_on_its_last_line() -> None:
    # The parsers mark the line after the last one; the file has no such line.
    _, found = load_text(ns("a") + "---\nkey: [unclosed\n", "x.yaml")
    assert [str(d) for d in found] == [
        "x.yaml:6: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]
    assert messages('{"kind": "Namespace",\n', "x.json") == [
        "x.json:1: invalid JSON: Expecting property name enclosed in double quotes"
    ]


def test_container_names_are_dns_labels_and_unique() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
            - {name: web, image: x}
            - {name: web, image: x}
            - {name: "web\\nx", image: x}
          initContainers:
            - {name: -init, image: x}
        """
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    assert [str(d) for d in validate(loaded)] == [
        'x.yaml:7: Pod/p: spec.containers[1].name: Duplicate value: "web": already the name '
        "of spec.containers[0]",
        "x.yaml:8: Pod/p: spec.containers[2].name: a lowercase RFC 1123 label must consist of "
        "lower case alphanumeric characters or '-', and must start and end with an "
        "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        "x.yaml:10: Pod/p: spec.initContainers[0].name: a lowercase RFC 1123 label must "
        "consist of lower case alphanumeric characters or '-', and must start and end with an "
        "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    ]


def test_objects_applied_to_a_lab_are_checked_against_its_lab() -> None:
    svc = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          type: NodePort
          clusterIP: 10.200.0.1
          ports: [{port: 80, nodePort: 40000}]
        """
    )
    loaded, found = load_text(svc, "svc.yaml")
    assert found == []
    assert validate(loaded) == []  # no Lab: any port and address will do
    lab, _ = load_text(LAB.read_text() + "  nodePortRange: 1-2-3\n", "lab.yaml")
    assert [str(d) for d in validate(loaded, context=lab)] == [
        "svc.yaml:6: Service/web: spec.clusterIP: must be inside the Lab's serviceCIDR "
        "10.96.0.0/12",
    ]
    good_lab = load_paths([LAB])
    assert [str(d) for d in validate(loaded, context=good_lab)] == [
        "svc.yaml:6: Service/web: spec.clusterIP: must be inside the Lab's serviceCIDR "
        "10.96.0.0/12",
        "svc.yaml:7: Service/web: spec.ports[0].nodePort: must be inside the Lab's "
        "nodePortRange 30000-32767",
    ]
