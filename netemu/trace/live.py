"""A live trace: send one real flow through a running lab and watch it with
the kernel's own instruments, then write the report and the pcaps.

Order of work, so that nothing the flow does goes unseen:
1. resolve FROM/TO against the lab's state and topology; predict the flow
   with the entry node's own rules (iptables-save → offline simulator; in
   kube-proxy's nftables mode `nft list ruleset` and iptables-save → the
   nftables simulator), which names the endpoints it may be DNATed to;
2. open a capture socket in every namespace the flow may cross, start
   `conntrack -E` and a rule tracer in every node (nft backend:
   `xtables-monitor --trace`; legacy backend: NFLOG group 0 with the
   node's IPv4 logger (and for an IPv6 flow its IPv6 logger) pointed at
   nfnetlink_log, see netemu.kernel.nflog;
   nftables mode: `nft monitor trace`, which reports kube-proxy's table and
   iptables-nft's alike), install TRACE rules scoped to the flow (nftables
   mode: `meta nftrace set 1` rules in a `netemu-trace-<id>` table of the
   tracer's own, netemu.trace.scope; an IPv6 flow: ip6tables' raw table,
   or the table in family ip6, and `nft monitor trace` in either mode but
   the legacy backend's, see _run), and wait until each monitor is
   subscribed (legacy: also read the node's rules, which number the
   traced rules);
3. send the flow (a kernel socket: TCP handshake, an HTTP GET, the close;
   a UDP datagram and its answer; an ICMP echo built with Scapy);
4. stop the monitors once quiet, drain the captures, remove the TRACE
   rules or the trace table (always, also on error; the nflog monitor restores the logger
   the same way), and build the report.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from netemu.controlplane.state import ClusterState
from netemu.kernel import probe
from netemu.kernel.capture import Capture, Frame, write_pcap, write_pcapng
from netemu.kernel.iptables import Backend, Family, IptablesError, KernelIptables, node_lock_file
from netemu.kernel.monitor import (
    NetlinkMonitor,
    conntrack_monitor,
    nft_trace_monitor,
    trace_monitor,
)
from netemu.kernel.nflog import NflogMonitor
from netemu.kernel.nftables import KernelNftables, NftablesError
from netemu.kernel.owner import OutputDirectory, OutputPathError
from netemu.lab import LabError, LabUsageError, LiveLab
from netemu.net.cloudlb import VIP, pick
from netemu.node.cloudlb import route_choice
from netemu.rules.model import parse_restore
from netemu.rules.nftmodel import parse_nft
from netemu.rules.nftsimulate import simulate_nft
from netemu.rules.simulate import Packet, Simulation, simulate
from netemu.trace import dnsquery, scope
from netemu.trace.ctevents import parse_events
from netemu.trace.flow import Flow, FlowError, resolve_flow
from netemu.trace.legacytrace import parse_legacy_trace
from netemu.trace.nftrace import TracedPacket, parse_trace
from netemu.trace.nfttrace import parse_nft_trace
from netemu.trace.packets import decode
from netemu.trace.report import (
    TRACE_SOURCE,
    Answer,
    Evidence,
    TraceReport,
    build_report,
    capture_roles,
    pcap_names,
)
from netemu.trace.topology import Topology

CAPTURES = Path("captures")
MERGED = "merged.pcapng"
REPORT = "trace.json"


@dataclass(frozen=True)
class TraceOptions:
    port: int | None = None
    proto: str = "tcp"
    pcap: bool = True
    captures: Path = CAPTURES
    timeout: float = 1.0  # how long the sender waits for an answer


def trace(
    lab: LiveLab,
    frm: str,
    to: str,
    options: TraceOptions | None = None,
    view: tuple[Topology, ClusterState] | None = None,
    balancer: dict[str, Any] | None = None,
) -> TraceReport:
    """`view`: the lab's topology and state, if the caller has read them;
    `balancer`: its load balancer's status (the supervisor's `loadbalancer`
    reply), read from the lab when not given."""
    options = options or TraceOptions()
    started = time.monotonic()
    topology, state = view or (lab.topology(), lab.cluster_state())
    if balancer is None and view is None:
        balancer = lab.request("loadbalancer").get("loadBalancer")
    try:
        flow = resolve_flow(state, topology, frm, to, options.port, options.proto)
    except FlowError as exc:
        raise LabUsageError(str(exc)) from exc
    if flow.entry_node is None:
        raise LabUsageError(f"{flow.describe()}: no node of the lab is on the way")
    # A node has several addresses: its packets leave with the one its route
    # to the destination picks (flannel.1's towards another node's pods).
    try:
        source_ip = probe.source_address(flow.source.netns, flow.dst)
    except OSError as exc:
        raise LabUsageError(
            f"{flow.describe()}: {flow.source.label} has no route there ({exc.strerror})"
        ) from None
    if source_ip != flow.source.ip:
        flow = replace(flow, source=replace(flow.source, ip=source_ip))
    trace_id = new_trace_id(flow)
    sport = _source_port(flow)
    lb_hop = load_balancer_hop(balancer, topology, flow, sport) if balancer else None
    entry_nodes = [flow.entry_node]
    if lb_hop is not None and lb_hop["ipMode"] == VIP:
        # Passthrough: the flow enters the node the load balancer routes it
        # to; when the kernel cannot say which in advance (IPv6), any node
        # of the spread, and the flow's own frames tell afterwards.
        entry_nodes = [lb_hop["chosen"]] if lb_hop["chosen"] else list(lb_hop["spread"])
    predictions = {node: predict(replace(flow, entry_node=node), topology) for node in entry_nodes}
    # Traced and captured wherever any of those nodes' rules may send it.
    endpoints = list(dict.fromkeys(e for p in predictions.values() for e in p.endpoints))
    # Opened before the flow is sent: a captures/ that cannot be written
    # safely should not cost a trace first.
    directory = open_captures(options.captures, topology.lab, trace_id) if options.pcap else None
    try:
        question = dnsquery.dns_question(state, flow)
        evidence, answer = _run(flow, topology, trace_id, sport, endpoints, options, question)
        if lb_hop is not None and lb_hop["ipMode"] == VIP and not lb_hop["chosen"]:
            entered = node_entered(evidence, flow, topology)
            lb_hop = {**lb_hop, "chosen": entered}
            lb_hop["why"] += f"; it entered {entered or 'no node'}"
        entry = lb_hop["chosen"] if lb_hop is not None and lb_hop["chosen"] else entry_nodes[0]
        flow = replace(flow, entry_node=entry)
        prediction = predictions.get(entry) or predict(flow, topology)
        report = build_report(trace_id, flow, topology, evidence, answer)
        report.load_balancer = lb_hop
        report.prediction = {
            "verdict": prediction.verdict,
            "endpoints": prediction.endpoints,
            "masquerade": prediction.masquerade,
        }
        if directory is not None:
            write_captures(report, directory)
        report.elapsed = time.monotonic() - started
        if directory is not None:
            with _writing(directory):
                directory.write(REPORT, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    except BaseException:
        # A failed trace leaves no half-written capture directory behind.
        if directory is not None:
            directory.discard()
        raise
    finally:
        if directory is not None:
            directory.close()
    return report


def open_captures(root: Path, lab: str, trace_id: str) -> OutputDirectory:
    """`root`/<lab>/<trace-id>/, new, reached without following symlinks
    (netemu.kernel.owner)."""
    try:
        return OutputDirectory(root, lab, trace_id, fresh=True)
    except OutputPathError as exc:
        raise LabError(f"trace {trace_id}: cannot write its captures: {exc}") from None


@contextlib.contextmanager
def _writing(directory: OutputDirectory) -> Iterator[None]:
    try:
        yield
    except OutputPathError as exc:
        raise LabError(f"cannot write the captures: {exc}") from None
    except OSError as exc:
        raise LabError(f"cannot write the captures in {directory.path}: {exc.strerror}") from None


def load_balancer_hop(
    balancer: dict[str, Any], topology: Topology, flow: Flow, sport: int
) -> dict[str, Any] | None:
    """The load balancer's part in a flow from an external client to one of
    its ingress IPs, asked before the flow is sent: the Service, each node's
    health and why, the nodes new connections go to, and the node this flow
    goes to and why (passthrough: the kernel's multipath hash, as `ip route
    get` tells it for IPv4, or left None for IPv6, for `trace` to read from
    the flow's frames; proxy: the load balancer's own hash of the client's
    address and port). None for any other flow."""
    lb = topology.load_balancer
    spread = balancer.get("spread", {}).get(flow.dst)
    if lb is None or spread is None or flow.source.kind != "client":
        return None
    service, entry = next(
        (name, e) for name, e in balancer["services"].items() if flow.dst in e["ips"]
    )
    mode = entry["ipMode"].get(flow.dst, VIP)
    if mode == VIP and ":" in flow.dst:
        # IPv6 forwarding hashes the packet (net/ipv6/route.c,
        # rt6_multipath_custom_hash_skb: a jhash of its outer and inner
        # hashes) while RTM_GETROUTE hashes a flow without one
        # (rt6_multipath_custom_hash_fl6), so `ip route get` may name another
        # node than the one the packet goes to; IPv4's RTM_GETROUTE builds a
        # packet and agrees. The flow's own frames tell (trace sets `chosen`).
        chosen = None
        why = (
            "IPv6: the kernel hashes the forwarded packet, which `ip route get` cannot "
            "(it hashes a flow), so the node is the one whose eth0 received the flow"
        )
    elif mode == VIP:
        choice = route_choice(
            lb.netns,
            # The load balancer routes to the nodes' addresses of the flow's family.
            {
                n.name: n.address("IPv6" if scope.is_ipv6(flow) else "IPv4")
                for n in topology.nodes.values()
            },
            flow.dst,
            flow.source.ip,
            sport,
            flow.dport or 0,
            flow.proto,
        )
        chosen = choice.node
        why = f"{choice.command}: via {choice.gateway or 'no route'}"
    else:
        chosen = pick(spread["nodes"], flow.source.ip, sport)
        why = (
            f"ipMode Proxy: the load balancer ends the connection and opens its own to "
            f"{chosen}'s nodePort, picked by a hash of {flow.source.ip}:{sport}"
        )
    return {
        # Its own address of the flow's family.
        "ip": lb.address("IPv6" if scope.is_ipv6(flow) else "IPv4") or lb.ip,
        "namespace": lb.netns,
        "service": service,
        "ipMode": mode,
        "healthCheck": entry["healthCheck"],
        "nodes": entry["nodes"],
        "spread": spread["nodes"],
        "failOpen": spread["failOpen"],
        "chosen": chosen,
        "why": why,
    }


def node_entered(evidence: Evidence, flow: Flow, topology: Topology) -> str | None:
    """The node whose eth0 first received the flow's packet as sent (from
    the source's address and port to its destination), by the captured
    frames; None if no node did."""
    by_netns = {n.netns: n.name for n in topology.nodes.values()}
    sent = (flow.source.ip, flow.dst, evidence.sport, flow.dport)
    arrivals = []
    for frame in evidence.frames:
        if frame.netns not in by_netns or frame.interface != "eth0" or frame.direction != "in":
            continue
        decoded = decode(frame.data, topology.vxlan_port)
        if decoded is None or decoded.tunnel is not None:
            continue
        packet = decoded.packet
        if (packet.src, packet.dst, packet.sport, packet.dport) == sent:
            arrivals.append((frame.nanoseconds, by_netns[frame.netns]))
    return min(arrivals)[1] if arrivals else None


def new_trace_id(flow: Flow) -> str:
    """`<time>-<source>-<proto>-<random>`: sortable, and unique per trace."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    source = flow.source.name.replace("/", "-")[:24]
    return f"{stamp}-{source}-{flow.proto}-{secrets.token_hex(3)}"


def predict(flow: Flow, topology: Topology) -> Simulation:
    """The offline simulator's walk of the flow through the entry node's
    rules as they are in the kernel now."""
    assert flow.entry_node is not None
    node = topology.nodes[flow.entry_node]
    backend: Backend = "legacy" if topology.backend == "legacy" else "nft"
    # An IPv6 flow meets kube-proxy's IPv6 proxier: ip6tables' rules.
    family: Family = "IPv6" if scope.is_ipv6(flow) else "IPv4"
    ruleset = parse_restore(KernelIptables(node.netns, backend, family=family).save())
    packet = Packet(src=flow.source.ip, dst=flow.dst, dport=flow.dport, proto=flow.proto)
    if topology.proxy_mode == "nftables":
        # kube-proxy's table and iptables-nft's (kubelet, flanneld), walked together.
        tables = parse_nft(KernelNftables(node.netns).list_ruleset())
        return simulate_nft(tables, list(node.addresses), packet, iptables=ruleset)
    return simulate(ruleset, list(node.addresses), packet)


def _source_port(flow: Flow) -> int:
    if flow.proto == "icmp":
        return secrets.randbelow(0xFFFF - 1) + 1  # the echo id
    family = socket.AF_INET6 if scope.is_ipv6(flow) else socket.AF_INET
    return probe.free_port(flow.source.netns, flow.proto, family)


def capture_namespaces(flow: Flow, topology: Topology, endpoints: Iterable[str]) -> list[str]:
    """The source, every node, the underlay switch, and every pod the flow
    may be delivered to (the destination pod, or any predicted endpoint)."""
    ips = {flow.dst, *(e.rsplit(":", 1)[0].strip("[]") for e in endpoints)}
    pods = [
        p.netns
        for p in topology.pods.values()
        if any(p.has_ip(ip) for ip in ips) and not p.host_network
    ]
    names = [flow.source.netns, *(n.netns for n in topology.nodes.values()), topology.underlay]
    if topology.load_balancer is not None and flow.source.kind == "client":
        names.append(topology.load_balancer.netns)
    return list(dict.fromkeys([*names, *pods]))


def _parallel(calls: Iterable[Callable[[], Any]]) -> list[Any]:
    jobs = list(calls)
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(jobs), 16)) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


def _run(
    flow: Flow,
    topology: Topology,
    trace_id: str,
    sport: int,
    endpoints: Sequence[str],
    options: TraceOptions,
    question: dnsquery.DnsQuestion | None = None,
) -> tuple[Evidence, Answer]:
    """Send the flow and gather the kernel's evidence; `endpoints` are where
    the rules may DNAT it (the capture and the rule tracing reach them)."""
    nodes = list(topology.nodes.values())
    # kube-proxy's nftables mode: `nft monitor trace` for every table (with
    # the legacy iptables backend, the node's few iptables rules go unseen).
    nft_mode = topology.proxy_mode == "nftables"
    legacy = topology.backend == "legacy" and not nft_mode
    backend: Backend = "legacy" if legacy else "nft"
    chain = scope.chain_name(trace_id)
    # An IPv6 flow's TRACE rules go to ip6tables' raw table.
    family_of_rules: Family = "IPv6" if scope.is_ipv6(flow) else "IPv4"
    # xtables-monitor (1.8.9) cannot print ip6tables-nft rules that match a
    # protocol ("unsupported layer 4 protocol value") and gives up at the
    # first one: an IPv6 flow's verdicts are read with `nft monitor trace`,
    # which prints iptables-nft's tables in nft syntax, as in nftables mode.
    nft_monitor_for_ip6 = family_of_rules == "IPv6" and not legacy
    with ExitStack() as cleanup:
        capture = Capture(capture_namespaces(flow, topology, endpoints))
        capture.start()
        cleanup.callback(capture.close)

        conntrack = {n.name: conntrack_monitor(n.netns) for n in nodes}
        # ip6tables' TRACE logs through the AF_INET6 logger: the monitor
        # points that one at NFLOG too.
        ipv6 = family_of_rules == "IPv6"
        nflogs = {n.name: NflogMonitor(n.netns, ipv6=ipv6) for n in nodes} if legacy else {}
        tracers: dict[str, NetlinkMonitor]
        if legacy:
            tracers = dict(nflogs)
        elif nft_mode or nft_monitor_for_ip6:
            tracers = {n.name: nft_trace_monitor(n.netns) for n in nodes}
        else:
            tracers = {n.name: trace_monitor(n.netns) for n in nodes}
        monitors = [*conntrack.values(), *tracers.values()]
        for monitor in monitors:
            cleanup.callback(monitor.stop)
            monitor.start()

        setup: list[Callable[[], Any]] = [m.wait_ready for m in monitors]
        saves: dict[str, str] = {}
        table, family = scope.nft_table_name(trace_id), scope.nft_family(flow)
        if nft_mode:
            text = scope.nft_install_text(
                table, family, scope.nft_trace_matches(flow, sport, endpoints)
            )
        else:
            text = scope.install_text(chain, scope.trace_matches(flow, sport, endpoints))
        for node in nodes:
            if nft_mode:
                nftables = KernelNftables(node.netns)
                cleanup.callback(_drop_table(nftables, family, table))
                setup.append(functools.partial(nftables.apply, text))
                continue
            iptables = KernelIptables(
                node.netns,
                backend,
                family=family_of_rules,
                lock_file=node_lock_file(topology.lab, node.netns),
            )
            cleanup.callback(_quietly(iptables, scope.remove_text(chain)))
            # Legacy traces number the rules: read them as the flow meets them.
            setup.append(_restorer(iptables, text, saves if legacy else None, node.name))
        try:
            _parallel(setup)
        except Exception as exc:
            raise LabError(f"trace {trace_id}: could not start watching the flow: {exc}") from exc

        answer = send(flow, sport, options.timeout, question)

        outputs = _parallel([m.stop for m in monitors])
        frames = capture.drain()
    # `monitors` lists the conntrack monitors first, then the rule tracers.
    events = dict(zip(conntrack, outputs[: len(conntrack)], strict=True))
    traced = dict(zip(tracers, outputs[len(conntrack) :], strict=True))

    def parse(node: str, text: str) -> list[TracedPacket]:
        if legacy:
            return parse_legacy_trace(text, saves[node], nflogs[node].interfaces)
        if nft_mode or nft_monitor_for_ip6:
            # The trace table's own rules are the tracer's, not the flow's path.
            return parse_nft_trace(text, ignore_tables={table})
        return parse_trace(text)

    traces = {n: parse(n, text) for n, text in traced.items()}
    evidence = Evidence(
        sport=sport,
        frames=frames,
        traces=traces,
        conntrack={n: parse_events(text) for n, text in events.items()},
        rules_source=TRACE_SOURCE,
    )
    return evidence, answer


def _restorer(
    iptables: KernelIptables, text: str, saves: dict[str, str] | None, node: str
) -> Callable[[], None]:
    def restore() -> None:
        iptables.restore(text, noflush=True)
        if saves is not None:
            saves[node] = iptables.save()

    return restore


def _drop_table(nftables: KernelNftables, family: str, table: str) -> Callable[[], None]:
    def remove() -> None:
        # The table may not have been created if set-up failed half-way.
        with contextlib.suppress(NftablesError):
            nftables.delete_table(family, table)

    return remove


def _quietly(iptables: KernelIptables, text: str) -> Callable[[], None]:
    def remove() -> None:
        # The rules may not have been installed if set-up failed half-way.
        with contextlib.suppress(IptablesError):
            iptables.restore(text, noflush=True)

    return remove


def send(
    flow: Flow, sport: int, timeout: float, question: dnsquery.DnsQuestion | None = None
) -> Answer:
    """The flow's first packets from its source's socket: an HTTP GET over
    TCP, a datagram (a DNS query when `question` is given), an echo."""
    netns = flow.source.netns
    if question is not None:
        return _send_dns(flow, sport, timeout, question)
    if flow.proto == "tcp":
        result = probe.http_get(
            netns, flow.dst, flow.dport, timeout=timeout, source_port=sport, abortive_close=False
        )
    elif flow.proto == "udp":
        result = probe.udp_request(
            netns, flow.dst, flow.dport, payload=b"netemu trace", timeout=timeout, source_port=sport
        )
    else:
        result = probe.icmp_echo(netns, flow.dst, sport, timeout=timeout)
    return Answer(
        outcome=result.outcome,
        reply=result.reply,
        detail=result.detail or (result.body if result.reply is None else ""),
        elapsed=result.elapsed,
    )


def _send_dns(flow: Flow, sport: int, timeout: float, question: dnsquery.DnsQuestion) -> Answer:
    message = dnsquery.query(question)
    result = probe.udp_request(
        flow.source.netns,
        flow.dst,
        flow.dport,
        payload=message.to_wire(),
        timeout=timeout,
        source_port=sport,
    )
    answered = result.outcome == "answered"
    dns = dnsquery.read_answer(question, message, result.data if answered else None)
    # A test server on a DNS port answers any datagram with its JSON, not
    # a DNS message: that reply is kept, and dns says it was no answer.
    return Answer(
        outcome=result.outcome,
        reply=result.reply,
        detail=result.detail,
        elapsed=result.elapsed,
        dns=dns,
    )


def write_captures(report: TraceReport, directory: OutputDirectory) -> None:
    """One pcap per capture point, and merged.pcapng with every frame of the
    flow in time order, each capture point an interface of its own named
    `<namespace>/<interface>` and described by its role in the flow, the
    copies of one packet sharing a packet id; each a new file of the
    invoking user (mode 0600). Each hop of the report names its capture
    point's pcap."""
    frames = report.frames
    names = pcap_names(frames)
    by_point: dict[tuple[str, str], list[Frame]] = {point: [] for point in names}
    for frame in frames:
        by_point[(frame.netns, frame.interface)].append(frame)
    with _writing(directory):
        for point, name in names.items():
            write_pcap(directory.create(name), by_point[point])
        merged = directory.create(MERGED)
        write_pcapng(merged, frames, capture_roles(report.hops), report.packet_ids)
    report.hops = [
        replace(h, pcap=names.get((h.netns, h.interface))) if h.interface else h
        for h in report.hops
    ]
    report.pcaps = {
        "directory": str(directory.path),
        "merged": str(directory.path / MERGED),
        "points": [str(directory.path / n) for n in names.values()],
    }
