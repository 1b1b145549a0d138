"""A dual-stack lab live (controlplane/dualstack, IPv4 first): pods and nodes
have an address of each family, flannel carries IPv6 over flannel-v6.1, and
each node runs kube-proxy's IPv6 proxier on ip6tables next to the IPv4 one.
Pods reach every Service by each of its clusterIPs, an IPv6-only Service by
its IPv6 one, and the external client reaches NodePorts over IPv6 with
externalTrafficPolicy Cluster (masqueraded) and Local (its own address kept,
a node without a local endpoint drops).

The lab is up once for the module and always taken down."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest
from live_helpers import (
    CONTROLPLANE,
    SPREAD_REQUESTS,
    answer_of,
    answered_by,
    client_host,
    client_netns,
    lab_name,
    pod_netns,
    running_lab,
    v6,
    web_pods,
)

from netemu.kernel import netns
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

CLIENT_V6 = "fd00:56::20"
NODE_V6 = {"node-1": "fd00:56::11", "node-2": "fd00:56::12"}
DROP_TIMEOUT = 1.0


@pytest.fixture(scope="module", params=["vxlan", "host-gw"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    # Over each overlay: flannel-v6.1 (vxlan), or routes via the peers' IPv6
    # underlay addresses (host-gw).
    overlay = str(request.param)
    source = CONTROLPLANE / "dualstack"
    if overlay == "vxlan":
        paths = [source]
    else:
        target = tmp_path_factory.mktemp("dualstack-host-gw")
        shutil.copytree(source, target, dirs_exist_ok=True)
        text = (target / "lab.yaml").read_text()
        assert "overlay: vxlan" in text
        (target / "lab.yaml").write_text(text.replace("overlay: vxlan", "overlay: host-gw"))
        paths = [target]
    with running_lab(paths, lab_name(f"dual-{overlay}")) as live:
        yield live


def cluster_ips(lab: LiveLab, name: str) -> list[str]:
    for svc in lab.state()["services"]:
        if svc["metadata"]["name"] == name:
            return list(svc["spec"]["clusterIPs"])
    raise AssertionError(f"no Service {name}")


def pod_ip6(pod: dict[str, Any]) -> str:
    return str(next(p["ip"] for p in pod["status"]["podIPs"] if v6(p["ip"])))


def test_pods_and_nodes_have_an_address_of_each_family(lab: LiveLab) -> None:
    for pod in web_pods(lab):
        ips = [p["ip"] for p in pod["status"]["podIPs"]]
        assert [v6(ip) for ip in ips] == [False, True]
        done = subprocess.run(
            ["ip", "-n", pod_netns(lab, pod), "-6", "-o", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"inet6 {ips[1]}/64" in done.stdout


@pytest.mark.parametrize("service", ["web", "web-nodeport", "web-local"])
def test_a_pod_reaches_a_dual_stack_service_by_each_cluster_ip(lab: LiveLab, service: str) -> None:
    source = web_pods(lab)[0]
    names = {p["metadata"]["name"] for p in web_pods(lab)}
    for vip in cluster_ips(lab, service):
        got = [http_get(pod_netns(lab, source), vip, 80) for _ in range(SPREAD_REQUESTS)]
        assert answered_by(got) == names, f"{service} {vip}"


def test_a_pod_reaches_the_ipv6_only_service(lab: LiveLab) -> None:
    (vip,) = cluster_ips(lab, "web-v6")
    assert v6(vip)
    source, other = web_pods(lab)
    got = [http_get(pod_netns(lab, source), vip, 80) for _ in range(SPREAD_REQUESTS)]
    assert answered_by(got) == {source["metadata"]["name"], other["metadata"]["name"]}
    # The other pod sees the source pod's own IPv6 address: not masqueraded.
    seen = {
        client_host(r) for r in got if answer_of(r, "request").pod != source["metadata"]["name"]
    }
    assert seen == {pod_ip6(source)}


def test_the_client_reaches_a_nodeport_over_ipv6_cluster_policy(lab: LiveLab) -> None:
    names = {p["metadata"]["name"] for p in web_pods(lab)}
    for node, ip in NODE_V6.items():
        got = [http_get(client_netns(lab), ip, 30080) for _ in range(SPREAD_REQUESTS)]
        assert answered_by(got) == names, node
        # externalTrafficPolicy Cluster: the client is masqueraded.
        assert CLIENT_V6 not in {client_host(r) for r in got}


def test_the_client_reaches_a_local_nodeport_over_ipv6_keeping_its_address(
    lab: LiveLab,
) -> None:
    for pod in web_pods(lab):
        node = str(pod["spec"]["nodeName"])
        got = [http_get(client_netns(lab), NODE_V6[node], 30081) for _ in range(4)]
        assert answered_by(got) == {pod["metadata"]["name"]}
        assert {client_host(r) for r in got} == {CLIENT_V6}


def test_the_ipv6_rules_are_kube_proxys_ipv6_proxier(lab: LiveLab) -> None:
    netns = str(lab.info()["nodes"]["node-1"]["netns"])
    saved = subprocess.run(
        ["ip", "netns", "exec", netns, "ip6tables-nft-save", "-t", "nat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "! -d ::1/128" in saved and "-j KUBE-NODEPORTS" in saved
    assert "127.0.0.0/8" not in saved


def dns_query(netns_name: str, server: str, name: str, qtype: str) -> list[str]:
    """One UDP DNS query from inside `netns_name`; the answer's records."""
    message = dns.message.make_query(name, qtype)
    sock = netns.open_socket(
        netns_name, socket.AF_INET6 if v6(server) else socket.AF_INET, socket.SOCK_DGRAM
    )
    try:
        reply = dns.query.udp(message, server, timeout=2.0, sock=sock)
    finally:
        sock.close()
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


def test_cluster_dns_answers_aaaa_and_serves_over_ipv6(lab: LiveLab) -> None:
    # The DNS addon answers a dual-stack Service's A and AAAA records, and its
    # pod serves DNS on its IPv6 address too.
    v4_ip, v6_ip = cluster_ips(lab, "web")
    source = pod_netns(lab, web_pods(lab)[0])
    name = "web.default.svc.cluster.local."
    assert dns_query(source, "10.96.0.10", name, "A") == [v4_ip]
    assert dns_query(source, "10.96.0.10", name, "AAAA") == [v6_ip]
    (coredns,) = [
        p
        for p in lab.state()["pods"]
        if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"
    ]
    assert dns_query(source, pod_ip6(coredns), name, "AAAA") == [v6_ip]


def test_scaling_up_resyncs_both_families(lab: LiveLab) -> None:
    # Last in the module: it leaves three web pods. Once `scale` returns the
    # new pod has its IPv6 address and both proxiers' rules send to it.
    lab.scale("Deployment", "default", "web", 3)
    pods = [p for p in lab.state()["pods"] if p["metadata"].get("labels", {}).get("app") == "web"]
    assert len(pods) == 3
    source = sorted(pods, key=lambda p: str(p["metadata"]["name"]))[0]
    names = {p["metadata"]["name"] for p in pods}
    for vip in cluster_ips(lab, "web"):
        got = [http_get(pod_netns(lab, source), vip, 80) for _ in range(SPREAD_REQUESTS)]
        assert answered_by(got) == names, vip
