"""The trace report: from what the kernel showed while one flow ran (frames
captured in every namespace it could cross, each node's rule trace and
conntrack events) to an ordered list of hops, a verdict and a summary line.

The report is modelled on Antrea Traceflow's observations: each hop names
where the packet was seen (node, namespace, interface, direction), the
packet as seen there, and the component and action that moved it on, with
the rule that decided it. NAT is stated from the kernel's own tables: the
rule trace names the DNAT/MASQUERADE rule, conntrack gives the tuples.

The fields the offline tracer has too (node, packet, localOrigin, verdict,
endpoints, masquerade, rules) have the same names and meaning in both
reports (docs/trace-json.md).

Pure: builds data from data; must not touch the kernel or the disk.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from netemu.kernel.capture import Frame
from netemu.kernel.owner import NAME_MAX
from netemu.trace.ctevents import ConntrackEvent, FlowTuple
from netemu.trace.flow import Flow
from netemu.trace.nftrace import TracedPacket, rule_target
from netemu.trace.packets import Decoded, IpPacket, decode, identity
from netemu.trace.topology import Topology

# Actions, as a hop report names them.
FORWARDED = "Forwarded"
ROUTED = "Routed"
DNAT = "DNAT"
SNAT = "SNAT"
MASQUERADE = "Masquerade"
UN_DNAT = "Un-DNAT"
UN_SNAT = "Un-SNAT"
ENCAPSULATED = "Encapsulated"
DECAPSULATED = "Decapsulated"
DELIVERED = "Delivered"
DROPPED = "Dropped"
REJECTED = "Rejected"

REQUEST, REPLY = "request", "reply"
TRACE_SOURCE = "TRACE"

Key = tuple[object, ...]


@dataclass(frozen=True)
class RuleRef:
    """A rule as `iptables-save` prints it: table, chain and `-A CHAIN args`."""

    table: str
    chain: str
    rule: str

    @property
    def target(self) -> str | None:
        found = rule_target(self.rule)
        return found[1] if found else None

    def to_dict(self) -> dict[str, str]:
        return {"table": self.table, "chain": self.chain, "rule": self.rule}


@dataclass(frozen=True)
class Hop:
    leg: str  # "request" or "reply"
    node: str | None
    site: str  # "pod default/web-1", "node node-1", "client client", "underlay"
    netns: str
    interface: str | None  # None for the decisions netfilter takes inside a node
    direction: str | None  # "in" or "out"
    component: str
    action: str
    packet: IpPacket
    tunnel: dict[str, Any] | None = None
    translated: str | None = None  # the new address:port of a NAT hop
    rule: RuleRef | None = None
    detail: str = ""
    timestamp: float | None = None
    pcap: str | None = None

    def to_dict(self) -> dict[str, Any]:
        p = self.packet
        return {
            "leg": self.leg,
            "node": self.node,
            "site": self.site,
            "namespace": self.netns,
            "interface": self.interface,
            "direction": self.direction,
            "component": self.component,
            "action": self.action,
            "packet": {
                "proto": p.proto,
                "src": p.src,
                "sport": p.sport,
                "dst": p.dst,
                "dport": p.dport,
                "ttl": p.ttl,
                "tcpFlags": p.tcp_flags,
                "icmpType": p.icmp_type,
                "icmpCode": p.icmp_code,
                "summary": p.summary(),
            },
            "tunnel": self.tunnel,
            "translated": self.translated,
            "rule": self.rule.to_dict() if self.rule else None,
            "detail": self.detail or None,
            "timestamp": self.timestamp,
            "pcap": self.pcap,
        }


@dataclass(frozen=True)
class Answer:
    """What the sending socket saw: outcome, and the test server's own
    account of the connection (which pod answered, which client it saw)."""

    outcome: str  # answered | refused | timeout | unreachable | error
    reply: Mapping[str, Any] | None = None
    detail: str = ""
    elapsed: float = 0.0
    # A trace to a DNS port: the query sent and its answer
    # (netemu.trace.dnsquery.read_answer); None for every other flow.
    dns: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Evidence:
    """Everything the kernel showed during one traced flow."""

    sport: int  # the source port (the ICMP echo id for icmp)
    frames: Sequence[Frame]
    traces: Mapping[str, Sequence[TracedPacket]] = field(default_factory=dict)
    conntrack: Mapping[str, Sequence[ConntrackEvent]] = field(default_factory=dict)
    rules_source: str = TRACE_SOURCE


@dataclass
class TraceReport:
    id: str
    flow: Flow
    sport: int
    lab: str
    # delivered | refused | rejected | dropped | unanswered (docs/trace-json.md)
    outcome: str
    verdict: str  # DNAT | ACCEPT | NONE | REJECT | DROP, as the offline tracer says
    endpoints: list[str]
    masquerade: bool
    rules: list[RuleRef]
    rules_source: str
    hops: list[Hop]
    conntrack: list[dict[str, Any]]
    delivered_to: str | None
    seen_client: str | None
    answer: Answer
    prediction: dict[str, Any] | None = None
    pcaps: dict[str, Any] | None = None
    elapsed: float = 0.0
    # The emulated cloud load balancer's hop (netemu.trace.live): which
    # nodes were healthy, which one the flow was given and why.
    load_balancer: dict[str, Any] | None = None
    # The flow's frames, in time order: its packets in every form NAT and
    # tunnels gave them, and ICMP errors about them (what the pcaps hold).
    frames: list[Frame] = field(default_factory=list)
    # One number per frame of `frames`, from 1 in the order the packets were
    # first seen: the frames of one packet (at every capture point, through
    # NAT and tunnels, as the hops follow it) share it.
    packet_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        flow = self.flow
        port = f":{self.sport}" if flow.proto != "icmp" else ""
        dport = f":{flow.dport}" if flow.proto != "icmp" else ""
        source = flow.source.name.split("/")[-1]
        parts = [f"{source} {flow.source.ip}{port} → {flow.dst}{dport}"]
        for hop in self.hops:
            if hop.leg != REQUEST:
                continue
            if hop.action == DNAT:
                chains = _service_chains(self.rules)
                parts.append(f"DNAT {hop.translated}" + (f" ({chains})" if chains else ""))
            elif hop.action in (SNAT, MASQUERADE):
                parts.append(f"SNAT {(hop.translated or '').rsplit(':', 1)[0]}")
            elif hop.action == ENCAPSULATED and hop.tunnel:
                parts.append(f"VXLAN {hop.tunnel['src']} → {hop.tunnel['dst']}")
            elif hop.action in (DROPPED, REJECTED):
                by = f" by {hop.rule.table} {hop.rule.chain}" if hop.rule else ""
                why = _rule_comment(hop.rule.rule) if hop.rule else None
                by += f" ({why})" if why else ""
                parts.append(f"{hop.action.lower()} on {hop.node or hop.site}{by}")
        if self.outcome == "delivered" and self.delivered_to:
            seen = f" (seen client {self.seen_client})" if self.seen_client else ""
            parts.append(f"delivered to {self.delivered_to}{seen}")
        elif self.outcome == "refused" and self.delivered_to:
            # Reached the destination, whose kernel refused: no socket there.
            parts.append(f"refused by {self.delivered_to} (nothing listens)")
        elif self.outcome == "rejected" and self.delivered_to:
            parts.append(f"rejected by {self.delivered_to}")
        elif self.outcome == "refused":
            parts.append("refused")
        elif self.outcome == "unanswered":
            parts.append("no answer")
        return " ⇒ ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        flow = self.flow
        return {
            "id": self.id,
            "lab": self.lab,
            "node": flow.entry_node,
            "packet": {
                "src": flow.source.ip,
                "sport": self.sport,
                "dst": flow.dst,
                "dport": flow.dport,
                "proto": flow.proto,
            },
            "from": {
                "kind": flow.source.kind,
                "name": flow.source.name,
                "namespace": flow.source.netns,
            },
            "to": flow.target,
            "service": flow.service,
            "localOrigin": flow.local_origin,
            "verdict": self.verdict,
            "endpoints": self.endpoints,
            "masquerade": self.masquerade,
            "rules": [r.to_dict() for r in self.rules],
            "rulesSource": self.rules_source,
            "outcome": self.outcome,
            "deliveredTo": self.delivered_to,
            "seenClient": self.seen_client,
            "answer": {
                "outcome": self.answer.outcome,
                "reply": dict(self.answer.reply) if self.answer.reply else None,
                "detail": self.answer.detail or None,
                "dns": dict(self.answer.dns) if self.answer.dns is not None else None,
            },
            "summary": self.summary(),
            "hops": [h.to_dict() for h in self.hops],
            "conntrack": self.conntrack,
            "prediction": self.prediction,
            "loadBalancer": self.load_balancer,
            "pcaps": self.pcaps,
            "elapsed": round(self.elapsed, 3),
        }


def _rule_comment(rule: str) -> str | None:
    """The `--comment` of a rule as iptables-save prints it, e.g.
    "default/empty:http has no endpoints"."""
    try:
        words = shlex.split(rule)
    except ValueError:
        return None
    for index, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[index + 1]
    return None


def _service_chains(rules: Sequence[RuleRef]) -> str:
    """The Service's and the endpoint's chain the flow went through:
    KUBE-SVC-/KUBE-SVL- and KUBE-SEP- in iptables mode; kube-proxy's
    service-/local- and endpoint- chains of its nftables table."""
    svc_prefixes = ("KUBE-SVC-", "KUBE-SVL-", "service-", "local-")
    svc = next((r.chain for r in rules if r.chain.startswith(svc_prefixes)), None)
    sep = next((r.chain for r in rules if r.chain.startswith(("KUBE-SEP-", "endpoint-"))), None)
    chains = [c for c in (svc, sep) if c]
    # nftables chain names hold "/" themselves (service-HASH-ns/name/tcp/port).
    return (" → " if any("/" in c for c in chains) else "/").join(chains)


def address_port(ip: str, port: int | None) -> str:
    """`ip:port`, an IPv6 address in brackets (`[ip]:port`) as kube-proxy's
    DNAT targets and the offline prediction write it."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# -- flow membership -----------------------------------------------------------


