"""hostPort in both kube-proxy modes: the portmap CNI plugin's chains stay in
iptables whatever kube-proxy's mode, so in nftables mode a packet to a
node's hostPort crosses kube-proxy's `ip kube-proxy` table (which leaves it
alone) and iptables-nft's CNI-HOSTPORT-DNAT. The offline prediction at the
node (netemu.pipeline.simulate_on_node, as `trace --offline` runs it) and
the live answer agree in each mode: the node's own DaemonSet pod answers,
and sees the external client's own address (portmap DNATs without
masquerading traffic from outside the node).

On a dual-stack lab (controlplane/dualstack with controlplane/hostport's
pods) portmap writes the same chains with ip6tables for each pod's IPv6
address: the client reaches each node's hostPort on the node's IPv6 address
too, as predicted; the node's ip6tables hold the chains the offline view
compiles; and the UDP hostPort bound to node-1's IPv4 address (hostIP) is
not mapped on its IPv6 one. On an IPv6-only lab (controlplane/ipv6only) the
chains are ip6tables' alone.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, answer_of, lab_name, mode_copy, probe, running_lab

from netemu.kernel import netns
from netemu.kernel.iptables import KernelIptables
from netemu.lab import LiveLab
from netemu.pipeline import compile_rules, load_cluster, proxy_mode, simulate_on_node
from netemu.rules.model import RuleSet, parse_restore
from netemu.rules.simulate import Packet

HOST_PORT = 80
CONTAINER_PORT = 8080
REQUESTS = 5
UDP_HOST_PORT = 5353  # echo-udp's, bound to node-1's IPv4 address


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


# -- dual-stack: portmap's ip6tables chains ------------------------------------


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def dualstack_hostport_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, LiveLab]]:
    mode = str(request.param)
    base = tmp_path_factory.mktemp(f"hostport-dualstack-{mode}")
    source = base / "hostport-dualstack"
    source.mkdir()
    shutil.copy(CONTROLPLANE / "dualstack" / "lab.yaml", source / "lab.yaml")
    shutil.copy(CONTROLPLANE / "hostport" / "ingress.yaml", source / "ingress.yaml")
    path = mode_copy(source, base, mode)
    with running_lab([path], lab_name(f"hp6-{mode[:3]}")) as live:
        yield mode, path, live


def _ingress_pod(path: Path, node: str) -> tuple[str, str]:
    """(name, IPv6 address) of the ingress DaemonSet's pod on `node`."""
    state = load_cluster([path])
    found = [
        (p.metadata.name or "", next(a.ip for a in p.status.pod_ips if ":" in a.ip))
        for p in state.pods
        if p.spec.node_name == node and (p.metadata.labels or {}).get("app") == "ingress"
    ]
    assert len(found) == 1, found
    return found[0]


def _ipv6_of(site: dict[str, Any]) -> str:
    """A lab.json node's or client's IPv6 address (its "ips", primary first)."""
    return next(str(ip) for ip in site["ips"] if ":" in str(ip))


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_a_client_reaches_each_nodes_host_port_over_ipv6_as_predicted(
    dualstack_hostport_lab: tuple[str, Path, LiveLab], node: str
) -> None:
    mode, path, lab = dualstack_hostport_lab
    state = load_cluster([path])
    assert proxy_mode(state) == mode
    info = lab.info()
    node_ip6 = _ipv6_of(info["nodes"][node])
    client = info["clients"]["client"]
    client_ip6 = _ipv6_of(client)
    assert node_ip6 and client_ip6
    pod_name, pod_ip6 = _ingress_pod(path, node)

    predicted = simulate_on_node(state, node, Packet(client_ip6, node_ip6, HOST_PORT))
    assert predicted.endpoints == [f"[{pod_ip6}]:{CONTAINER_PORT}"], predicted.to_dict()
    assert not predicted.masquerade

    for attempt in range(REQUESTS):
        answer = answer_of(
            probe(client["netns"], node_ip6, HOST_PORT, "tcp"), f"{mode} {node} #{attempt}"
        )
        assert answer.pod == pod_name
        # Not masqueraded: the pod sees the client's own IPv6 address.
        assert answer.client_ip == client_ip6


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_the_nodes_ip6tables_hold_the_portmap_chains_compiled_offline(
    dualstack_hostport_lab: tuple[str, Path, LiveLab], node: str
) -> None:
    _, path, lab = dualstack_hostport_lab
    netns_name, backend = lab.node_netns(node)
    live = parse_restore(KernelIptables(netns_name, backend, family="IPv6").save())
    offline = compile_rules(load_cluster([path]), node, family="IPv6")

    compiled = _portmap_rules(offline)
    dnat = [r for chain, rules in compiled.items() if chain.startswith("CNI-DN-") for r in rules]
    assert any("--to-destination [" in r for r in dnat), compiled
    assert _portmap_rules(live) == compiled


