"""kube-proxy for one node of a live lab: reads Services and EndpointSlices
through the control plane's client, compiles the node's rules and applies
them in one `iptables-restore --noflush` transaction.

The first sync writes everything a fresh node gets (kubelet's and
kube-proxy's jump rules and KUBE-FIREWALL included, and flanneld's
FLANNEL-POSTRTG and FLANNEL-FWD, in the same restore). Later syncs are
partial, as kube-proxy's since 1.28 (MinimizeIPTablesRestore): they write
the filter table and nat's top-level chains in full, but the service and
endpoint chains only of the Services whose Service or EndpointSlices changed
since the last sync (netemu.rules.iptables.compile_partial_sync), and
delete the service chains no longer wanted, reading what the kernel has
first. In large-cluster mode (more than 1,000 endpoints) that reading and
deleting happens at most once per syncPeriod, as kube-proxy's
lastIPTablesCleanup. After each sync it deletes the UDP conntrack entries
that point at endpoints no longer serving (netemu.rules.conntrack).

A sync is full (every chain written, every jump and canary ensured) when
kube-proxy's would be: the first one, the one after a sync that failed (its
change trackers were already flushed, proxier.needFullSync), one after the
node's own settings changed, and the periodic ones below.

Periodic work, as kube-proxy's sync runner and utiliptables.Monitor do it
(`tick`, called by the supervisor): every syncPeriod the KUBE-PROXY-CANARY
chain in mangle is looked for, and when it is gone (someone flushed the
tables) a full sync puts back every chain, jump and canary; a failed sync
is retried after syncPeriod; and a full sync runs at least once an hour
(proxyutil.FullSyncPeriod). Each sync is reported to the node's kube-proxy
servers (netemu.node.proxyservers): health, metrics (full and partial syncs
apart, as kube-proxy's) and the health check listeners follow it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.load import gc_paused
from netemu.controlplane import Client, snapshot
from netemu.controlplane.state import ClusterState
from netemu.kernel.conntrack import Conntrack
from netemu.kernel.iptables import Iptables
from netemu.node.proxyhealth import (
    DEFAULT_SYNC_PERIOD,
    FULL_SYNC_PERIOD,
    health_check_ports,
    local_ready_endpoints,
)
from netemu.node.proxymetrics import changed_services, updated_services
from netemu.node.proxyservers import NodeProxyServers
from netemu.pipeline import proxy_input
from netemu.rules import names
from netemu.rules.conntrack import stale_udp_filters
from netemu.rules.flannel import ensure_flannel_rules, flannel_config
from netemu.rules.input import IPFamily, ProxyInput
from netemu.rules.inputcache import ProxyInputCache
from netemu.rules.iptables import (
    CompileCache,
    compile_full_resync,
    compile_node,
    compile_partial_sync,
    compile_sync,
    large_cluster,
    rule_counts,
)
from netemu.rules.model import RuleSet, parse_restore


class NodeProxy(Protocol):
    """A node's kube-proxy agent, in either mode (ProxyAgent, NftProxyAgent)."""

    def reconcile(self) -> bool: ...


def reconcile_nodes(agents: Sequence[NodeProxy]) -> list[bool]:
    """Every node's kube-proxy reconciles at once, each on its own thread,
    as kube-proxies on real nodes do: one node's iptables-restore (a
    process of its own, most of a partial sync) runs while another node
    compiles or restores. Returns each agent's reconcile result; when one
    fails, the others still finish and the first failure is raised.

    The agents must not share anything but the client and an input cache
    (both thread-safe)."""
    if len(agents) <= 1:
        return [agent.reconcile() for agent in agents]
    # Paused once around all of them: each agent's own gc_paused finds it
    # paused and leaves it so, rather than one agent turning the collector
    # back on while another is still making its rules.
    with gc_paused(), ThreadPoolExecutor(len(agents), thread_name_prefix="kube-proxy") as pool:
        futures = [pool.submit(agent.reconcile) for agent in agents]
        wait(futures)
    return [future.result() for future in futures]


def canary_gone(existing: RuleSet) -> bool:
    """utiliptables.Monitor watches the canary of its first table (mangle):
    once that is gone, the tables were flushed and a full sync is due."""
    mangle = existing.tables.get("mangle")
    return mangle is None or not mangle.has_chain(names.KUBE_PROXY_CANARY)