def _key(proto: str, src: str, dst: str, sport: int | None, dport: int | None) -> Key:
    # ICMP echo request and reply carry the same id: the reply of
    # (A → B, id) is (B → A, id).
    if proto == "icmp":
        return (proto, src, dst, sport)
    return (proto, src, dst, sport, dport)


def _reverse(key: Key) -> Key:
    if key[0] == "icmp":
        return (key[0], key[2], key[1], key[3])
    return (key[0], key[2], key[1], key[4], key[3])


def _tuple_key(t: FlowTuple) -> Key:
    return _key(t.proto, t.src, t.dst, t.sport, t.dport)


def _packet_key(p: IpPacket) -> Key:
    return _key(p.proto, p.src, p.dst, p.sport, p.dport)


@dataclass
class _Membership:
    forward: set[Key]
    backward: set[Key]  # the forward tuples reversed: the replies
    entries: dict[str, list[ConntrackEvent]]  # node -> this flow's conntrack events

    def leg(self, p: IpPacket) -> str | None:
        key = _packet_key(p)
        if key in self.forward:
            return REQUEST
        if key in self.backward:
            return REPLY
        if p.quoted is not None and _packet_key(p.quoted) in self.forward:
            return REPLY  # an ICMP error about the request
        return None


def _membership(sent: Key, conntrack: Mapping[str, Sequence[ConntrackEvent]]) -> _Membership:
    """The flow's tuples: the one sent, and every tuple conntrack on any node
    links to it (the DNATed and SNATed forms on the next node), closed
    under that link."""
    forward = {sent}
    entries: dict[str, list[ConntrackEvent]] = {}
    changed = True
    while changed:
        changed = False
        for node, events in conntrack.items():
            for event in events:
                orig, reply_rev = _tuple_key(event.original), _reverse(_tuple_key(event.reply))
                if orig in forward or reply_rev in forward:
                    if event not in entries.setdefault(node, []):
                        entries[node].append(event)
                    # Between DNAT (PREROUTING/OUTPUT) and SNAT (POSTROUTING)
                    # the node's own hooks see the original source with the
                    # translated destination.
                    o, r = event.original, event.reply
                    between = _key(o.proto, o.src, r.src, o.sport, r.sport)
                    for k in (orig, reply_rev, between):
                        if k not in forward:
                            forward.add(k)
                            changed = True
    return _Membership(forward, {_reverse(k) for k in forward}, entries)


