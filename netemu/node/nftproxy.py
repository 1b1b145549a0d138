"""kube-proxy in nftables mode for one node of a live lab: reads Services and
EndpointSlices through the control plane's client, compiles the node's
`ip kube-proxy` (or `ip6 kube-proxy`) table with netemu.rules.nftables and
applies each sync as ONE `nft -f` transaction (netemu.kernel.nftables), as
kube-proxy's nftables proxier does (pkg/proxy/nftables/proxier.go,
syncProxyRules).

Syncs follow the proxier: the first one is full (setupNFTables: table, base
chains, fixed chains, sets and maps), and so is the one after a failed sync
(its change trackers were flushed: needFullSync) and after the node's own
settings changed; the others are partial, rewriting only the chains of the
Services whose Service or EndpointSlices changed and updating the map and
set elements that changed. Stale service chains are flushed at once and
deleted by a later sync (more than a second later, in a transaction of its
own run first, as kube-proxy's staleChains cleanup), stale affinity sets
at once. After each sync the UDP conntrack entries of endpoints no longer
serving are deleted (netemu.rules.conntrack), as in iptables mode.

Periodic work (`tick`, called by the supervisor). kube-proxy's nftables
proxier has no canary (pkg/proxy/nftables/proxier.go at the commit read,
b0f823e6): its sync runner retries a failed sync after syncPeriod, in full
(needFullSync), and syncs at least once an hour (NewProxier's
BoundedFrequencyRunner, maxInterval time.Hour). This agent does both, makes
the hourly sync full as in iptables mode, and, as the canary's equivalent,
looks for its table every syncPeriod: when someone deleted it, a full sync
writes it back.

The node's other iptables rules (kubelet's KUBE-IPTABLES-HINT,
KUBE-FIREWALL and canaries, flanneld's FLANNEL-POSTRTG / FLANNEL-FWD) are
not kube-proxy's in this mode: the first sync writes them once through
iptables-restore, standing for kubelet's and flanneld's start-up
(netemu.rules.nftables.nftables_mode_iptables); the portmap CNI's chains stay
the kubelet agent's.

Metrics and health as in iptables mode (full and partial syncs apart), with
nftables mode's own failure counters.

Owns: this node's kube-proxy table, through the Nftables interface it is
given, and the first sync's write of the iptables rules above. Must not
touch: any other nftables table, nor iptables rules after that first sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.load import gc_paused
from netemu.controlplane import Client, snapshot
from netemu.controlplane.state import ClusterState
from netemu.kernel.conntrack import Conntrack
from netemu.kernel.iptables import Iptables
from netemu.kernel.nftables import Nftables
from netemu.node.proxyhealth import (
    DEFAULT_SYNC_PERIOD,
    FULL_SYNC_PERIOD,
    health_check_ports,
    local_ready_endpoints,
)
from netemu.node.proxymetrics import updated_services
from netemu.node.proxyservers import NodeProxyServers
from netemu.pipeline import proxy_input
from netemu.rules.conntrack import stale_udp_filters
from netemu.rules.flannel import flannel_config
from netemu.rules.input import IPFamily, ProxyInput
from netemu.rules.inputcache import ProxyInputCache
from netemu.rules.nftables import TABLE, NftSyncState, nftables_mode_iptables, sync


def table_family(data: ProxyInput) -> str:
    """The nftables family of the table this kube-proxy programs."""
    return "ip6" if data.config.ip_family == "IPv6" else "ip"


@dataclass
class NftProxyAgent:
    client: Client
    node: str
    nftables: Nftables
    iptables: Iptables
    lab: Lab
    proxy_config: KubeProxyConfiguration | None
    conntrack: Conntrack | None = None
    # The node's namespace was just created: its iptables tables are empty.
    fresh_node: bool = False
    servers: NodeProxyServers | None = None
    sync_period: float = DEFAULT_SYNC_PERIOD
    clock: Callable[[], float] = time.monotonic
    # The IP family of this proxier: `ip kube-proxy` or `ip6 kube-proxy` (a
    # dual-stack node runs one agent per family, as kube-proxy's MetaProxier).
    family: IPFamily = "IPv4"
    # Converts only the Services and EndpointSlices that changed since the
    # last sync, as kube-proxy's change trackers; one may serve every node
    # (of this family).
    input_cache: ProxyInputCache | None = None
    # The node's servers are shared by its proxiers (kube-proxy's MetaProxier
    # shares the health server and metrics): every family reports its syncs,
    # the primary family's proxier alone serves the Services' health checks
    # and follows the node's eligibility.
    serves_health_checks: bool = True
    last_input: ProxyInput | None = field(default=None, init=False)  # None: never synced
    # What the last successful sync left in the kernel (None: nothing yet).
    state: NftSyncState | None = field(default=None, init=False)
    last_check: float = field(default=0.0, init=False)
    last_full_sync: float = field(default=0.0, init=False)
    failed: bool = field(default=False, init=False)  # the last sync did not finish
    syncs: int = field(default=0, init=False)  # successful `nft -f` sync transactions

    def _input(self, state: ClusterState) -> ProxyInput:
        """What this proxier sees now, converted through its family's cache."""
        if self.input_cache is None:
            self.input_cache = ProxyInputCache(self.family)
        return proxy_input(state, self.node, family=self.family, cache=self.input_cache)

    def reconcile(self) -> bool:
        """One sync if anything kube-proxy watches changed; True if it wrote rules."""
        with gc_paused():  # as ProxyAgent.reconcile
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            data = self._input(state)
            if self.servers is not None and self.serves_health_checks:
                self.servers.follow_node(state.node(self.node))
            if self.last_input is not None and data == self.last_input and not self.failed:
                return False
            self._sync(data, full=self.last_input is None)
            return True

    def tick(self) -> bool:
        """The periodic part of kube-proxy's loop; call it often (at least
        every syncPeriod). True if it synced."""
        now = self.clock()
        if self.last_input is None or now - self.last_check < self.sync_period:
            return False
        self.last_check = now
        due = self.failed or now - self.last_full_sync >= FULL_SYNC_PERIOD
        if not due and self.nftables.has_table(table_family(self.last_input), TABLE):
            return False
        self.force_sync()
        return True

    def force_sync(self) -> None:
        """A full sync now."""
        with gc_paused():
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            self._sync(self._input(state), full=True)

    def _sync(self, data: ProxyInput, *, full: bool) -> None:
        previous = self.last_input
        first = self.state is None
        full = (
            full
            or first
            or self.failed
            or (previous is not None and previous.config != data.config)
        )
        if self.servers is not None and data != previous:
            self.servers.queued(time.time(), self.family)
        started = time.monotonic()
        # One diff of the inputs serves the partial sync and the metrics.
        services, endpoints = updated_services(previous, data)
        changed = set() if full else services | endpoints
        self.failed = True
        try:
            result = sync(data, self.state, full=full, changed=changed, now=self.clock())
            if first:
                flannel = flannel_config(self.lab, data.config.node_pod_cidr)
                self.iptables.restore(
                    nftables_mode_iptables(flannel, family=self.family).render(),
                    noflush=not self.fresh_node,
                )
            if result.cleanup.ops:
                # Its own transaction, first, as kube-proxy's; the sync's
                # state assumes it ran, so a failure fails the sync (the
                # next, full, sync starts again from the last good state).
                try:
                    self.nftables.apply(result.cleanup.render())
                except Exception:
                    if self.servers is not None:
                        self.servers.metrics.nftables_cleanup_failures.inc()
                    raise
            self.nftables.apply(result.transaction.render())
        except Exception:
            if self.servers is not None:
                self.servers.metrics.failed(partial=not full)
                self.servers.metrics.nftables_sync_failures.inc()
            if self.state is not None:
                # proxier.go: staleChains is cleared after a failed run.
                self.state = self.state.after_failure()
            raise
        self.state = result.state
        self.syncs += 1
        if self.conntrack is not None and any(sp.protocol == "udp" for sp in data.service_ports):
            for flow in stale_udp_filters(data, self.conntrack.list_udp()):
                self.conntrack.delete(flow)
        if self.servers is not None:
            self.servers.metrics.changes(len(services), len(endpoints))
            # No iptables rules are kube-proxy's in this mode: those gauges stay 0.
            self.servers.metrics.synced(time.monotonic() - started, full, time.time(), {})
            if self.serves_health_checks:
                self.servers.sync_services(health_check_ports(data), local_ready_endpoints(data))
            self.servers.synced(self.family)
        self.failed = False
        self.last_input = data
        now = self.clock()
        self.last_check = now
        if full:
            self.last_full_sync = now
