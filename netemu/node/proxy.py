"""kube-proxy for one node of a live lab: reads Services and EndpointSlices
through the control plane's client, compiles the node's rules and applies
them in one `iptables-restore --noflush` transaction.

The first sync writes everything a fresh node gets (kubelet's and
kube-proxy's jump rules and KUBE-FIREWALL included, and flanneld's
FLANNEL-POSTRTG and FLANNEL-FWD, in the same restore); later syncs write
kube-proxy's own chains and delete the service chains no longer wanted,
reading what the kernel has first, as kube-proxy does. After each sync it
deletes the UDP conntrack entries that point at endpoints no longer serving
(netemu.rules.conntrack).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.controlplane import Client, snapshot
from netemu.kernel.conntrack import Conntrack
from netemu.kernel.iptables import Iptables
from netemu.pipeline import proxy_input
from netemu.rules.conntrack import stale_udp_filters
from netemu.rules.flannel import flannel_config
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import compile_node, compile_resync
from netemu.rules.model import parse_restore


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
    last_input: ProxyInput | None = field(default=None, init=False)  # None: never synced

    def reconcile(self) -> bool:
        """One sync if anything kube-proxy watches changed; True if it wrote rules."""
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        data = proxy_input(state, self.node)
        synced = self.last_input is not None
        if synced and data == self.last_input:
            return False
        if not synced:
            rules = compile_node(data, flannel_config(self.lab, data.config.node_pod_cidr))
        else:
            rules = compile_resync(data, parse_restore(self.iptables.save()))
        # A first restore into a fresh namespace may flush the (empty) tables:
        # the same end state, and iptables-nft-restore --noflush is ~50x
        # slower on large rule sets (benchmarks/RESULTS.md, restore).
        noflush = synced or not self.fresh_node
        self.iptables.restore(rules.render(), noflush=noflush)
        if self.conntrack is not None and any(sp.protocol == "udp" for sp in data.service_ports):
            for flow in stale_udp_filters(data, self.conntrack.list_udp()):
                self.conntrack.delete(flow)
        self.last_input = data
        return True
