"""flanneld's --ip-masq rules (FLANNEL-POSTRTG, FLANNEL-FWD): their text and
position on a node, and what they do to packets in the offline simulator.

The node is node-1 (192.168.56.11, pod subnet 10.244.1.0/24) of a cluster
whose flannel Network is 10.244.0.0/16.
"""

from __future__ import annotations

import pytest

from netemu.rules.flannel import FlannelConfig, ensure_flannel_rules
from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.iptables import compile_node, compile_resync
from netemu.rules.model import RuleSet, parse_restore
from netemu.rules.simulate import Packet, simulate

NODE_IP = "192.168.56.11"
LOCAL_IPS = [NODE_IP, "10.244.1.1", "10.244.1.0"]
FLANNEL = FlannelConfig(network="10.244.0.0/16", subnet="10.244.1.0/24")
CONFIG = ProxyConfig(
    node_name="node-1",
    node_ips=(NODE_IP,),
    local_ips=tuple(LOCAL_IPS),
    cluster_cidr="10.244.0.0/16",
    node_pod_cidr="10.244.1.0/24",
)
# A NodePort Service, externalTrafficPolicy Local, one endpoint on each node.
LOCAL_NP = ServicePortInfo(
    "default",
    "web-local",
    "",
    "tcp",
    "10.96.0.60",
    80,
    node_port=30081,
    external_local=True,
    health_check_node_port=32000,
)
LOCAL_EPS = (
    EndpointInfo("10.244.1.5", 8080, True, True, False, "node-1"),
    EndpointInfo("10.244.2.7", 8080, True, True, False, "node-2"),
)
DATA = ProxyInput(CONFIG, (LOCAL_NP,), {("default", "web-local", "", "tcp"): LOCAL_EPS})

MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'


def _node() -> str:
    return compile_node(DATA, FLANNEL).render()


def test_flannel_chains_are_flannels_rules_in_flannels_order() -> None:
    rules = parse_restore(_node())
    nat, flt = rules.tables["nat"], rules.tables["filter"]
    assert [r.args for r in nat.chain_rules("FLANNEL-POSTRTG")] == [
        f"-m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
        f"-s 10.244.1.0/24 -d 10.244.0.0/16 {MASQ} -j RETURN",
        f"-s 10.244.0.0/16 -d 10.244.1.0/24 {MASQ} -j RETURN",
        f"! -s 10.244.0.0/16 -d 10.244.1.0/24 {MASQ} -j RETURN",
        f"-s 10.244.0.0/16 ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully",
        f"! -s 10.244.0.0/16 -d 10.244.0.0/16 {MASQ} -j MASQUERADE --random-fully",
    ]
    assert [r.args for r in flt.chain_rules("FLANNEL-FWD")] == [
        f"-s 10.244.0.0/16 {FWD} -j ACCEPT",
        f"-d 10.244.0.0/16 {FWD} -j ACCEPT",
    ]


def test_flannel_jumps_follow_the_prepended_kube_jumps() -> None:
    rules = parse_restore(_node())
    postrouting = [r.args for r in rules.tables["nat"].chain_rules("POSTROUTING")]
    assert postrouting[-1] == f"{MASQ} -j FLANNEL-POSTRTG"
    assert postrouting[0].endswith("-j KUBE-POSTROUTING")
    forward = [r.args for r in rules.tables["filter"].chain_rules("FORWARD")]
    assert forward[-1] == f"{FWD} -j FLANNEL-FWD"
    assert len(forward) > 1 and all("KUBE-" in a for a in forward[:-1])


def test_without_random_fully_flannel_masquerades_plainly() -> None:
    text = compile_node(DATA, FlannelConfig("10.244.0.0/16", "10.244.1.0/24", False)).render()
    assert 'flanneld masq" -j MASQUERADE\n' in text
    assert 'flanneld masq" -j MASQUERADE --random-fully' not in text


def test_no_flannel_config_no_flannel_rules() -> None:
    assert "FLANNEL" not in compile_node(DATA).render()


