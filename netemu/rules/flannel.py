"""flanneld's own iptables rules on a node, as `flanneld --ip-masq` programs
them (kube-flannel.yml runs it so): FLANNEL-POSTRTG in nat, jumped from
POSTROUTING, and FLANNEL-FWD in filter, jumped from FORWARD.

Pure: produces rule data that netemu.rules.iptables.compile_node writes in
the node's first restore, next to kubelet's and kube-proxy's base chains.
kube-proxy's later syncs never name these chains, so they stay.

The rules follow flannel's pkg/trafficmngr/iptables (masqRules and
forwardRules, flannel >= 0.15 with the kube-proxy mark rule; unchanged in
v0.26): the same order, comments, and arguments written in the order
`iptables-save` prints them. flanneld *appends* its jumps (-A), while
kubelet and kube-proxy prepend theirs, so on a node flannel's jump comes
after KUBE-POSTROUTING's and after every KUBE-* jump in FORWARD.
"""

from __future__ import annotations

from dataclasses import dataclass

from netemu.api.config import Lab
from netemu.rules.model import RuleSet

FLANNEL_POSTRTG = "FLANNEL-POSTRTG"
FLANNEL_FWD = "FLANNEL-FWD"
MASQ_COMMENT = '-m comment --comment "flanneld masq"'
FORWARD_COMMENT = '-m comment --comment "flanneld forward"'
# flannel's trafficmngr.KubeProxyMark: kube-proxy's default masquerade bit 14,
# fixed in flannel whatever masqueradeBit kube-proxy runs with.
KUBE_PROXY_MARK = "0x4000/0x4000"
MULTICAST_V4 = "224.0.0.0/4"
# masqIP6Rules: the same rules for the IPv6 network, with IPv6 multicast.
MULTICAST_V6 = "ff00::/8"


@dataclass(frozen=True)
class FlannelConfig:
    """What flanneld on one node knows: the cluster's flannel Network (net-conf.json
    `Network`, the Lab's podCIDR) and the node's own subnet lease (its podCIDR)."""

    network: str
    subnet: str
    # flanneld uses --random-fully when iptables supports it (>= 1.6.2) and
    # --ip-masq-random-fully-disable is not given; every lab's iptables does.
    random_fully: bool = True


def flannel_config(lab: Lab | None, node_pod_cidr: str | None) -> FlannelConfig | None:
    """flanneld's settings on a lab node for the family of `node_pod_cidr`
    (a dual-stack flannel, EnableIPv6, has a Network and a lease per family
    and writes each to its own iptables), or None where no flannel runs (no
    Lab: bare Node manifests, or a node without a pod CIDR of that family)."""
    if lab is None or not node_pod_cidr:
        return None
    v6 = ":" in node_pod_cidr
    network = next((c for c in lab.spec.pod_cidrs if (":" in c) == v6), None)
    if network is None:
        return None
    return FlannelConfig(network=network, subnet=node_pod_cidr)


def add_flannel_rules(rules: RuleSet, cfg: FlannelConfig) -> None:
    """Declare flannel's chains and append its jumps and rules to `rules`
    (after whatever the built-in chains already hold there)."""
    _add_masq_rules(rules, cfg, jump=True)
    _add_forward_rules(rules, cfg, jump=True)


def ensure_flannel_rules(rules: RuleSet, existing: RuleSet, cfg: FlannelConfig) -> None:
    """Add to a resync's `rules` whatever of flannel's is gone from the node
    (`existing`, parsed iptables-save): flanneld checks its rules every
    --iptables-resync seconds (default 5) and writes back a chain whose rules
    or jump went missing. netemu folds that check into kube-proxy's periodic
    one, so a node whose tables were flushed gets flannel's rules back too."""
    for table, chain, add in (
        ("nat", FLANNEL_POSTRTG, _add_masq_rules),
        ("filter", FLANNEL_FWD, _add_forward_rules),
    ):
        current = existing.tables.get(table)
        wanted = RuleSet()
        add(wanted, cfg, jump=False)
        intact = current is not None and [r.args for r in current.chain_rules(chain)] == [
            r.args for r in wanted.table(table).chain_rules(chain)
        ]
        has_jump = current is not None and any(
            rule.args.endswith(f"-j {chain}") for rule in current.rules
        )
        if not intact or not has_jump:
            add(rules, cfg, jump=not has_jump)


def _add_masq_rules(rules: RuleSet, cfg: FlannelConfig, *, jump: bool) -> None:
    net, subnet = cfg.network, cfg.subnet
    masquerade = "-j MASQUERADE --random-fully" if cfg.random_fully else "-j MASQUERADE"

    nat = rules.table("nat")
    nat.declare(FLANNEL_POSTRTG)
    if jump:
        nat.append("POSTROUTING", f"{MASQ_COMMENT} -j {FLANNEL_POSTRTG}")
    for args in (
        # Leave what kube-proxy marked for masquerade to KUBE-POSTROUTING,
        # which has masqueraded it already (flannel: "avoid double NAT").
        f"-m mark --mark {KUBE_PROXY_MARK} {MASQ_COMMENT} -j RETURN",
        # Pod to pod, anywhere in the cluster: the overlay carries pod IPs.
        f"-s {subnet} -d {net} {MASQ_COMMENT} -j RETURN",
        f"-s {net} -d {subnet} {MASQ_COMMENT} -j RETURN",
        # From outside the cluster to this node's pods (an ETP Local NodePort
        # DNATed here): keep the client's address.
        f"! -s {net} -d {subnet} {MASQ_COMMENT} -j RETURN",
        # Pods to anything outside the cluster network (multicast excepted),
        # a remote node's NodePort included: the node's address, so replies
        # come back through this node's conntrack entry.
        f"-s {net} ! -d {MULTICAST_V6 if ':' in net else MULTICAST_V4} {MASQ_COMMENT} {masquerade}",
        # The host (or anything not in the cluster) to remote pods over the overlay.
        f"! -s {net} -d {net} {MASQ_COMMENT} {masquerade}",
    ):
        nat.append(FLANNEL_POSTRTG, args)


def _add_forward_rules(rules: RuleSet, cfg: FlannelConfig, *, jump: bool) -> None:
    net = cfg.network
    flt = rules.table("filter")
    flt.declare(FLANNEL_FWD)
    if jump:
        flt.append("FORWARD", f"{FORWARD_COMMENT} -j {FLANNEL_FWD}")
    # Forward the cluster network's traffic even where FORWARD's policy is DROP
    # (Docker sets that).
    flt.append(FLANNEL_FWD, f"-s {net} {FORWARD_COMMENT} -j ACCEPT")
    flt.append(FLANNEL_FWD, f"-d {net} {FORWARD_COMMENT} -j ACCEPT")
