"""Malformed inputs for netemu's front door, generated deterministically, and
the rule each outcome is judged by (issue 15's acceptance fuzz test).

What this owns: writing the cases as files under a directory, running them
in one worker process (tests/fuzz_worker.py), and judging the results. It
changes nothing outside the directory it is given; the live test
(tests/privileged/test_fuzz_live_apply.py) owns its lab.

Generation (fixed seed, so every run sees the same inputs):

- Manifest mutants: every file of every lab in controlplane/ is parsed, one
  document gets one structured mutation (a field dropped, retyped, set to a
  wrong scalar, a huge number, a negative port, a bad IP or CIDR, an invalid
  name with a newline or 300 characters, an unknown kind, apiVersion or
  field, a duplicated document, ...) and is written back as YAML; or the
  file's text gets one textual mutation (truncated, a tab in the
  indentation, a non-UTF-8 byte, a NUL, an unclosed bracket, a duplicated
  key line, an undefined alias, a Python tag, CRLF, a BOM, JSON variants).
  The mutant replaces its original in a copy of the lab, so the other
  objects it refers to are still there.
- Hostile inputs written by hand: empty files and directories, a sparse
  1 GiB file, /dev/zero, /dev/null, a FIFO, binary junk, an alias bomb,
  deep nesting, a very long line, `containers: []`, 1,000,000 replicas,
  duplicate container names, names at and beyond Kubernetes' limits.
- `trace --offline --rules` inputs: the committed rules/<lab>/node-1
  dumps with a COMMIT, a table or chain line dropped, a jump to a missing
  chain, a jump loop, impossible ports, addresses and probabilities, and
  binary or non-UTF-8 dumps; plus malformed FROM/TO words and --src/--dst/
  --local-ip addresses.

Each case names what must happen (`expect`):

- "reject": exit 2, and stderr locates the problem (below);
- "any": a mutation that may well still be valid, e.g. a dropped optional
  field: exit 0, or exit 2 located as for "reject";
- "fail": an input that passes validation but cannot be carried out: exit 1
  or 2 with an `error:` line (kept for such inputs; none is generated now).

In every case: no traceback (neither an escaped exception nor the text
"Traceback" on stderr), nothing over 10 s (the worker's alarm), and the
worker's peak RSS under 500 MB (a 1.5 GB address-space limit keeps a bomb
from hurting the machine; it then shows up as MemoryError).

"Located" is precise. A case has files (the manifests or dump it passes)
and the stderr of a rejection must contain `<file>:<line>:` for one of
them, exactly as the path was given on the command line (or as the loader
finds it under a given directory), where 1 <= line <= max(1, the file's
number of lines). Line 0 is never accepted for a regular file: a problem
in an empty file is on line 1, one in the file as a whole (too large, not
UTF-8 somewhere) is on the line where it is or line 1. Every `<file>:<n>:`
on stderr must obey the same bound. Where the thing given is not a regular
file with lines (a directory with no manifests, a FIFO, /dev/zero), stderr
must name it as `<path>:` (a line number after it, if any, 0 or 1). Where
the bad input is a command-line word (FROM, TO, --src...), stderr must
quote the word (its first 20 characters, raw or as repr). Where a name
carries a newline, every stderr line showing the text after the newline
must itself be located, so a newline can never forge or split a message.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONTROLPLANE = REPO / "controlplane"
RULES = REPO / "rules"
WORKER = Path(__file__).resolve().parent / "fuzz_worker.py"

SEED = 15
CASE_SECONDS = 10  # a case running longer is a hang
MEMORY_LIMIT_BYTES = 1536 * 1024 * 1024  # the worker's RLIMIT_AS
PEAK_RSS_MB = 500
# The text after a newline injected into a name: any stderr line showing it
# must be a located line of its own.
MARKER = "INJECTEDTAIL"

OFFLINE_COMMANDS = ("validate", "compile", "trace")


@dataclass(frozen=True)
class Case:
    """One input and the command that reads it."""

    id: str
    command: str  # validate | compile | trace | trace-rules | trace-words | apply
    argv: tuple[str, ...]  # the CLI's arguments, after `netemu`
    expect: str  # reject | any | fail
    files: tuple[str, ...] = ()  # regular files a located message may name
    paths: tuple[str, ...] = ()  # non-regular paths (dir, FIFO, device) named as `<path>:`
    word: str | None = None  # the bad command-line word, when that is the input
    marker: bool = False  # a name carries "\n" + MARKER
    live: bool = False  # also applied to a live lab (manifests that target the default lab)
    manifests: tuple[str, ...] = ()  # what `apply -f` gets in the live test
    usage_ok: bool = False  # a usage error (no node-1, no Lab...) is a fine rejection
    lab: str | None = None  # a live lab that must still answer after the case


@dataclass
class Result:
    """What the worker saw for one case."""

    id: str
    exit_code: int | None
    stderr: str
    seconds: float
    rss_mb: float
    traceback: str | None = None
    hang: bool = False
    crashed: bool = False  # the worker died or stopped answering during the case
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- writing files


class _Writer:
    """Writes each case's files under its own directory of `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def case_dir(self) -> Path:
        self.count += 1
        d = self.root / f"c{self.count:04d}"
        d.mkdir(parents=True)
        return d