# -- building the report ---------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    frame: Frame
    decoded: Decoded
    leg: str

    @property
    def packet(self) -> IpPacket:
        return self.decoded.packet


def _identity(p: IpPacket) -> tuple[object, ...]:
    if p.quoted is not None:
        # conntrack rewrites the quoted header of an ICMP error on its way
        # back through NAT, so its payload changes: the IP id stays.
        return ("icmp-error", p.ip_id, p.icmp_type, p.icmp_code, p.length)
    return identity(p)


def build_report(
    trace_id: str,
    flow: Flow,
    topology: Topology,
    evidence: Evidence,
    answer: Answer,
) -> TraceReport:
    """The report of one traced flow; each hop's pcap is named later, when
    the capture files are written (netemu.trace.live.write_captures)."""
    sent = _key(flow.proto, flow.source.ip, flow.dst, evidence.sport, flow.dport)
    member = _membership(sent, evidence.conntrack)

    seen: list[_Seen] = []
    for frame in evidence.frames:
        decoded = decode(frame.data, topology.vxlan_port)
        if decoded is None:
            continue
        leg = member.leg(decoded.packet)
        if leg is not None:
            seen.append(_Seen(frame, decoded, leg))
    seen.sort(key=lambda s: s.frame.nanoseconds)
    # The pcaps keep every copy; the hops leave out the copies a bridge
    # floods to other pods while it has not learnt the destination's MAC.
    followed = [s for s in seen if not _flooded_copy(s, topology)]

    request = _leg_observations(followed, REQUEST, flow.source.netns)
    reply = _leg_observations(followed, REPLY, None)
    rules_by_node = _node_rules(evidence, member, request)
    builder = _HopBuilder(flow, topology, rules_by_node)

    # A packet that reached the namespace owning its destination was still
    # not delivered if a rule there dropped it (a DROP in INPUT): without
    # an answer, the rule trace decides. A TCP SYN or an echo request that
    # reached its destination's stack is always answered (SYN-ACK or RST,
    # echo reply), so without an answer it was not delivered, whatever
    # (a rule outside the traced tables, a routing decision) stopped it.
    last_node = topology.owner_of_netns(request[-1].frame.netns)[2] if request else None
    dropped_there = _find_rule(rules_by_node.get(last_node or "", []), ("DROP",)) is not None
    always_answered = flow.proto in ("tcp", "icmp")
    # An ICMP error or a RST sent back by a REJECT rule (kube-proxy's "has no
    # endpoints" rules): the packet went no further than that rule, even if
    # it was captured arriving in the namespace the rule is in.
    first_reply = reply[0] if reply else None
    refusal = first_reply if first_reply is not None and _is_refusal(first_reply.packet) else None
    rejected_by: RuleRef | None = None
    if refusal is not None:
        refusing_node = topology.owner_of_netns(refusal.frame.netns)[2]
        rejected_by = _find_rule(rules_by_node.get(refusing_node or "", []), ("REJECT",))
    can_deliver = bool(reply) or not (dropped_there or always_answered)
    can_deliver = can_deliver and rejected_by is None
    hops = builder.leg(REQUEST, request, start=sent, can_deliver=can_deliver)
    delivered = bool(hops) and hops[-1].action == DELIVERED
    outcome: str
    verdict_override: str | None = None
    if delivered:
        # Reached the destination's namespace; its kernel answered. A RST or
        # a port-unreachable there means no socket took the flow.
        outcome = "delivered"
        if refusal is not None:
            outcome = "refused" if _refuses(refusal.packet) else "rejected"
    elif refusal is not None:
        at = refusal.frame.netns
        packet = request[-1].packet if request else refusal.packet
        detail = refusal.packet.summary() + " sent back"
        hops.append(_decision(topology, at, REJECTED, packet, rejected_by, "kernel", detail))
        # What the sending socket sees: port-unreachable and RST are
        # "connection refused"; other ICMP errors (host-prohibited, ...)
        # are "unreachable".
        outcome = "refused" if _refuses(refusal.packet) else "rejected"
        verdict_override = "REJECT"
    elif not reply:
        if request:
            at = request[-1].frame.netns
            node = topology.owner_of_netns(at)[2]
            by = _find_rule(rules_by_node.get(node or "", []), ("DROP",))
            detail = "" if by else "no traced rule dropped it, and no answer came back"
            hops.append(_decision(topology, at, DROPPED, request[-1].packet, by, "routing", detail))
        outcome, verdict_override = "dropped", "DROP"
    else:
        outcome = "unanswered"
    reply_hops = builder.leg(REPLY, reply, start=None)
    if reply_hops and reply_hops[-1].action == DELIVERED and flow.proto != "icmp":
        # A reply delivered to the node's own stack is translated back in
        # INPUT, after the last capture point: the socket sees the address
        # it sent to.
        last = reply[-1]
        wanted = _reverse(sent)
        if _packet_key(last.packet) != wanted and not _is_refusal(last.packet):
            final = replace(
                last.packet,
                src=flow.dst,
                sport=flow.dport,
                dst=flow.source.ip,
                dport=evidence.sport,
            )
            kind, name, node = topology.owner_of_netns(last.frame.netns)
            reply_hops += builder.nat_hops(
                REPLY,
                _packet_key(last.packet),
                last.packet.ttl,
                final,
                node,
                f"{kind} {name}",
                last.frame.netns,
            )
    hops += reply_hops

    entry_events = member.entries.get(flow.entry_node or "", [])
    entry = entry_events[0] if entry_events else None
    endpoints: list[str] = []
    masquerade = False
    verdict = "NONE"
    entry_rules = rules_by_node.get(flow.entry_node or "", [])
    if entry is not None and entry.dnat:
        verdict = "DNAT"
        endpoints = [address_port(entry.reply.src, entry.reply.sport)]
    elif any(r.target == "ACCEPT" for r in entry_rules):
        verdict = "ACCEPT"
    if entry is not None:
        masquerade = entry.snat
    if verdict_override is not None:
        verdict = verdict_override

    delivered_to, seen_client = None, None
    if delivered:
        last = request[-1]
        kind, name, node = topology.owner_of_netns(last.frame.netns)
        pod_name = name.removeprefix("default/")
        delivered_to = f"{pod_name} on {node}" if kind == "pod" else f"{kind} {name}"
        seen_client = last.packet.src
    conntrack = [
        {
            "node": node,
            "original": _tuple_dict(e.original),
            "reply": _tuple_dict(e.reply),
            "dnat": e.dnat,
            "snat": e.snat,
        }
        for node, events in member.entries.items()
        for e in events[:1]
    ]
    return TraceReport(
        id=trace_id,
        flow=flow,
        sport=evidence.sport,
        lab=topology.lab,
        outcome=outcome,
        verdict=verdict,
        endpoints=endpoints,
        masquerade=masquerade,
        rules=entry_rules,
        rules_source=evidence.rules_source,
        hops=hops,
        conntrack=conntrack,
        delivered_to=delivered_to,
        seen_client=seen_client,
        answer=answer,
        frames=[s.frame for s in seen],
        packet_ids=_packet_ids(seen),
    )


