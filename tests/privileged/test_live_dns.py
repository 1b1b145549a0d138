"""Cluster DNS in live labs: the kube-dns addon (a CoreDNS-image pod behind
`kube-system/kube-dns` at 10.96.0.10) answers pods through kube-proxy's
rules, as the Kubernetes DNS specification defines the records.

From a pod: the libc resolver (`getent hosts`, `curl`) with the pod's
resolv.conf (search path, ndots:5) finds Services by short, namespaced and
full names; a headless Service resolves to its pods, a StatefulSet pod to
its own IP; SRV, PTR, NXDOMAIN and TCP are checked with dnspython over a
socket opened in the pod's namespace; the query is DNATed to the DNS pod
(the node's conntrack table, and `netemu trace`); records follow changes
applied to the running lab. controlplane/default and controlplane/statefulset
are each up once for the module; a Lab with `dns: {enabled: false}` has no
addon.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from live_helpers import CONTROLPLANE, cluster_ip, endpoint_ips, lab_name, running_lab, service

from netemu.api.core import Service
from netemu.kernel import netns
from netemu.kernel.conntrack import KernelConntrack
from netemu.lab import LiveLab

DNS_IP = "10.96.0.10"
DOMAIN = "cluster.local"
TIMEOUT = 2.0
RESOLV_CONF = (
    f"search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\nnameserver {DNS_IP}\noptions ndots:5\n"
)
# The trace reads the kernel's verdicts with these (./setup.sh installs them).
TRACE_TOOLS = ("xtables-monitor", "conntrack")


@pytest.fixture(scope="module")
def default_lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("dns-default")) as lab:
        yield lab


@pytest.fixture(scope="module")
def sts_lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "statefulset"], lab_name("dns-sts")) as lab:
        yield lab


def pods(lab: LiveLab, prefix: str) -> dict[str, dict[str, Any]]:
    """The lab's pods whose `namespace/name` starts with `prefix`, by key."""
    return {k: p for k, p in sorted(lab.info()["pods"].items()) if k.startswith(prefix)}


def first_pod(lab: LiveLab, prefix: str) -> tuple[str, dict[str, Any]]:
    return next(iter(pods(lab, prefix).items()))


def dns_pod(lab: LiveLab) -> dict[str, Any]:
    (pod,) = pods(lab, "kube-system/coredns-").values()
    return pod


def query(
    lab: LiveLab, pod: str, name: str, qtype: str = "A", *, tcp: bool = False
) -> dns.message.Message:
    """One DNS query to the cluster DNS IP from inside `pod`'s namespace."""
    netns_name = lab.info()["pods"][pod]["netns"]
    message = dns.message.make_query(name, qtype)
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    sock = netns.open_socket(netns_name, socket.AF_INET, kind)
    try:
        if tcp:
            sock.settimeout(TIMEOUT)
            sock.connect((DNS_IP, 53))
            return dns.query.tcp(message, DNS_IP, timeout=TIMEOUT, sock=sock)
        return dns.query.udp(message, DNS_IP, timeout=TIMEOUT, sock=sock)
    finally:
        sock.close()


def rdata(reply: dns.message.Message) -> list[str]:
    return sorted(in_order(reply))


def in_order(reply: dns.message.Message) -> list[str]:
    """The answer's records as the server sent them."""
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def getent(lab: LiveLab, pod: str, name: str) -> list[list[str]]:
    """`getent hosts NAME` in the pod: its lines, split; [] when not found."""
    done = lab.exec(pod, ["getent", "hosts", name], timeout=15)
    if done.returncode == 2:  # "key could not be found"
        return []
    assert done.returncode == 0, f"getent hosts {name}: rc {done.returncode} {done.stderr}"
    return [line.split() for line in done.stdout.splitlines()]


# -- the addon ----------------------------------------------------------------------


def test_kube_dns_service_fronts_the_coredns_pod(default_lab: LiveLab) -> None:
    state = default_lab.state()
    svc = service(state, "kube-dns", "kube-system")
    assert svc["spec"]["clusterIP"] == DNS_IP
    assert {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    }
    assert endpoint_ips(state, "kube-dns", "kube-system") == {dns_pod(default_lab)["ip"]}


