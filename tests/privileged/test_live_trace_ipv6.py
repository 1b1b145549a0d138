"""`netemu trace` live over IPv6, on controlplane/dualstack in each proxy
mode (a copy per mode, netemu's nftables mode through mode_copy): a pod to
an IPv6 ClusterIP, the external client to an IPv6 NodePort with
externalTrafficPolicy Cluster (masqueraded) and Local (its address kept),
and an ICMPv6 echo. Each report is checked against the kernel's evidence it
carries (DNAT hop and rule, conntrack entry, masquerade) and its offline
prediction, and merged.pcapng for the flow's IPv6 packets.

One lab per mode, up for the module and always taken down."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import REPO, lab_name, mode_copy, running_lab
from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.utils import rdpcap

from netemu.lab import LiveLab
from netemu.trace.render import prediction_differences

pytestmark = pytest.mark.privileged

NETEMU = REPO / ".venv" / "bin" / "netemu"
CLIENT_V6 = "fd00:56::20"
NODE_V6 = {"node-1": "fd00:56::11", "node-2": "fd00:56::12"}
NODE_PORT_CLUSTER = 30080  # web-nodeport: externalTrafficPolicy Cluster
NODE_PORT_LOCAL = 30081  # web-local: externalTrafficPolicy Local


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    mode = str(request.param)
    source = mode_copy("dualstack", tmp_path_factory.mktemp(f"v6trace-{mode}"), mode)
    with running_lab([source], lab_name(f"v6tr-{mode[:3]}")) as live:
        yield live


def _trace(lab: LiveLab, tmp_path: Path, frm: str, to: str, **options: Any) -> dict[str, Any]:
    report = lab.trace(frm, to, captures=tmp_path / "captures", **options)
    return report.to_dict()


def _coredns(lab: LiveLab) -> str:
    # Not an endpoint of web: no hairpin, so no masquerade either way.
    return next(key for key in lab.topology().pods if key.startswith("kube-system/coredns"))


def _web_ipv6(lab: LiveLab) -> dict[str, str]:
    """node → the IPv6 address of the web pod on it."""
    pods = lab.topology().pods.values()
    return {p.node: p.address("IPv6") for p in pods if p.key.startswith("default/web-")}


def _v6_cluster_ip(lab: LiveLab, name: str) -> str:
    (svc,) = [s for s in lab.state()["services"] if s["metadata"]["name"] == name]
    return str(next(ip for ip in svc["spec"]["clusterIPs"] if ":" in ip))


def _merged(data: dict[str, Any]) -> list[IPv6]:
    return [p[IPv6] for p in rdpcap(data["pcaps"]["merged"]) if p.haslayer(IPv6)]


def _check_dnat(data: dict[str, Any], endpoints: set[str], node: str) -> str:
    """The DNAT hop on `node`, to one of `endpoints` ([ip]:port), named by
    the kube-proxy rule that did it; the endpoint it chose."""
    assert data["verdict"] == "DNAT"
    (chosen,) = data["endpoints"]
    assert chosen in endpoints
    dnat = [h for h in data["hops"] if h["action"] == "DNAT"]
    assert [h["node"] for h in dnat] == [node]
    assert dnat[0]["translated"] == chosen
    assert dnat[0]["rule"] is not None and f"dnat to {chosen}" in dnat[0]["rule"]["rule"]
    assert prediction_differences(data) == []
    return str(chosen)


def test_pod_to_an_ipv6_cluster_ip(lab: LiveLab, tmp_path: Path) -> None:
    cluster_ip = _v6_cluster_ip(lab, "web-v6")
    source = _coredns(lab)
    source_ip = lab.topology().pods[source].address("IPv6")
    data = _trace(lab, tmp_path, f"pod/{source}", f"[{cluster_ip}]:80")
    endpoints = {f"[{ip}]:8080" for ip in _web_ipv6(lab).values()}
    chosen = _check_dnat(data, endpoints, "node-1")
    assert data["outcome"] == "delivered" and data["answer"]["outcome"] == "answered"
    assert data["masquerade"] is False and data["seenClient"] == source_ip
    # conntrack on the entry node: the original tuple to the ClusterIP, the
    # reply from the endpoint.
    entry = next(c for c in data["conntrack"] if c["node"] == "node-1")
    assert (entry["original"]["src"], entry["original"]["dst"]) == (source_ip, cluster_ip)
    assert f"[{entry['reply']['src']}]:{entry['reply']['sport']}" == chosen
    # The pcap holds the SYN as sent and as DNATed, IPv6 both.
    syns = [p for p in _merged(data) if p.haslayer(TCP) and p[TCP].flags == "S"]
    assert any(p.src == source_ip and p.dst == cluster_ip for p in syns)
    assert any(f"[{p.dst}]:{p[TCP].dport}" == chosen for p in syns)


def test_client_to_an_ipv6_node_port_is_masqueraded(lab: LiveLab, tmp_path: Path) -> None:
    node_ip = NODE_V6["node-2"]
    data = _trace(lab, tmp_path, "client", f"[{node_ip}]:{NODE_PORT_CLUSTER}")
    _check_dnat(data, {f"[{ip}]:8080" for ip in _web_ipv6(lab).values()}, "node-2")
    assert data["outcome"] == "delivered" and data["masquerade"] is True
    assert data["seenClient"] != CLIENT_V6 and ":" in data["seenClient"]
    masquerade = [h for h in data["hops"] if h["action"] == "Masquerade"]
    assert masquerade and masquerade[0]["node"] == "node-2"
    packets = _merged(data)
    assert any(p.src == CLIENT_V6 and p.dst == node_ip for p in packets)


def test_client_to_an_ipv6_local_node_port_keeps_its_address(lab: LiveLab, tmp_path: Path) -> None:
    node_ip = NODE_V6["node-1"]
    data = _trace(lab, tmp_path, "client", f"[{node_ip}]:{NODE_PORT_LOCAL}")
    # externalTrafficPolicy Local: only node-1's own endpoint.
    local = f"[{_web_ipv6(lab)['node-1']}]:8080"
    assert _check_dnat(data, {local}, "node-1") == local
    assert data["outcome"] == "delivered" and data["masquerade"] is False
    assert data["seenClient"] == CLIENT_V6


def _v6_ingress(lab: LiveLab, name: str) -> str:
    """The Service's IPv6 LoadBalancer IP, once the load balancer spreads it
    (a lab just up may not have checked its nodes yet)."""
    (svc,) = [s for s in lab.state()["services"] if s["metadata"]["name"] == name]
    ip = next(str(i["ip"]) for i in svc["status"]["loadBalancer"]["ingress"] if ":" in i["ip"])
    deadline = time.monotonic() + 10
    while ip not in lab.request("loadbalancer")["loadBalancer"]["spread"]:
        assert time.monotonic() < deadline, f"the load balancer never spread {ip}"
        time.sleep(0.1)
    return ip


def test_client_to_an_ipv6_load_balancer_ip_goes_through_the_load_balancer(
    lab: LiveLab, tmp_path: Path
) -> None:
    lb_ip = _v6_ingress(lab, "web-lb")
    balancer = lab.info()["loadBalancer"]
    data = _trace(lab, tmp_path, "client", f"[{lb_ip}]:80")
    hop = data["loadBalancer"]
    assert (hop["service"], hop["ipMode"], hop["ip"]) == ("default/web-lb", "VIP", balancer["ip6"])
    # IPv6: `ip route get` cannot tell the node in advance (it hashes a
    # flow, forwarding hashes the packet); the flow's frames name it.
    chosen = hop["chosen"]
    assert chosen in NODE_V6 and hop["spread"] == ["node-1", "node-2"]
    assert hop["why"].startswith("IPv6: the kernel hashes the forwarded packet")
    assert hop["why"].endswith(f"; it entered {chosen}")
    # The flow entered that node (only its conntrack tracked it), where the
    # IPv6 proxier's rules let the client (inside loadBalancerSourceRanges)
    # through and DNATed it.
    assert {c["node"] for c in data["conntrack"] if c["original"]["dst"] == lb_ip} == {chosen}
    _check_dnat(data, {f"[{ip}]:8080" for ip in _web_ipv6(lab).values()}, chosen)
    assert data["outcome"] == "delivered" and data["masquerade"] is True
    assert any(h["namespace"] == balancer["netns"] for h in data["hops"])


def test_a_client_outside_the_ipv6_source_ranges_is_dropped(lab: LiveLab, tmp_path: Path) -> None:
    lb_ip = _v6_ingress(lab, "web-lb")
    data = _trace(lab, tmp_path, "blocked", f"[{lb_ip}]:80")
    # Dropped there, the flow still entered a node, which its frames show.
    assert data["loadBalancer"]["chosen"] in NODE_V6
    assert data["node"] == data["loadBalancer"]["chosen"]
    assert data["verdict"] == "DROP" and data["prediction"]["verdict"] == "DROP"
    assert data["answer"]["outcome"] == "timeout", data["answer"]
    assert prediction_differences(data) == []


def test_icmpv6_echo_to_a_cluster_ip(lab: LiveLab, tmp_path: Path) -> None:
    cluster_ip = _v6_cluster_ip(lab, "web-v6")
    source = _coredns(lab)
    data = _trace(lab, tmp_path, f"pod/{source}", cluster_ip, proto="icmp")
    first = data["hops"][0]["packet"]
    assert (first["proto"], first["icmpType"], first["dst"]) == ("icmp", 128, cluster_ip)
    # Refused either way, by an ICMPv6 destination unreachable (type 1).
    assert data["verdict"] == "REJECT" and data["outcome"] in ("refused", "rejected")
    errors = [h["packet"] for h in data["hops"] if h["leg"] == "reply"]
    assert errors and errors[-1]["icmpType"] == 1
    if lab.topology().proxy_mode == "nftables":
        # kube-proxy's cluster-ips-check rejects what no Service port takes
        # (pkg/proxy/nftables/proxier.go), as the offline walk says.
        assert prediction_differences(data) == []
        assert errors[-1]["icmpCode"] == 4  # port-unreachable
    else:
        # iptables mode has no such rule: the echo leaves for the lab's IPv6
        # router, which has no route to the service range (the offline walk
        # stops at the node, so it says ACCEPT).
        assert errors[-1]["src"] == "fd00:56::1" and errors[-1]["icmpCode"] == 0
    echoes = [p for p in _merged(data) if p.haslayer(ICMPv6EchoRequest)]
    assert echoes and echoes[0].dst == cluster_ip


def test_cli_family_ipv6_traces_a_named_service_at_its_ipv6_cluster_ip(
    lab: LiveLab, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(NETEMU), "trace", "--lab", lab.name, f"pod/{_coredns(lab)}", "default/web", "-6",
         "-o", "json", "--check", "--captures", str(tmp_path / "captures")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["packet"]["dst"] == _v6_cluster_ip(lab, "web")
    assert data["to"] == "Service default/web port 80/TCP (ClusterIP)"
    assert data["outcome"] == "delivered"