@dataclass
class ProxyAgent:
    client: Client
    node: str
    iptables: Iptables
    lab: Lab
    proxy_config: KubeProxyConfiguration | None
    conntrack: Conntrack | None = None
    # The node's namespace was just created, so nothing but kube-proxy's own
    # rules will ever have been in it before the first sync.
    fresh_node: bool = False
    servers: NodeProxyServers | None = None
    sync_period: float = DEFAULT_SYNC_PERIOD
    clock: Callable[[], float] = time.monotonic
    # Converts only the Services and EndpointSlices that changed since the
    # last sync, as kube-proxy's change trackers; one may serve every node
    # (of this family). None: the agent makes its own.
    input_cache: ProxyInputCache | None = None
    last_input: ProxyInput | None = field(default=None, init=False)  # None: never synced
    last_check: float = field(default=0.0, init=False)
    last_full_sync: float = field(default=0.0, init=False)
    # When stale chains were last looked for (kube-proxy's lastIPTablesCleanup).
    last_cleanup: float = field(default=float("-inf"), init=False)
    failed: bool = field(default=False, init=False)  # the last sync did not finish
    # Each Service port's rules of the last partial sync, to reuse the unchanged ones.
    compile_cache: CompileCache = field(default_factory=CompileCache, init=False)
    # The IP family of this proxier: a dual-stack node runs one agent per
    # family (kube-proxy's dual-stack proxier), the IPv6 one on ip6tables.
    family: IPFamily = "IPv4"
    # The node's servers are shared by its proxiers (kube-proxy's MetaProxier
    # shares the health server and metrics): every family reports its syncs,
    # the primary family's proxier alone serves the Services' health checks
    # and follows the node's eligibility.
    serves_health_checks: bool = True

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
            return self._reconcile()

    def _reconcile(self) -> bool:
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
        if not due and not canary_gone(parse_restore(self.iptables.save())):
            return False
        self.force_sync()
        return True

    def force_sync(self) -> None:
        """A full sync now (kube-proxy's forceSyncProxyRules)."""
        with gc_paused():  # see reconcile
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            self._sync(self._input(state), full=True)

    def _sync(self, data: ProxyInput, *, full: bool) -> None:
        previous = self.last_input
        first = previous is None
        full = full or previous is None or self.failed or previous.config != data.config
        if self.servers is not None and data != previous:
            # Proxier.OnServiceUpdate / OnEndpointSliceUpdate → QueuedUpdate.
            self.servers.queued(time.time(), self.family)
        started = time.monotonic()
        self.failed = True
        # A first restore into a fresh namespace may flush the (empty) tables:
        # the same end state, and iptables-nft-restore --noflush is ~50x
        # slower on large rule sets (benchmarks/RESULTS.md, restore).
        noflush = not first or not self.fresh_node
        try:
            if full:
                sync = compile_sync(data, self.compile_cache)
                total = written = rule_counts(sync)
                flannel = flannel_config(self.lab, data.config.node_pod_cidr)
                if first:
                    rules = compile_node(data, flannel, sync=sync)
                else:
                    existing = parse_restore(self.iptables.save())
                    rules = compile_full_resync(data, existing, sync=sync)
                    if flannel is not None:
                        ensure_flannel_rules(rules, existing, flannel)
                self.last_cleanup = self.clock()
            else:
                services, endpoints = updated_services(previous, data)
                partial = compile_partial_sync(
                    data, services | endpoints, self._existing(data), self.compile_cache
                )
                rules = partial.rules
                total, written = partial.rule_counts()
            self._restore(rules.render(), noflush)
        except Exception:
            if self.servers is not None:
                self.servers.metrics.failed(partial=not full)
            raise
        if self.conntrack is not None and any(sp.protocol == "udp" for sp in data.service_ports):
            for flow in stale_udp_filters(data, self.conntrack.list_udp()):
                self.conntrack.delete(flow)
        if self.servers is not None:
            services_changed, endpoints_changed = changed_services(previous, data)
            self.servers.metrics.changes(services_changed, endpoints_changed)
            self.servers.metrics.synced(
                time.monotonic() - started, full, time.time(), total, written
            )
            if self.serves_health_checks:
                self.servers.sync_services(health_check_ports(data), local_ready_endpoints(data))
            self.servers.synced(self.family)
        self.failed = False
        self.last_input = data
        now = self.clock()
        self.last_check = now
        if full:
            self.last_full_sync = now

    def _existing(self, data: ProxyInput) -> RuleSet | None:
        """The kernel's rules, to find stale chains in: on every sync, but in
        large-cluster mode at most once per syncPeriod, as kube-proxy (its
        iptables-save "can take several seconds to run on hosts with lots of
        iptables rules"; a stale chain nothing jumps to is harmless)."""
        now = self.clock()
        if large_cluster(data) and now - self.last_cleanup <= self.sync_period:
            return None
        self.last_cleanup = now
        return parse_restore(self.iptables.save())

    def _restore(self, text: str, noflush: bool) -> None:
        try:
            self.iptables.restore(text, noflush=noflush)
        except Exception:
            if self.servers is not None:
                self.servers.metrics.restore_failures.inc()
            raise