def _lab_files(lab: Path) -> list[Path]:
    return sorted(p for p in lab.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _dump(docs: Sequence[Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False, allow_unicode=True, width=10_000)


def _lab_argv(command: str, files: Sequence[str], lab: str) -> tuple[str, ...]:
    flags: list[str] = []
    for f in files:
        flags += ["-f", f]
    if command == "validate":
        return ("validate", *flags)
    if command == "compile":
        return ("compile", *flags, "--node", "node-1")
    client, nodeport = _TRACE_ENDS.get(lab, (None, None))
    if client is None:
        return ("trace", "--offline", *flags, "--node", "node-1", *_PACKET)
    return ("trace", "--offline", *flags, client, f"node-1:{nodeport}")


# An external client and a NodePort per lab, for `trace --offline FROM TO`.
_TRACE_ENDS: dict[str, tuple[str | None, int | None]] = {
    "default": ("client", 30080),
    "probes": ("client", 30080),
    "affinity": ("client", 30090),
    "loadbalancer": ("allowed", 31080),
}
_PACKET = ("--src", "192.168.56.20", "--dst", "192.168.56.11", "--dport", "30080")
# IPv6-only labs: the trace packet's family would depend on whether the
# mutant still holds the IPv6-only Lab (a broken one falls back to the
# built-in IPv4 lab), so their mutants go through compile instead.
_IPV6_ONLY_LABS = {"ipv6only"}


# ---------------------------------------------------------------- structured mutations

FieldPath = tuple[str | int, ...]


def _sites(data: Any, path: FieldPath = ()) -> Iterator[tuple[FieldPath, Any]]:
    """Every field of a document with its value, parents before children."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*path, str(key)), value
            yield from _sites(value, (*path, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield (*path, i), value
            yield from _sites(value, (*path, i))


def _get(data: Any, path: FieldPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: FieldPath, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _delete(data: Any, path: FieldPath) -> None:
    parent = _get(data, path[:-1])
    del parent[path[-1]]


def _setter(path: FieldPath, value: Any) -> Callable[[Any], None]:
    return lambda doc: _set(doc, path, value)


def _dropper(path: FieldPath) -> Callable[[Any], None]:
    return lambda doc: _delete(doc, path)


def _key(path: FieldPath) -> str:
    """The last mapping key of a path (`ports[0]` → `ports`)."""
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return ""


# Maps whose keys are data, not fields: adding a key there is valid.
_FREE_MAPS = {"labels", "annotations", "selector", "matchLabels", "nodeSelector", "data"}
# Fields Kubernetes requires (so dropping them must be rejected).
_REQUIRED = {"apiVersion", "kind", "containers", "containerPort", "template"}

_PORTS = {"port", "containerPort", "nodePort", "targetPort", "hostPort", "healthCheckNodePort"}
_IPS = {"underlayIP", "ip", "clusterIP", "loadBalancerIP", "externalIPs", "clusterDNS"}
_CIDRS = {"underlayCIDR", "serviceCIDR", "podCIDR", "clusterCIDR", "loadBalancerSourceRanges"}
_ENUMS: dict[str, list[str]] = {
    "protocol": ["tcp", "HTTP", "Tcp"],
    "type": ["Nodeport", "External", "clusterip"],
    "externalTrafficPolicy": ["local", "Everywhere"],
    "internalTrafficPolicy": ["local", "Nowhere"],
    "sessionAffinity": ["Client", "clientip"],
    "overlay": ["gre", "VXLAN"],
    "proxyMode": ["ebpf", "IPTABLES"],
    "iptablesBackend": ["xtables", "NFT"],
    "restartPolicy": ["Sometimes", "always"],
    "kind": ["Sevice", "service", "Deploymnt"],
    "apiVersion": ["v2", "apps/v1beta1", "netemu/v1", "extensions/v1beta1"],
    "mode": ["ipvs-ish", "IPTABLES"],
    "addressType": ["IPv5", "ipv4"],
}
_BAD_NAMES = [
    "",
    "UPPER",
    "-leading-dash",
    "trailing-dash-",
    "with space",
    "under_score",
    "a" * 300,
    "a" * 254,
    f"web\n{MARKER}",
    "name/with/slash",
]
_BAD_IPS = ["10.0.0.256", "1.2.3", "a.b.c.d", "10.0.0.1/24", "999.1.1.1", "-1.0.0.0"]
_BAD_CIDRS = ["10.0.0.0/33", "10.0.0.0/-1", "300.0.0.0/8", "garbage", "10.0.0.0/", "/16"]
_BAD_PORTS = [-1, 0, 65536, 2**31, 2**64, 10**30]
_BAD_COUNTS = [-1, 1_000_000, 2**31, 10**30]


@dataclass(frozen=True)
class _Mutant:
    name: str
    docs: list[Any]
    expect: str
    marker: bool = False


def _structured(docs: list[Any], rng: random.Random) -> Iterator[_Mutant]:
    """Several mutants of one file's documents, each with one change."""
    for d, doc in enumerate(docs):
        sites = list(_sites(doc))
        if not sites:
            continue

        def mutant(
            name: str,
            change: Callable[[Any], None],
            expect: str,
            marker: bool = False,
            index: int = d,
        ) -> _Mutant:
            new = copy.deepcopy(docs)
            change(new[index])
            return _Mutant(f"doc{index}-{name}", new, expect, marker)

        for path, value in sites:
            key = _key(path)
            last = path[-1]
            parent_key = _key(path[:-1])
            if parent_key in _FREE_MAPS:
                continue  # a label or selector value: any string is a value
            where = ".".join(str(p) for p in path)
            # Wrong scalars where the value's meaning is known.
            if isinstance(last, str) and key in _PORTS and isinstance(value, int):
                bad_port = rng.choice(_BAD_PORTS)
                # 0 asks Kubernetes to allocate a nodePort, to use no hostPort, or
                # (targetPort) to use `port`: valid there.
                zero_ok = key in ("nodePort", "healthCheckNodePort", "hostPort", "targetPort")
                expect = "any" if bad_port == 0 and zero_ok else "reject"
                yield mutant(f"port-{where}={bad_port}", _setter(path, bad_port), expect)
                if key == "nodePort":
                    yield mutant(f"nodeport-range-{where}", _setter(path, 80), "reject")
                # A string where an int32 is wanted is a decoding error in Kubernetes; where
                # an IntOrString is wanted, "8080x" is a valid port name (IANA_SVC_NAME).
                named_ok = key == "targetPort" or parent_key in ("httpGet", "tcpSocket")
                yield mutant(
                    f"port-string-{where}",
                    _setter(path, f"{value}x"),
                    "any" if named_ok else "reject",
                )
            if key == "replicas" and isinstance(value, int):
                for count in _BAD_COUNTS:
                    yield mutant(f"replicas={count}", _setter(path, count), "reject")
            if key in _IPS and isinstance(value, str) and value not in ("", "None"):
                bad = rng.choice(_BAD_IPS)
                yield mutant(f"ip-{where}={bad}", _setter(path, bad), "reject")
            if key in _CIDRS and isinstance(value, str):
                bad = rng.choice(_BAD_CIDRS)
                yield mutant(f"cidr-{where}={bad}", _setter(path, bad), "reject")
            # `type` is an enum in a Service's spec; elsewhere (a Secret's type, a
            # condition's type) Kubernetes takes any string.
            free_type = key == "type" and parent_key != "spec"
            if key in _ENUMS and isinstance(value, str) and isinstance(last, str) and not free_type:
                bad = rng.choice(_ENUMS[key])
                yield mutant(f"enum-{where}={bad}", _setter(path, bad), "reject")
            if key == "name" and isinstance(value, str) and parent_key != "matchLabels":
                for bad in rng.sample(_BAD_NAMES, 3):
                    # A port's name is optional: "" is no name (a Service with one port,
                    # any containerPort); every other bad name is invalid wherever it is.
                    optional = bad == "" and parent_key == "ports"
                    yield mutant(
                        f"name-{where}={bad[:12]!r}-{len(bad)}",
                        _setter(path, bad),
                        "any" if optional else "reject",
                        marker=MARKER in bad,
                    )
            if key in ("periodSeconds", "timeoutSeconds", "failureThreshold") and isinstance(
                value, int
            ):
                yield mutant(f"probe-{where}=-1", _setter(path, -1), "reject")
        # Generic mutations at a few random sites of the document.
        for path, value in rng.sample(sites, min(4, len(sites))):
            key = _key(path)
            where = ".".join(str(p) for p in path)
            in_free_map = _key(path[:-1]) in _FREE_MAPS and isinstance(path[-1], str)
            # netemu names a Lab without a name after its file (pipeline.lab_name).
            named = path == ("metadata", "name") and doc.get("kind") != "Lab"
            # Dropping one item of a list is not dropping the field.
            required = (isinstance(path[-1], str) and key in _REQUIRED) or named
            # A document with neither kind nor metadata is data beside the
            # manifests (a Helm values file), skipped with a notice: so is a
            # KubeProxyConfiguration (it has no metadata) whose kind is dropped.
            if path == ("kind",) and "metadata" not in doc:
                required = False
            yield mutant(f"drop-{where}", _dropper(path), "reject" if required else "any")
            retyped: Any
            if isinstance(value, dict):
                retyped, expect = "a-string", "reject" if value and not in_free_map else "any"
            elif isinstance(value, list):
                retyped, expect = {"not": "a list"}, "reject" if value else "any"
            elif isinstance(value, bool):
                retyped, expect = "maybe", "reject"
            elif isinstance(value, int):
                retyped, expect = ["a", "list"], "reject"
            else:
                retyped, expect = {"a": "mapping"}, "reject"
            yield mutant(f"retype-{where}", _setter(path, retyped), expect)
            yield mutant(f"null-{where}", _setter(path, None), "any")
            nest: Any = "deep"
            for _ in range(60):
                nest = [nest]
            yield mutant(f"nest-{where}", _setter(path, nest), "any")
            if isinstance(value, dict) and not in_free_map and key not in _FREE_MAPS:
                yield mutant(
                    f"unknown-field-{where}",
                    _setter((*path, "bogusField"), 1),
                    "reject",
                )
        # Document-level changes.
        yield mutant("unknown-top-field", _setter(("bogus",), {"x": 1}), "reject")
        yield mutant("kind-missing", _dropper(("kind",)), "reject")
        yield mutant("kind-misspelt", _setter(("kind",), "Sevrice"), "reject")
    if docs:
        yield _Mutant("duplicate-doc", [*docs, copy.deepcopy(docs[-1])], "any")
        yield _Mutant("scalar-doc", [*docs, "just a string"], "reject")
        yield _Mutant("list-doc", [*docs, [1, 2, 3]], "reject")


# ---------------------------------------------------------------- textual mutations


def _textual(text: str, rng: random.Random) -> Iterator[tuple[str, bytes, str]]:
    """(name, bytes, expect) of one file's textual mutants."""
    raw = text.encode()
    lines = text.splitlines(keepends=True)
    indented = [
        i
        for i, line in enumerate(lines)
        if line.startswith("  ") and ":" in line and "#" not in line
    ]
    keyed = [
        i
        for i, line in enumerate(lines)
        if re.match(r"^\s*[A-Za-z]+:( .*)?$", line) and not line.lstrip().startswith("-")
    ]
    valued = [i for i, line in enumerate(lines) if re.match(r"^\s*-?\s*[A-Za-z]+: \S", line)]
    for cut in sorted(rng.sample(range(1, len(raw)), 3)):
        yield f"truncate-{cut}", raw[:cut], "any"
    if indented:
        i = rng.choice(indented)
        tabbed = [*lines[:i], "\t" + lines[i].lstrip(" "), *lines[i + 1 :]]
        yield f"tab-line{i + 1}", "".join(tabbed).encode(), "reject"
    if keyed:
        i = rng.choice(keyed)
        yield f"dup-key-line{i + 1}", "".join(lines[: i + 1] + lines[i:]).encode(), "reject"
    if valued:
        i = rng.choice(valued)
        head, _, tail = lines[i].partition(": ")
        for name, new in (
            ("unclosed-bracket", f"{head}: [{tail}"),
            ("undefined-alias", f"{head}: *nowhere\n"),
            ("python-tag", f"{head}: !!python/object/apply:os.system ['true']\n"),
        ):
            yield (
                f"{name}-line{i + 1}",
                "".join([*lines[:i], new, *lines[i + 1 :]]).encode(),
                ("reject"),
            )
    for name, junk in (("latin1", b"caf\xe9"), ("bad-utf8", b"\xc3\x28"), ("nul", b"\x00")):
        at = rng.randrange(len(raw))
        yield f"{name}-at{at}", raw[:at] + junk + raw[at:], "reject"
    yield "bell-char", raw.replace(b"\n", b"\x07\n", 1), "reject"
    yield "crlf", raw.replace(b"\n", b"\r\n"), "any"
    yield "bom", b"\xef\xbb\xbf" + raw, "any"
    yield "trailing-garbage", raw + b"\n---\nkey: [unclosed\n", "reject"


def _json_variants(docs: list[Any], rng: random.Random) -> Iterator[tuple[str, bytes, str]]:
    # A `kubectl get -o json` dump is a List of items.
    listing = {"apiVersion": "v1", "kind": "List", "items": docs, "metadata": {}}
    text = json.dumps(listing, indent=2)
    yield "json-list", text.encode(), "any"
    cut = rng.randrange(2, len(text) - 2)
    yield f"json-list-truncated-{cut}", text[:cut].encode(), "reject"
    if docs:
        one = json.dumps(docs[0], indent=2)
        yield "json-doc", one.encode(), "any"
        yield "json-doc-compact", json.dumps(docs[0]).encode(), "any"
        cut = rng.randrange(2, len(one) - 2)
        yield f"json-doc-truncated-{cut}", one[:cut].encode(), "reject"
        yield "json-dup-key", one.replace("{", '{"kind": "Pod",', 1).encode(), "reject"
        yield "json-nan", one.replace("{", '{"bogusField": NaN,', 1).encode(), "reject"


# ---------------------------------------------------------------- hostile inputs

_ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} ["
        + ",".join([f"*{chr(ord('a') + i - 1)}"] * 9)
        + "]"
        for i in range(1, 9)
    ]
    + ["kind: Service", "apiVersion: v1", ""]
)

