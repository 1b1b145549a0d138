"""A live lab that one bad object cannot wedge: pods with the longest names
Kubernetes accepts, `netemu down` over a damaged journal, changes that fail
part-way (all or nothing), two containers on one port (the second fails at
run time, as in Kubernetes), raw requests on the supervisor's socket, and
`delete -f` of a lab directory (the Lab stays)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, REPO, lab_name, lab_prefix, running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel import journal, netns
from netemu.kernel.iptables import KernelIptables
from netemu.kernel.probe import http_get
from netemu.kernel.processes import ETC_NETNS
from netemu.lab import LabError, LiveLab, down, up
from netemu.net.plan import pod_netns

# The longest pod name Kubernetes accepts: a DNS subdomain of 253
# characters, made of labels of at most 63.
LONG_NAME = ".".join(["p" * 63, "q" * 63, "r" * 63, "s" * 61])
assert len(LONG_NAME) == 253


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pod_yaml(name: str, *, node: str | None = None, app: str = "hard", ports: int = 1) -> str:
    containers = "".join(
        f"""
  - name: c{i}
    image: registry.k8s.io/e2e-test-images/agnhost:2.45
    ports: [{{containerPort: 8080}}]"""
        for i in range(ports)
    )
    node_line = f"\n  nodeName: {node}" if node else ""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:{node_line}
  containers:{containers}
"""


def apply(lab: LiveLab, path: Path) -> list[str]:
    return lab.apply([item.obj for item in load_and_validate([path])])


def ours(lab: str) -> set[str]:
    return {n for n in netns.list_names() if n.startswith(lab_prefix(lab))}


def pod_names(lab: LiveLab) -> set[str]:
    return {
        f"{p['metadata'].get('namespace', 'default')}/{p['metadata']['name']}"
        for p in lab.state()["pods"]
    }


def rules(lab: LiveLab) -> dict[str, str]:
    """Every node's rules, without iptables-save's date line and counters."""
    found = {}
    for node in lab.info()["nodes"]:
        netns_name, backend = lab.node_netns(node)
        text = KernelIptables(netns_name, backend).save()
        lines = [re.sub(r"\[\d+:\d+\]", "", ln) for ln in text.splitlines() if ln[:1] != "#"]
        found[node] = "\n".join(lines)
    return found


def pod_ip(lab: LiveLab, name: str) -> str:
    return str(lab.info()["pods"][f"default/{name}"]["ip"])


def node_of(lab: LiveLab, name: str) -> str:
    netns_name, _ = lab.node_netns(str(lab.info()["pods"][f"default/{name}"]["node"]))
    return netns_name


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("hard")) as live:
        yield live


# -- names that fit the kernel -------------------------------------------------


