"""The cluster DNS server's wire format and serving (netemu.node.dnsserver):
queries built and answers parsed with dnspython, the server on loopback
sockets in the test's own namespace (no root needed), and the addon objects
that run it in a live lab (netemu.controlplane.addons)."""

from __future__ import annotations

import socket
import struct
import textwrap
import urllib.request

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netemu.api.base import K8sModel
from netemu.api.config import Lab
from netemu.api.core import Service
from netemu.api.load import load_text
from netemu.controlplane import build_cluster_state
from netemu.controlplane.addons import (
    BUILTIN_DNS,
    BUILTIN_SERVER,
    BUILTIN_TEST,
    DNS_IMAGE,
    dns_service,
    live_addons,
)
from netemu.net.plan import plan_lab, plan_pod
from netemu.node.dnsrecords import ClusterDns
from netemu.node.dnsserver import DnsFeed, respond
from netemu.node.testserver import TestServers

CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: big, namespace: default}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-1
  namespace: default
  labels: {kubernetes.io/service-name: big}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
"""
BIG = 60  # 60 A records: far over 512 bytes, well under 64 KiB
CLUSTER += "".join(f"  - {{addresses: [10.244.0.{n}]}}\n" for n in range(2, 2 + BIG))


@pytest.fixture(scope="module")
def zone() -> ClusterDns:
    loaded, problems = load_text(textwrap.dedent(CLUSTER), "test.yaml")
    assert not problems
    objects: list[K8sModel] = [item.obj for item in loaded]
    return ClusterDns.from_state(build_cluster_state(objects))


def ask(
    zone: ClusterDns | None, name: str, qtype: str = "A", *, tcp: bool = False, **kw: object
) -> dns.message.Message:
    query = dns.message.make_query(name, qtype, **kw)  # type: ignore[arg-type]
    wire = respond(query.to_wire(), zone, tcp=tcp)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id and reply.flags & dns.flags.QR
    return reply


def test_a_query_round_trip(zone: ClusterDns) -> None:
    reply = ask(zone, "web.default.svc.cluster.local")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA  # no recursion: the lab has no upstream
    assert [str(r) for r in reply.answer] == ["web.default.svc.cluster.local. 5 IN A 10.96.0.50"]
    assert reply.question[0].name.to_text() == "web.default.svc.cluster.local."


def test_srv_with_additional_and_ptr(zone: ClusterDns) -> None:
    reply = ask(zone, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [str(r) for r in reply.answer] == [
        "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."
    ]
    assert [str(r) for r in reply.additional] == [
        "web.default.svc.cluster.local. 5 IN A 10.96.0.50"
    ]
    ptr = ask(zone, "50.0.96.10.in-addr.arpa", "PTR")
    assert [str(r) for r in ptr.answer] == [
        "50.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."
    ]


def test_nxdomain_and_nodata_carry_the_soa(zone: ClusterDns) -> None:
    missing = ask(zone, "nope.default.svc.cluster.local")
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer
    assert [r.rdtype for r in missing.authority] == [dns.rdatatype.SOA]
    nodata = ask(zone, "web.default.svc.cluster.local", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert [r.rdtype for r in nodata.authority] == [dns.rdatatype.SOA]


def test_outside_the_zones_is_refused_and_no_data_is_servfail(zone: ClusterDns) -> None:
    refused = ask(zone, "example.com")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA
    assert ask(None, "web.default.svc.cluster.local").rcode() == dns.rcode.SERVFAIL


def test_case_of_the_question_is_kept(zone: ClusterDns) -> None:
    reply = ask(zone, "WeB.DeFault.svc.Cluster.Local")
    assert reply.answer[0].name.to_text() == "WeB.DeFault.svc.Cluster.Local."


def test_big_answer_is_truncated_over_udp_and_whole_over_tcp(zone: ClusterDns) -> None:
    udp = ask(zone, "big.default.svc.cluster.local")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(zone, "big.default.svc.cluster.local", tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == BIG
    # With EDNS(0) the client's larger buffer is used, up to the server's 1232.
    edns = ask(zone, "big.default.svc.cluster.local", use_edns=0, payload=4096)
    assert edns.edns == 0 and edns.payload == 1232
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == BIG


def test_srv_too_big_for_udp_is_truncated_and_whole_over_tcp(zone: ClusterDns) -> None:
    name = "_http._tcp.big.default.svc.cluster.local"
    udp = ask(zone, name, "SRV", use_edns=0, payload=4096)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(zone, name, "SRV", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == BIG and len(tcp.additional) == BIG
    # The endpoint port (8080), not the Service's (80), for a headless Service.
    assert {rr.port for rr in tcp.answer[0]} == {8080}


def test_unknown_edns_version_is_badvers(zone: ClusterDns) -> None:
    reply = ask(zone, "web.default.svc.cluster.local", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS and not reply.answer


def test_what_is_no_query_gets_a_header_only_reply_or_none(zone: ClusterDns) -> None:
    # netemu trace's UDP payload: its "opcode" is 13, as miekg/dns answers: NOTIMP.
    wire = respond(b"netemu trace", zone)
    assert wire is not None and len(wire) == 12
    ident, flags, *counts = struct.unpack("!HHHHHH", wire)
    assert ident == struct.unpack("!H", b"ne")[0]
    assert flags & 0x8000 and flags & 0xF == dns.rcode.NOTIMP and counts == [0, 0, 0, 0]
    # A QUERY that does not parse: FORMERR with the same ID.
    garbage = struct.pack("!HHHHHH", 4242, 0x0100, 1, 0, 0, 0) + b"\x07broken"
    reply = respond(garbage, zone)
    assert reply is not None
    assert struct.unpack("!HH", reply[:4]) == (4242, 0x8000 | 0x0100 | dns.rcode.FORMERR)
    # Too short for a header, or a response: silence.
    assert respond(b"hi", zone) is None
    answer = ask(zone, "web.default.svc.cluster.local").to_wire()
    assert respond(answer, zone) is None


def test_a_question_count_other_than_one_is_formerr(zone: ClusterDns) -> None:
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    query.question.append(query.question[0])
    wire = respond(query.to_wire(), zone)
    assert wire is not None and dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR


def test_the_annotation_not_the_image_picks_the_dns_server() -> None:
    text = """
    apiVersion: netemu/v1alpha1
    kind: Lab
    metadata: {name: lab}
    spec:
      nodes: [{name: node-1, underlayIP: 192.168.56.11}]
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: mydns
      annotations: {netemu/builtin-server: dns}
    spec:
      containers:
        - {name: dns, image: busybox, ports: [{containerPort: 53, protocol: UDP}]}
        - {name: sidecar, image: busybox, command: [sleep, "1000"]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: plain}
    spec:
      containers:
        - {name: c, image: "registry.k8s.io/coredns/coredns:v1.11.1", ports: [{containerPort: 53}]}
    """
    loaded, problems = load_text(textwrap.dedent(text), "test.yaml")
    assert not problems, problems
    objects: list[K8sModel] = [item.obj for item in loaded]
    state = build_cluster_state(objects)
    node = plan_lab(state, "lab").nodes[0]
    plans = {p.metadata.name: plan_pod("lab", node, p) for p in state.pods}
    assert [(c.name, c.builtin) for c in plans["mydns"].containers] == [
        ("dns", BUILTIN_DNS),
        ("sidecar", BUILTIN_TEST),  # it has a command: the builtin does not matter
    ]
    assert [c.builtin for c in plans["plain"].containers] == [BUILTIN_TEST]


# -- serving on sockets ---------------------------------------------------------


def _bound() -> tuple[socket.socket, socket.socket, int]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp.listen(8)
    tcp.setblocking(False)
    udp.setblocking(False)
    return tcp, udp, port


def test_served_over_udp_and_tcp_with_several_messages_per_connection(
    servers: TestServers, zone: ClusterDns
) -> None:
    tcp, udp, port = _bound()
    feed = DnsFeed()
    servers.serve_dns("default/coredns/coredns", feed, [tcp], [udp])
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    # Served before the first records arrive: SERVFAIL, not silence.
    assert dns.query.udp(query, "127.0.0.1", port=port, timeout=2).rcode() == dns.rcode.SERVFAIL
    feed.update(zone)
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    assert [rr.to_text() for rr in reply.answer[0]] == ["10.96.0.50"]

    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        first = dns.message.make_query("web.default.svc.cluster.local", "A")
        second = dns.message.make_query("nope.default.svc.cluster.local", "A")
        # Both queries in one write, the second split over two writes' worth:
        # the server frames by the length prefix, not by segments.
        conn.sendall(first.to_wire(prepend_length=True) + second.to_wire(prepend_length=True))
        replies = []
        for _ in range(2):
            length = struct.unpack("!H", _read(conn, 2))[0]
            replies.append(dns.message.from_wire(_read(conn, length)))
        assert [r.id for r in replies] == [first.id, second.id]
        assert [r.rcode() for r in replies] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN]

        servers.stop_serving("default/coredns/coredns")
        # Stopping closes the open connection too.
        assert conn.recv(1) == b""
    assert servers.serving() == []


def test_metrics_count_what_was_answered_in_coredns_names(
    servers: TestServers, zone: ClusterDns
) -> None:
    tcp, udp, port = _bound()
    metrics_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    metrics_sock.bind(("127.0.0.1", 0))
    metrics_sock.listen(8)
    metrics_sock.setblocking(False)
    metrics_port = metrics_sock.getsockname()[1]
    feed = DnsFeed()
    feed.update(zone)
    servers.serve_dns("kube-system/coredns/coredns", feed, [tcp, metrics_sock], [udp], metrics_port)
    try:
        for name in ("web.default.svc.cluster.local", "nope.default.svc.cluster.local"):
            dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
        srv = dns.message.make_query("_http._tcp.web.default.svc.cluster.local", "SRV")
        dns.query.tcp(srv, "127.0.0.1", port=port, timeout=2)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as got:
            assert got.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = got.read().decode()
    finally:
        servers.stop_serving("kube-system/coredns/coredns")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    common = (("server", "dns://:53"), ("view", ""), ("zone", "."))

    def requests(proto: str, qtype: str) -> float:
        labels = (("family", "1"), ("proto", proto), *common[:1], ("type", qtype), *common[1:])
        return samples[("coredns_dns_requests_total", labels)]

    def responses(rcode: str) -> float:
        labels = (("plugin", "kubernetes"), ("rcode", rcode), *common)
        return samples[("coredns_dns_responses_total", labels)]

    assert requests("udp", "A") == 2 and requests("tcp", "SRV") == 1
    assert responses("NOERROR") == 2 and responses("NXDOMAIN") == 1


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


# -- the addon objects ---------------------------------------------------------


def _lab(*spec: str) -> Lab:
    text = (
        "apiVersion: netemu/v1alpha1\nkind: Lab\nmetadata: {name: lab}\nspec:\n"
        "  nodes: [{name: node-1, underlayIP: 192.168.56.11}]\n"
    ) + "".join(f"  {line}\n" for line in spec)
    loaded, problems = load_text(text, "lab.yaml")
    assert not problems, problems
    lab = loaded[0].obj
    assert isinstance(lab, Lab)
    return lab


def test_dns_addon_is_kube_dns_at_the_cluster_dns_ip() -> None:
    lab = _lab()
    objects = live_addons(lab)
    state = build_cluster_state([lab, *objects])
    svc = next(s for s in state.services if s.metadata.name == "kube-dns")
    assert (svc.metadata.namespace, svc.spec.cluster_ip) == ("kube-system", "10.96.0.10")
    # kubeadm's three ports, the metrics one with its Prometheus annotations.
    assert [(p.name, p.port, p.protocol) for p in svc.spec.ports] == [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]
    assert svc.metadata.annotations == {
        "prometheus.io/port": "9153",
        "prometheus.io/scrape": "true",
    }
    (pod,) = state.pods
    assert pod.metadata.namespace == "kube-system" and pod.metadata.name
    assert pod.metadata.name.startswith("coredns-")
    assert pod.metadata.labels["k8s-app"] == "kube-dns"
    # The pod is kube-dns's endpoint, and its container runs the DNS server.
    (eps,) = [e for e in state.endpoint_slices if e.metadata.namespace == "kube-system"]
    assert [a for ep in eps.endpoints for a in ep.addresses] == [pod.status.pod_ip]
    plan = plan_lab(state, "lab")
    (container,) = plan_pod("lab", plan.nodes[0], pod).containers
    assert container.argv == () and container.builtin == BUILTIN_DNS
    assert pod.metadata.annotations == {BUILTIN_SERVER: BUILTIN_DNS}
    assert pod.spec.containers[0].image == DNS_IMAGE
    assert container.ports == ((53, "UDP"), (53, "TCP"), (9153, "TCP"))


def test_dns_addon_follows_the_lab() -> None:
    assert live_addons(_lab("dns: {enabled: false}")) == []
    lab = _lab("serviceCIDR: 10.100.0.0/16", "clusterDNS: 10.100.0.10")
    svc = dns_service(lab)
    assert isinstance(svc, Service) and svc.spec.cluster_ip == "10.100.0.10"
    problems = load_text(
        "apiVersion: netemu/v1alpha1\nkind: Lab\nmetadata: {name: x}\n"
        "spec: {nodes: [], dns: {enabled: false, other: 1}}\n",
        "x.yaml",
    )[1]
    assert problems  # unknown fields are errors