_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: fuzz
spec:
  containers:
{containers}
"""
_CONTAINER = """\
    - name: {name}
      image: registry.k8s.io/e2e-test-images/agnhost:2.52
      ports:
        - containerPort: {port}
"""


def _pod(name: str, containers: Sequence[tuple[str, int]]) -> str:
    body = "".join(_CONTAINER.format(name=n, port=p) for n, p in containers)
    return _POD.format(name=name, containers=body.rstrip("\n") or "    []")


def _deployment(replicas: Any) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: fuzz-deploy
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: fuzz-deploy
  template:
    metadata:
      labels:
        app: fuzz-deploy
    spec:
      containers:
        - name: web
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
"""


def _hostile_files() -> Iterator[tuple[str, bytes, str, bool]]:
    """(name, content, expect, live) of hand-written hostile files."""
    rng = random.Random(SEED)
    yield "empty", b"", "reject", True
    yield "only-comments", b"# nothing here\n# at all\n", "reject", True
    yield "only-separators", b"---\n---\n...\n", "reject", True
    yield "only-whitespace", b"\n\n   \n\t\n", "reject", True
    yield "binary-junk", bytes(rng.randrange(256) for _ in range(4096)), "reject", True
    yield "binary-elf", b"\x7fELF\x02\x01\x01" + bytes(1024), "reject", True
    yield "alias-bomb", _ALIAS_BOMB.encode(), "reject", True
    yield "deep-flow-lists", b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "reject", True
    yield "deep-flow-maps", b"a: " + b"{a: " * 20_000 + b"}" * 20_000 + b"\n", "reject", True
    deep_block = "".join(f"{' ' * i}k{i}:\n" for i in range(3000))
    yield "deep-block-maps", deep_block.encode(), "reject", True
    yield (
        "long-line",
        b"kind: Service\napiVersion: v1\nmetadata:\n  name: " + b"a" * 2_000_000,
        ("reject"),
        True,
    )
    yield "many-docs", b"---\n" * 20_000 + b"kind: Nope\n", "reject", False
    yield "containers-empty", _pod("fuzz-empty", []).encode(), "reject", True
    yield "replicas-million", _deployment(1_000_000).encode(), "reject", True
    yield "replicas-huge", _deployment(10**40).encode(), "reject", True
    yield "replicas-float", _deployment("2.5").encode(), "reject", True
    yield "replicas-inf", _deployment(".inf").encode(), "reject", True
    yield "pod-name-254", _pod("p" * 254, [("web", 8080)]).encode(), "reject", True
    yield "pod-name-newline", _pod(f'"p\\n{MARKER}"', [("web", 8080)]).encode(), "reject", True
    yield "pod-name-nul", _pod('"p\\0x"', [("web", 8080)]).encode(), "reject", True
    yield "pod-name-unicode", _pod("pöd", [("web", 8080)]).encode(), "reject", True
    yield (
        "container-dup-name",
        _pod("fuzz-dup", [("web", 8080), ("web", 8081)]).encode(),
        ("reject"),
        True,
    )
    yield "utf16", _pod("fuzz-utf16", [("web", 8080)]).encode("utf-16"), "any", False
    yield (
        "latin1-comment",
        b"# caf\xe9 au lait\n" + _pod("fuzz-l1", [("web", 8080)]).encode(),
        ("reject"),
        True,
    )
    yield "key-is-mapping", b"? {a: 1}\n: b\nkind: Pod\n", "reject", True
    yield "key-is-list", b"[1, 2]: x\n", "reject", True
    yield "merge-key-loop", b"a: &a\n  <<: *a\n", "reject", True
    yield "recursive-alias", b"&a [*a]\n", "reject", True
    yield "unknown-tag", b"!custom {kind: Pod}\n", "reject", True
    yield "tag-python-name", b"kind: !!python/name:os.system\n", "reject", True
    yield "set-type", b"!!set {a, b}\n", "reject", True
    yield "binary-tag", b"kind: !!binary aGVsbG8=\napiVersion: v1\n", "reject", True
    yield (
        "timestamp-name",
        b"apiVersion: v1\nkind: Service\nmetadata:\n  name: 2001-12-14\n",
        ("reject"),
        True,
    )
    yield "number-keys", b"apiVersion: v1\nkind: Service\n1: 2\n", "reject", True
    yield "null-key", b"apiVersion: v1\nkind: Service\n~: x\n", "reject", True


