"""kube-proxy for one node of a live lab: reads Services and EndpointSlices
through the control plane's client, compiles the node's rules and applies
them in one `iptables-restore --noflush` transaction.

The first sync writes everything a fresh node gets (kubelet's and
kube-proxy's jump rules and KUBE-FIREWALL included); later syncs write
kube-proxy's own chains and delete the service chains no longer wanted,
reading what the kernel has first, as kube-proxy does. After each sync it
deletes the UDP conntrack entries that point at endpoints no longer serving
(netemu.rules.conntrack).

Periodic work, as kube-proxy's sync runner and utiliptables.Monitor do it
(`tick`, called by the supervisor): every syncPeriod the KUBE-PROXY-CANARY
chain in mangle is looked for, and when it is gone (someone flushed the
tables) a full sync puts back every chain, jump and canary; a failed sync
is retried after syncPeriod; and a full sync runs at least once an hour
(proxyutil.FullSyncPeriod). Each sync is reported to the node's kube-proxy
servers (netemu.node.proxyservers): health, metrics and the health check
listeners follow it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.controlplane import Client, snapshot
from netemu.kernel.conntrack import Conntrack
from netemu.kernel.iptables import Iptables
from netemu.node.proxyhealth import (
    DEFAULT_SYNC_PERIOD,
    FULL_SYNC_PERIOD,
    health_check_ports,
    local_ready_endpoints,
    node_eligible,
)
from netemu.node.proxymetrics import changed_services, rules_by_table
from netemu.node.proxyservers import NodeProxyServers
from netemu.pipeline import proxy_input
from netemu.rules import names
from netemu.rules.conntrack import stale_udp_filters
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import compile_full_resync, compile_node, compile_resync
from netemu.rules.model import RuleSet, parse_restore


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
    last_input: ProxyInput | None = field(default=None, init=False)  # None: never synced
    last_check: float = field(default=0.0, init=False)
    last_full_sync: float = field(default=0.0, init=False)
    failed: bool = field(default=False, init=False)  # the last sync did not finish

    def reconcile(self) -> bool:
        """One sync if anything kube-proxy watches changed; True if it wrote rules."""
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        data = proxy_input(state, self.node)
        if self.servers is not None:
            node = state.node(self.node)
            taints = [t.get("key", "") for t in node.spec.taints or [] if isinstance(t, dict)]
            self.servers.set_node_eligible(
                node_eligible(node.metadata.deletion_timestamp is not None, taints)
            )
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
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        self._sync(proxy_input(state, self.node), full=True)
        return True

    def _sync(self, data: ProxyInput, *, full: bool) -> None:
        first = self.last_input is None
        if self.servers is not None and data != self.last_input:
            # Proxier.OnServiceUpdate / OnEndpointSliceUpdate → QueuedUpdate.
            self.servers.queued(time.time())
        started = time.monotonic()
        self.failed = True
        if first:
            rules = compile_node(data)
        elif full:
            rules = compile_full_resync(data, parse_restore(self.iptables.save()))
        else:
            rules = compile_resync(data, parse_restore(self.iptables.save()))
        text = rules.render()
        # A first restore into a fresh namespace may flush the (empty) tables:
        # the same end state, and iptables-nft-restore --noflush is ~50x
        # slower on large rule sets (benchmarks/RESULTS.md, restore).
        noflush = not first or not self.fresh_node
        try:
            self.iptables.restore(text, noflush=noflush)
        except Exception:
            if self.servers is not None:
                self.servers.metrics.restore_failures.inc()
            raise
        if self.conntrack is not None and any(sp.protocol == "udp" for sp in data.service_ports):
            for flow in stale_udp_filters(data, self.conntrack.list_udp()):
                self.conntrack.delete(flow)
        if self.servers is not None:
            services, endpoints = changed_services(self.last_input, data)
            self.servers.metrics.changes(services, endpoints)
            self.servers.metrics.synced(
                time.monotonic() - started, full, time.time(), rules_by_table(text)
            )
            self.servers.sync_services(health_check_ports(data), local_ready_endpoints(data))
            self.servers.synced()
        self.failed = False
        self.last_input = data
        now = self.clock()
        self.last_check = now
        if full:
            self.last_full_sync = now
