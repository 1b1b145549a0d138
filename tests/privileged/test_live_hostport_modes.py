"""hostPort in both kube-proxy modes: the portmap CNI plugin's chains stay in
iptables whatever kube-proxy's mode, so in nftables mode a packet to a
node's hostPort crosses kube-proxy's `ip kube-proxy` table (which leaves it
alone) and iptables-nft's CNI-HOSTPORT-DNAT. The offline prediction at the
node (netemu.pipeline.simulate_on_node, as `trace --offline` runs it) and
the live answer agree in each mode: the node's own DaemonSet pod answers,
and sees the external client's own address (portmap DNATs without
masquerading traffic from outside the node).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import answer_of, lab_name, mode_copy, probe, running_lab

from netemu.lab import LiveLab
from netemu.pipeline import load_cluster, proxy_mode, simulate_on_node
from netemu.rules.simulate import Packet

HOST_PORT = 80
CONTAINER_PORT = 8080
REQUESTS = 5


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def hostport_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, LiveLab]]:
    mode = str(request.param)
    path = mode_copy("hostport", tmp_path_factory.mktemp(f"hostport-{mode}"), mode)
    with running_lab([path], lab_name(f"hp-{mode[:3]}")) as live:
        yield mode, path, live


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_a_client_reaches_each_nodes_host_port_as_predicted(
    hostport_lab: tuple[str, Path, LiveLab], node: str
) -> None:
    mode, path, lab = hostport_lab
    state = load_cluster([path])
    assert proxy_mode(state) == mode
    info = lab.info()
    node_ip = str(info["nodes"][node]["ip"])
    client = info["clients"]["client"]
    client_ip = str(client["ip"])

    predicted = simulate_on_node(state, node, Packet(client_ip, node_ip, HOST_PORT))
    pods_here = {
        p.status.pod_ip
        for p in state.pods
        if p.spec.node_name == node and (p.metadata.labels or {}).get("app") == "ingress"
    }
    assert len(pods_here) == 1, pods_here
    (pod_ip,) = pods_here
    assert predicted.endpoints == [f"{pod_ip}:{CONTAINER_PORT}"], predicted.to_dict()
    assert not predicted.masquerade

    for attempt in range(REQUESTS):
        answer = answer_of(
            probe(client["netns"], node_ip, HOST_PORT, "tcp"), f"{mode} {node} #{attempt}"
        )
        assert answer.pod_ip == pod_ip
        assert answer.client_ip == client_ip
