"""A bundle as published, live: without a Lab it comes up on the built-in
lab; kinds netemu stores but does not emulate are listed by `get`, applied
and deleted; an apply whose nodePort clashes with a running Service, or whose
namespace does not exist, is refused with file:line and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import lab_name, netemu_cli

from netemu.lab import LiveLab, down

pytestmark = pytest.mark.privileged

BUNDLE = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "web:reader"}
rules: []
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: x, ports: [{containerPort: 8080}]}]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    name = lab_name("kinds")
    bundle = tmp_path_factory.mktemp("kinds") / "app.yaml"
    bundle.write_text(BUNDLE)
    try:
        done = netemu_cli("up", "-f", str(bundle), "--name", name)
        assert done.returncode == 0, done.stderr
        assert "no Lab in the input: using the built-in lab" in done.stderr
        assert "warning: ServiceAccount (v1): 1 object stored, not emulated" in done.stderr
        yield LiveLab(name)
    finally:
        down(name)


def test_built_in_lab_has_two_nodes_and_a_client(lab: LiveLab) -> None:
    info = lab.info()
    assert sorted(info["nodes"]) == ["node-1", "node-2"]
    assert sorted(info["clients"]) == ["client"]


def test_stored_kinds_are_listed_applied_and_deleted(lab: LiveLab, tmp_path: Path) -> None:
    shown = netemu_cli("get", "sa", "--lab", lab.name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split() == ["NAMESPACE", "NAME", "AGE"]
    assert shown.stdout.splitlines()[1].split()[:2] == ["default", "web"]
    roles = json.loads(netemu_cli("get", "clusterroles", "--lab", lab.name, "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in roles["items"]] == ["web:reader"]
    extra = tmp_path / "pdb.yaml"
    extra.write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n"
        "spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}\n"
    )
    applied = netemu_cli("apply", "-f", str(extra), "--lab", lab.name)
    assert applied.returncode == 0, applied.stderr
    assert "PodDisruptionBudget/web applied" in applied.stdout
    listed = netemu_cli("get", "pdb", "--lab", lab.name)
    assert listed.stdout.splitlines()[1].split()[:2] == ["default", "web"]
    gone = netemu_cli("delete", "pdb", "web", "--lab", lab.name)
    assert gone.returncode == 0, gone.stderr
    assert netemu_cli("get", "pdb", "--lab", lab.name).stdout == "No resources found.\n"


def test_apply_refuses_a_clashing_node_port_and_a_missing_namespace(
    lab: LiveLab, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: other}\n"
        "spec:\n  type: NodePort\n  ports: [{port: 81, nodePort: 30080}]\n"
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: nowhere}\n"
    )
    refused = netemu_cli("apply", "-f", str(bad), "--lab", lab.name)
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert (
        f"{bad}:6: Service/other: spec.ports[0].nodePort: 30080 is already used by "
        f"Service/web spec.ports[0].nodePort (lab {lab.name}:0)" in lines
    )
    assert (
        f'{bad}:10: ServiceAccount/a: metadata.namespace: namespaces "nowhere" not found: '
        "define the Namespace in the input, or pass --create-namespaces" in lines
    )
    services = json.loads(netemu_cli("get", "svc", "--lab", lab.name, "-o", "json").stdout)
    assert "other" not in [i["metadata"]["name"] for i in services["items"]]


def test_exec_and_trace_take_a_namespace_and_trace_a_port_name(lab: LiveLab) -> None:
    [pod_key] = [key for key in lab.info()["pods"] if key.startswith("default/web-")]
    pod = pod_key.split("/", 1)[1]
    done = netemu_cli("exec", "--lab", lab.name, "-n", "default", pod, "--", "hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == pod
    traced = netemu_cli(
        "trace", "--lab", lab.name, "-n", "default", pod, "web", "--port", "http", "--no-pcap"
    )
    assert traced.returncode == 0, traced.stderr
    # Sent from the pod to the Service's port named http (80), DNATed to the pod's 8080.
    first = traced.stdout.splitlines()[0]
    assert first.startswith(f"{pod} ") and ":80 ⇒ DNAT " in first and ":8080" in first
