"""The loop both of kube-proxy's modes share on one node: what makes a sync
happen, whether it is full, and what follows a sync that wrote the kernel.

kube-proxy's iptables and nftables proxiers run the same loop around
different syncProxyRules (pkg/proxy/iptables/proxier.go and
pkg/proxy/nftables/proxier.go): a sync when what the informers deliver
changed, a full one the first time, after a failed sync (needFullSync) and
after the node's own settings changed; a retry of a failed sync after
syncPeriod (RetryAfter), in full; a sync at least once an hour, changes or
not (the sync runner's maxInterval); after each sync, the stale UDP
conntrack entries deleted and the node's health and metrics servers told.

`KubeProxyLoop` is that loop; a mode's agent supplies what differs:
`_write` (compile and apply one sync), `_rules_lost` (iptables mode's
canary, looked for every syncPeriod; nftables mode has none) and
`_full_sync_due` (iptables mode makes a sync full when the last full one
is an hour old, proxyutil.FullSyncPeriod; nftables mode never does).

Owns: nothing in the kernel but through the agent's `_write`, and the UDP
conntrack entries of endpoints no longer serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.controlplane import Client, snapshot
from netemu.controlplane.state import ClusterState
from netemu.heap import gc_paused
from netemu.kernel.conntrack import Conntrack
from netemu.node.proxyhealth import (
    DEFAULT_SYNC_PERIOD,
    MAX_SYNC_INTERVAL,
    health_check_ports,
    local_ready_endpoints,
)
from netemu.node.proxymetrics import updated_services
from netemu.node.proxyservers import NodeProxyServers
from netemu.pipeline import proxy_input
from netemu.rules.conntrack import stale_udp_filters
from netemu.rules.input import IPFamily, ProxyInput
from netemu.rules.inputcache import ProxyInputCache

# What one sync wrote, for kube-proxy's rule gauges: the rules it owns by
# table, and those this sync wrote (None: the same, as in a full sync).
RuleCounts = tuple[dict[str, int], dict[str, int] | None]


@dataclass(kw_only=True)
class KubeProxyLoop:
    client: Client
    node: str
    lab: Lab
    proxy_config: KubeProxyConfiguration | None
    conntrack: Conntrack | None = None
    # The node's namespace was just created, so nothing but kube-proxy's own
    # rules will ever have been in it before the first sync.
    fresh_node: bool = False
    servers: NodeProxyServers | None = None
    sync_period: float = DEFAULT_SYNC_PERIOD
    clock: Callable[[], float] = time.monotonic
    # The IP family of this proxier: a dual-stack node runs one agent per
    # family (kube-proxy's MetaProxier), the IPv6 one on ip6tables or
    # `ip6 kube-proxy`.
    family: IPFamily = "IPv4"
    # Converts only the Services and EndpointSlices that changed since the
    # last sync, as kube-proxy's change trackers; one may serve every node
    # (of this family). None: the agent makes its own.
    input_cache: ProxyInputCache | None = None
    # The node's servers are shared by its proxiers (kube-proxy's MetaProxier
    # shares the health server and metrics): every family reports its syncs,
    # the primary family's proxier alone serves the Services' health checks
    # and follows the node's eligibility.
    serves_health_checks: bool = True
    # Where kube-proxy's log lines go (the lab's supervisor prints them);
    # None: nowhere.
    log: Callable[[str], None] | None = None
    last_input: ProxyInput | None = field(default=None, init=False)  # None: never synced
    last_check: float = field(default=0.0, init=False)
    last_full_sync: float = field(default=0.0, init=False)
    last_sync: float = field(default=0.0, init=False)  # the last successful one
    failed: bool = field(default=False, init=False)  # the last sync did not finish

    def _write(self, data: ProxyInput, *, full: bool, changed: set[tuple[str, str]]) -> RuleCounts:
        """Compile and apply one sync (`changed`: the Services a partial one
        rewrites); raises if the kernel refused it."""
        raise NotImplementedError

    def _rules_lost(self) -> bool:
        """The periodic look, every syncPeriod: are this proxier's rules gone
        from the kernel (someone flushed them), so that a full sync must put
        them back?"""
        raise NotImplementedError

    def _full_sync_due(self, now: float) -> bool:
        """Whether a sync now is full for its age alone."""
        raise NotImplementedError

    def _input(self, state: ClusterState) -> ProxyInput:
        """What this proxier sees now, converted through its family's cache."""
        if self.input_cache is None:
            self.input_cache = ProxyInputCache(self.family)
        return proxy_input(state, self.node, family=self.family, cache=self.input_cache)

    def reconcile(self) -> bool:
        """One sync if anything kube-proxy watches changed; True if it wrote rules."""
        # A sync makes rules and strings by the hundred thousand and frees
        # them only at its end: the cyclic GC walking them again and again
        # took most of a partial sync's time at 5,000 Services.
        with gc_paused():
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            data = self._input(state)
            if self.servers is not None and self.serves_health_checks:
                self.servers.follow_node(state.node(self.node))
            if self.last_input is not None and data == self.last_input and not self.failed:
                return False
            self._sync(data, full=False)
            return True

    def tick(self) -> str | None:
        """The periodic part of kube-proxy's loop; call it often (at least
        every syncPeriod). Says what it synced, if it did."""
        now = self.clock()
        if self.last_input is None or now - self.last_check < self.sync_period:
            return None
        self.last_check = now
        if self.failed:
            self.force_sync()
            return "full resync after a failed sync"
        if self._rules_lost():
            self.force_sync()
            return "full resync: its rules were gone"
        if now - self.last_sync >= MAX_SYNC_INTERVAL:
            with gc_paused():  # see reconcile
                state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
                self._sync(self._input(state), full=False)
            return "hourly sync" + (" (full)" if self.last_full_sync == self.last_sync else "")
        return None

    def force_sync(self) -> None:
        """A full sync now (kube-proxy's forceSyncProxyRules)."""
        with gc_paused():  # see reconcile
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            self._sync(self._input(state), full=True)

    def _sync(self, data: ProxyInput, *, full: bool) -> None:
        previous = self.last_input
        full = (
            full
            or previous is None
            or self.failed
            or previous.config != data.config  # the node's own settings changed
            or self._full_sync_due(self.clock())
        )
        if self.servers is not None and data != previous:
            # Proxier.OnServiceUpdate / OnEndpointSliceUpdate → QueuedUpdate.
            self.servers.queued(time.time(), self.family)
        started = time.monotonic()
        # One diff of the inputs serves the partial sync and the metrics.
        services, endpoints = updated_services(previous, data)
        self.failed = True
        try:
            total, written = self._write(data, full=full, changed=services | endpoints)
        except Exception:
            if self.servers is not None:
                self.servers.metrics.failed(partial=not full)
            raise
        if self.conntrack is not None and any(sp.protocol == "udp" for sp in data.service_ports):
            for flow in stale_udp_filters(data, self.conntrack.list_udp()):
                self.conntrack.delete(flow)
        if self.servers is not None:
            self.servers.metrics.changes(len(services), len(endpoints))
            self.servers.metrics.synced(
                time.monotonic() - started, full, time.time(), total, written
            )
            if self.serves_health_checks:
                self.servers.sync_services(health_check_ports(data), local_ready_endpoints(data))
            self.servers.synced(self.family)
        self.failed = False
        self.last_input = data
        now = self.clock()
        self.last_check = self.last_sync = now
        if full:
            self.last_full_sync = now
