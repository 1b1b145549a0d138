"""An IPv6-only lab (controlplane/ipv6only: no IPv4 in the datapath,
flannel-v6.1 alone) and an IPv6-primary dual-stack lab
(controlplane/ipv6primary) live, in each proxy mode: Services without
ipFamilies are IPv6, pods' podIP is their IPv6 address, the cluster DNS is
fd00:10:96::a (kubeadm's 10th address of the primary service CIDR), and the
`kubernetes` Service's endpoint is the first node's IPv6 address. A pod
reaches a Service by ClusterIP and by DNS name (through its own
resolv.conf), readiness probes pass on the IPv6 podIP, and the external
client reaches NodePorts over IPv6, with externalTrafficPolicy Local keeping
its address. A live trace FROM/TO names the same flow, verdict, endpoints
and masquerade as `netemu trace --offline` on the lab's manifests.

Each lab is up once per mode and always taken down; nothing of it is left."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from live_helpers import (
    CONTROLPLANE,
    SPREAD_REQUESTS,
    answer_of,
    answered_by,
    client_host,
    client_netns,
    lab_name,
    lab_prefix,
    pod_netns,
    running_lab,
    v6,
    web_pods,
)

from netemu.api.validate import load_and_validate
from netemu.cli import main
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab
from netemu.net.plan import plan_lab
from netemu.pipeline import load_cluster
from netemu.trace.topology import Topology

CLIENT_V6 = "fd00:56::20"
NODE_V6 = {"node-1": "fd00:56::11", "node-2": "fd00:56::12"}
CLUSTER_DNS = "fd00:10:96::a"


IPV6_ONLY = [("ipv6only", "iptables"), ("ipv6only", "nftables")]
IPV6_PRIMARY = [("ipv6primary", "iptables"), ("ipv6primary", "nftables")]
LABS = IPV6_ONLY + IPV6_PRIMARY


def _ids(labs: list[tuple[str, str]]) -> list[str]:
    return [f"{lab}-{mode}" for lab, mode in labs]


# Tests that hold for one of the two labs only take it by indirect
# parametrization of `lab` (the same module-scoped lab, brought up once).
def only_on(labs: list[tuple[str, str]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("lab", labs, indirect=True, ids=_ids(labs))


def mode_copy(source: str, mode: str, target: Path) -> Path:
    """controlplane/<source> in `target`, kube-proxy in `mode`."""
    shutil.copytree(CONTROLPLANE / source, target, dirs_exist_ok=True)
    text = (target / "lab.yaml").read_text()
    assert "proxyMode: iptables" in text
    (target / "lab.yaml").write_text(text.replace("proxyMode: iptables", f"proxyMode: {mode}"))
    return target


@pytest.fixture(scope="module", params=LABS, ids=_ids(LABS))
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    source, mode = request.param
    target = mode_copy(source, mode, tmp_path_factory.mktemp(f"{source}-{mode}"))
    name = lab_name(f"{source[4:8]}-{mode[:3]}")
    with running_lab([target], name) as live:
        _wait_until_web_pods_are_ready(live)
        yield live
    # Taken down: none of its namespaces is left.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert lab_prefix(name) not in left.stdout


def _wait_until_web_pods_are_ready(lab: LiveLab, timeout: float = 15.0) -> None:
    """Their readinessProbe runs on the IPv6 podIP: the pods turn Ready once
    the kubelet's first probe passes (which fails the lab if it never does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = [
            p for p in lab.state()["pods"] if p["metadata"].get("labels", {}).get("app") == "web"
        ]
        ready = [
            c["status"] == "True"
            for p in pods
            for c in p["status"].get("conditions", [])
            if c["type"] == "Ready"
        ]
        if len(ready) == 2 and all(ready):
            return
        time.sleep(0.2)


def dual_stack(lab: LiveLab) -> bool:
    """The IPv6-primary lab (its nodes have both families), not the IPv6-only one."""
    return "." in str(lab.info()["nodes"]["node-1"]["ip"])


def service(lab: LiveLab, namespace: str, name: str) -> dict[str, Any]:
    for svc in lab.state()["services"]:
        if (svc["metadata"].get("namespace", "default"), svc["metadata"]["name"]) == (
            namespace,
            name,
        ):
            return dict(svc)
    raise AssertionError(f"no Service {namespace}/{name}")


def test_the_primary_family_is_ipv6(lab: LiveLab) -> None:
    for pod in web_pods(lab):
        ips = [p["ip"] for p in pod["status"]["podIPs"]]
        assert [v6(ip) for ip in ips] == ([True, False] if dual_stack(lab) else [True])
        assert pod["status"]["podIP"] == ips[0]
        # Ready: the kubelet's readinessProbe passed on the IPv6 podIP.
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
    assert service(lab, "default", "web")["spec"]["ipFamilies"] == ["IPv6"]
    if dual_stack(lab):
        assert service(lab, "default", "web-dual")["spec"]["ipFamilies"] == ["IPv6", "IPv4"]
    assert service(lab, "kube-system", "kube-dns")["spec"]["clusterIP"] == CLUSTER_DNS
    assert service(lab, "default", "kubernetes")["spec"]["clusterIP"] == "fd00:10:96::1"


