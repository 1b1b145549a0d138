"""Packet-flow table for the iptables compiler, run through the offline simulator.

Each row states kube-proxy's documented behaviour for one flow: where the
packet comes from, where it goes, and which endpoints it may be DNATed to,
whether it is masqueraded, or whether it is rejected or dropped.
The node under test is node-1 (192.168.56.11, pod CIDR 10.244.1.0/24).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.iptables import compile_node
from netemu.rules.simulate import Packet, simulate

NODE_IP = "192.168.56.11"
LOCAL_IPS = (NODE_IP, "10.244.1.1", "10.244.1.0")
POD_LOCAL = "10.244.1.9"  # a pod on node-1 that is not an endpoint
POD_REMOTE = "10.244.2.99"  # a pod on node-2 that is not an endpoint
CLIENT = "192.168.56.20"  # outside the cluster
CONFIG = ProxyConfig(
    node_name="node-1",
    node_ips=(NODE_IP,),
    local_ips=LOCAL_IPS,
    cluster_cidr="10.244.0.0/16",
    node_pod_cidr="10.244.1.0/24",
)


def ep(ip: str, node: str = "node-2", port: int = 8080, **cond: bool) -> EndpointInfo:
    ready = cond.get("ready", True)
    return EndpointInfo(
        ip=ip,
        port=port,
        ready=ready,
        serving=cond.get("serving", ready),
        terminating=cond.get("terminating", False),
        node_name=node,
    )


WEB_EPS = (ep("10.244.1.5", "node-1"), ep("10.244.2.7", "node-2"), ep("10.244.2.8", "node-2"))
ALL_WEB = ["10.244.1.5:8080", "10.244.2.7:8080", "10.244.2.8:8080"]


@dataclass
class Flow:
    name: str
    service: ServicePortInfo
    endpoints: tuple[EndpointInfo, ...]
    packet: Packet
    verdict: str
    endpoints_expected: list[str] = field(default_factory=list)
    masquerade: bool = False
    config: ProxyConfig = CONFIG
    deciding_rule: str | None = None  # a substring of the rule that decides


def svc(**kw: object) -> ServicePortInfo:
    base = ServicePortInfo(
        namespace="default",
        name="web",
        port_name="http",
        protocol="tcp",
        cluster_ip="10.96.0.50",
        port=80,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


NODEPORT = svc(node_port=30080)
LOCAL_NODEPORT = svc(node_port=30081, external_local=True, health_check_node_port=32000)
REMOTE_ONLY = (ep("10.244.2.7", "node-2"), ep("10.244.2.8", "node-2"))

FLOWS = [
    Flow(
        "clusterip from a pod",
        svc(),
        WEB_EPS,
        Packet(POD_REMOTE, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
    ),
    Flow(
        "clusterip from outside the cluster CIDR is masqueraded",
        svc(),
        WEB_EPS,
        Packet(CLIENT, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
    ),
    Flow(
        "clusterip from the node itself is masqueraded",
        svc(),
        WEB_EPS,
        Packet(NODE_IP, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
    ),
    Flow(
        "one endpoint: no statistic match",
        svc(),
        (ep("10.244.2.7"),),
        Packet(POD_REMOTE, "10.96.0.50", 80),
        "DNAT",
        ["10.244.2.7:8080"],
    ),
    Flow(
        "targetPort differs from port",
        svc(port=443),
        (ep("10.244.2.7", port=8443),),
        Packet(POD_REMOTE, "10.96.0.50", 443),
        "DNAT",
        ["10.244.2.7:8443"],
    ),
    Flow(
        "wrong port is not a service", svc(), WEB_EPS, Packet(POD_REMOTE, "10.96.0.50", 81), "NONE"
    ),
    Flow(
        "udp on the same port",
        svc(protocol="udp"),
        (ep("10.244.2.9", port=53),),
        Packet(POD_REMOTE, "10.96.0.50", 80, proto="udp"),
        "DNAT",
        ["10.244.2.9:53"],
    ),
    Flow(
        "tcp rule does not catch udp",
        svc(),
        WEB_EPS,
        Packet(POD_REMOTE, "10.96.0.50", 80, proto="udp"),
        "NONE",
    ),
    Flow(
        "sctp on the same port",
        svc(protocol="sctp"),
        (ep("10.244.2.9", port=5353),),
        Packet(POD_REMOTE, "10.96.0.50", 80, proto="sctp"),
        "DNAT",
        ["10.244.2.9:5353"],
    ),
    Flow(
        "hairpin: a pod reaching itself through its service is masqueraded",
        svc(),
        (ep("10.244.1.5", "node-1"),),
        Packet("10.244.1.5", "10.96.0.50", 80),
        "DNAT",
        ["10.244.1.5:8080"],
        masquerade=True,
        deciding_rule="-s 10.244.1.5 -j KUBE-MARK-MASQ",
    ),
    Flow(
        "nodeport from an external client (Cluster) is masqueraded",
        NODEPORT,
        WEB_EPS,
        Packet(CLIENT, NODE_IP, 30080),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        deciding_rule="masquerade traffic for default/web:http external destinations",
    ),
    Flow(
        "nodeport from a pod (Cluster) is masqueraded",
        NODEPORT,
        WEB_EPS,
        Packet(POD_REMOTE, NODE_IP, 30080),
        "DNAT",
        ALL_WEB,
        masquerade=True,
    ),
    Flow(
        "nodeport on localhost",
        NODEPORT,
        WEB_EPS,
        Packet("127.0.0.1", "127.0.0.1", 30080),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        deciding_rule="-d 127.0.0.0/8 --dport 30080",
    ),
    Flow(
        "nodeport on localhost disabled",
        NODEPORT,
        WEB_EPS,
        Packet("127.0.0.1", "127.0.0.1", 30080),
        "NONE",
        config=replace(CONFIG, localhost_node_ports=False),
    ),
    Flow(
        "nodeport on the pod bridge address",
        NODEPORT,
        WEB_EPS,
        Packet(POD_LOCAL, "10.244.1.1", 30080),
        "DNAT",
        ALL_WEB,
        masquerade=True,
    ),
    Flow(
        "nodeport outside nodePortAddresses",
        NODEPORT,
        WEB_EPS,
        Packet(POD_LOCAL, "10.244.1.1", 30080),
        "NONE",
        config=replace(
            CONFIG, node_port_addresses=("192.168.56.0/24",), localhost_node_ports=False
        ),
    ),
    Flow(
        "nodeport inside nodePortAddresses",
        NODEPORT,
        WEB_EPS,
        Packet(CLIENT, NODE_IP, 30080),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        config=replace(
            CONFIG, node_port_addresses=("192.168.56.0/24",), localhost_node_ports=False
        ),
        deciding_rule=f"-d {NODE_IP} -j KUBE-NODEPORTS",
    ),
    Flow(
        "externalIP from a client",
        svc(external_ips=("192.168.56.110",)),
        WEB_EPS,
        Packet(CLIENT, "192.168.56.110", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        deciding_rule="default/web:http external IP",
    ),
    Flow(
        "loadbalancer IP without source ranges",
        svc(node_port=31080, load_balancer_vips=("192.168.56.100",)),
        WEB_EPS,
        Packet(CLIENT, "192.168.56.100", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        deciding_rule="default/web:http loadbalancer IP",
    ),
    Flow(
        "loadbalancer source range admits the client",
        svc(
            node_port=31081,
            load_balancer_vips=("192.168.56.101",),
            load_balancer_source_ranges=("192.168.56.16/28",),
        ),
        WEB_EPS,
        Packet(CLIENT, "192.168.56.101", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        deciding_rule="-s 192.168.56.16/28 -j KUBE-EXT-",
    ),
    Flow(
        "loadbalancer source range blocks others",
        svc(
            node_port=31081,
            load_balancer_vips=("192.168.56.101",),
            load_balancer_source_ranges=("192.168.56.16/28",),
        ),
        WEB_EPS,
        Packet("192.168.56.40", "192.168.56.101", 80),
        "DROP",
        deciding_rule="traffic not accepted by KUBE-FW-",
    ),
    Flow(
        "nodeport bypasses loadbalancer source ranges",
        svc(
            node_port=31081,
            load_balancer_vips=("192.168.56.101",),
            load_balancer_source_ranges=("192.168.56.16/28",),
        ),
        WEB_EPS,
        Packet("192.168.56.40", NODE_IP, 31081),
        "DNAT",
        ALL_WEB,
        masquerade=True,
    ),
    Flow(
        "externalTrafficPolicy Local keeps the client IP",
        LOCAL_NODEPORT,
        WEB_EPS,
        Packet(CLIENT, NODE_IP, 30081),
        "DNAT",
        ["10.244.1.5:8080"],
        masquerade=False,
        deciding_rule="-j KUBE-SVL-",
    ),
    Flow(
        "externalTrafficPolicy Local without local endpoints drops",
        LOCAL_NODEPORT,
        REMOTE_ONLY,
        Packet(CLIENT, NODE_IP, 30081),
        "DROP",
        deciding_rule="default/web:http has no local endpoints",
    ),
    Flow(
        "externalTrafficPolicy Local: pods short-circuit to all endpoints",
        LOCAL_NODEPORT,
        REMOTE_ONLY,
        Packet(POD_LOCAL, NODE_IP, 30081),
        "DNAT",
        ["10.244.2.7:8080", "10.244.2.8:8080"],
        deciding_rule="pod traffic for default/web:http external destinations",
    ),
    Flow(
        "externalTrafficPolicy Local: the node itself is masqueraded to all endpoints",
        LOCAL_NODEPORT,
        REMOTE_ONLY,
        Packet(NODE_IP, NODE_IP, 30081),
        "DNAT",
        ["10.244.2.7:8080", "10.244.2.8:8080"],
        masquerade=True,
        deciding_rule="route LOCAL traffic for default/web:http external destinations",
    ),
    Flow(
        "externalTrafficPolicy Local: clusterIP still uses every endpoint",
        LOCAL_NODEPORT,
        REMOTE_ONLY,
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "DNAT",
        ["10.244.2.7:8080", "10.244.2.8:8080"],
    ),
    Flow(
        "health check node port is accepted",
        LOCAL_NODEPORT,
        REMOTE_ONLY,
        Packet(CLIENT, NODE_IP, 32000),
        "ACCEPT",
        deciding_rule="default/web:http health check node port",
    ),
    Flow(
        "internalTrafficPolicy Local uses local endpoints only",
        svc(internal_local=True),
        WEB_EPS,
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "DNAT",
        ["10.244.1.5:8080"],
        deciding_rule="-j KUBE-SVL-",
    ),
    Flow(
        "internalTrafficPolicy Local without local endpoints drops",
        svc(internal_local=True),
        REMOTE_ONLY,
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "DROP",
        deciding_rule="default/web:http has no local endpoints",
    ),
    Flow(
        "no endpoints: clusterIP rejects",
        svc(),
        (),
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "REJECT",
        deciding_rule="default/web:http has no endpoints",
    ),
    Flow(
        "no endpoints: nodeport rejects",
        NODEPORT,
        (),
        Packet(CLIENT, NODE_IP, 30080),
        "REJECT",
        deciding_rule="-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080",
    ),
    Flow(
        "no endpoints: node's own clusterIP connection rejects",
        svc(),
        (),
        Packet(NODE_IP, "10.96.0.50", 80),
        "REJECT",
    ),
    Flow(
        "not-ready endpoints are not used",
        svc(),
        (ep("10.244.2.7"), ep("10.244.2.8", ready=False)),
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "DNAT",
        ["10.244.2.7:8080"],
    ),
    Flow(
        "terminating but serving endpoints are the fallback",
        svc(),
        (
            ep("10.244.2.7", ready=False, serving=True, terminating=True),
            ep("10.244.2.8", ready=False, serving=False, terminating=True),
        ),
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "DNAT",
        ["10.244.2.7:8080"],
    ),
    Flow(
        "terminating endpoints are not used while one is ready",
        svc(),
        (ep("10.244.2.7", ready=False, serving=True, terminating=True), ep("10.244.2.8")),
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "DNAT",
        ["10.244.2.8:8080"],
    ),
    Flow(
        "terminating and not serving: rejected",
        svc(),
        (ep("10.244.2.7", ready=False, serving=False, terminating=True),),
        Packet(POD_LOCAL, "10.96.0.50", 80),
        "REJECT",
    ),
    Flow(
        "masqueradeAll masquerades pods too",
        svc(),
        WEB_EPS,
        Packet(POD_REMOTE, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        config=replace(CONFIG, masquerade_all=True),
    ),
    Flow(
        "without a cluster CIDR outside traffic is not masqueraded",
        svc(),
        WEB_EPS,
        Packet(CLIENT, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
        masquerade=False,
        config=replace(CONFIG, cluster_cidr=None),
    ),
    Flow(
        "NodeCIDR local detection",
        svc(),
        WEB_EPS,
        Packet(POD_REMOTE, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
        masquerade=True,
        config=replace(CONFIG, detect_local_mode="NodeCIDR"),
    ),
    Flow(
        "session affinity: a new client may reach any endpoint",
        svc(affinity_timeout=600),
        WEB_EPS,
        Packet(POD_REMOTE, "10.96.0.50", 80),
        "DNAT",
        ALL_WEB,
    ),
]


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_flow(flow: Flow) -> None:
    data = ProxyInput(
        flow.config,
        (flow.service,),
        {("default", "web", "http", flow.service.protocol): flow.endpoints},
    )
    result = simulate(compile_node(data), list(flow.config.local_ips), flow.packet)
    assert result.verdict == flow.verdict
    assert result.endpoints == flow.endpoints_expected
    assert result.masquerade == flow.masquerade
    if flow.deciding_rule:
        assert any(flow.deciding_rule in r.rule for r in result.rules), [
            r.rule for r in result.rules
        ]


def test_load_balancing_is_uniform() -> None:
    data = ProxyInput(CONFIG, (svc(),), {("default", "web", "http", "tcp"): WEB_EPS})
    result = simulate(compile_node(data), list(LOCAL_IPS), Packet(POD_REMOTE, "10.96.0.50", 80))
    assert [round(p.probability, 6) for p in result.paths] == [0.333333] * 3


def test_affinity_assumption_is_reported() -> None:
    data = ProxyInput(
        CONFIG, (svc(affinity_timeout=600),), {("default", "web", "http", "tcp"): WEB_EPS}
    )
    result = simulate(compile_node(data), list(LOCAL_IPS), Packet(POD_REMOTE, "10.96.0.50", 80))
    assert any("recent --rcheck" in a for a in result.assumptions)
    assert any("NEW connection" in a for a in result.assumptions)


def test_hairpin_masquerades_only_the_path_back_to_the_sender() -> None:
    data = ProxyInput(CONFIG, (svc(),), {("default", "web", "http", "tcp"): WEB_EPS})
    result = simulate(compile_node(data), list(LOCAL_IPS), Packet("10.244.1.5", "10.96.0.50", 80))
    masq = {p.endpoint: p.masquerade for p in result.paths}
    assert masq == {"10.244.1.5:8080": True, "10.244.2.7:8080": False, "10.244.2.8:8080": False}
