"""`netemu describe svc` and the LB-HEALTH column of `get svc -o wide`:
the load balancer's status as the CLI lays it out."""

from __future__ import annotations

from typing import Any

from netemu.cli_describe import describe_service
from netemu.cli_table import render, with_lb_health

SERVICE: dict[str, Any] = {
    "metadata": {"name": "web-lb", "namespace": "default"},
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.20",
        "selector": {"app": "web"},
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 32000,
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 31080}],
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.100", "ipMode": "VIP"}]}},
}

BALANCER: dict[str, Any] = {
    "netns": "netemu_t_lb",
    "ip": "192.168.56.254",
    "healthCheck": {
        "intervalSeconds": 0.5,
        "timeoutSeconds": 0.4,
        "healthyThreshold": 1,
        "unhealthyThreshold": 2,
    },
    "services": {
        "default/web-lb": {
            "ips": ["192.168.56.100"],
            "ipMode": {"192.168.56.100": "VIP"},
            "healthCheck": "http://NODE:32000/healthz",
            "nodes": {
                "node-1": {"healthy": False, "reason": "HTTP 503", "localEndpoints": 0},
                "node-2": {"healthy": True, "reason": "HTTP 200", "localEndpoints": 1},
            },
        }
    },
    "spread": {"192.168.56.100": {"nodes": ["node-2"], "failOpen": False}},
}


def test_describe_shows_each_nodes_health_and_where_connections_go() -> None:
    text = describe_service(SERVICE, BALANCER)
    lines = text.splitlines()
    assert "LoadBalancer Ingress:     192.168.56.100 (VIP)" in lines
    assert "HealthCheck NodePort:     32000" in lines
    assert (
        "Load Balancer:            192.168.56.254 checks http://NODE:32000/healthz every 0.5 s "
        "(timeout 0.4 s, healthy after 1, unhealthy after 2)"
    ) in lines
    assert "  NODE     HEALTH      LAST CHECK   LOCAL ENDPOINTS" in lines
    assert "  node-1   unhealthy   HTTP 503     0" in lines
    assert "  node-2   healthy     HTTP 200     1" in lines
    assert "  192.168.56.100 (VIP): new connections go to node-2" in lines


def test_describe_says_when_the_balancer_fails_open() -> None:
    spread = {"192.168.56.100": {"nodes": ["node-1", "node-2"], "failOpen": True}}
    text = describe_service(SERVICE, {**BALANCER, "spread": spread})
    assert (
        "  192.168.56.100 (VIP): new connections go to node-1, node-2 "
        "(no node healthy: fail open to every node)"
    ) in text.splitlines()


def test_describe_without_the_balancer_has_no_load_balancer_section() -> None:
    text = describe_service(SERVICE, {**BALANCER, "services": {}})
    assert "Load Balancer:" not in text
    assert "External Traffic Policy:  Local" in text.splitlines()


def test_wide_services_get_an_lb_health_column() -> None:
    table = {
        "columnDefinitions": [{"name": "NAMESPACE"}, {"name": "NAME"}],
        "rows": [{"cells": ["default", "web-lb"]}, {"cells": ["default", "kubernetes"]}],
    }
    text = render(with_lb_health(table, BALANCER))
    assert [line.rstrip() for line in text.splitlines()] == [
        "NAMESPACE   NAME         LB-HEALTH",
        "default     web-lb       node-1:unhealthy(503),node-2:healthy",
        "default     kubernetes   <none>",
    ]