@pytest.mark.parametrize("name", ["web", "web-nodeport", "web-local"])
def test_a_pod_reaches_a_service_by_each_cluster_ip(lab: LiveLab, name: str) -> None:
    reaches_every_cluster_ip(lab, name)


@only_on(IPV6_PRIMARY)
def test_a_pod_reaches_the_dual_stack_service_by_each_cluster_ip(lab: LiveLab) -> None:
    assert dual_stack(lab)
    reaches_every_cluster_ip(lab, "web-dual")


def reaches_every_cluster_ip(lab: LiveLab, name: str) -> None:
    source = web_pods(lab)[0]
    names = {p["metadata"]["name"] for p in web_pods(lab)}
    for vip in service(lab, "default", name)["spec"]["clusterIPs"]:
        got = [http_get(pod_netns(lab, source), vip, 80) for _ in range(SPREAD_REQUESTS)]
        assert answered_by(got) == names, f"{name} {vip}"


def test_a_pod_reaches_a_service_by_dns_name(lab: LiveLab) -> None:
    # The pod's own resolver (resolv.conf naming the IPv6 cluster DNS) and
    # curl: the name resolves to the IPv6 clusterIP, which answers.
    pod = web_pods(lab)[0]["metadata"]["name"]
    resolv = lab.exec(pod, ["cat", "/etc/resolv.conf"])
    assert f"nameserver {CLUSTER_DNS}" in resolv.stdout, resolv.stdout
    done = lab.exec(pod, ["curl", "-sS", "-m", "3", "http://web.default.svc.cluster.local/"])
    assert done.returncode == 0, done.stderr
    names = {p["metadata"]["name"] for p in web_pods(lab)}
    assert json.loads(done.stdout)["pod"] in names
    (vip,) = service(lab, "default", "web")["spec"]["clusterIPs"]
    looked_up = lab.exec(pod, ["getent", "ahosts", "web.default.svc.cluster.local"])
    assert looked_up.stdout.split()[0] == vip


def test_a_pod_reaches_the_api_server_stand_in_over_ipv6(lab: LiveLab) -> None:
    pod = web_pods(lab)[0]["metadata"]["name"]
    done = lab.exec(pod, ["curl", "-ksS", "-m", "3", "https://[fd00:10:96::1]/version"])
    assert done.returncode == 0, done.stderr
    assert "gitVersion" in json.loads(done.stdout)


def test_the_client_reaches_a_nodeport_over_ipv6_cluster_policy(lab: LiveLab) -> None:
    names = {p["metadata"]["name"] for p in web_pods(lab)}
    for node, ip in NODE_V6.items():
        got = [http_get(client_netns(lab), ip, 30080) for _ in range(SPREAD_REQUESTS)]
        assert answered_by(got) == names, node
        assert CLIENT_V6 not in {client_host(r) for r in got}  # masqueraded


@only_on(IPV6_PRIMARY)
def test_a_single_stack_ipv6_nodeport_is_closed_on_the_ipv4_node_address(lab: LiveLab) -> None:
    assert dual_stack(lab)
    got = http_get(client_netns(lab), "192.168.56.11", 30080, timeout=1.0)
    assert got.outcome != "answered"


def test_the_client_reaches_a_local_nodeport_keeping_its_address(lab: LiveLab) -> None:
    for pod in web_pods(lab):
        node = str(pod["spec"]["nodeName"])
        got = [http_get(client_netns(lab), NODE_V6[node], 30081) for _ in range(4)]
        assert answered_by(got) == {pod["metadata"]["name"]}
        assert {client_host(r) for r in got} == {CLIENT_V6}


def test_a_test_server_reports_the_ipv6_pod_ip(lab: LiveLab) -> None:
    pod = web_pods(lab)[0]
    got = http_get(pod_netns(lab, pod), pod["status"]["podIP"], 8080)
    assert answer_of(got, "request").pod_ip == pod["status"]["podIP"]


