"""The iptables packet-flow table (test_rules_flows.py) in nftables mode:
each flow's Service compiled by the nftables compiler, its dump read back
by the nftables parser, the packet walked by the nftables simulator with the
node's iptables-nft tables (kubelet's) beside kube-proxy's table.

kube-proxy's two modes do the same for every flow but the few listed in
NFTABLES_DIFFERS, where the nftables proxier differs by design.
"""

from __future__ import annotations

import pytest
from test_rules_flows import FLOWS, Flow

from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.nftables import nftables_mode_iptables, render
from netemu.rules.nftmodel import parse_nft
from netemu.rules.nftsimulate import simulate_nft
from netemu.rules.simulate import Packet

# flow name → (verdict, endpoints, masquerade) in nftables mode, and why.
NFTABLES_DIFFERS: dict[str, tuple[str, list[str], bool]] = {
    # cluster-ips-check rejects traffic to a ClusterIP on a port no Service
    # serves (proxier.go's "Reject traffic to invalid ports of ClusterIPs";
    # TestClusterIPGeneral "svc1 does not accept svc2's ports"); iptables
    # mode lets it through unchanged.
    "wrong port is not a service": ("REJECT", [], False),
    "tcp rule does not catch udp": ("REJECT", [], False),
    # NodePorts are served on the nodeport-ips only (the node's primary IP by
    # default, --nodeport-addresses otherwise), never on 127.0.0.1 or other
    # local addresses: kube-proxy's nftables mode has no localhost NodePorts
    # (proxier.go, nodePortAddresses; KEP-3866).
    "nodeport on localhost": ("NONE", [], False),
    "nodeport on the pod bridge address": ("NONE", [], False),
    # iptables mode ACCEPTs health-check NodePort traffic in KUBE-NODEPORTS
    # (filter); nftables mode has no such rule, and the base chains'
    # policy accept lets it through (no rule decides).
    "health check node port is accepted": ("NONE", [], False),
}


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_flow_in_nftables_mode(flow: Flow) -> None:
    data = ProxyInput(
        flow.config,
        (flow.service,),
        {("default", "web", "http", flow.service.protocol): flow.endpoints},
    )
    table = parse_nft(render(data))
    result = simulate_nft(table, list(flow.config.local_ips), flow.packet, nftables_mode_iptables())
    expected = NFTABLES_DIFFERS.get(
        flow.name, (flow.verdict, flow.endpoints_expected, flow.masquerade)
    )
    assert (result.verdict, result.endpoints, result.masquerade) == expected
    if result.verdict == "DNAT":
        assert sum(p.probability for p in result.paths) == pytest.approx(1.0)


def test_every_listed_difference_is_a_flow() -> None:
    assert set(NFTABLES_DIFFERS) <= {f.name for f in FLOWS}


V6_CONFIG = ProxyConfig(
    "node-1",
    ip_family="IPv6",
    node_ips=("192.168.0.2", "2001:db8::1"),
    local_ips=("::1", "2001:db8::1", "2001:db8:1::2"),
    cluster_cidr="fd00:10::/64",
    service_cidrs=("10.96.0.0/12", "fd00:10:96::/112"),
)
V6_SERVICE = ServicePortInfo("default", "web", "http", "tcp", "fd00:10:96::50", 80, node_port=30080)
V6_ENDPOINTS = (
    EndpointInfo("fd00:10::5", 8080, True, True, False, "node-1"),
    EndpointInfo("fd00:10:0:2::7", 8080, True, True, False, "node-2"),
)
V6_ALL = ["[fd00:10::5]:8080", "[fd00:10:0:2::7]:8080"]


@pytest.mark.parametrize(
    ("packet", "verdict", "endpoints", "masquerade"),
    [
        (Packet("fd00:10::9", "fd00:10:96::50", 80), "DNAT", V6_ALL, False),
        (Packet("2001:db8:9::1", "fd00:10:96::50", 80), "DNAT", V6_ALL, True),
        (Packet("2001:db8:9::1", "2001:db8::1", 30080), "DNAT", V6_ALL, True),
        (Packet("2001:db8::1", "fd00:10:96::50", 80), "DNAT", V6_ALL, True),
        (Packet("fd00:10::9", "fd00:10:96::50", 443), "REJECT", [], False),
        (Packet("fd00:10::9", "fd00:10:96::99", 80), "DROP", [], False),
    ],
    ids=["pod", "outside the cluster", "nodeport", "the node", "wrong port", "unallocated"],
)
def test_ipv6_kube_proxy_table(
    packet: Packet, verdict: str, endpoints: list[str], masquerade: bool
) -> None:
    """An IPv6 kube-proxy's table (`ip6 kube-proxy`), compiled, read back
    and walked with an IPv6 packet."""
    data = ProxyInput(V6_CONFIG, (V6_SERVICE,), {("default", "web", "http", "tcp"): V6_ENDPOINTS})
    table = parse_nft(render(data))
    assert list(table.tables) == [("ip6", "kube-proxy")]
    ip6tables = nftables_mode_iptables(family="IPv6")
    result = simulate_nft(table, list(V6_CONFIG.local_ips), packet, ip6tables)
    assert (result.verdict, result.endpoints, result.masquerade) == (
        verdict,
        endpoints,
        masquerade,
    )
