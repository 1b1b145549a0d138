"""kube-proxy's own nftables packet-flow cases, through netemu's simulator.

Each table below is a `runPacketFlowTests` call of kubernetes/kubernetes
pkg/proxy/nftables/proxier_test.go (commit 030880a5dc54, ~v1.33),
transcribed: the case names, packets and expected outputs are the test's.
The rules they run through are in tests/unit/data/nftables/ (each file says
where it comes from). kube-proxy's tracer (helpers_test.go) prints the
endpoints a packet may reach ("10.180.0.1:80, 10.180.2.1:80"), "DROP",
"REJECT", or "" when no rule decides; masq says whether the packet is
masqueraded. The simulator must give the same for every case, walking the
hooks as the kernel does (kube-proxy's tracer walks only prerouting and
forward, so local-origin cases here also check the output path).

TestOverallNFTablesRules compares a dump only; the cases for its dump at
the end state what kube-proxy's rules for those Services do (each names the
rule that decides), and run through both the dump and the same rules as
`nft list ruleset` printed them after loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from netemu.rules.nftmodel import NftRuleset, parse_nft
from netemu.rules.nftsimulate import simulate_nft
from netemu.rules.simulate import Packet

DATA = Path(__file__).parent / "data" / "nftables"

# NewFakeProxier's node addresses (testNodeIPs in proxier_test.go).
TEST_NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"]
TEST_NODE_IP = "192.168.0.2"
TEST_NODE_IP_ALT = "192.168.1.2"
TEST_EXTERNAL_CLIENT = "203.0.113.2"
TEST_EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"


@dataclass(frozen=True)
class FlowCase:
    name: str
    source: str
    dest: str
    port: int
    output: str
    masq: bool = False
    protocol: str = "tcp"


def load(*names: str) -> NftRuleset:
    return parse_nft("\n".join((DATA / name).read_text() for name in names))


def run(ruleset: NftRuleset, case: FlowCase) -> tuple[str, bool]:
    """The simulation in the shape of kube-proxy's tracePacket output."""
    result = simulate_nft(
        ruleset, TEST_NODE_IPS, Packet(case.source, case.dest, case.port, case.protocol)
    )
    if result.verdict in ("DROP", "REJECT"):
        assert all(p.verdict == result.verdict for p in result.paths), result.to_dict()
        return result.verdict, False
    endpoints = sorted(result.endpoints)
    if result.verdict == "DNAT":
        assert all(p.verdict == "DNAT" for p in result.paths), result.to_dict()
        assert sum(p.probability for p in result.paths) == pytest.approx(1.0)
    return ", ".join(endpoints), result.masquerade


def check(ruleset: NftRuleset, case: FlowCase) -> None:
    output, masq = run(ruleset, case)
    expected = ", ".join(sorted(case.output.split(", "))) if case.output else ""
    assert (output, masq) == (expected, case.masq), case.name


# TestNoEndpointsReject
SVC_IP, SVC_PORT, SVC_NODE_PORT, SVC_EXTERNAL_IP, SVC_LB_IP = (
    "172.30.0.41",
    80,
    3001,
    "192.168.99.11",
    "1.2.3.4",
)
NO_ENDPOINTS_REJECT = [
    FlowCase("pod to cluster IP with no endpoints", "10.0.0.2", SVC_IP, SVC_PORT, "REJECT"),
    FlowCase(
        "external to external IP with no endpoints",
        TEST_EXTERNAL_CLIENT,
        SVC_EXTERNAL_IP,
        SVC_PORT,
        "REJECT",
    ),
    FlowCase(
        "pod to NodePort with no endpoints", "10.0.0.2", TEST_NODE_IP, SVC_NODE_PORT, "REJECT"
    ),
    FlowCase(
        "external to NodePort with no endpoints",
        TEST_EXTERNAL_CLIENT,
        TEST_NODE_IP,
        SVC_NODE_PORT,
        "REJECT",
    ),
    FlowCase("pod to LoadBalancer IP with no endpoints", "10.0.0.2", SVC_LB_IP, SVC_PORT, "REJECT"),
    FlowCase(
        "external to LoadBalancer IP with no endpoints",
        TEST_EXTERNAL_CLIENT,
        SVC_LB_IP,
        SVC_PORT,
        "REJECT",
    ),
]