def test_kube_dns_metrics_count_the_queries(default_lab: LiveLab) -> None:
    """GET /metrics on kubeadm's port 9153, through the Service, in CoreDNS's
    names; the counters grow with the queries answered."""
    key, _ = first_pod(default_lab, "default/web-")
    url = f"http://{DNS_IP}:9153/metrics"

    def requests_total() -> float:
        done = default_lab.exec(key, ["curl", "-sS", "-m", "5", url], timeout=15)
        assert done.returncode == 0, done.stderr
        total = 0.0
        for line in done.stdout.splitlines():
            udp_a = 'proto="udp"' in line and 'type="A"' in line
            if line.startswith("coredns_dns_requests_total{") and udp_a:
                total += float(line.rsplit(" ", 1)[1])
        assert "# TYPE coredns_dns_responses_total counter" in done.stdout
        return total

    before = requests_total()
    for _ in range(3):
        assert query(default_lab, key, f"web.default.svc.{DOMAIN}").rcode() == dns.rcode.NOERROR
    assert requests_total() == before + 3


def test_every_pod_has_the_cluster_resolv_conf(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    done = default_lab.exec(key, ["cat", "/etc/resolv.conf"])
    assert done.returncode == 0 and done.stdout == RESOLV_CONF


# -- the libc resolver, as programs in a pod use it ---------------------------------------


@pytest.mark.parametrize(
    "name", ["web", "web.default", "web.default.svc", f"web.default.svc.{DOMAIN}"]
)
def test_getent_resolves_a_service_to_its_cluster_ip(default_lab: LiveLab, name: str) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    ip = cluster_ip(default_lab.state(), "web")
    assert getent(default_lab, key, name) == [[ip, f"web.default.svc.{DOMAIN}"]]


def test_curl_by_service_name(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    done = default_lab.exec(key, ["curl", "-sS", "-m", "5", "http://web/"])
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert f"default/{answer['pod']}" in pods(default_lab, "default/web-")


def test_a_service_in_another_namespace_needs_its_namespace(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    assert getent(default_lab, key, "kube-dns") == []
    assert getent(default_lab, key, "kube-dns.kube-system") == [
        [DNS_IP, f"kube-dns.kube-system.svc.{DOMAIN}"]
    ]


def test_missing_names_are_nxdomain(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    assert getent(default_lab, key, "nope") == []
    reply = query(default_lab, key, f"nope.default.svc.{DOMAIN}")
    assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]
    assert query(default_lab, key, "example.com").rcode() == dns.rcode.REFUSED


# -- record types, over UDP and TCP ----------------------------------------------------


def test_srv_for_a_named_port(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    reply = query(default_lab, key, f"_http._tcp.web.default.svc.{DOMAIN}", "SRV")
    assert rdata(reply) == [f"0 100 80 web.default.svc.{DOMAIN}."]
    additional = sorted(rr.to_text() for rrset in reply.additional for rr in rrset)
    assert additional == [cluster_ip(default_lab.state(), "web")]


def test_ptr_for_a_cluster_ip_and_a_pod_ip(default_lab: LiveLab) -> None:
    key, pod = first_pod(default_lab, "default/web-")
    ip = cluster_ip(default_lab.state(), "web")
    reverse = ipaddress.ip_address(ip).reverse_pointer
    assert rdata(query(default_lab, key, reverse, "PTR")) == [f"web.default.svc.{DOMAIN}."]
    dashed = pod["ip"].replace(".", "-")
    pod_reverse = ipaddress.ip_address(pod["ip"]).reverse_pointer
    # One per Service the pod backs, in Service name order.
    assert in_order(query(default_lab, key, pod_reverse, "PTR")) == [
        f"{dashed}.{svc}.default.svc.{DOMAIN}." for svc in ("web", "web-local", "web-nodeport")
    ]
    # The libc resolver's reverse look-up takes the first (from another pod:
    # a pod's own address is in its /etc/hosts).
    other = list(pods(default_lab, "default/web-"))[1]
    assert getent(default_lab, other, pod["ip"]) == [
        [pod["ip"], f"{dashed}.web.default.svc.{DOMAIN}"]
    ]


def test_queries_over_tcp(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    reply = query(default_lab, key, f"web.default.svc.{DOMAIN}", tcp=True)
    assert rdata(reply) == [cluster_ip(default_lab.state(), "web")]
    missing = query(default_lab, key, f"nope.default.svc.{DOMAIN}", tcp=True)
    assert missing.rcode() == dns.rcode.NXDOMAIN


# -- the query crosses kube-proxy's rules ------------------------------------------------


@pytest.mark.skipif(shutil.which("conntrack") is None, reason="conntrack is missing")
def test_the_query_is_dnated_to_the_dns_pod(default_lab: LiveLab) -> None:
    key, pod = first_pod(default_lab, "default/web-")
    assert getent(default_lab, key, "web")
    node_netns = default_lab.info()["nodes"][pod["node"]]["netns"]
    entries = [
        e
        for e in KernelConntrack(node_netns).list_udp()
        if (e.orig_dst, e.orig_dport) == (DNS_IP, 53)
    ]
    assert entries and {e.reply_src for e in entries} == {dns_pod(default_lab)["ip"]}


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TRACE_TOOLS),
    reason=f"the trace needs {' and '.join(TRACE_TOOLS)} (./setup.sh installs them)",
)
def test_trace_shows_a_udp_flow_dnated_to_the_dns_pod(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    target = dns_pod(default_lab)
    report = default_lab.trace(key, "kube-system/kube-dns", proto="udp", pcap=False)
    assert report.flow.dst == DNS_IP and report.flow.dport == 53
    assert report.verdict == "DNAT" and report.endpoints == [f"{target['ip']}:53"]
    # The trace's datagram is no DNS query; the server answers it (NOTIMP)
    # as CoreDNS would, so the flow is delivered and answered.
    assert report.outcome == "delivered"
    assert report.delivered_to is not None and "coredns-" in report.delivered_to
    assert any(h.action == "DNAT" and h.translated == f"{target['ip']}:53" for h in report.hops)


# -- records follow the control plane ---------------------------------------------------


def test_records_follow_changes(default_lab: LiveLab) -> None:
    key, _ = first_pod(default_lab, "default/web-")
    name = f"later.default.svc.{DOMAIN}"
    assert query(default_lab, key, name).rcode() == dns.rcode.NXDOMAIN
    later = Service.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "later", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 81, "targetPort": 8080}]},
        }
    )
    default_lab.apply([later])
    try:
        # The reply to `apply` comes after the DNS records changed.
        assert rdata(query(default_lab, key, name)) == [cluster_ip(default_lab.state(), "later")]
    finally:
        default_lab.delete([("Service", "default", "later")])
    assert query(default_lab, key, name).rcode() == dns.rcode.NXDOMAIN


