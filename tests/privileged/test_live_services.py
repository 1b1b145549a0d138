"""Services in live labs, as kube-proxy's rules make them behave (its
iptables mode, and its nftables mode: each lab is up once per mode):
ClusterIP load-balancing and hairpin masquerade from pods, ClusterIP from a
node, NodePorts with externalTrafficPolicy Cluster (client SNATed to a node
address) and Local (client address kept; a node without a local endpoint
drops), and a Service without endpoints (rejected at once).

controlplane/default and controlplane/loadbalancer are each up once per
mode for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_helpers import (
    CONTROLPLANE,
    SPREAD_REQUESTS,
    Answer,
    addresses,
    answer_of,
    answers,
    cluster_ip,
    endpoint_ips,
    lab_name,
    mode_copy,
    running_lab,
    service_port,
)

from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

CLIENT_IP = "192.168.56.20"
# The hairpin request lands on the sending pod with probability 1/3 per
# request: missing it 200 times in a row has probability below 1e-35.
HAIRPIN_TRIES = 200
# A refusal comes from the node's own REJECT rule: no round trip to wait for.
REFUSED_WITHIN = 0.5
DROP_TIMEOUT = 1.0


MODES = ["iptables", "nftables"]


def _lab_path(lab: str, mode: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if mode == "iptables":
        return CONTROLPLANE / lab
    return mode_copy(lab, tmp_path_factory.mktemp(f"svc-{lab}"), mode)


@pytest.fixture(scope="module", params=MODES)
def default_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    path = _lab_path("default", request.param, tmp_path_factory)
    with running_lab([path], lab_name(f"svc-default-{request.param[:3]}")) as lab:
        yield lab


@pytest.fixture(scope="module", params=MODES)
def lb_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    path = _lab_path("loadbalancer", request.param, tmp_path_factory)
    with running_lab([path], lab_name(f"svc-lb-{request.param[:3]}")) as lab:
        yield lab


@dataclass(frozen=True)
class PodRef:
    name: str
    ip: str
    node: str
    netns: str


def pods_of(lab: LiveLab, prefix: str) -> list[PodRef]:
    return sorted(
        (
            PodRef(key.split("/", 1)[1], p["ip"], p["node"], p["netns"])
            for key, p in lab.info()["pods"].items()
            if key.startswith(f"default/{prefix}")
        ),
        key=lambda p: p.name,
    )


def node_ns(lab: LiveLab, node: str) -> str:
    return str(lab.info()["nodes"][node]["netns"])


def client_ns(lab: LiveLab, client: str) -> str:
    return str(lab.info()["clients"][client]["netns"])


def node_ip(lab: LiveLab, node: str) -> str:
    return str(lab.info()["nodes"][node]["ip"])


def all_node_addresses(lab: LiveLab) -> set[str]:
    """Every address on any node of the lab (underlay, cni0, flannel.1)."""
    return set().union(*(addresses(n["netns"]) for n in lab.info()["nodes"].values()))


def web_endpoints(lab: LiveLab) -> set[str]:
    state = lab.state()
    ips = endpoint_ips(state, "web")
    assert ips == {p.ip for p in pods_of(lab, "web-")}, "web's endpoints are not its running pods"
    return ips


# -- ClusterIP from pods --------------------------------------------------------


def test_pod_to_cluster_ip_reaches_every_endpoint(default_lab: LiveLab) -> None:
    state = default_lab.state()
    vip, port = cluster_ip(state, "web"), int(service_port(state, "web", "tcp")["port"])
    expected = web_endpoints(default_lab)
    assert len(expected) == 3
    source = pods_of(default_lab, "web-")[0]
    got = answers(source.netns, vip, port, count=SPREAD_REQUESTS)
    assert {a.pod_ip for a in got} == expected, (
        f"{SPREAD_REQUESTS} requests to {vip}:{port} were answered by "
        f"{sorted({a.pod_ip for a in got})}, expected every endpoint {sorted(expected)}"
    )
    # Only the hairpin case is masqueraded: other endpoints see the pod itself.
    assert {a.client_ip for a in got if a.pod_ip != source.ip} == {source.ip}


def test_pod_reaching_itself_through_its_service_is_masqueraded(default_lab: LiveLab) -> None:
    state = default_lab.state()
    vip, port = cluster_ip(state, "web"), int(service_port(state, "web", "tcp")["port"])
    for source in pods_of(default_lab, "web-"):
        hairpin: Answer | None = None
        for _ in range(HAIRPIN_TRIES):
            answer = answer_of(http_get(source.netns, vip, port), f"{source.name} -> {vip}:{port}")
            if answer.pod == source.name:
                hairpin = answer
                break
        assert hairpin is not None, (
            f"{HAIRPIN_TRIES} requests from {source.name} to {vip}:{port} never landed on itself"
        )
        assert hairpin.local[0] == source.ip
        assert hairpin.client_ip != source.ip, (
            f"{source.name} reached itself through {vip} and saw its own address as client: "
            "the hairpin connection was not masqueraded"
        )
        # Masqueraded to its node's bridge address (cni0), so the reply
        # goes back through the node and is un-NATed there.
        own_node = addresses(node_ns(default_lab, source.node))
        assert hairpin.client_ip in own_node, (
            f"{source.name}'s hairpin connection came from {hairpin.client_ip}, "
            f"not an address of {source.node} ({sorted(own_node)})"
        )


# -- ClusterIP from a node, NodePorts from an external client -------------------


def test_node_to_cluster_ip_is_answered(default_lab: LiveLab) -> None:
    state = default_lab.state()
    vip, port = cluster_ip(state, "web"), int(service_port(state, "web", "tcp")["port"])
    endpoints = web_endpoints(default_lab)
    for node in ("node-1", "node-2"):
        got = answers(node_ns(default_lab, node), vip, port, count=10)
        assert {a.pod_ip for a in got} <= endpoints
        assert {a.local[0] for a in got} == {node_ip(default_lab, node)}


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_nodeport_cluster_policy_snats_the_client(default_lab: LiveLab, node: str) -> None:
    port = int(service_port(default_lab.state(), "web-nodeport", "tcp")["nodePort"])
    assert port == 30080
    got = answers(client_ns(default_lab, "client"), node_ip(default_lab, node), port, count=20)
    assert {a.local[0] for a in got} == {CLIENT_IP}
    assert {a.pod_ip for a in got} <= web_endpoints(default_lab)
    seen = {a.client_ip for a in got}
    assert CLIENT_IP not in seen, f"ETP Cluster: backends saw the client's own address ({seen})"
    assert seen <= all_node_addresses(default_lab), (
        f"ETP Cluster: backends saw {seen}, not node addresses"
    )


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_nodeport_local_policy_keeps_the_client_address(default_lab: LiveLab, node: str) -> None:
    port = int(service_port(default_lab.state(), "web-local", "tcp")["nodePort"])
    assert port == 30081
    got = answers(client_ns(default_lab, "client"), node_ip(default_lab, node), port, count=20)
    assert {a.client_ip for a in got} == {CLIENT_IP}
    local_pods = {p.ip for p in pods_of(default_lab, "web-") if p.node == node}
    # Local: only this node's own endpoints answer (never a hop to the other node).
    assert {a.pod_ip for a in got} <= local_pods


def test_nodeport_local_policy_without_local_endpoint_drops(lb_lab: LiveLab) -> None:
    port = int(service_port(lb_lab.state(), "shop-local", "tcp")["nodePort"])
    assert port == 31082
    assert {p.node for p in pods_of(lb_lab, "shop-")} == {"node-1"}
    result = http_get(
        client_ns(lb_lab, "allowed"), node_ip(lb_lab, "node-2"), port, timeout=DROP_TIMEOUT
    )
    assert result.outcome == "timeout", (
        f"node-2:{port} has no local shop endpoint and must drop; got {result.outcome} "
        f"{result.reply or result.detail}"
    )


def test_nodeport_local_policy_with_local_endpoint_answers(lb_lab: LiveLab) -> None:
    port = int(service_port(lb_lab.state(), "shop-local", "tcp")["nodePort"])
    client = client_ns(lb_lab, "allowed")
    got = answers(client, node_ip(lb_lab, "node-1"), port, count=10, timeout=DROP_TIMEOUT)
    assert {a.client_ip for a in got} == {CLIENT_IP}
    assert {a.pod_ip for a in got} <= {p.ip for p in pods_of(lb_lab, "shop-")}


# -- a Service without endpoints ------------------------------------------------


@pytest.mark.parametrize("source", ["pod", "node"])
def test_service_without_endpoints_is_refused(default_lab: LiveLab, source: str) -> None:
    state = default_lab.state()
    assert endpoint_ips(state, "empty") == set()
    vip, port = cluster_ip(state, "empty"), int(service_port(state, "empty", "tcp")["port"])
    if source == "pod":
        ns = pods_of(default_lab, "web-")[0].netns
    else:
        ns = node_ns(default_lab, "node-2")
    for _ in range(3):
        result = http_get(ns, vip, port, timeout=2.0)
        assert result.outcome == "refused", f"{vip}:{port}: {result.outcome} {result.detail}"
        assert result.elapsed < REFUSED_WITHIN, f"refused only after {result.elapsed:.3f} s"
