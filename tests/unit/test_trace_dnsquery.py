"""A UDP trace to a DNS port sends a real DNS query: which flows count as
DNS (port 53, or a port named dns / dns-udp on the Service or pod), what
is asked, and how the answer is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from netemu.controlplane.state import ClusterState
from netemu.net.plan import plan_lab
from netemu.pipeline import load_cluster
from netemu.trace.dnsquery import DnsQuestion, dns_question, query, read_answer
from netemu.trace.flow import resolve_flow
from netemu.trace.topology import Topology

CONTROLPLANE = Path(__file__).parents[2] / "controlplane"

RESOLVER = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: resolver
spec:
  replicas: 1
  selector:
    matchLabels: {app: resolver}
  template:
    metadata:
      labels: {app: resolver}
    spec:
      containers:
        - name: resolver
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
          ports:
            - {name: dns-udp, containerPort: 5353, protocol: UDP}
            - {name: stats, containerPort: 9153, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: resolver
  namespace: default
spec:
  selector: {app: resolver}
  ports:
    - {name: dns, port: 5353, targetPort: dns-udp, protocol: UDP}
    - {name: stats, port: 9153, protocol: UDP}
    - {name: dns-tcp, port: 5353, protocol: TCP}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClusterState, Topology]:
    directory = tmp_path_factory.mktemp("lab") / "dnslab"
    shutil.copytree(CONTROLPLANE / "default", directory)
    (directory / "resolver.yaml").write_text(RESOLVER)
    state = load_cluster([directory])
    assert state.lab is not None
    topology = Topology.from_plan(plan_lab(state, "dnslab"), state, "nft")
    return state, topology


def question(
    lab: tuple[ClusterState, Topology], to: str, port: int | None, proto: str = "udp"
) -> DnsQuestion | None:
    state, topology = lab
    web = next(p.key for p in topology.pods.values() if "/web-" in p.key)
    return dns_question(state, resolve_flow(state, topology, web, to, port, proto))


def test_a_service_port_named_dns_is_asked_the_services_own_name(
    lab: tuple[ClusterState, Topology],
) -> None:
    assert question(lab, "resolver", 5353) == DnsQuestion(
        "resolver.default.svc.cluster.local.", "A"
    )


def test_a_pod_port_named_dns_udp_is_asked_the_zones_version(
    lab: tuple[ClusterState, Topology],
) -> None:
    _, topology = lab
    pod = next(p for p in topology.pods.values() if "/resolver-" in p.key)
    assert question(lab, pod.ip, 5353) == DnsQuestion("dns-version.cluster.local.", "TXT")


def test_udp_53_is_dns_whatever_its_name(lab: tuple[ClusterState, Topology]) -> None:
    node_ip = lab[1].nodes["node-1"].ip
    assert question(lab, node_ip, 53) == DnsQuestion("dns-version.cluster.local.", "TXT")


@pytest.mark.parametrize(
    ("to", "port", "proto"),
    [("resolver", 9153, "udp"), ("resolver", 5353, "tcp"), ("web", None, "tcp")],
)
def test_other_ports_and_tcp_send_the_usual_probe(
    lab: tuple[ClusterState, Topology], to: str, port: int | None, proto: str
) -> None:
    assert question(lab, to, port, proto) is None


def answer_to(sent: dns.message.Message, *records: str) -> bytes:
    response = dns.message.make_response(sent)
    response.flags |= dns.flags.AA
    for text in records:
        name, ttl, rdclass, rdtype, value = text.split(" ", 4)
        response.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, value))
    return response.to_wire()


def test_the_answer_is_read_as_dig_prints_it() -> None:
    asked = DnsQuestion("web.default.svc.cluster.local.", "A")
    sent = query(asked)
    assert sent.question[0].to_text() == "web.default.svc.cluster.local. IN A"
    assert sent.flags & dns.flags.RD
    data = answer_to(sent, "web.default.svc.cluster.local. 5 IN A 10.96.0.20")
    assert read_answer(asked, sent, data) == {
        "question": "web.default.svc.cluster.local. IN A",
        "rcode": "NOERROR",
        "answers": ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"],
        "error": None,
    }


def test_an_nxdomain_has_its_rcode_and_no_records() -> None:
    asked = DnsQuestion("nothing.default.svc.cluster.local.", "A")
    sent = query(asked)
    response = dns.message.make_response(sent)
    response.set_rcode(dns.rcode.NXDOMAIN)
    got = read_answer(asked, sent, response.to_wire())
    assert (got["rcode"], got["answers"], got["error"]) == ("NXDOMAIN", [], None)


def test_what_is_not_the_answer_to_the_query_is_said_so() -> None:
    asked = DnsQuestion("web.default.svc.cluster.local.", "A")
    sent = query(asked)
    other = query(asked)
    other.id = (sent.id + 1) % 65536
    stranger = answer_to(other, "web.default.svc.cluster.local. 5 IN A 10.96.0.20")
    assert read_answer(asked, sent, stranger)["error"] == (
        f"a DNS message, but not the answer to query id {sent.id}"
    )
    assert read_answer(asked, sent, b'{"pod": "web-1"}')["error"].startswith("not a DNS message")
    assert read_answer(asked, sent, None)["error"] == "no answer"
