"""The connectivity matrix without a lab: which pairs it picks from a lab's
state (the offline state and topology are what a live lab of the same
manifests has), that every pair names a flow the tracer understands, and
how the matrix prints."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netemu.controlplane.state import ClusterState
from netemu.net.plan import plan_lab
from netemu.pipeline import load_cluster
from netemu.testing.matrix import Category, Matrix, MatrixRow, Pair, plan_pairs
from netemu.trace.flow import resolve_flow
from netemu.trace.topology import Topology

CONTROLPLANE = Path(__file__).parents[2] / "controlplane"


def offline(path: Path) -> tuple[ClusterState, Topology]:
    state = load_cluster([path])
    return state, Topology.from_plan(plan_lab(state, "unit"), state, "nft")


def words(pairs: list[Pair]) -> list[tuple[Category, str, str, int | None]]:
    return [(p.category, p.frm, p.to, p.port) for p in pairs]


def test_default_lab_pairs() -> None:
    state, topology = offline(CONTROLPLANE / "default")
    pods = sorted(topology.pods.values(), key=lambda p: (p.node, p.key))
    on_1 = [p.key for p in pods if p.node == "node-1"]
    on_2 = [p.key for p in pods if p.node == "node-2"]
    assert len(on_1) == 2 and len(on_2) == 1
    source = f"pod/{on_1[0]}"
    assert words(plan_pairs(state, topology)) == [
        (Category.POD_TO_POD_SAME_NODE, source, f"pod/{on_1[1]}", 8080),
        (Category.POD_TO_POD_OTHER_NODE, source, f"pod/{on_2[0]}", 8080),
        # web's endpoints run on both nodes: kube-proxy picks any of them.
        (Category.POD_TO_SERVICE_ANY_NODE, source, "svc/default/web", 80),
        (Category.POD_TO_SERVICE_NO_ENDPOINTS, source, "svc/default/empty", 80),
        (Category.NODE_TO_SERVICE, "node/node-1", "svc/default/web", 80),
        (Category.NODE_TO_SERVICE, "node/node-2", "svc/default/web", 80),
        (Category.NODEPORT_CLUSTER, "client/client", "node-1:30080", None),
        (Category.NODEPORT_CLUSTER, "client/client", "node-2:30080", None),
        (Category.NODEPORT_LOCAL, "client/client", "node-1:30081", None),
        (Category.NODEPORT_LOCAL, "client/client", "node-2:30081", None),
    ]


def test_every_pair_is_a_flow_the_tracer_resolves() -> None:
    for lab in ("default", "loadbalancer", "internal-local"):
        state, topology = offline(CONTROLPLANE / lab)
        for pair in plan_pairs(state, topology):
            flow = resolve_flow(state, topology, pair.frm, pair.to, pair.port, "tcp")
            assert flow.proto == "tcp" and flow.dport > 0, (lab, pair)


PINNED = """
apiVersion: v1
kind: Pod
metadata: {name: a1, labels: {app: a}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: a2, labels: {app: a}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b1, labels: {app: b}}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-b}
spec:
  selector: {app: b}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-a}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: b-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: b}
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
"""


@pytest.fixture
def pinned(tmp_path: Path) -> tuple[ClusterState, Topology]:
    shutil.copy(CONTROLPLANE / "default" / "lab.yaml", tmp_path / "lab.yaml")
    (tmp_path / "pods.yaml").write_text(PINNED)
    return offline(tmp_path)


def test_services_by_where_their_endpoints_run(pinned: tuple[ClusterState, Topology]) -> None:
    pairs = plan_pairs(*pinned)
    assert words(pairs) == [
        (Category.POD_TO_POD_SAME_NODE, "pod/default/a1", "pod/default/a2", 8080),
        (Category.POD_TO_POD_OTHER_NODE, "pod/default/a1", "pod/default/b1", 8080),
        (Category.POD_TO_SERVICE_SAME_NODE, "pod/default/a1", "svc/default/svc-a", 80),
        (Category.POD_TO_SERVICE_OTHER_NODE, "pod/default/a1", "svc/default/svc-b", 80),
        # ClusterIP Services are preferred; the first by name has endpoints.
        (Category.NODE_TO_SERVICE, "node/node-1", "svc/default/svc-a", 80),
        (Category.NODE_TO_SERVICE, "node/node-2", "svc/default/svc-a", 80),
        (Category.NODEPORT_LOCAL, "client/client", "node-1:30090", None),
        (Category.NODEPORT_LOCAL, "client/client", "node-2:30090", None),
    ]
    assert pairs[2].destination == "svc default/svc-a:80 (endpoints: node-1 ×2)"
    assert pairs[-1].destination == "node-2:30090 (default/b-local; endpoints: node-2)"
    assert pairs[0].source == "pod default/a1 (node-1)"
    assert pairs[0].destination == "pod default/a2:8080 (node-1)"


def row(category: Category, outcome: str, detail: str = "") -> MatrixRow:
    return MatrixRow(category, "client client", "node-2:30081", outcome, 1.25, detail)


def test_the_matrix_prints_as_a_table_without_a_box() -> None:
    matrix = Matrix(
        "lab",
        (
            row(Category.NODEPORT_LOCAL, "answered", "web-1 on node-1 saw 192.168.56.20"),
            row(Category.NODEPORT_LOCAL, "timeout", "TimeoutError: timed out"),
        ),
    )
    lines = str(matrix).splitlines()
    assert lines[0].split() == ["CATEGORY", "FROM", "TO", "OUTCOME", "LATENCY", "DETAIL"]
    assert "external → NodePort (Local)   client client   node-2:30081   timeout" in lines[2]
    assert "1.2 ms" in lines[2] and lines[2].endswith("TimeoutError: timed out")
    assert all(line == line.rstrip() for line in lines)
    assert not set("│─┃━┏┌") & set(str(matrix))
    assert len(matrix) == 2
    assert [r.outcome for r in matrix.failures()] == ["timeout"]
    assert len(matrix.category("external → NodePort (Local)")) == 2
    assert matrix.category(Category.NODE_TO_SERVICE) == ()