def _long_pod_name() -> str:
    # 253 characters, a valid DNS subdomain: Kubernetes accepts this Pod.
    label = "p" * 63
    return ".".join([label, label, label, "q" * 61])


# ---------------------------------------------------------------- rules dumps


def _rules_mutants(text: str, rng: random.Random) -> Iterator[tuple[str, bytes, str]]:
    lines = text.splitlines(keepends=True)

    def without(pred: Callable[[str], bool], which: int = -1) -> bytes:
        hits = [i for i, line in enumerate(lines) if pred(line)]
        i = hits[which]
        return "".join(lines[:i] + lines[i + 1 :]).encode()

    def insert_after(pred: Callable[[str], bool], new: Sequence[str]) -> bytes:
        i = next(i for i, line in enumerate(lines) if pred(line))
        return "".join([*lines[: i + 1], *new, *lines[i + 1 :]]).encode()

    nat_decl = lambda line: line.startswith(":KUBE-SERVICES")  # noqa: E731
    yield "no-final-commit", without(lambda line: line.strip() == "COMMIT"), "reject"
    yield "no-table-line", without(lambda line: line.startswith("*"), 0), "reject"
    yield "extra-commit", text.encode() + b"COMMIT\n", "reject"
    used = sorted({m for m in re.findall(r"-j (KUBE-(?:SVC|SEP|EXT)-\w+)", text)})
    if used:
        chain = rng.choice(used)
        yield f"undeclared-{chain}", without(lambda line: line.startswith(f":{chain} ")), "reject"
    yield (
        "jump-missing-chain",
        insert_after(nat_decl, ["-A KUBE-SERVICES -j KUBE-NOWHERE-AT-ALL\n"]),
        "reject",
    )
    # Chain declarations go before rules in a table section; the rules are appended
    # after the last declaration of the nat table.
    last_decl = max(
        i
        for i, line in enumerate(lines)
        if line.startswith(":") and "KUBE-SERVICES" in line and i > 0
    )
    loop = [
        ":FUZZ-LOOP-A - [0:0]\n",
        ":FUZZ-LOOP-B - [0:0]\n",
        "-A KUBE-SERVICES -j FUZZ-LOOP-A\n",
        "-A FUZZ-LOOP-A -j FUZZ-LOOP-B\n",
        "-A FUZZ-LOOP-B -j FUZZ-LOOP-A\n",
    ]
    yield (
        "jump-loop",
        "".join([*lines[: last_decl + 1], *loop, *lines[last_decl + 1 :]]).encode(),
        ("reject"),
    )
    self_loop = ["-A KUBE-SERVICES -j KUBE-SERVICES\n"]
    yield (
        "self-loop",
        "".join([*lines[: last_decl + 1], *self_loop, *lines[last_decl + 1 :]]).encode(),
        ("reject"),
    )
    for name, pattern, bad in (
        ("dport-99999", r"--dport \d+", "--dport 99999"),
        ("dest-bad-ip", r"-d \d+\.\d+\.\d+\.\d+", "-d 10.96.0.300"),
        ("probability-2", r"--probability [0-9.]+", "--probability 2.0"),
        ("to-destination-bad", r"--to-destination [0-9.:]+", "--to-destination 10.244.1.2:70000"),
        ("mark-bad", r"--mark 0x[0-9a-f]+/0x[0-9a-f]+", "--mark 0xzz"),
    ):
        if re.search(pattern, text):
            yield name, re.sub(pattern, bad, text, count=1).encode(), "reject"
    yield "unknown-line", insert_after(nat_decl, ["this is not iptables\n"]), "reject"
    yield "rule-outside-table", b"-A KUBE-SERVICES -j ACCEPT\n" + text.encode(), "reject"
    yield "empty-chain-name", insert_after(nat_decl, [": - [0:0]\n"]), "reject"
    if ":PREROUTING ACCEPT" in text:
        yield (
            "bad-policy",
            text.replace(":PREROUTING ACCEPT", ":PREROUTING MAYBE", 1).encode(),
            ("reject"),
        )
    raw = text.encode()
    for cut in sorted(rng.sample(range(1, len(raw)), 2)):
        yield f"truncate-{cut}", raw[:cut], "any"
    at = rng.randrange(len(raw))
    yield f"latin1-at{at}", raw[:at] + b"\xe9" + raw[at:], "reject"
    yield f"nul-at{at}", raw[:at] + b"\x00" + raw[at:], "reject"
    yield "counters", re.sub(r"^-A ", "[1:2] -A ", text, flags=re.M).encode(), "any"