def pcap_names(frames: Sequence[Frame]) -> dict[tuple[str, str], str]:
    """`NN-<namespace>-<interface>.pcap` per capture point, numbered in the
    order the flow first reached each."""
    names: dict[tuple[str, str], str] = {}
    for frame in sorted(frames, key=lambda f: f.nanoseconds):
        point = (frame.netns, frame.interface)
        if point not in names:
            names[point] = _pcap_name(len(names) + 1, frame.netns, frame.interface)
    return names


def _packet_ids(seen: Sequence[_Seen]) -> list[int]:
    numbers: dict[tuple[object, ...], int] = {}
    return [numbers.setdefault(_identity(s.packet), len(numbers) + 1) for s in seen]


def capture_roles(hops: Sequence[Hop]) -> dict[tuple[str, str], str]:
    """What each capture point is in the flow, from the first hop seen there:
    "node node-1 uplink", "node node-1 veth", "pod default/web-1",
    "underlay switch" (the site, and the component where it adds to it)."""
    roles: dict[tuple[str, str], str] = {}
    for hop in hops:
        if hop.interface is None:
            continue
        role = hop.site if hop.component in hop.site else f"{hop.site} {hop.component}"
        roles.setdefault((hop.netns, hop.interface), role)
    return roles


def _pcap_name(number: int, netns: str, interface: str) -> str:
    """A namespace name may itself be up to NAME_MAX bytes long: its end is
    cut so the file name fits one (the number keeps names unique)."""
    name = f"{number:02d}-{netns}-{interface}.pcap"
    excess = len(name.encode()) - NAME_MAX
    if excess <= 0:
        return name
    kept = netns.encode()[: max(0, len(netns.encode()) - excess)].decode(errors="ignore")
    return f"{number:02d}-{kept}-{interface}.pcap"


