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

Periodic work (`tick`, called by the supervisor), as kube-proxy's nftables
proxier (pkg/proxy/nftables/proxier.go at the commit read, b0f823e6): its
sync runner retries a failed sync after syncPeriod, in full (needFullSync),
and syncs at least once an hour (NewProxier's BoundedFrequencyRunner,
maxInterval time.Hour), a partial sync like any other: only needFullSync
makes a sync full in this mode. There is no canary: a table someone deleted
stays gone until the next sync that writes a Service's chains fails on it,
and the full sync that retries it writes the table back.

A stale-chain cleanup the kernel refuses does not fail the sync: kube-proxy
logs it ("Unable to delete stale chains; will retry later"), counts it
(sync_proxy_rules_nftables_cleanup_failures_total) and goes on; the sync
finds those chains in the table again and flushes them as stale anew.

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

from dataclasses import dataclass, field

from netemu.kernel.iptables import Iptables
from netemu.kernel.nftables import Nftables, NftablesError
from netemu.node.proxyloop import KubeProxyLoop, RuleCounts
from netemu.rules.flannel import flannel_config
from netemu.rules.input import ProxyInput
from netemu.rules.nftables import NftSyncState, nftables_mode_iptables, sync


@dataclass(kw_only=True)
class NftProxyAgent(KubeProxyLoop):
    """kube-proxy's nftables mode on one node (the loop: KubeProxyLoop)."""

    nftables: Nftables
    iptables: Iptables  # kubelet's and flanneld's rules, written by the first sync
    # What the last successful sync left in the kernel (None: nothing yet).
    state: NftSyncState | None = field(default=None, init=False)
    syncs: int = field(default=0, init=False)  # successful `nft -f` sync transactions

    def _rules_lost(self) -> bool:
        return False  # no canary in this mode (see above)

    def _full_sync_due(self, now: float) -> bool:
        return False  # only needFullSync (see above)

    def _write(self, data: ProxyInput, *, full: bool, changed: set[tuple[str, str]]) -> RuleCounts:
        first = self.state is None
        now = self.clock()
        changed = set() if full else changed
        try:
            result = sync(data, self.state, full=full, changed=changed, now=now)
            if first:
                flannel = flannel_config(self.lab, data.config.node_pod_cidr)
                self.iptables.restore(
                    nftables_mode_iptables(flannel, family=self.family).render(),
                    noflush=not self.fresh_node,
                )
            if result.cleanup.ops:
                # Its own transaction, first, as kube-proxy's.
                try:
                    self.nftables.apply(result.cleanup.render())
                except NftablesError as exc:
                    if self.log is not None:
                        self.log(f"Unable to delete stale chains; will retry later: {exc}")
                    if self.servers is not None:
                        self.servers.metrics.nftables_cleanup_failures.inc()
                    result = sync(
                        data,
                        result.previous_if_cleanup_refused,
                        full=full,
                        changed=changed,
                        now=now,
                    )
            self.nftables.apply(result.transaction.render())
        except Exception:
            if self.servers is not None:
                self.servers.metrics.nftables_sync_failures.inc()
            if self.state is not None:
                # proxier.go: staleChains is cleared after a failed run.
                self.state = self.state.after_failure()
            raise
        self.state = result.state
        self.syncs += 1
        # No iptables rules are kube-proxy's in this mode: those gauges stay 0.
        return {}, None