@only_on(IPV6_ONLY)
def test_an_ipv6_only_node_has_no_ipv4_and_runs_flannel_v6_alone(lab: LiveLab) -> None:
    netns = str(lab.info()["nodes"]["node-1"]["netns"])
    v4 = subprocess.run(
        ["ip", "-n", netns, "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    )
    assert [line.split()[1] for line in v4.stdout.splitlines()] == ["lo"]
    links = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert "flannel-v6.1" in links and "flannel.1" not in links


@only_on(IPV6_ONLY)
def test_an_ipv6_only_nodes_kube_proxy_serves_healthz_and_metrics_over_ipv6(lab: LiveLab) -> None:
    # controlplane/ipv6only sets bindAddress "::" as kubeadm does on an IPv6
    # control plane: healthz on [::]:10256, metrics on [::1]:10249, fed by
    # the node's one (IPv6) proxier. (The IPv6-primary lab keeps kube-proxy's
    # IPv4 default bindAddress.)
    healthz = lab.exec(
        "client", ["curl", "-sS", "-m", "3", "-g", "http://[fd00:56::11]:10256/healthz"]
    )
    assert healthz.returncode == 0, healthz.stderr
    assert json.loads(healthz.stdout)["nodeEligible"] is True
    metrics = lab.exec("node-1", ["curl", "-sS", "-m", "3", "-g", "http://[::1]:10249/metrics"])
    assert metrics.returncode == 0, metrics.stderr
    assert "kubeproxy_sync_proxy_rules_last_timestamp_seconds" in metrics.stdout


def test_an_offline_trace_names_what_the_live_trace_saw(lab: LiveLab, tmp_path: Path) -> None:
    # The lab's own manifests, as `netemu trace --offline -f` reads them.
    source = "ipv6primary" if dual_stack(lab) else "ipv6only"
    manifests = mode_copy(source, str(lab.info()["proxyMode"]), tmp_path / source)
    # Where the offline tracer places the lab's nodes and client (its plan)
    # is where the live lab has them: primary family first, flannel-v6.1
    # the IPv6 overlay device (alone on the IPv6-only lab).
    state = load_cluster([manifests])
    assert state.lab is not None
    planned = Topology.from_plan(plan_lab(state, lab.name), state, state.lab.spec.iptables_backend)
    live = lab.topology()
    assert planned.nodes == live.nodes and planned.clients == live.clients
    assert planned.overlay_devices == live.overlay_devices

    # The manifests' pods by where they run and their addresses (the
    # ReplicaSet controller draws their names at random; host-local hands
    # out the same addresses). The live lab adds its kube-system add-ons.
    def placed(topology: Topology) -> list[tuple[str, str, str, bool]]:
        pods = [p for p in topology.pods.values() if p.key.startswith("default/")]
        return sorted((p.node, p.ip, p.other_ip, p.host_network) for p in pods)

    assert placed(planned) == placed(live)
    assert len(placed(live)) == 2 and all(":" in ip for _, ip, _, _ in placed(live))
    assert live.nodes["node-2"].ip == NODE_V6["node-2"] and live.clients["client"].ip == CLIENT_V6

    words = ["client", "node-2:30080"]
    result = CliRunner().invoke(
        main, ["trace", "--offline", "-f", str(manifests), *words, "-o", "json"]
    )
    assert result.exit_code == 0, result.stderr
    offline = json.loads(result.stdout)
    live_trace = lab.trace(*words, captures=tmp_path / "captures").to_dict()
    assert live_trace["outcome"] == "delivered"
    # The same flow: the client's IPv6 address to node-2's, entering node-2.
    packet = {key: live_trace["packet"][key] for key in ("src", "dst", "dport", "proto")}
    assert (
        packet
        == offline["packet"]
        == {
            "src": CLIENT_V6,
            "dst": NODE_V6["node-2"],
            "dport": 30080,
            "proto": "tcp",
        }
    )
    assert live_trace["node"] == offline["node"] == "node-2"
    assert (live_trace["to"], live_trace["service"]) == (offline["to"], offline["service"])
    # What the kernel did is what the compiled rules say: DNAT to one of
    # the endpoints they list (the prediction over the kernel's own rules
    # lists the same), masqueraded.
    assert live_trace["verdict"] == offline["verdict"] == "DNAT"
    (chosen,) = live_trace["endpoints"]
    assert chosen in offline["endpoints"]
    assert sorted(live_trace["prediction"]["endpoints"]) == sorted(offline["endpoints"])
    assert live_trace["masquerade"] is offline["masquerade"] is True


def test_a_load_balancer_service_gets_an_ipv6_ingress_ip_and_serves_the_client(
    lab: LiveLab, tmp_path: Path
) -> None:
    # No ipFamilies: the primary family's (IPv6) address alone, the first of
    # the default IPv6 pool; the load balancer, whose health checks go over
    # IPv6 on an IPv6-only lab, forwards it to the nodes' IPv6 addresses.
    manifest = tmp_path / "lb.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-lb6\nspec:\n"
        "  type: LoadBalancer\n  selector: {app: web}\n"
        "  ports:\n    - {port: 80, targetPort: 8080}\n"
    )
    lab.apply([item.obj for item in load_and_validate([manifest])])
    try:
        ingress = [
            i["ip"] for i in service(lab, "default", "web-lb6")["status"]["loadBalancer"]["ingress"]
        ]
        assert ingress == ["fd00:56::c8"]
        deadline = time.monotonic() + 10
        while "fd00:56::c8" not in lab.request("loadbalancer")["loadBalancer"]["spread"]:
            assert time.monotonic() < deadline, "the load balancer never spread fd00:56::c8"
            time.sleep(0.1)
        got = [http_get(client_netns(lab), "fd00:56::c8", 80) for _ in range(SPREAD_REQUESTS)]
        assert answered_by(got) == {p["metadata"]["name"] for p in web_pods(lab)}
    finally:
        lab.delete([("Service", "default", "web-lb6")])