def _tuple_dict(t: FlowTuple) -> dict[str, Any]:
    return {"proto": t.proto, "src": t.src, "sport": t.sport, "dst": t.dst, "dport": t.dport}


def _decision(
    topology: Topology,
    netns: str,
    action: str,
    packet: IpPacket,
    rule: RuleRef | None,
    without_rule: str,
    detail: str,
) -> Hop:
    """A Dropped or Rejected hop: where it happened and the rule that did
    it (`without_rule` names the component when no rule did)."""
    kind, name, node = topology.owner_of_netns(netns)
    return Hop(
        leg=REQUEST,
        node=node,
        site=f"{kind} {name}",
        netns=netns,
        interface=None,
        direction=None,
        component="netfilter" if rule is not None else without_rule,
        action=action,
        packet=packet,
        rule=rule,
        detail=detail,
    )


def _flooded_copy(seen: _Seen, topology: Topology) -> bool:
    """A frame on its way to, or in, a pod the packet is not addressed to:
    the bridge flooded it (unknown unicast), and the pod drops it."""
    if seen.decoded.tunnel is not None:
        return False
    kind, name, node = topology.owner_of_netns(seen.frame.netns)
    if kind == "pod" and seen.frame.direction == "in":
        return not topology.pods[name].has_ip(seen.packet.dst)
    if kind == "node" and node is not None and seen.frame.direction == "out":
        pod = topology.pod_behind(node, seen.frame.interface)
        return pod is not None and not pod.has_ip(seen.packet.dst)
    return False


