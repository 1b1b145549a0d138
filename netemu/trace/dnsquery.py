"""The DNS query a UDP trace to a DNS port sends, and the account of its
answer the report carries.

A trace's generic datagram would tell nothing about a DNS server (it
answers a malformed query with FORMERR, or not at all); a real query shows
the Service doing its job. A DNS port is UDP 53, or a port named `dns` or
`dns-udp` (kubeadm's kube-dns Service names its UDP port `dns`) on the
Service or the pod the flow goes to.

The question: for a Service, its own name (`<name>.<namespace>.svc.<zone>`
A), which a cluster DNS answers with the ClusterIP the trace went to;
otherwise the zone's `dns-version.<zone>` TXT, which the Kubernetes DNS
specification (github.com/kubernetes/dns, docs/specification.md, 2.2)
asks every cluster DNS to serve.

Pure: builds and reads wire-format messages (dnspython); sending them is
netemu.kernel.probe's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from netemu.controlplane.state import ClusterState
from netemu.trace.flow import Flow

DNS_PORT = 53
DNS_PORT_NAMES = ("dns", "dns-udp")
DEFAULT_ZONE = "cluster.local"


@dataclass(frozen=True)
class DnsQuestion:
    name: str  # absolute, with the trailing dot
    rdtype: str  # "A", "TXT"

    def __str__(self) -> str:
        return f"{self.name} IN {self.rdtype}"


def port_names(state: ClusterState, flow: Flow) -> list[str]:
    """The names the flow's destination port has: the Service's port (by
    port, or by nodePort for a node address) or the pod's container port."""
    proto = flow.proto.upper()
    if flow.service is not None:
        namespace, _, name = flow.service.partition("/")
        return [
            p.name
            for s in state.services
            if s.metadata.name == name and (s.metadata.namespace or "default") == namespace
            for p in s.spec.ports
            if p.name and p.protocol.upper() == proto and flow.dport in (p.port, p.node_port)
        ]
    return [
        cp.name
        for pod in state.pods
        if pod.spec is not None and pod.status is not None and pod.status.pod_ip == flow.dst
        for c in pod.spec.containers
        for cp in c.ports
        if cp.name and cp.protocol.upper() == proto and cp.container_port == flow.dport
    ]


def dns_question(state: ClusterState, flow: Flow) -> DnsQuestion | None:
    """The question to ask when the flow is UDP to a DNS port, else None."""
    if flow.proto != "udp":
        return None
    if flow.dport != DNS_PORT and not set(port_names(state, flow)) & set(DNS_PORT_NAMES):
        return None
    zone = state.lab.spec.cluster_domain if state.lab is not None else DEFAULT_ZONE
    if flow.service is not None:
        namespace, _, name = flow.service.partition("/")
        return DnsQuestion(f"{name}.{namespace}.svc.{zone}.", "A")
    return DnsQuestion(f"dns-version.{zone}.", "TXT")


def query(question: DnsQuestion) -> dns.message.QueryMessage:
    """A recursive query, as a stub resolver (glibc, musl) sends it."""
    return dns.message.make_query(question.name, question.rdtype)


def read_answer(
    question: DnsQuestion, sent: dns.message.Message, data: bytes | None
) -> dict[str, Any]:
    """The report's `answer.dns`: the question, and the answer's rcode and
    records as dig prints them; `error` when what came back is not the
    answer to the query sent."""
    result: dict[str, Any] = {
        "question": str(question),
        "rcode": None,
        "answers": [],
        "error": None,
    }
    if data is None:
        result["error"] = "no answer"
        return result
    try:
        message = dns.message.from_wire(data)
    except dns.exception.DNSException as exc:
        result["error"] = f"not a DNS message ({type(exc).__name__}: {exc})"
        return result
    if not sent.is_response(message):
        result["error"] = f"a DNS message, but not the answer to query id {sent.id}"
        return result
    result["rcode"] = dns.rcode.to_text(message.rcode())
    result["answers"] = [
        f"{rrset.name} {rrset.ttl} {dns.rdataclass.to_text(rrset.rdclass)} "
        f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
        for rrset in message.answer
        for rdata in rrset
    ]
    return result