def _portmap_rules(rules: RuleSet) -> dict[str, list[str]]:
    """The nat table's portmap rules by chain, in their order: its chains'
    and the jumps to them (iptables-save lists chains in its own order)."""
    found: dict[str, list[str]] = {}
    for rule in rules.tables["nat"].rules:
        if rule.chain.startswith("CNI-") or "-j CNI-" in rule.args:
            found.setdefault(rule.chain, []).append(rule.args)
    return found


def test_an_ipv4_host_ip_is_not_mapped_on_the_nodes_ipv6_address(
    dualstack_hostport_lab: tuple[str, Path, LiveLab],
) -> None:
    _, path, lab = dualstack_hostport_lab
    state = load_cluster([path])
    info = lab.info()
    node, client = info["nodes"]["node-1"], info["clients"]["client"]
    over_v4 = Packet(str(client["ip"]), str(node["ip"]), UDP_HOST_PORT, "udp")
    over_v6 = Packet(_ipv6_of(client), _ipv6_of(node), UDP_HOST_PORT, "udp")
    assert simulate_on_node(state, "node-1", over_v4).endpoints != []
    assert simulate_on_node(state, "node-1", over_v6).endpoints == []

    answer = answer_of(probe(client["netns"], str(node["ip"]), UDP_HOST_PORT, "udp"), "IPv4")
    assert answer.pod == "echo-udp"
    refused = probe(client["netns"], _ipv6_of(node), UDP_HOST_PORT, "udp", timeout=1.0)
    assert refused.outcome != "answered", refused


def test_an_ipv6_only_node_maps_its_host_ports_with_ip6tables_alone(
    tmp_path: Path,
) -> None:
    source = tmp_path / "hostport-ipv6only"
    source.mkdir()
    shutil.copy(CONTROLPLANE / "ipv6only" / "lab.yaml", source / "lab.yaml")
    shutil.copy(CONTROLPLANE / "hostport" / "ingress.yaml", source / "ingress.yaml")
    with running_lab([source], lab_name("hp6-only")) as lab:
        info = lab.info()
        node_ip, client = str(info["nodes"]["node-1"]["ip"]), info["clients"]["client"]
        pod_name, pod_ip = _ingress_pod(source, "node-1")
        assert ":" in node_ip
        predicted = simulate_on_node(
            load_cluster([source]), "node-1", Packet(str(client["ip"]), node_ip, HOST_PORT)
        )
        assert predicted.endpoints == [f"[{pod_ip}]:{CONTAINER_PORT}"], predicted.to_dict()
        answer = answer_of(probe(client["netns"], node_ip, HOST_PORT, "tcp"), "IPv6-only")
        assert (answer.pod, answer.client_ip) == (pod_name, client["ip"])

        netns_name, backend = lab.node_netns("node-1")
        assert "CNI-" not in KernelIptables(netns_name, backend).save()
        ip6 = parse_restore(KernelIptables(netns_name, backend, family="IPv6").save())
        assert _portmap_rules(ip6)
        # No IPv4 address, no IPv4 ADD: route_localnet is left as it was.
        key = "net.ipv4.conf.cni0.route_localnet"
        assert netns.read_sysctls(netns_name, [key]) == {key: "0"}
