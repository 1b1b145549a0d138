"""Service networking of the default lab (controlplane/default), checked
with real packets: two nodes, an external client, a Deployment `web` (3
pods) behind a ClusterIP Service `web`, NodePorts 30080
(externalTrafficPolicy Cluster) and 30081 (Local), and a Service `empty`
without endpoints.

Run as root: `pytest examples -n 2` (see README.md).
"""

from __future__ import annotations

import pytest

from netemu.testing import Category, LabFactory, NetemuLab

pytestmark = pytest.mark.privileged

LAB = "controlplane/default"
CLIENT, CLIENT_IP = "client", "192.168.56.20"
NODES = ("node-1", "node-2")
CLUSTER_NODEPORT, LOCAL_NODEPORT = 30080, 30081


@pytest.mark.parametrize("node", NODES)
def test_nodeport_cluster_masquerades_the_client(lab: NetemuLab, node: str) -> None:
    answer = lab.http(CLIENT, f"{node}:{CLUSTER_NODEPORT}")
    assert answer.ok, answer
    # Cluster: any pod may answer, so the node SNATs the client to one of
    # its own addresses, making the reply come back through it.
    assert answer.masqueraded, answer
    assert answer.client_ip != CLIENT_IP


@pytest.mark.parametrize("node", NODES)
def test_nodeport_local_keeps_the_client_ip(lab: NetemuLab, node: str) -> None:
    answers = lab.http_many(CLIENT, f"{node}:{LOCAL_NODEPORT}", count=20)
    assert all(a.ok for a in answers), answers
    # Local: only pods on the node that was asked answer, and they see the
    # client's own address.
    assert {a.node for a in answers} == {node}
    assert {a.client_ip for a in answers} == {CLIENT_IP}


def test_cluster_ip_spreads_over_all_endpoints(lab: NetemuLab) -> None:
    source = lab.pods({"app": "web"})[0]
    endpoints = {e.ip for e in lab.endpoints("web")}
    assert len(endpoints) == 3
    # Each request is a new connection, balanced anew by kube-proxy's
    # random rules: 60 of them reach every endpoint.
    answered = {a.pod_ip for a in lab.http_many(source.key, "web")}
    assert answered == endpoints


def test_a_pod_runs_commands_in_its_own_namespace(lab: NetemuLab) -> None:
    pod = lab.pods({"app": "web"})[0]
    assert lab.exec(pod.key, "hostname").check().stdout.strip() == pod.name
    eth0 = lab.exec(pod.key, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).check()
    assert f"inet {pod.ip}/" in eth0.stdout


def test_a_trace_names_the_dnat_rule(lab: NetemuLab) -> None:
    report = lab.trace(CLIENT, f"node-1:{CLUSTER_NODEPORT}")
    assert report.outcome == "delivered", report.summary()
    assert report.verdict == "DNAT" and report.masquerade
    [dnat] = [rule for rule in report.rules if rule.target == "DNAT"]
    assert dnat.table == "nat" and dnat.chain.startswith("KUBE-SEP-")
    # The DNAT the packet went through on the wire is the one the rule names.
    [hop] = [hop for hop in report.hops if hop.action == "DNAT"]
    assert dnat.rule.endswith(f"--to-destination {hop.translated}")


def test_the_connectivity_matrix_fails_only_where_expected(lab: NetemuLab) -> None:
    matrix = lab.connectivity_matrix()
    print(matrix)  # the table, in the report of a failing test (or with -rA)
    assert len(matrix) == 10
    # kube-proxy rejects connections to a Service without endpoints at
    # once; everything else answers.
    failures = [(row.category, row.outcome) for row in matrix.failures()]
    assert failures == [(Category.POD_TO_SERVICE_NO_ENDPOINTS, "refused")], f"\n{matrix}"


def test_scaling_changes_the_endpoints(netemu_lab: LabFactory) -> None:
    # This test changes its lab, so it brings up one of its own.
    with netemu_lab(LAB) as lab:
        scaled = lab.scale("deployment/web", 5)
        assert len(scaled.pods) == 5
        assert {e.ip for e in lab.endpoints("web")} == {p.ip for p in scaled.pods}

        [pod] = lab.scale("deployment/web", 1).pods
        assert [e.ip for e in lab.endpoints("web")] == [pod.ip]
        answers = lab.http_many(CLIENT, f"{pod.node}:{CLUSTER_NODEPORT}", count=10)
        assert {a.pod for a in answers} == {pod.name}
        # Local on the node without the pod: kube-proxy drops, nobody answers.
        other = next(n for n in NODES if n != pod.node)
        assert lab.http(CLIENT, f"{other}:{LOCAL_NODEPORT}", timeout=0.5).outcome == "timeout"