# ---------------------------------------------------------------- FROM/TO words

_BAD_TO = [
    "node-1:",
    "node-1:0",
    "node-1:65536",
    "node-1:-5",
    "node-1:abc",
    "node-1:30080:9",
    "nosuchnode:30080",
    ":30080",
    ":",
    "svc/nosuch",
    "pod/",
    "default/",
    "/web",
    "10.96.0.300",
    "1.2.3",
    f"web\n{MARKER}",
    "x" * 300,
    "web.default.svc..cluster.local",
    "ns/with/too/many",
]
_BAD_FROM = ["nosuch", "pod/nope", "1.2.3.4.5", "client:30080", f"client\n{MARKER}", "y" * 300]
# IPv6 addresses are valid words (ip6tables dumps, IPv6 packets); a malformed one is not.
_BAD_IP_WORDS = ["256.1.1.1", "1.2.3", "fd00::1::2", "", "10.0.0.1/24", "0x0a000001x", "a" * 300]


# ---------------------------------------------------------------- the cases


def generate(root: Path) -> list[Case]:
    """Write every case's files under `root`; the same cases on every run."""
    rng = random.Random(SEED)
    writer = _Writer(root)
    cases: list[Case] = []
    turn = 0

    def lab_case(
        lab: Path, original: Path, name: str, content: bytes, expect: str, marker: bool = False
    ) -> None:
        nonlocal turn
        d = writer.case_dir()
        files = []
        mutant_path = ""
        for f in _lab_files(lab):
            target = d / f.name
            if f == original:
                target = d / (f.stem + (".json" if name.startswith("json") else f.suffix))
                target.write_bytes(content)
                mutant_path = str(target)
            else:
                target.write_bytes(f.read_bytes())
            files.append(str(target))
        command = OFFLINE_COMMANDS[turn % 3]
        turn += 1
        if command == "trace" and lab.name in _IPV6_ONLY_LABS:
            command = "compile"
        live = (
            lab.name == "default"
            and original.name == "web.yaml"
            and expect == "reject"
            and _safe_live(name)
        )
        cases.append(
            Case(
                id=f"{lab.name}/{original.name}/{name}",
                command=command,
                argv=_lab_argv(command, files, lab.name),
                expect=expect,
                files=tuple(files),
                marker=marker,
                live=live,
                manifests=(mutant_path,),
                usage_ok=expect == "any",
            )
        )

    for lab in sorted(p for p in CONTROLPLANE.iterdir() if p.is_dir()):
        for original in _lab_files(lab):
            docs = _docs(original)
            mutants = list(_structured(docs, rng))
            # Keep every wrong-scalar mutant of the default lab and a sample elsewhere:
            # the mutations repeat across labs.
            keep = len(mutants) if lab.name == "default" else min(len(mutants), 22)
            for m in sorted(rng.sample(mutants, keep), key=lambda m: m.name):
                lab_case(lab, original, m.name, _dump(m.docs).encode(), m.expect, m.marker)
            for name, content, expect in _textual(original.read_text(), rng):
                lab_case(lab, original, name, content, expect)
            for name, content, expect in _json_variants(docs, rng):
                lab_case(lab, original, name, content, expect)

    # Hostile files, alone (so "empty" is the whole input) under every offline command.
    for name, content, expect, live in _hostile_files():
        d = writer.case_dir()
        path = d / f"{name}.yaml"
        path.write_bytes(content)
        for command in OFFLINE_COMMANDS:
            cases.append(
                Case(
                    id=f"hostile/{name}/{command}",
                    command=command,
                    argv=_lab_argv(command, [str(path)], "hostile"),
                    expect=expect,
                    files=(str(path),),
                    marker=MARKER in content.decode(errors="replace"),
                    live=live and command == "validate" and _safe_live(name),
                    manifests=(str(path),),
                    usage_ok=expect == "any",
                )
            )
    # A Pod name Kubernetes accepts must be accepted.
    d = writer.case_dir()
    long_name = d / "pod-name-253.yaml"
    long_name.write_text(_pod(_long_pod_name(), [("web", 8080)]))
    cases.append(
        Case(
            id="hostile/pod-name-253",
            command="validate",
            argv=("validate", "-f", str(long_name)),
            expect="any",
            files=(str(long_name),),
        )
    )
    # Paths that are not regular files with lines.
    special: list[tuple[str, Path, str]] = []
    empty_dir = writer.case_dir() / "empty-dir"
    empty_dir.mkdir()
    special.append(("empty-dir", empty_dir, "reject"))
    no_manifests = writer.case_dir() / "no-manifests"
    no_manifests.mkdir()
    (no_manifests / "README.txt").write_text("kind: Service\n")
    (no_manifests / "notes.md").write_text("# notes\n")
    special.append(("dir-without-manifests", no_manifests, "reject"))
    fifo = writer.case_dir() / "fifo.yaml"
    os.mkfifo(fifo)
    special.append(("fifo", fifo, "reject"))
    special.append(("dev-zero", Path("/dev/zero"), "reject"))
    special.append(("dev-null", Path("/dev/null"), "reject"))
    sparse = writer.case_dir() / "huge.yaml"
    with sparse.open("wb") as out:
        out.truncate(1024**3)
    special.append(("sparse-1GiB", sparse, "reject"))
    big = writer.case_dir() / "big.yaml"
    # 64 MiB of comments: more than any manifest needs, more than a limit allows.
    big.write_bytes((b"# " + b"x" * 1021 + b"\n") * 65536)
    special.append(("comments-64MiB", big, "reject"))
    for name, path, expect in special:
        for command in OFFLINE_COMMANDS:
            is_file_with_lines = name in ("sparse-1GiB", "comments-64MiB")
            cases.append(
                Case(
                    id=f"special/{name}/{command}",
                    command=command,
                    argv=_lab_argv(command, [str(path)], "special"),
                    expect=expect,
                    files=(str(path),) if is_file_with_lines else (),
                    paths=() if is_file_with_lines else (str(path),),
                    live=command == "validate" and name not in ("comments-64MiB",),
                    manifests=(str(path),),
                )
            )

    # trace --offline --rules with malformed dumps.
    for lab in sorted(p for p in RULES.iterdir() if p.is_dir()):
        saved = lab / "node-1.iptables"
        if not saved.exists():
            continue  # an IPv6-only lab: ip6tables dumps only
        for name, content, expect in _rules_mutants(saved.read_text(), rng):
            d = writer.case_dir()
            path = d / "node-1.iptables"
            path.write_bytes(content)
            cases.append(_rules_case(f"rules/{lab.name}/{name}", path, expect))
    for name, content, _, _ in _hostile_files():
        if name in ("binary-junk", "binary-elf", "empty", "latin1-comment", "long-line"):
            d = writer.case_dir()
            path = d / f"{name}.iptables"
            path.write_bytes(content)
            expect = "any" if name == "empty" else "reject"
            cases.append(_rules_case(f"rules/hostile/{name}", path, expect))

    # Malformed FROM/TO words and addresses against the default lab.
    default = [str(f) for f in _lab_files(CONTROLPLANE / "default")]
    flags = [x for f in default for x in ("-f", f)]
    for word in _BAD_TO:
        cases.append(
            Case(
                id=f"words/to/{word[:24]!r}",
                command="trace-words",
                argv=("trace", "--offline", *flags, "client", word),
                expect="reject",
                word=word,
                marker=MARKER in word,
            )
        )
    for word in _BAD_FROM:
        cases.append(
            Case(
                id=f"words/from/{word[:24]!r}",
                command="trace-words",
                argv=("trace", "--offline", *flags, word, "node-1:30080"),
                expect="reject",
                word=word,
                marker=MARKER in word,
            )
        )
    dump = str(RULES / "default" / "node-1.iptables")
    for word in _BAD_IP_WORDS:
        for flag in ("--src", "--dst", "--local-ip"):
            values = {
                "--src": "192.168.56.20",
                "--dst": "192.168.56.11",
                "--local-ip": "192.168.56.11",
            }
            values[flag] = word
            cases.append(
                Case(
                    id=f"words/{flag}/{word[:24]!r}",
                    command="trace-words",
                    argv=(
                        "trace",
                        "--offline",
                        "--rules",
                        dump,
                        "--local-ip",
                        values["--local-ip"],
                        "--src",
                        values["--src"],
                        "--dst",
                        values["--dst"],
                        "--dport",
                        "30080",
                    ),
                    expect="reject",
                    word=word,
                )
            )
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"case ids must be unique: {sorted(duplicates)[:5]}"
    return cases