def _is_refusal(p: IpPacket) -> bool:
    """An answer that refuses the flow: an ICMP destination-unreachable
    about it (ICMPv6: type 1), or a TCP RST."""
    unreachable = 1 if p.version == 6 else 3
    return p.icmp_type == unreachable or bool(p.tcp_flags and "R" in p.tcp_flags)


def _refuses(p: IpPacket) -> bool:
    """A refusal a socket reports as "connection refused" (ECONNREFUSED):
    a RST, or ICMP port-unreachable (Linux maps port-unreachable to
    ECONNREFUSED; it is what kube-proxy's REJECT rules send). ICMPv6's
    port-unreachable is type 1 code 4 (RFC 4443)."""
    port_unreachable = (1, 4) if p.version == 6 else (3, 3)
    return (p.icmp_type, p.icmp_code) == port_unreachable or bool(
        p.tcp_flags and "R" in p.tcp_flags
    )


def _leg_observations(seen: Sequence[_Seen], leg: str, origin: str | None) -> list[_Seen]:
    """Every observation of the leg's first packet, in time order: the
    packet first seen leaving `origin` (or anywhere), followed through NAT
    and tunnels by what stays the same (IP id, sequence number, payload)."""
    candidates = [s for s in seen if s.leg == leg]
    if not candidates:
        return []
    first = next(
        (s for s in candidates if s.frame.netns == origin and s.frame.direction == "out"),
        candidates[0],
    )
    wanted = _identity(first.packet)
    same = [s for s in candidates if _identity(s.packet) == wanted]
    return same[same.index(first) :] if first in same else same


