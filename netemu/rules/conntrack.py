"""Which UDP conntrack entries kube-proxy deletes after a sync.

UDP has no connection to close, so an entry DNATed to an endpoint that is
gone would keep sending a client's datagrams to it. After every sync
kube-proxy lists the node's conntrack table and, for each UDP service port
that has serving endpoints, deletes the entries addressed to one of its
frontends (ClusterIP, LoadBalancer or external IP with the service port,
or the NodePort on any address) whose reply source is not a serving
endpoint (pkg/proxy/conntrack/cleanup.go, CleanStaleEntries, 1.31+). A
service with no serving endpoints is left alone.

Pure: reads entries and returns filters; netemu.kernel.conntrack lists and
deletes.
"""

from __future__ import annotations

from dataclasses import dataclass

from netemu.rules.input import ProxyInput


@dataclass(frozen=True)
class FlowEntry:
    """The parts of a conntrack entry the cleanup looks at."""

    protocol: str  # "udp", "tcp", ...
    orig_dst: str
    orig_dport: int
    reply_src: str


@dataclass(frozen=True)
class FlowFilter:
    """Delete UDP entries with this reply source and original destination port,
    and (when set) this original destination address."""

    reply_src: str
    orig_dport: int
    orig_dst: str | None = None


def stale_udp_filters(data: ProxyInput, entries: list[FlowEntry]) -> list[FlowFilter]:
    by_frontend: dict[tuple[str, int], set[str]] = {}
    by_node_port: dict[int, set[str]] = {}
    for sp in data.service_ports:
        if sp.protocol != "udp":
            continue
        serving: set[str] = {ep.ip for ep in data.endpoints_of(sp) if ep.serving}
        if not serving:
            continue
        for ip in (sp.cluster_ip, *sp.load_balancer_vips, *sp.external_ips):
            if ip:
                by_frontend[(ip, sp.port)] = serving
        if sp.node_port:
            by_node_port[sp.node_port] = serving

    filters: dict[FlowFilter, None] = {}
    for entry in entries:
        if entry.protocol != "udp":
            continue
        frontend = by_frontend.get((entry.orig_dst, entry.orig_dport))
        if frontend is not None and entry.reply_src not in frontend:
            filters[FlowFilter(entry.reply_src, entry.orig_dport, entry.orig_dst)] = None
        node_port = by_node_port.get(entry.orig_dport)
        if node_port is not None and entry.reply_src not in node_port:
            filters[FlowFilter(entry.reply_src, entry.orig_dport)] = None
    return list(filters)
