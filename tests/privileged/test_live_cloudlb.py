"""The emulated cloud load balancer with real packets: its namespace,
passthrough spreading over the nodes its health checks find healthy, and
proxy mode, for each IP family.

One dual-stack lab (written below, short health-check intervals) is up for
the module, once in each of kube-proxy's modes. Its LoadBalancer Services
are dual-stack, with an ingress IP of each family: the load balancer checks
each node once (kube-proxy's health servers answer on both families) and
forwards each family's ingress IP to the nodes' addresses of that family.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import lab_name, netemu_cli, running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel import netns
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

pytestmark = pytest.mark.privileged

INTERVAL = 0.5
HEALTHY, UNHEALTHY = 1, 2
PASSTHROUGH_IP, PROXY_IP = "192.168.56.100", "192.168.56.101"
PASSTHROUGH_IP6, PROXY_IP6 = "fd00:56::100", "fd00:56::101"
CLIENT_IP, CLIENT_IP6 = "192.168.56.20", "fd00:56::20"
LB_IP = "192.168.56.250"
# The load balancer's own IPv6 address: the top of the IPv6 underlay.
LB_IP6 = "fd00:56::ffff:ffff:ffff:ffff"

LAB = f"""\
apiVersion: netemu/v1alpha1
kind: Lab
metadata:
  name: cloudlb
spec:
  underlayCIDR: 192.168.56.0/24,fd00:56::/64
  serviceCIDR: 10.96.0.0/12,fd00:10:96::/112
  podCIDR: 10.244.0.0/16,fd00:10:244::/56
  nodes:
    - name: node-1
      underlayIP: 192.168.56.11,fd00:56::11
    - name: node-2
      underlayIP: 192.168.56.12,fd00:56::12
  externalClients:
    - name: client
      ip: {CLIENT_IP},{CLIENT_IP6}
  dns:
    enabled: false
  loadBalancer:
    ip: {LB_IP}
    healthCheck:
      intervalSeconds: {INTERVAL}
      timeoutSeconds: 0.4
      healthyThreshold: {HEALTHY}
      unhealthyThreshold: {UNHEALTHY}
"""


def pinned(name: str, node: str, replicas: int) -> str:
    return f"""\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web, pin: {name}}}
  template:
    metadata:
      labels: {{app: web, pin: {name}}}
    spec:
      nodeSelector:
        kubernetes.io/hostname: {node}
      containers:
        - name: web
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
          ports:
            - containerPort: 8080
"""


def lb_service(name: str, ip: str, ip6: str, mode: str, node_port: int) -> str:
    return f"""\
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports:
    - port: 80
      targetPort: 8080
      nodePort: {node_port}
status:
  loadBalancer:
    ingress:
      - ip: {ip}
        ipMode: {mode}
      - ip: {ip6}
        ipMode: {mode}