def _node_rules(
    evidence: Evidence, member: _Membership, request: Sequence[_Seen]
) -> dict[str, list[RuleRef]]:
    """Per node, the rules that decided the flow's first packet there (from
    the rule trace)."""
    first_ids = {s.packet.ip_id for s in request}
    # IPv6 has no IP id; its stand-in, the flow label, is the same for every
    # packet of a connection: the first packet's length tells it apart too.
    first_v6 = {(s.packet.ip_id, s.packet.length) for s in request if s.packet.version == 6}
    by_node: dict[str, list[RuleRef]] = {}
    for node, passes in evidence.traces.items():
        rules: list[RuleRef] = []
        for traced in passes:
            first = (
                (traced.ip_id, traced.length) in first_v6
                if ":" in traced.src
                else traced.ip_id in first_ids
            )
            if not _traced_forward(traced, member.forward) or not first:
                continue  # a reply, or a later packet of the connection
            for verdict in traced.verdicts:
                if verdict.kind != "rule" or verdict.rule is None or verdict.table == "raw":
                    continue
                # Every evaluation counts: a rule the packet meets twice
                # (KUBE-MARK-MASQ from KUBE-SVC- and KUBE-SEP-) is listed twice.
                rules.append(RuleRef(verdict.table, verdict.chain, verdict.rule))
        by_node[node] = rules
    return by_node


def _traced_forward(traced: TracedPacket, forward: set[Key]) -> bool:
    if traced.proto == "icmp":
        # xtables-monitor prints no echo id: addresses (and the IP id the
        # caller checks) identify the packet.
        return any(k[0] == "icmp" and k[1:3] == (traced.src, traced.dst) for k in forward)
    return _key(traced.proto, traced.src, traced.dst, traced.sport, traced.dport) in forward


def _find_rule(rules: Sequence[RuleRef], targets: tuple[str, ...]) -> RuleRef | None:
    found = [r for r in rules if r.target in targets]
    return found[-1] if found else None


