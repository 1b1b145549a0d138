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

from netemu.rules.input import ProxyInput
from netemu.rules.nftables import nftables_mode_iptables, render
from netemu.rules.nftmodel import parse_nft
from netemu.rules.nftsimulate import simulate_nft

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
