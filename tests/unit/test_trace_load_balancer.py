"""The load balancer in a trace: where the lab's topology puts it, and how
the report's `loadBalancer` hop is shown."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from netemu.trace.render import load_balancer_lines
from netemu.trace.topology import LoadBalancerSite, Topology

INFO: dict[str, Any] = {
    "name": "t",
    "backend": "nft",
    "overlay": "vxlan",
    "underlay": "netemu_t_underlay",
    "nodes": {"node-1": {"netns": "netemu_t_node_node-1", "ip": "192.168.56.11"}},
    "clients": {"client": {"netns": "netemu_t_ext_client", "ip": "192.168.56.20"}},
    "pods": {},
    "loadBalancer": {"netns": "netemu_t_lb", "ip": "192.168.56.254", "proxyIPs": ["10.1.1.1"]},
}


def test_topology_knows_the_load_balancer_and_its_namespace() -> None:
    topology = Topology.from_info(INFO)
    assert topology.load_balancer == LoadBalancerSite(
        "netemu_t_lb", "192.168.56.254", ("10.1.1.1",)
    )
    assert topology.owner_of_netns("netemu_t_lb") == ("loadbalancer", "lb", None)
    assert topology.owner_of_netns("netemu_t_underlay") == ("underlay", "switch", None)


def test_a_dual_stack_lab_records_the_load_balancers_ipv6_address() -> None:
    lb = {**INFO["loadBalancer"], "ip6": "fd00:56::ffff:ffff:ffff:ffff"}
    topology = Topology.from_info({**INFO, "loadBalancer": lb})
    assert topology.load_balancer is not None
    assert topology.load_balancer.ip6 == "fd00:56::ffff:ffff:ffff:ffff"
    # A lab.json from before IPv6 load balancing has none.
    assert Topology.from_info(INFO).load_balancer == LoadBalancerSite(
        "netemu_t_lb", "192.168.56.254", ("10.1.1.1",), ""
    )


def test_a_lab_recorded_without_a_load_balancer_has_none() -> None:
    old = {k: v for k, v in INFO.items() if k != "loadBalancer"}
    assert Topology.from_info(old).load_balancer is None


def test_the_load_balancer_hop_says_who_was_healthy_and_why_this_node() -> None:
    hop = {
        "ip": "192.168.56.254",
        "ipMode": "VIP",
        "service": "default/web-lb",
        "healthCheck": "http://NODE:32000/healthz",
        "nodes": {
            "node-1": {"healthy": False, "reason": "HTTP 503", "localEndpoints": 0},
            "node-2": {"healthy": True, "reason": "HTTP 200", "localEndpoints": 1},
        },
        "spread": ["node-2"],
        "failOpen": False,
        "chosen": "node-2",
        "why": "ip route get 192.168.56.100 from 192.168.56.20 iif eth0: via 192.168.56.12",
    }
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    for line in load_balancer_lines(hop):
        console.print(line)
    assert out.getvalue().splitlines() == [
        "load balancer 192.168.56.254 (VIP) for default/web-lb: checks "
        "http://NODE:32000/healthz: node-1 unhealthy (HTTP 503), node-2 healthy",
        "  new connections go to node-2; this one to node-2",
        "  why: ip route get 192.168.56.100 from 192.168.56.20 iif eth0: via 192.168.56.12",
    ]