"""


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    """The lab with kube-proxy in each of its modes (its health check
    servers and rules are what the load balancer's checks and traffic meet)."""
    mode: str = request.param
    directory: Path = tmp_path_factory.mktemp("cloudlb")
    (directory / "lab.yaml").write_text(
        LAB.replace("spec:\n", f"spec:\n  proxyMode: {mode}\n", 1)
        + pinned("web-1", "node-1", 0)
        + pinned("web-2", "node-2", 1)
        + lb_service("web-lb", PASSTHROUGH_IP, PASSTHROUGH_IP6, "VIP", 31080)
        + lb_service("web-proxy", PROXY_IP, PROXY_IP6, "Proxy", 31081)
    )
    with running_lab([directory], lab_name(f"cloudlb-{mode[:3]}")) as live:
        yield live


def client_ns(lab: LiveLab) -> str:
    return str(lab.info()["clients"]["client"]["netns"])


def served_by(lab: LiveLab, ip: str, attempts: int, timeout: float = 0.3) -> list[str | None]:
    """For each of `attempts` fresh connections to ip:80, the node whose pod
    answered /hostname (None: no answer)."""
    by_name = {key.split("/")[1]: p["node"] for key, p in lab.info()["pods"].items()}
    found: list[str | None] = []
    for _ in range(attempts):
        result = http_get(client_ns(lab), ip, 80, "/hostname", timeout=timeout)
        found.append(by_name.get(result.body.strip()) if result.status == 200 else None)
    return found


def host_of(host_port: str) -> str:
    """The address of "ip:port" or "[ip6]:port"."""
    return host_port.rsplit(":", 1)[0].strip("[]")


def health(lab: LiveLab, service: str) -> dict[str, bool]:
    status = lab.request("loadbalancer")["loadBalancer"]
    return {n: h["healthy"] for n, h in status["services"][service]["nodes"].items()}


def proxy_health_servers_answer(lab: LiveLab) -> bool:
    """Whether kube-proxy's health servers answer on the nodes: without
    them every check fails and the load balancer fails open."""
    status = lab.request("loadbalancer")["loadBalancer"]
    reasons = {h["reason"] for h in status["services"]["default/web-lb"]["nodes"].values()}
    return "connection refused" not in reasons


def wait_settled(lab: LiveLab) -> None:
    time.sleep(INTERVAL * max(HEALTHY, UNHEALTHY) + 0.5)


def test_load_balancer_namespace_owns_the_ingress_ips(lab: LiveLab) -> None:
    info = lab.info()
    lb = info["loadBalancer"]
    assert lb["ip"] == LB_IP
    assert netns.exists(lb["netns"])
    routes = subprocess.run(
        ["ip", "-n", client_ns(lab), "route", "show", f"{PASSTHROUGH_IP}/32"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"via {LB_IP}" in routes
    # The IPv6 ingress IP goes via the load balancer's IPv6 address.
    assert lb["ip6"] == LB_IP6
    routes6 = subprocess.run(
        ["ip", "-n", client_ns(lab), "-6", "route", "show", f"{PASSTHROUGH_IP6}/128"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"via {LB_IP6}" in routes6
    for family in ("ipv4", "ipv6"):
        keys = [
            f"net.{family}.fib_multipath_hash_policy",
            f"net.{family}.fib_multipath_hash_fields",
        ]
        policy, fields = (netns.read_sysctls(lb["netns"], keys)[k] for k in keys)
        # The kernel reads the fields mask back in decimal: 55 is 0x37.
        assert (policy, int(fields, 0)) == ("3", 0x37), family


def test_passthrough_etp_local_follows_the_health_checks(lab: LiveLab) -> None:
    if not proxy_health_servers_answer(lab):
        pytest.skip("kube-proxy's healthCheckNodePort servers do not answer in this build")
    wait_settled(lab)
    assert health(lab, "default/web-lb") == {"node-1": False, "node-2": True}
    # Every connection reaches node-2, and its pod sees the client's address.
    # Each family's ingress IP: the health checks are per node, not per family.
    for ip, client_ip in ((PASSTHROUGH_IP, CLIENT_IP), (PASSTHROUGH_IP6, CLIENT_IP6)):
        assert set(served_by(lab, ip, 20)) == {"node-2"}, ip
        seen = http_get(client_ns(lab), ip, 80, "/clientip", timeout=1)
        assert host_of(seen.body) == client_ip

    bound = INTERVAL * HEALTHY + 1
    lab.scale("Deployment", "default", "web-1", 1)
    start = time.monotonic()
    while "node-1" not in served_by(lab, PASSTHROUGH_IP, 10):
        assert time.monotonic() - start <= bound, f"node-1 got nothing within {bound} s"
    assert set(served_by(lab, PASSTHROUGH_IP, 40)) == {"node-1", "node-2"}
    assert set(served_by(lab, PASSTHROUGH_IP6, 40)) == {"node-1", "node-2"}

    bound = INTERVAL * UNHEALTHY + 1
    lab.scale("Deployment", "default", "web-2", 0)
    start = time.monotonic()
    time.sleep(bound)
    # After the bound no connection fails and none goes to node-2.
    assert served_by(lab, PASSTHROUGH_IP, 40, timeout=1) == ["node-1"] * 40
    assert served_by(lab, PASSTHROUGH_IP6, 40, timeout=1) == ["node-1"] * 40
    assert health(lab, "default/web-lb") == {"node-1": True, "node-2": False}
    lab.scale("Deployment", "default", "web-2", 1)
    lab.scale("Deployment", "default", "web-1", 0)


def test_no_healthy_node_fails_open_to_every_node(lab: LiveLab) -> None:
    """Before kube-proxy answers its health checks (or with none passing),
    a cloud load balancer sends to every node rather than to none."""
    status = lab.request("loadbalancer")["loadBalancer"]
    spread = status["spread"][PASSTHROUGH_IP]
    healthy = [n for n, h in health(lab, "default/web-lb").items() if h]
    assert spread["failOpen"] == (not healthy)
    assert spread["nodes"] == (healthy or ["node-1", "node-2"])
    routes = subprocess.run(
        ["ip", "-n", status["netns"], "route", "show", f"{PASSTHROUGH_IP}/32"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    nodes = lab.info()["nodes"]
    for name in spread["nodes"]:
        assert f"via {nodes[name]['ip']}" in routes
    # The IPv6 ingress IP: the same nodes, by their IPv6 addresses.
    assert status["spread"][PASSTHROUGH_IP6]["nodes"] == spread["nodes"]
    routes6 = subprocess.run(
        ["ip", "-n", status["netns"], "-6", "route", "show", f"{PASSTHROUGH_IP6}/128"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    vias = {line.split("via ")[1].split()[0] for line in routes6.splitlines() if "via " in line}
    assert vias == {ip for name in spread["nodes"] for ip in nodes[name]["ips"] if ":" in ip}


def test_proxy_mode_terminates_at_the_load_balancer(lab: LiveLab) -> None:
    # A pod on each node: whichever node a connection is given (all of them
    # when the load balancer fails open), it has a local endpoint.
    lab.scale("Deployment", "default", "web-1", 1)
    try:
        wait_settled(lab)
        for ip, lb_ip in ((PROXY_IP, LB_IP), (PROXY_IP6, LB_IP6)):
            for _ in range(10):
                seen = http_get(client_ns(lab), ip, 80, "/clientip", timeout=2)
                assert seen.status == 200, seen
                # The node's pod sees the load balancer (of the IP's family),
                # not the client.
                assert host_of(seen.body) == lb_ip
    finally:
        lab.scale("Deployment", "default", "web-1", 0)


def test_describe_and_wide_get_show_health_per_node(lab: LiveLab) -> None:
    wait_settled(lab)
    expected = health(lab, "default/web-lb")
    described = netemu_cli("describe", "svc", "web-lb", "--lab", lab.name)
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    for node, healthy in expected.items():
        state = "healthy" if healthy else "unhealthy"
        assert any(line.split()[:2] == [node, state] for line in lines), described.stdout
    wide = netemu_cli("get", "svc", "-o", "wide", "--lab", lab.name)
    assert wide.returncode == 0, wide.stderr
    [row] = [line for line in wide.stdout.splitlines() if " web-lb " in line]
    cell = row.split()[-1]
    assert {part.split(":")[0] for part in cell.split(",")} == set(expected)
    missing = netemu_cli("describe", "svc", "nothing", "--lab", lab.name)
    assert missing.returncode == 1
    assert 'services "nothing" not found' in missing.stderr


def test_trace_shows_the_load_balancer_hop(lab: LiveLab, tmp_path: Path) -> None:
    # A pod on each node: both healthy, so the hash has a choice to make.
    lab.scale("Deployment", "default", "web-1", 1)
    try:
        wait_settled(lab)
        assert health(lab, "default/web-lb") == {"node-1": True, "node-2": True}
        for attempt in range(4):
            report = trace_lb(lab, tmp_path / str(attempt))
            lb = report["loadBalancer"]
            assert lb["ip"] == LB_IP and lb["ipMode"] == "VIP"
            assert lb["service"] == "default/web-lb"
            assert lb["spread"] == ["node-1", "node-2"] and not lb["failOpen"]
            assert lb["why"].startswith(
                f"ip route get {PASSTHROUGH_IP} from {CLIENT_IP} iif eth0 ipproto tcp "
                f"sport {report['packet']['sport']} dport 80"
            )
            # The kernel's answer named the node the packet really entered:
            # only that node tracked (and DNATed) the flow.
            assert {c["node"] for c in report["conntrack"]} == {lb["chosen"]}
            assert report["node"] == lb["chosen"]
            assert report["outcome"] == "delivered"
            assert report["seenClient"].split(":")[0] == CLIENT_IP
            lb_netns = lab.info()["loadBalancer"]["netns"]
            assert any(h["namespace"] == lb_netns for h in report["hops"])
            pcaps = [p.name for p in (tmp_path / str(attempt)).rglob("*.pcap")]
            assert any(lb_netns in name for name in pcaps), pcaps
    finally:
        lab.scale("Deployment", "default", "web-1", 0)


def trace_lb(lab: LiveLab, captures: Path) -> dict[str, Any]:
    done = netemu_cli(
        "trace",
        "client",
        f"{PASSTHROUGH_IP}:80",
        "--lab",
        lab.name,
        "-o",
        "json",
        "--captures",
        str(captures),
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_service_given_an_address_by_the_pool_is_served_through_the_load_balancer(
    lab: LiveLab, tmp_path: Path
) -> None:
    manifest = tmp_path / "pooled.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: pooled\nspec:\n"
        "  type: LoadBalancer\n  selector: {app: web}\n  ports:\n    - port: 8080\n"
    )
    lab.apply([item.obj for item in load_and_validate([manifest])])
    try:
        state = lab.state()
        [svc] = [s for s in state["services"] if s["metadata"]["name"] == "pooled"]
        [ingress] = svc["status"]["loadBalancer"]["ingress"]
        ip = ingress["ip"]
        routes = subprocess.run(
            ["ip", "-n", client_ns(lab), "route", "show", f"{ip}/32"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"via {LB_IP}" in routes
        wait_settled(lab)
        # ETP Cluster: checked on kube-proxy's 10256, which every node passes.
        status = lab.request("loadbalancer")["loadBalancer"]
        pooled = status["services"]["default/pooled"]
        assert pooled["healthCheck"] == "http://NODE:10256/healthz"
        assert {n: h["healthy"] for n, h in pooled["nodes"].items()} == {
            "node-1": True,
            "node-2": True,
        }
        for _ in range(5):
            result = http_get(client_ns(lab), ip, 8080, "/hostname", timeout=2)
            assert result.status == 200, result
    finally:
        lab.delete([("Service", "default", "pooled")])