def test_a_pod_with_a_253_character_name_comes_up_answers_and_goes_down(tmp_path: Path) -> None:
    name = lab_name("hlong")
    try:
        live = up([str(CONTROLPLANE / "default")], name)
        manifest = pod_yaml(LONG_NAME).replace(
            "    ports: [{containerPort: 8080}]",
            "    ports: [{containerPort: 8080}]\n"
            "  - name: shell\n    image: busybox\n    command: [sleep, '600']",
        )
        assert apply(live, write(tmp_path / "long.yaml", manifest)) == [f"Pod/{LONG_NAME}"]
        where = live.info()["pods"][f"default/{LONG_NAME}"]["netns"]
        assert netns.exists(where)
        assert len(where) <= 255 and where.startswith(lab_prefix(name))
        assert (ETC_NETNS / where / "resolv.conf").exists()
        reply = http_get(node_of(live, LONG_NAME), pod_ip(live, LONG_NAME), 8080)
        assert reply.outcome == "answered", reply.detail
        # Its hostname is cut to 63 characters, as the kubelet cuts it.
        done = live.exec(LONG_NAME, ["hostname"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "p" * 63
    finally:
        removed = down(name)
    assert f"netns {where}" in removed
    assert not ours(name)
    assert not list(ETC_NETNS.glob(f"{lab_prefix(name)}*"))
    assert not journal.run_dir(name).exists()


def test_down_skips_and_reports_journal_lines_it_cannot_use() -> None:
    name = lab_name("hjrnl")
    # A namespace of another lab: a damaged journal naming it must not remove it.
    foreign = f"{lab_prefix(lab_name('hforeign'))}underlay"
    netns.create(foreign)
    try:
        up([str(CONTROLPLANE / "default")], name)
        before = ours(name)
        assert before
        bad = [
            b'{"netns": "' + f"{lab_prefix(name)}pod_default_{'x' * 300}".encode() + b'"}',
            b'{"netns": "' + foreign.encode() + b'"}',
            b'{"path": "/"}',
            b'{"pid": "1"}',
            b"[1, 2, 3]",
            b"\xff\xfe binary \x00 junk",
            b'{"netns": "netemu_cut',
        ]
        with open(journal.run_dir(name) / journal.JOURNAL, "ab") as out:
            out.write(b"\n".join(bad) + b"\n")
        notes: list[str] = []
        removed = down(name, notes.append)
        assert len(notes) == len(bad), notes
        assert all(journal.JOURNAL in note and "skipped" in note for note in notes)
        assert {f"netns {n}" for n in before} <= set(removed)
        assert not ours(name)
        assert not journal.run_dir(name).exists()
        assert netns.exists(foreign)
        assert Path("/").is_dir()
    finally:
        netns.remove(foreign)
        if journal.run_dir(name).exists():
            down(name)


# -- transactional changes -------------------------------------------------------


def test_a_change_that_fails_on_a_node_leaves_the_lab_as_before(
    lab: LiveLab, tmp_path: Path
) -> None:
    # A namespace in the way of the pod's own makes CNI ADD fail on the node,
    # after the same change has started another pod there and added a Service.
    namespaces = ours(lab.name)
    blocker = pod_netns(lab.name, "default", "victim")
    netns.create(blocker)
    try:
        manifest = write(
            tmp_path / "change.yaml",
            pod_yaml("a-bystander", node="node-1", app="victim")
            + "---\n"
            + pod_yaml("victim", node="node-1", app="victim")
            + """---
apiVersion: v1
kind: Service
metadata:
  name: victim
spec:
  selector: {app: victim}
  ports: [{port: 80, targetPort: 8080}]
""",
        )
        pods, rules_before = pod_names(lab), rules(lab)
        services = {s["metadata"]["name"] for s in lab.state()["services"]}
        with pytest.raises(LabError, match="File exists"):
            apply(lab, manifest)
        assert pod_names(lab) == pods
        assert {s["metadata"]["name"] for s in lab.state()["services"]} == services
        assert ours(lab.name) == namespaces | {blocker}
        assert rules(lab) == rules_before
        assert not (ETC_NETNS / pod_netns(lab.name, "default", "a-bystander")).exists()
    finally:
        netns.remove(blocker)
    # Later changes work, the same one included, and so does delete.
    assert apply(lab, manifest) == ["Pod/a-bystander", "Pod/victim", "Service/victim"]
    assert http_get(node_of(lab, "victim"), pod_ip(lab, "victim"), 8080).outcome == "answered"
    lab.delete([("Pod", "default", "a-bystander"), ("Pod", "default", "victim")])
    lab.delete([("Service", "default", "victim")])
    assert ours(lab.name) == namespaces


def container_status(lab: LiveLab, pod: str, container: str) -> dict[str, Any]:
    for p in lab.state()["pods"]:
        if p["metadata"]["name"] == pod:
            for status in p.get("status", {}).get("containerStatuses") or []:
                if status["name"] == container:
                    return dict(status)
    return {}


def test_two_containers_on_one_port_the_second_crash_loops(lab: LiveLab, tmp_path: Path) -> None:
    # The API accepts the pod (with a warning); the second container cannot
    # bind the port the first holds in their shared namespace, fails, and is
    # restarted with back-off, while the pod runs and the first one serves.
    namespaces = ours(lab.name)
    manifest = write(tmp_path / "twoport.yaml", pod_yaml("twoport", ports=2))
    assert apply(lab, manifest) == ["Pod/twoport"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = container_status(lab, "twoport", "c1")
        if status.get("restartCount", 0) >= 1 and not status["ready"]:
            break
        time.sleep(0.2)
    assert status.get("restartCount", 0) >= 1, status
    assert status["ready"] is False
    assert container_status(lab, "twoport", "c0")["ready"] is True
    pod = next(p for p in lab.state()["pods"] if p["metadata"]["name"] == "twoport")
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert "c1" in ready["message"]
    assert http_get(node_of(lab, "twoport"), pod_ip(lab, "twoport"), 8080).outcome == "answered"
    assert "in use" in lab.logs("twoport", "c1")
    # Delete removes it whole, and later changes work.
    lab.delete([("Pod", "default", "twoport")])
    assert ours(lab.name) == namespaces
    assert apply(lab, write(tmp_path / "ok.yaml", pod_yaml("after"))) == ["Pod/after"]
    lab.delete([("Pod", "default", "after")])
    assert ours(lab.name) == namespaces


# -- raw requests on the supervisor's socket -------------------------------------


def raw_request(lab: LiveLab, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(lab.directory / journal.SOCKET))
        # Refused before it was all sent: the reply is waiting all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def line(request: object) -> bytes:
    return json.dumps(request).encode() + b"\n"


BAD_REQUESTS = {
    "not JSON": b"hello\n",
    "not an object": b"[1, 2]\n",
    "no op": line({"objects": []}),
    "op of the wrong type": line({"op": 5}),
    "unknown op": line({"op": "explode"}),
    "unknown field": line({"op": "state", "extra": 1}),
    "apply without objects": line({"op": "apply"}),
    "apply with objects not a list": line({"op": "apply", "objects": "Pod"}),
    "apply with a number for an object": line({"op": "apply", "objects": [1]}),
    "apply with an empty list": line({"op": "apply", "objects": []}),
    "apply of an object without a name": line(
        {"op": "apply", "objects": [{"apiVersion": "v1", "kind": "Pod"}]}
    ),
    "apply of an invalid name": line(
        {
            "op": "apply",
            "objects": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "Bad_Name"},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                }
            ],
        }
    ),
    "apply of the Lab": line(
        {
            "op": "apply",
            "objects": [
                {
                    "apiVersion": "netemu/v1alpha1",
                    "kind": "Lab",
                    "metadata": {"name": "x"},
                    "spec": {"nodes": [{"name": "n1", "underlayIP": "192.168.56.11"}]},
                }
            ],
        }
    ),
    "scale with replicas a string": line(
        {
            "op": "scale",
            "kind": "Deployment",
            "namespace": "default",
            "name": "web",
            "replicas": "3",
        }
    ),
    "scale with replicas true": line(
        {
            "op": "scale",
            "kind": "Deployment",
            "namespace": "default",
            "name": "web",
            "replicas": True,
        }
    ),
    "scale to a billion": line(
        {
            "op": "scale",
            "kind": "Deployment",
            "namespace": "default",
            "name": "web",
            "replicas": 10**9,
        }
    ),
    "scale a Service": line(
        {"op": "scale", "kind": "Service", "namespace": "default", "name": "web", "replicas": 1}
    ),
    "delete of an unknown kind": line({"op": "delete", "refs": [{"kind": "Nope", "name": "x"}]}),
    "delete with a ref not an object": line({"op": "delete", "refs": ["Pod/x"]}),
    "delete of the Lab": line({"op": "delete", "refs": [{"kind": "Lab", "name": "default"}]}),
    "delete of a missing pod": line(
        {"op": "delete", "refs": [{"kind": "Pod", "namespace": "default", "name": "nope"}]}
    ),
    "logs with a negative tail": line(
        {"op": "logs", "namespace": "default", "pod": "x", "tail": -1}
    ),
    "logs of a name with a newline": line({"op": "logs", "namespace": "default", "pod": "a\nb"}),
    "nesting too deep for the parser": b"[" * 200_000 + b"]" * 200_000 + b"\n",
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_raw_request_gets_an_error_reply(lab: LiveLab, case: str) -> None:
    pods = pod_names(lab)
    reply = raw_request(lab, BAD_REQUESTS[case])
    assert reply["ok"] is False
    assert isinstance(reply["error"], str) and reply["error"]
    assert "Traceback" not in reply["error"]
    # The supervisor still answers, and nothing changed.
    assert lab.status()["ready"]
    assert pod_names(lab) == pods


def test_an_invalid_object_is_reported_with_its_line_and_field(lab: LiveLab) -> None:
    reply = raw_request(lab, BAD_REQUESTS["apply of an invalid name"])
    assert re.search(r"request:\d+: Pod/Bad_Name: metadata.name", reply["error"]), reply


def test_a_huge_request_is_refused_unread(lab: LiveLab) -> None:
    reply = raw_request(lab, b'{"op": "apply", "objects": [' + b"1," * (40 << 20))
    assert reply["ok"] is False
    assert "request longer than 67108864 bytes" in reply["error"]
    assert lab.status()["ready"]


# -- delete -f of a lab directory --------------------------------------------------


def test_delete_f_of_a_lab_directory_skips_the_lab(lab: LiveLab, tmp_path: Path) -> None:
    extra = write(tmp_path / "extra.yaml", pod_yaml("extra"))
    apply(lab, extra)
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "lab.yaml").write_text((CONTROLPLANE / "default" / "lab.yaml").read_text())
    (directory / "extra.yaml").write_text(extra.read_text())
    done = subprocess.run(
        [sys.executable, "-m", "netemu", "delete", "-f", str(directory), "--lab", lab.name],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Pod/extra deleted\n"
    assert done.stderr == f"Lab/default skipped: netemu down {lab.name} takes the lab down\n"
    assert lab.status()["ready"]
    assert "default/extra" not in pod_names(lab)
    assert any(p.startswith("default/web-") for p in pod_names(lab))