# TestClusterIPGeneral
CLUSTER_IP_GENERAL = [
    FlowCase("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
    FlowCase("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
    FlowCase(
        "clusterIP with multiple endpoints",
        "10.180.0.2",
        "172.30.0.42",
        80,
        "10.180.0.1:80, 10.180.2.1:80",
    ),
    FlowCase(
        "clusterIP with TargetPort",
        "10.180.0.2",
        "172.30.0.42",
        443,
        "10.180.0.1:8443, 10.180.2.1:8443",
    ),
    FlowCase(
        "clusterIP with TCP, UDP, and SCTP on same port (TCP)",
        "10.180.0.2",
        "172.30.0.42",
        53,
        "10.180.0.1:5353, 10.180.2.1:5353",
    ),
    FlowCase(
        # The test names this case "(TCP)" too; it sends UDP.
        "clusterIP with TCP, UDP, and SCTP on same port (UDP)",
        "10.180.0.2",
        "172.30.0.42",
        53,
        "10.180.0.1:53, 10.180.2.1:53",
        protocol="udp",
    ),
    FlowCase(
        "clusterIP with TCP, UDP, and SCTP on same port (SCTP)",
        "10.180.0.2",
        "172.30.0.42",
        53,
        "10.180.0.1:53, 10.180.2.1:53",
        protocol="sctp",
    ),
    FlowCase(
        "TCP-only port does not match UDP traffic",
        "10.180.0.2",
        "172.30.0.42",
        80,
        "REJECT",
        protocol="udp",
    ),
    FlowCase("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "REJECT"),
    FlowCase("packet to unallocated cluster ip", "10.180.0.2", "172.30.0.50", 80, "DROP"),
]

# TestLoadBalancer
EP = "10.180.0.1:80"
LB1, LB2 = "1.2.3.4", "5.6.7.8"
LOAD_BALANCER = [
    FlowCase("pod to cluster IP", "10.0.0.2", SVC_IP, SVC_PORT, EP),
    FlowCase("external to nodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, SVC_NODE_PORT, EP, True),
    FlowCase(
        "nodePort bypasses LoadBalancerSourceRanges",
        TEST_EXTERNAL_CLIENT_BLOCKED,
        TEST_NODE_IP,
        SVC_NODE_PORT,
        EP,
        True,
    ),
    FlowCase("accepted external to LB1", TEST_EXTERNAL_CLIENT, LB1, SVC_PORT, EP, True),
    FlowCase("accepted external to LB2", TEST_EXTERNAL_CLIENT, LB2, SVC_PORT, EP, True),
    FlowCase("blocked external to LB1", TEST_EXTERNAL_CLIENT_BLOCKED, LB1, SVC_PORT, "DROP"),
    FlowCase("blocked external to LB2", TEST_EXTERNAL_CLIENT_BLOCKED, LB2, SVC_PORT, "DROP"),
    FlowCase("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", LB1, 80, "DROP"),
    FlowCase("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", LB2, 80, "DROP"),
    FlowCase("node to LB1 (allowed by LoadBalancerSourceRanges)", TEST_NODE_IP, LB1, 80, EP, True),
    FlowCase("node to LB2 (allowed by LoadBalancerSourceRanges)", TEST_NODE_IP, LB2, 80, EP, True),
    FlowCase("same node to LB1, SNATted to LB1 (implicitly allowed)", LB1, LB1, 80, EP, True),
    FlowCase("same node to LB2, SNATted to LB2 (implicitly allowed)", LB2, LB2, 80, EP, True),
]

# TestExternalTrafficPolicyLocal
BOTH = "10.180.0.1:80, 10.180.2.1:80"
LOCAL_ONLY = "10.180.2.1:80"
ETP_LOCAL = [
    FlowCase("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", SVC_IP, 80, BOTH),
    FlowCase(
        "pod to external IP hits both endpoints, unmasqueraded",
        "10.0.0.2",
        SVC_EXTERNAL_IP,
        80,
        BOTH,
    ),
    FlowCase(
        "external to external IP hits only local endpoint, unmasqueraded",
        TEST_EXTERNAL_CLIENT,
        SVC_EXTERNAL_IP,
        80,
        LOCAL_ONLY,
    ),
    FlowCase("pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", LB1, 80, BOTH),
    FlowCase(
        "external to LB IP hits only local endpoint, unmasqueraded",
        TEST_EXTERNAL_CLIENT,
        LB1,
        80,
        LOCAL_ONLY,
    ),
    FlowCase(
        "pod to NodePort hits both endpoints, unmasqueraded",
        "10.0.0.2",
        TEST_NODE_IP,
        SVC_NODE_PORT,
        BOTH,
    ),
    FlowCase(
        "external to NodePort hits only local endpoint, unmasqueraded",
        TEST_EXTERNAL_CLIENT,
        TEST_NODE_IP,
        SVC_NODE_PORT,
        LOCAL_ONLY,
    ),
]

# TestNodePorts, its "ipv6" case (default --nodeport-addresses).
V6_BOTH = "[fd00:10:180::1]:80, [fd00:10:180::2:1]:80"
NODE_PORTS_IPV6 = [
    FlowCase("pod to cluster IP", "fd00:10::2", "fd00:172:30::41", 80, V6_BOTH),
    FlowCase("external to nodePort", "2600:5200::1", "2001:db8::1", 3001, V6_BOTH, True),
    FlowCase("node to nodePort", "2001:db8::1", "2001:db8::1", 3001, V6_BOTH, True),
    FlowCase("secondary nodeIP ignores NodePorts", "2600:5200::1", "2001:db8:1::2", 3001, ""),
]

TABLES = [
    ("no-endpoints-reject.nft", "kube-proxy-base-ipv4.nft", NO_ENDPOINTS_REJECT),
    ("cluster-ip-general.nft", "kube-proxy-base-ipv4.nft", CLUSTER_IP_GENERAL),
    ("load-balancer.nft", "kube-proxy-base-ipv4.nft", LOAD_BALANCER),
    ("external-traffic-policy-local.nft", "kube-proxy-base-ipv4.nft", ETP_LOCAL),
    ("node-ports-ipv6.nft", "kube-proxy-base-ipv6.nft", NODE_PORTS_IPV6),
]
CASES = [
    pytest.param(rules, base, case, id=f"{rules.removesuffix('.nft')}: {case.name}")
    for rules, base, cases in TABLES
    for case in cases
]


@pytest.mark.parametrize(("rules", "base", "case"), CASES)
def test_kube_proxy_packet_flow(rules: str, base: str, case: FlowCase) -> None:
    check(load(base, rules), case)


# The Services of TestOverallNFTablesRules (ns1/svc1 ClusterIP; ns2/svc2 an
# externalTrafficPolicy Local LoadBalancer whose only endpoint is on another
# node; ns3/svc3 NodePort; ns4/svc4 externalIP with two endpoints; ns5/svc5 a
# LoadBalancer with source ranges and ClientIP affinity; ns6/svc6 no endpoints).
OVERALL = [
    FlowCase("svc1 from a pod", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
    FlowCase("svc1 hairpin", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
    FlowCase("svc1 from outside the cluster", TEST_EXTERNAL_CLIENT, "172.30.0.41", 80, EP, True),
    FlowCase("svc1 from the node", TEST_NODE_IP, "172.30.0.41", 80, "10.180.0.1:80", True),
    # ETP Local with no local endpoint: external traffic is dropped
    # (no-endpoint-services / no-endpoint-nodeports: drop), pod and node
    # traffic short-circuits to the cluster-wide endpoints.
    FlowCase("svc2 LB IP from outside", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, "DROP"),
    FlowCase("svc2 externalIP from outside", TEST_EXTERNAL_CLIENT, "192.168.99.22", 80, "DROP"),
    FlowCase("svc2 NodePort from outside", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, "DROP"),
    FlowCase("svc2 LB IP from a pod", "10.0.0.2", "1.2.3.4", 80, "10.180.0.2:80"),
    FlowCase("svc2 LB IP from the node", TEST_NODE_IP, "1.2.3.4", 80, "10.180.0.2:80", True),
    FlowCase("svc2 cluster IP from a pod", "10.0.0.2", "172.30.0.42", 80, "10.180.0.2:80"),
    FlowCase(
        "svc3 NodePort from outside",
        TEST_EXTERNAL_CLIENT,
        TEST_NODE_IP,
        3003,
        "10.180.0.3:80",
        True,
    ),
    FlowCase(
        "svc3 NodePort on a non-NodePort address", TEST_EXTERNAL_CLIENT, TEST_NODE_IP_ALT, 3003, ""
    ),
    FlowCase(
        "svc4 externalIP",
        TEST_EXTERNAL_CLIENT,
        "192.168.99.33",
        80,
        "10.180.0.4:80, 10.180.0.5:80",
        True,
    ),
    FlowCase(
        "svc5 LB IP from an allowed source",
        TEST_EXTERNAL_CLIENT,
        "5.6.7.8",
        80,
        "10.180.0.3:80",
        True,
    ),
    FlowCase(
        "svc5 LB IP from a blocked source", TEST_EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP"
    ),
    FlowCase(
        "svc5 NodePort ignores source ranges",
        TEST_EXTERNAL_CLIENT_BLOCKED,
        TEST_NODE_IP,
        3002,
        "10.180.0.3:80",
        True,
    ),
    FlowCase("svc6 without endpoints", "10.0.0.2", "172.30.0.46", 80, "REJECT"),
    FlowCase("a port svc1 does not serve", "10.0.0.2", "172.30.0.41", 443, "REJECT"),
    FlowCase("an unallocated cluster IP", "10.0.0.2", "172.30.0.99", 80, "DROP"),
    FlowCase("UDP to a TCP service port", "10.0.0.2", "172.30.0.41", 80, "REJECT", protocol="udp"),
]


@pytest.mark.parametrize("form", ["kube-proxy-overall.nft", "kube-proxy-overall.listed"])
@pytest.mark.parametrize("case", OVERALL, ids=[c.name for c in OVERALL])
def test_overall_rules(form: str, case: FlowCase) -> None:
    check(load(form), case)


def test_matched_rules_name_the_nftables_table_chain_and_rule_text() -> None:
    result = simulate_nft(
        load("kube-proxy-overall.nft"), TEST_NODE_IPS, Packet("10.0.0.2", "172.30.0.44", 80)
    )
    assert [round(p.probability, 6) for p in result.paths] == [0.5, 0.5]
    rules = [(r.table, r.chain, r.rule) for r in result.paths[0].rules]
    assert rules[:3] == [
        ("ip kube-proxy", "filter-prerouting-pre-dnat", "ct state new jump firewall-check"),
        ("ip kube-proxy", "nat-prerouting", "jump services"),
        ("ip kube-proxy", "services", "ip daddr . meta l4proto . th dport vmap @service-ips"),
    ]
    # A verdict map without the packet's key did not match: not listed.
    assert not any(chain == "firewall-check" for _, chain, _ in rules)
    assert (
        "ip kube-proxy",
        "endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80",
        "meta l4proto tcp dnat to 10.180.0.4:80",
    ) in rules
    # The pod's packet is not marked: the masquerade rule did not match.
    assert not any("ip saddr != 10.0.0.0/8" in rule for _, _, rule in rules)
    as_json = result.to_dict()
    assert as_json["endpoints"] == ["10.180.0.4:80", "10.180.0.5:80"]
    assert as_json["verdict"] == "DNAT"


def test_affinity_lookup_is_assumed_empty() -> None:
    result = simulate_nft(
        load("kube-proxy-overall.nft"), TEST_NODE_IPS, Packet("10.0.0.2", "172.30.0.45", 80)
    )
    assert result.endpoints == ["10.180.0.3:80"]
    assert any("affinity" in a for a in result.assumptions)
    texts = [r.rule for r in result.rules]
    assert any(t.startswith("update @affinity-GTK6MW7G") for t in texts)
    assert not any(t.startswith("ip saddr @affinity-") for t in texts)