def test_kube_proxy_resync_leaves_flannels_chains_alone() -> None:
    # A resync is a --noflush restore: a chain it does not declare keeps its rules.
    resync = compile_resync(DATA, parse_restore(_node())).render()
    assert "FLANNEL" not in resync
    assert "\n-A POSTROUTING" not in resync and "\n-A FORWARD" not in resync


def _flannel_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "FLANNEL" in line or "flanneld" in line]


def test_flanneld_writes_back_its_rules_when_the_tables_were_flushed() -> None:
    rules = RuleSet()
    ensure_flannel_rules(rules, RuleSet(), FLANNEL)
    assert _flannel_lines(rules.render()) == _flannel_lines(_node())


def test_flanneld_leaves_intact_rules_alone_and_refills_an_emptied_chain() -> None:
    node = parse_restore(_node())
    intact = RuleSet()
    ensure_flannel_rules(intact, node, FLANNEL)
    assert intact.render().strip() == ""
    # FLANNEL-POSTRTG flushed behind flanneld's back: its rules come back,
    # its jump (still there) is not doubled, FLANNEL-FWD is not touched.
    emptied = parse_restore(_node())
    nat = emptied.tables["nat"]
    nat.rules = [r for r in nat.rules if r.chain != "FLANNEL-POSTRTG"]
    refill = RuleSet()
    ensure_flannel_rules(refill, emptied, FLANNEL)
    text = refill.render()
    assert "-A FLANNEL-POSTRTG" in text and "FLANNEL-FWD" not in text
    assert "-A POSTROUTING" not in text


@pytest.mark.parametrize(
    ("src", "dst", "dport", "verdict", "endpoints", "masquerade", "deciding"),
    [
        # A local pod to node-2's ETP Local NodePort: node-1 does not DNAT
        # (not its address) and masquerades to its own address, so node-2
        # sees a client outside the cluster and serves it locally.
        ("10.244.1.9", "192.168.56.12", 30081, "ACCEPT", [], True, "! -d 224.0.0.0/4"),
        # A local pod to an external client: masqueraded.
        ("10.244.1.9", "192.168.56.20", 8080, "ACCEPT", [], True, "! -d 224.0.0.0/4"),
        # A local pod to multicast: left alone.
        ("10.244.1.9", "239.1.1.1", 5000, "ACCEPT", [], False, None),
        # Pod to remote pod across the overlay: pod IPs kept.
        ("10.244.1.9", "10.244.2.7", 8080, "ACCEPT", [], False, "-s 10.244.1.0/24 -d 10.244"),
        # A remote node's masqueraded packet for this node's NodePort (src is
        # node-2's address): ETP Local serves the local endpoint and keeps the source.
        ("192.168.56.12", NODE_IP, 30081, "DNAT", ["10.244.1.5:8080"], False, "! -s 10.244"),
        # An external client to this node's ETP Local NodePort: client IP kept.
        ("192.168.56.20", NODE_IP, 30081, "DNAT", ["10.244.1.5:8080"], False, "! -s 10.244"),
    ],
)
def test_flows_through_flannels_rules(
    src: str,
    dst: str,
    dport: int,
    verdict: str,
    endpoints: list[str],
    masquerade: bool,
    deciding: str | None,
) -> None:
    result = simulate(compile_node(DATA, FLANNEL), LOCAL_IPS, Packet(src, dst, dport))
    assert result.verdict == verdict
    assert result.endpoints == endpoints
    assert result.masquerade == masquerade
    if deciding is not None:
        assert any("FLANNEL-POSTRTG" in r.rule and deciding in r.rule for r in result.rules), [
            r.rule for r in result.rules
        ]


def test_without_flannel_a_pod_reaches_a_remote_etp_local_nodeport_unmasqueraded() -> None:
    # The contrast that makes the rules necessary: the pod's own address goes
    # to node-2, whose KUBE-EXT chain sends cluster-CIDR sources to every endpoint.
    result = simulate(compile_node(DATA), LOCAL_IPS, Packet("10.244.1.9", "192.168.56.12", 30081))
    assert not result.masquerade
