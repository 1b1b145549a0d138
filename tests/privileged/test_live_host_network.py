"""hostNetwork pods in a live lab: they run in their node's own namespace,
carry the node's address as pod IP, serve on it, and back a Service like
any pod; deleting them leaves the node's namespace alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel import netns
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

MANIFEST = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      hostNetwork: true
      containers:
        - name: agent
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
          ports:
            - containerPort: 9200
---
apiVersion: v1
kind: Service
metadata:
  name: agent
spec:
  selector: {app: agent}
  ports:
    - port: 92
      targetPort: 9200
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    manifest = tmp_path_factory.mktemp("hostnet") / "agent.yaml"
    manifest.write_text(MANIFEST)
    with running_lab([CONTROLPLANE / "default"], lab_name("hostnet")) as live:
        live.apply([item.obj for item in load_and_validate([Path(manifest)])])
        yield live


def test_host_network_pods_use_their_nodes_namespace_and_address(lab: LiveLab) -> None:
    info = lab.info()
    agents = {k: v for k, v in info["pods"].items() if k.startswith("default/agent-")}
    assert {pod["node"] for pod in agents.values()} == {"node-1", "node-2"}
    for pod in agents.values():
        node = info["nodes"][pod["node"]]
        assert pod["hostNetwork"] and pod["netns"] == node["netns"] and pod["ip"] == node["ip"]
        # Served on the node's own address: the external client reaches it directly.
        reply = http_get(info["clients"]["client"]["netns"], node["ip"], 9200)
        assert reply.outcome == "answered" and reply.reply is not None
        assert reply.reply["node"] == pod["node"]
        assert reply.reply["clientIP"] == info["clients"]["client"]["ip"]


def test_a_service_over_host_network_pods_reaches_both_nodes(lab: LiveLab) -> None:
    info = lab.info()
    svc = next(s for s in lab.state()["services"] if s["metadata"]["name"] == "agent")
    web = next(v for k, v in info["pods"].items() if k.startswith("default/web-"))
    nodes = set()
    for _ in range(60):
        result = http_get(web["netns"], svc["spec"]["clusterIP"], 92)
        assert result.outcome == "answered" and result.reply is not None, result
        # kube-proxy does not masquerade pod to ClusterIP; flanneld's
        # FLANNEL-POSTRTG does, to the pod's node address, once the DNATed
        # packet leaves for another node's address (outside the pod CIDR).
        own_node = result.reply["node"] == web["node"]
        expected = web["ip"] if own_node else info["nodes"][web["node"]]["ip"]
        assert result.reply["clientIP"] == expected, result.reply
        nodes.add(result.reply["node"])
    assert nodes == {"node-1", "node-2"}


def test_deleting_host_network_pods_leaves_the_node_namespace(lab: LiveLab) -> None:
    lab.delete([("DaemonSet", "default", "agent")])
    info = lab.info()
    assert not [k for k in info["pods"] if k.startswith("default/agent-")]
    for node in info["nodes"].values():
        assert netns.exists(node["netns"])
        result = http_get(info["clients"]["client"]["netns"], node["ip"], 9200, timeout=1.0)
        assert result.outcome == "refused", result