class _HopBuilder:
    def __init__(
        self,
        flow: Flow,
        topology: Topology,
        rules: Mapping[str, list[RuleRef]],
    ) -> None:
        self.flow = flow
        self.topology = topology
        self.rules = rules

    def leg(
        self,
        leg: str,
        observations: Sequence[_Seen],
        start: Key | None,
        can_deliver: bool = True,
    ) -> list[Hop]:
        hops: list[Hop] = []
        previous: _Seen | None = None
        for index, obs in enumerate(observations):
            frame, packet = obs.frame, obs.packet
            kind, name, node = self.topology.owner_of_netns(frame.netns)
            site = f"{kind} {name}"
            before: Key | None = None
            if previous is not None and previous.frame.netns == frame.netns and kind != "pod":
                before = _packet_key(previous.packet)
            elif previous is None and start is not None and frame.netns == self.flow.source.netns:
                before = start  # NAT in the source's own OUTPUT path (a node)
            if before is not None and before != _packet_key(packet):
                ttl = previous.packet.ttl if previous is not None else packet.ttl
                hops += self.nat_hops(leg, before, ttl, packet, node, site, frame.netns)
            last = can_deliver and index == len(observations) - 1
            hops.append(
                Hop(
                    leg=leg,
                    node=node,
                    site=site,
                    netns=frame.netns,
                    interface=frame.interface,
                    direction=frame.direction,
                    component=self._component(kind, frame.interface),
                    action=self._action(obs, previous, last),
                    packet=packet,
                    tunnel=_tunnel(obs.decoded),
                    timestamp=frame.timestamp,
                )
            )
            previous = obs
        return hops

    def _component(self, kind: str, interface: str) -> str:
        if kind != "node":
            return {"pod": "pod", "client": "client"}.get(kind, "underlay switch")
        if interface in self.topology.overlay_devices:
            return "vxlan"
        if interface.startswith("veth"):
            return "veth"
        return {"cni0": "bridge", "eth0": "uplink", "lo": "loopback"}.get(interface, interface)

    def _action(self, obs: _Seen, previous: _Seen | None, last: bool) -> str:
        frame, packet = obs.frame, obs.packet
        if last and frame.direction == "in" and self._owns(frame.netns, packet.dst):
            return DELIVERED
        tunnelled_before = previous is not None and previous.decoded.tunnel is not None
        if obs.decoded.tunnel is not None and not tunnelled_before:
            return ENCAPSULATED
        if obs.decoded.tunnel is None and tunnelled_before:
            return DECAPSULATED
        if previous is not None and packet.ttl < previous.packet.ttl:
            return ROUTED
        return FORWARDED

    def _owns(self, netns: str, ip: str) -> bool:
        kind, name, node = self.topology.owner_of_netns(netns)
        if kind == "pod":
            return self.topology.pods[name].has_ip(ip)
        if kind == "node" and node is not None:
            return ip in self.topology.nodes[node].addresses or ip.startswith("127.")
        if kind == "client":
            return self.topology.clients[name].has_ip(ip)
        if kind == "loadbalancer" and self.topology.load_balancer is not None:
            lb = self.topology.load_balancer
            return ip == lb.ip or ip in lb.proxy_ips
        return False

    def nat_hops(
        self,
        leg: str,
        before: Key,
        ttl: int,
        packet: IpPacket,
        node: str | None,
        site: str,
        netns: str,
    ) -> list[Hop]:
        """The translations netfilter made between two sightings in one
        node: `before` is the packet's tuple at the first (`ttl` its TTL
        there, which a DNAT in PREROUTING still carries), `packet` the
        packet at the second."""
        src, dst = str(before[1]), str(before[2])
        sport = _port(before[3])
        dport = _port(before[4]) if len(before) > 4 else None
        rules = self.rules.get(node or "", [])
        hops = []
        dst_changed = (dst, dport) != (packet.dst, packet.dport)
        src_changed = (src, sport) != (packet.src, packet.sport)
        # The packet as it is after the first of the two translations.
        half = replace(packet, src=src, sport=sport, ttl=ttl) if dst_changed else packet
        if leg == REQUEST:
            if dst_changed:
                hops.append(
                    self._nat(
                        leg,
                        node,
                        site,
                        netns,
                        DNAT,
                        half,
                        address_port(packet.dst, packet.dport),
                        _find_rule(rules, ("DNAT",)),
                    )
                )
            if src_changed:
                rule = _find_rule(rules, ("MASQUERADE", "SNAT"))
                action = MASQUERADE if rule is not None and rule.target == "MASQUERADE" else SNAT
                hops.append(
                    self._nat(
                        leg,
                        node,
                        site,
                        netns,
                        action,
                        packet,
                        address_port(packet.src, packet.sport),
                        rule,
                    )
                )
        else:
            # Replies are translated back by conntrack alone, no rule runs:
            # the SNAT is undone in PREROUTING (the destination), the DNAT
            # in POSTROUTING (the source).
            if dst_changed:
                first = replace(packet, src=src, sport=sport, ttl=ttl) if src_changed else packet
                hops.append(
                    self._nat(
                        leg,
                        node,
                        site,
                        netns,
                        UN_SNAT,
                        first,
                        address_port(packet.dst, packet.dport),
                        None,
                        "conntrack: reply of the SNATed connection",
                    )
                )
            if src_changed:
                hops.append(
                    self._nat(
                        leg,
                        node,
                        site,
                        netns,
                        UN_DNAT,
                        packet,
                        address_port(packet.src, packet.sport),
                        None,
                        "conntrack: reply of the DNATed connection",
                    )
                )
        return hops

    def _nat(
        self,
        leg: str,
        node: str | None,
        site: str,
        netns: str,
        action: str,
        packet: IpPacket,
        translated: str,
        rule: RuleRef | None,
        detail: str = "",
    ) -> Hop:
        return Hop(
            leg=leg,
            node=node,
            site=site,
            netns=netns,
            interface=None,
            direction=None,
            component="netfilter" if rule is not None else "conntrack",
            action=action,
            packet=packet,
            translated=translated,
            rule=rule,
            detail=detail,
        )


def _port(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _tunnel(decoded: Decoded) -> dict[str, Any] | None:
    t = decoded.tunnel
    if t is None:
        return None
    return {
        "kind": t.kind,
        "src": t.src,
        "dst": t.dst,
        "sport": t.sport,
        "dport": t.dport,
        "vni": t.vni,
        "ttl": t.ttl,
    }