def _rules_case(case_id: str, path: Path, expect: str) -> Case:
    """`trace --offline --rules PATH` of node-1's addresses and a NodePort packet."""
    argv = ("trace", "--offline", "--rules", str(path), "--local-ip", "192.168.56.11", *_PACKET)
    return Case(id=case_id, command="trace-rules", argv=argv, expect=expect, files=(str(path),))


def _safe_live(name: str) -> bool:
    """Whether a case may go to a live lab. Not huge replica counts: accepted
    today, they make the lab's supervisor build pods until it holds gigabytes
    (5 GB in three minutes), on a machine others share. The CLI validates
    them before the lab sees them, with the validator the offline cases
    exercise, so they are judged there."""
    return "replicas" not in name


def live_cases(root: Path, lab: str) -> list[Case]:
    """The cases a live lab gets through `netemu apply --lab LAB -f ...`: every
    one a rejection, so the lab must end as it began. (Two containers on one
    port validate, as in Kubernetes, and run with one in CrashLoopBackOff:
    tests/privileged/test_live_hardening.py holds that.)"""
    chosen = [c for c in generate(root) if c.live]
    applied = [
        Case(
            id=f"live/{c.id}",
            command="apply",
            argv=("apply", "--lab", lab, *[x for m in c.manifests for x in ("-f", m)]),
            expect=c.expect,
            files=c.files if c.files else (),
            paths=c.paths,
            marker=c.marker,
            manifests=c.manifests,
            lab=lab,
        )
        for c in chosen
    ]
    return applied


