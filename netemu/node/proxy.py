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

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from netemu.heap import gc_paused
from netemu.kernel.iptables import Iptables
from netemu.node.proxyhealth import FULL_SYNC_PERIOD
from netemu.node.proxyloop import KubeProxyLoop, RuleCounts
from netemu.rules import names
from netemu.rules.flannel import ensure_flannel_rules, flannel_config
from netemu.rules.input import IPFamily, ProxyInput
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

    node: str
    family: IPFamily
    sync_period: float

    def reconcile(self) -> bool: ...


def reconcile_nodes(
    agents: Sequence[NodeProxy],
    *,
    on_failure: Callable[[NodeProxy, Exception], None] | None = None,
) -> list[bool]:
    """Every node's kube-proxy reconciles at once, each on its own thread,
    as kube-proxies on real nodes do: one node's iptables-restore (a
    process of its own, most of a partial sync) runs while another node
    compiles or restores. Returns each agent's reconcile result. When one
    fails, the others still finish; then the first failure is raised, or,
    with `on_failure`, each is handed to it (that agent's result: False).

    The agents must not share anything but the client and an input cache
    (both thread-safe)."""

    def run(agent: NodeProxy) -> bool:
        if on_failure is None:
            return agent.reconcile()
        try:
            return agent.reconcile()
        except Exception as exc:
            on_failure(agent, exc)
            return False

    if len(agents) <= 1:
        return [run(agent) for agent in agents]
    # Paused once around all of them: each agent's own gc_paused finds it
    # paused and leaves it so, rather than one agent turning the collector
    # back on while another is still making its rules.
    with gc_paused(), ThreadPoolExecutor(len(agents), thread_name_prefix="kube-proxy") as pool:
        futures = [pool.submit(run, agent) for agent in agents]
        wait(futures)
    return [future.result() for future in futures]


def canary_gone(existing: RuleSet) -> bool:
    """utiliptables.Monitor watches the canary of its first table (mangle):
    once that is gone, the tables were flushed and a full sync is due."""
    mangle = existing.tables.get("mangle")
    return mangle is None or not mangle.has_chain(names.KUBE_PROXY_CANARY)


@dataclass(kw_only=True)
class ProxyAgent(KubeProxyLoop):
    """kube-proxy's iptables mode on one node (the loop: KubeProxyLoop)."""

    iptables: Iptables
    # When stale chains were last looked for (kube-proxy's lastIPTablesCleanup).
    last_cleanup: float = field(default=float("-inf"), init=False)
    # Each Service port's rules of the last partial sync, to reuse the unchanged ones.
    compile_cache: CompileCache = field(default_factory=CompileCache, init=False)

    def _rules_lost(self) -> bool:
        return canary_gone(parse_restore(self.iptables.save()))

    def _full_sync_due(self, now: float) -> bool:
        # syncProxyRules: doFullSync when time.Since(lastFullSync) > FullSyncPeriod.
        return now - self.last_full_sync > FULL_SYNC_PERIOD

    def _write(self, data: ProxyInput, *, full: bool, changed: set[tuple[str, str]]) -> RuleCounts:
        first = self.last_input is None
        # A first restore into a fresh namespace may flush the (empty) tables:
        # the same end state, and iptables-nft-restore --noflush is ~50x
        # slower on large rule sets (benchmarks/RESULTS.md, restore).
        noflush = not first or not self.fresh_node
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
            partial = compile_partial_sync(data, changed, self._existing(data), self.compile_cache)
            rules = partial.rules
            total, written = partial.rule_counts()
        self._restore(rules.render(), noflush)
        return total, written

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