# -- headless Service and StatefulSet pods -------------------------------------------


def test_headless_service_resolves_to_its_pods(sts_lab: LiveLab) -> None:
    key, _ = first_pod(sts_lab, "default/db-")
    db_ips = sorted(p["ip"] for p in pods(sts_lab, "default/db-").values())
    reply = query(sts_lab, key, f"db.default.svc.{DOMAIN}")
    assert rdata(reply) == db_ips
    # getent prints every address of the name.
    assert sorted(line[0] for line in getent(sts_lab, key, "db")) == db_ips


def test_statefulset_pods_have_their_own_names(sts_lab: LiveLab) -> None:
    key, _ = first_pod(sts_lab, "default/db-")
    for pod_key, pod in pods(sts_lab, "default/db-").items():
        name = pod_key.split("/")[1]
        fqdn = f"{name}.db.default.svc.{DOMAIN}"
        assert getent(sts_lab, key, f"{name}.db") == [[pod["ip"], fqdn]]
        # The pod's own FQDN comes from its /etc/hosts, where kubelet puts
        # it with the short hostname as an alias (managedHostsFileContent).
        own = [name] if pod_key == key else []
        assert getent(sts_lab, key, fqdn) == [[pod["ip"], fqdn, *own]]
        reverse = ipaddress.ip_address(pod["ip"]).reverse_pointer
        assert in_order(query(sts_lab, key, reverse, "PTR"))[0] == f"{fqdn}."
    srv = query(sts_lab, key, f"_pg._tcp.db.default.svc.{DOMAIN}", "SRV", tcp=True)
    assert rdata(srv) == [f"0 33 5432 db-{n}.db.default.svc.{DOMAIN}." for n in range(3)]


# -- a Lab without the addon ------------------------------------------------------


def test_a_lab_can_turn_the_dns_addon_off(tmp_path: Path) -> None:
    target = tmp_path / "no-dns"
    shutil.copytree(CONTROLPLANE / "default", target)
    lab_yaml = target / "lab.yaml"
    text = lab_yaml.read_text()
    assert "\nspec:\n" in text
    lab_yaml.write_text(text.replace("\nspec:\n", "\nspec:\n  dns: {enabled: false}\n", 1))
    with running_lab([target], lab_name("dns-off")) as lab:
        state = lab.state()
        assert not [s for s in state["services"] if s["metadata"]["name"] == "kube-dns"]
        assert not pods(lab, "kube-system/")
