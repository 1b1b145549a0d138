"""The emulated cloud load balancer's pure decisions (netemu.net.cloudlb):
which Services it serves and where it checks them, how a node's health
follows its checks, and which nodes each ingress IP spreads over."""

from __future__ import annotations

from typing import Any

import pytest

from netemu.api.config import LabHealthCheck
from netemu.api.core import Service
from netemu.net.cloudlb import (
    PROXY_HEALTHZ_PORT,
    Frontend,
    NodeHealth,
    ProbeResult,
    advance,
    frontends,
    pick,
    spreads,
)
from netemu.node.cloudlb import local_endpoints

OK = ProbeResult(ok=True, reason="HTTP 200", local_endpoints=1)
DOWN = ProbeResult(ok=False, reason="HTTP 503", local_endpoints=0)
NODES = ("node-1", "node-2", "node-3")


def lb_service(name: str, ingress: list[dict[str, Any]], **spec: Any) -> Service:
    return Service.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "ports": [{"port": 80, "nodePort": 31080}],
                **spec,
            },
            "status": {"loadBalancer": {"ingress": ingress}},
        }
    )


def test_local_services_are_checked_on_their_health_check_node_port() -> None:
    svc = lb_service(
        "web",
        [{"ip": "192.168.56.100"}],
        externalTrafficPolicy="Local",
        healthCheckNodePort=32000,
    )
    [front] = frontends([svc])
    assert front == Frontend(
        service="default/web",
        ips=("192.168.56.100",),
        ip_mode="VIP",
        local=True,
        health_port=32000,
        ports=((80, "TCP", 31080),),
    )


def test_cluster_services_are_checked_on_kube_proxys_healthz() -> None:
    [front] = frontends([lb_service("web", [{"ip": "192.168.56.100"}])])
    assert not front.local
    assert front.health_port == PROXY_HEALTHZ_PORT == 10256


def test_services_without_ingress_or_not_load_balancers_are_not_served() -> None:
    pending = lb_service("pending", [])
    hostname_only = lb_service("named", [{"hostname": "lb.example"}])
    node_port = Service.model_validate(
        {
            "metadata": {"name": "np"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.100"}]}},
        }
    )
    assert frontends([pending, hostname_only, node_port]) == []


def test_ip_modes_are_served_apart() -> None:
    svc = lb_service("web", [{"ip": "192.168.56.100"}, {"ip": "192.168.56.101", "ipMode": "Proxy"}])
    assert [(f.ip_mode, f.ips) for f in frontends([svc])] == [
        ("Proxy", ("192.168.56.101",)),
        ("VIP", ("192.168.56.100",)),
    ]


CHECK = LabHealthCheck.model_validate(
    {"intervalSeconds": 1, "timeoutSeconds": 1, "healthyThreshold": 2, "unhealthyThreshold": 3}
)


def run(results: list[ProbeResult], start: NodeHealth | None = None) -> list[bool]:
    health = start or NodeHealth()
    seen = []
    for result in results:
        health = advance(health, result, CHECK)
        seen.append(health.healthy)
    return seen


def test_a_node_starts_unhealthy_and_turns_healthy_after_the_healthy_threshold() -> None:
    assert NodeHealth().healthy is False
    assert run([OK, OK, OK]) == [False, True, True]


def test_a_healthy_node_turns_unhealthy_after_the_unhealthy_threshold() -> None:
    healthy = NodeHealth(healthy=True, successes=5)
    assert run([DOWN, DOWN, DOWN, DOWN], healthy) == [True, True, False, False]


def test_a_success_resets_the_failure_count() -> None:
    healthy = NodeHealth(healthy=True, successes=5)
    assert run([DOWN, DOWN, OK, DOWN, DOWN, DOWN], healthy) == [True, True, True, True, True, False]


def test_health_keeps_the_last_reason_andlocal_endpoints() -> None:
    health = advance(NodeHealth(), DOWN, CHECK)
    assert (health.reason, health.local_endpoints, health.checked) == ("HTTP 503", 0, True)
    timeout = advance(health, ProbeResult(ok=False, reason="timeout"), CHECK)
    assert (timeout.reason, timeout.local_endpoints, timeout.failures) == ("timeout", None, 2)


def front(service: str, *ips: str) -> Frontend:
    return Frontend(service, ips, "VIP", True, 32000, ((80, "TCP", 31080),))


def healthy_on(service: str, *nodes: str) -> dict[tuple[str, str], NodeHealth]:
    return {(service, n): NodeHealth(healthy=n in nodes) for n in NODES}


def test_connections_spread_over_the_healthy_nodes_only() -> None:
    [spread] = spreads([front("a", "10.0.0.1")], healthy_on("a", "node-3", "node-1"), NODES)
    assert spread.nodes == spread.healthy == ("node-1", "node-3")
    assert not spread.fail_open


def test_no_healthy_node_fails_open_to_every_node() -> None:
    [spread] = spreads([front("a", "10.0.0.1")], healthy_on("a"), NODES)
    assert spread.nodes == NODES
    assert spread.healthy == ()
    assert spread.fail_open


def test_unchecked_nodes_are_not_healthy() -> None:
    [spread] = spreads([front("a", "10.0.0.1")], {("a", "node-2"): NodeHealth(healthy=True)}, NODES)
    assert spread.nodes == ("node-2",)


def test_a_shared_ip_goes_to_nodes_healthy_for_every_service_on_it() -> None:
    health = {**healthy_on("a", "node-1", "node-2"), **healthy_on("b", "node-2", "node-3")}
    result = spreads([front("a", "10.0.0.1", "10.0.0.2"), front("b", "10.0.0.1")], health, NODES)
    assert [(s.ip, s.nodes) for s in result] == [
        ("10.0.0.1", ("node-2",)),
        ("10.0.0.2", ("node-1", "node-2")),
    ]


@pytest.mark.parametrize("nodes", [("node-1",), NODES])
def test_proxy_pick_is_stable_and_among_the_nodes(nodes: tuple[str, ...]) -> None:
    chosen = {pick(nodes, "192.168.56.20", port) for port in range(40000, 40200)}
    assert chosen == set(nodes)
    assert pick(nodes, "192.168.56.20", 40001) == pick(nodes, "192.168.56.20", 40001)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"service":{"namespace":"default","name":"web"},"localEndpoints":2}', 2),
        (b'{"localEndpoints":0,"serviceProxyHealthy":true}', 0),
        (b'{"lastUpdated":"2026-01-01T00:00:00Z"}', None),  # kube-proxy's 10256 answer
        (b'{"localEndpoints":true}', None),
        (b"not json", None),
        (b"[1]", None),
    ],
)
def testlocal_endpoints_come_from_the_health_check_answer(
    body: bytes, expected: int | None
) -> None:
    assert local_endpoints(body) == expected