# ---------------------------------------------------------------- running


def run_cases(cases: Sequence[Case], workdir: Path, python: str = sys.executable) -> list[Result]:
    """Run `cases` in one worker process (a new one after a case kills it)."""
    spec = workdir / "cases.json"
    spec.write_text(json.dumps([asdict(c) for c in cases]))
    out = workdir / "results.jsonl"
    results: dict[str, Result] = {}
    start = 0
    while start < len(cases):
        out.write_text("")
        log = (workdir / "worker.log").open("w")
        worker = subprocess.Popen(
            [python, str(WORKER), str(spec), str(out), str(start)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        seen = 0
        last = time.monotonic()
        while True:
            done = worker.poll() is not None
            # Only whole lines: a long record reaches the file in more than
            # one write, and the worker may be between them.
            lines = out.read_text().split("\n")[:-1]
            for line in lines[seen:]:
                data = json.loads(line)
                results[data["id"]] = Result(**data)
            if len(lines) > seen:
                last = time.monotonic()
            seen = len(lines)
            if done:
                break
            if time.monotonic() - last > CASE_SECONDS + 10:
                worker.kill()
                worker.wait()
                break
            time.sleep(0.05)
        log.close()
        start += seen
        if start < len(cases):
            # The worker died, or its alarm could not stop the case: blame the case.
            case = cases[start]
            tail = (workdir / "worker.log").read_text()[-2000:]
            results[case.id] = Result(
                case.id, None, tail, time.monotonic() - last, 0.0, crashed=True
            )
            start += 1
    return [results[c.id] for c in cases]


def real_cli(cases: Sequence[Case], netemu: str) -> dict[str, tuple[int, str]]:
    """Exit code and stderr of each case through the `netemu` command itself."""
    running = {
        c.id: subprocess.Popen(
            [netemu, *c.argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for c in cases
    }
    found = {}
    for case_id, proc in running.items():
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        found[case_id] = (proc.returncode, err)
    return found


# ---------------------------------------------------------------- judging


def _line_count(path: str) -> int:
    data = Path(path).read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def located(case: Case, stderr: str) -> list[str]:
    """Problems with where the rejection says the problem is ([] if precise)."""
    problems: list[str] = []
    found = False
    for f in case.files:
        last = max(1, _line_count(f))
        for m in re.finditer(re.escape(f) + r":(\d+):", stderr):
            n = int(m.group(1))
            if 1 <= n <= last:
                found = True
            else:
                problems.append(f"{f}:{n}: line out of range 1..{last}")
    for p in case.paths:
        for m in re.finditer(re.escape(p) + r":(\d*)", stderr):
            if m.group(1) in ("", "0", "1"):
                found = True
            else:
                problems.append(f"{p}:{m.group(1)}: a line in what has no lines")
    if case.word is not None:
        head = case.word[:20]
        shown = repr(head)[1:-1]
        if head in stderr or shown in stderr:
            found = True
    if case.word == "":
        found = True  # nothing to quote
    if not found:
        problems.append("no file:line (or word) naming the input on stderr")
    if case.marker and "\n" + MARKER in stderr:
        line = next(x for x in stderr.splitlines() if x.startswith(MARKER))
        problems.append(f"a raw newline from the input split the message: {line[:80]!r}")
    return problems


def judge(case: Case, result: Result) -> list[str]:
    """Every way `result` breaks the acceptance rules ([] when it keeps them)."""
    if "not_run" in result.extra:
        return [f"not run: {result.extra['not_run']}"]
    problems = _judge_outcome(case, result)
    if result.extra.get("lab_answers") is False:
        problems.append("the lab's supervisor stopped answering after this case")
    return problems


def _judge_outcome(case: Case, result: Result) -> list[str]:
    if result.crashed:
        return [f"worker died or stuck during the case: {result.stderr[-300:]!r}"]
    if result.hang:
        return [f"hang: still running after {CASE_SECONDS} s"]
    if result.traceback is not None:
        return [f"traceback: {result.traceback.strip().splitlines()[-1]}"]
    if "Traceback (most recent call last)" in result.stderr:
        return ["traceback text on stderr"]
    if result.seconds > CASE_SECONDS:
        return [f"took {result.seconds:.1f} s"]
    code = result.exit_code
    allowed = {"reject": {2}, "any": {0, 2}, "fail": {1, 2}}[case.expect]
    if code not in allowed:
        return [f"exit {code}, expected {sorted(allowed)}"]
    if code == 2:
        problems = located(case, result.stderr)
        if problems and case.usage_ok and result.stderr.startswith("error: "):
            # A mutant that stayed valid can leave the command without what it
            # asks for (no node-1, no Lab, no client): a usage error, exit 2.
            return []
        return problems
    if code == 1 and "error:" not in result.stderr:
        return ["exit 1 without an error: line"]
    return []


def report(cases: Sequence[Case], results: Sequence[Result]) -> list[str]:
    """One line per failing case: id, verdicts, command and the stderr's start."""
    lines = []
    for case, result in zip(cases, results, strict=True):
        problems = judge(case, result)
        if problems:
            first = result.stderr.strip().splitlines()[:1]
            lines.append(
                f"{case.id} [{case.command}, exit {result.exit_code}]: {'; '.join(problems)}"
                f" | stderr: {first[0][:200] if first else ''!r}"
            )
    return lines
