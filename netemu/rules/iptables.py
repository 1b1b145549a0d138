"""kube-proxy's iptables mode, rule for rule (pkg/proxy/iptables/proxier.go,
Kubernetes ≈ 1.31): the same chains, names, rule order, comments and argument
order as kube-proxy's own iptables-restore input.

`compile_sync` is what kube-proxy restores on every sync (filter + nat, with
`--noflush`). `compile_node` adds what is installed once at start-up: the
jumps from the built-in chains (kube-proxy's and kubelet's, each prepended,
so they appear in reverse order) and KUBE-PROXY-CANARY in mangle, nat and
filter; with a FlannelConfig it also writes flanneld's FLANNEL-POSTRTG and
FLANNEL-FWD (netemu.rules.flannel), which kube-proxy's later syncs leave
alone. Its rendering is a complete restore input for a fresh node and reads
like `iptables-save` of a real one. `compile_resync` is a sync of a node
whose kernel already holds rules: it also flushes and deletes the service and
endpoint chains kube-proxy no longer uses. `compile_partial_sync` is a
partial sync (kube-proxy ≥ 1.28, MinimizeIPTablesRestore): the same, except
that the chains of Services that did not change are left out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import netaddr

from netemu.rules import names as n
from netemu.rules.flannel import FlannelConfig, add_flannel_rules
from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.model import BUILTIN_CHAINS, Rule, RuleSet, Table, quote

# Above this many endpoints in total kube-proxy drops per-endpoint comments
# ("largeClusterMode", largeClusterEndpointsThreshold).
LARGE_CLUSTER_ENDPOINTS = 1000

NFACCT_LOCALHOST_NODEPORTS = "localhost_nps_accepted_pkts"
NFACCT_INVALID_DROPPED = "ct_state_invalid_dropped_pkts"


@dataclass(frozen=True)
class JumpChain:
    table: str
    dst: str
    src: str
    comment: str
    extra: str = ""


_NEW = "-m conntrack --ctstate NEW"

# kube-proxy's iptablesJumpChains, in the order it ensures them (each prepended).
JUMP_CHAINS: tuple[JumpChain, ...] = (
    JumpChain(
        "filter",
        n.KUBE_EXTERNAL_SERVICES,
        "INPUT",
        "kubernetes externally-visible service portals",
        _NEW,
    ),
    JumpChain(
        "filter",
        n.KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        "kubernetes externally-visible service portals",
        _NEW,
    ),
    JumpChain("filter", n.KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports"),
    JumpChain("filter", n.KUBE_SERVICES, "FORWARD", "kubernetes service portals", _NEW),
    JumpChain("filter", n.KUBE_SERVICES, "OUTPUT", "kubernetes service portals", _NEW),
    JumpChain("filter", n.KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules"),
    JumpChain("filter", n.KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", _NEW),
    JumpChain("filter", n.KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", _NEW),
    JumpChain(
        "filter", n.KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", _NEW
    ),
    JumpChain("nat", n.KUBE_SERVICES, "OUTPUT", "kubernetes service portals"),
    JumpChain("nat", n.KUBE_SERVICES, "PREROUTING", "kubernetes service portals"),
    JumpChain("nat", n.KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules"),
)
# kubelet installs these first (pkg/kubelet/kubelet_network_linux.go), also prepended.
KUBELET_JUMP_CHAINS: tuple[JumpChain, ...] = (
    JumpChain("filter", n.KUBE_FIREWALL, "INPUT", ""),
    JumpChain("filter", n.KUBE_FIREWALL, "OUTPUT", ""),
)


def _comment(text: str) -> str:
    return f"-m comment --comment {quote(text)}"


# Mitigation for route_localnet (https://issue.k8s.io/90259); kubelet writes the same rule.
LOCALNET_RULE = (
    f"{_comment('block incoming localnet connections')} -d 127.0.0.0/8 "
    "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
)


def large_cluster(data: ProxyInput) -> bool:
    """kube-proxy's largeClusterMode: more than LARGE_CLUSTER_ENDPOINTS
    endpoints in all (per-endpoint comments dropped, stale chains deleted at
    most once per syncPeriod)."""
    total = sum(len(data.endpoints_of(sp)) for sp in data.service_ports)
    return total > LARGE_CLUSTER_ENDPOINTS


def compile_node(
    data: ProxyInput, flannel: FlannelConfig | None = None, *, sync: RuleSet | None = None
) -> RuleSet:
    """Everything kube-proxy (and kubelet's KUBE-FIREWALL, and flanneld when
    `flannel` is given) puts in a fresh node. `sync`: `compile_sync(data)`
    when the caller has it already."""
    sync = compile_sync(data) if sync is None else sync
    extra = RuleSet()
    if flannel is not None:
        add_flannel_rules(extra, flannel)
    full = RuleSet()
    full.table("mangle").declare(n.KUBE_PROXY_CANARY)
    for table_name in ("filter", "nat"):
        src = sync.tables[table_name]
        table = full.table(table_name)
        for chain in BUILTIN_CHAINS[table_name]:
            table.policies[chain] = "ACCEPT"
        table.chains.append(n.KUBE_PROXY_CANARY)
        table.chains.extend(src.chains)
        # Each jump is prepended in turn, so a built-in chain ends up holding
        # its jumps in reverse order; kubelet's went in first and stay last.
        for chain in BUILTIN_CHAINS[table_name]:
            jumps = [
                j
                for j in (*KUBELET_JUMP_CHAINS, *JUMP_CHAINS)
                if j.table == table_name and j.src == chain
            ]
            for jump in reversed(jumps):
                args = " ".join(
                    part
                    for part in (jump.extra, _comment(jump.comment) if jump.comment else "")
                    if part
                )
                table.append(chain, f"{args} -j {jump.dst}".strip())
        # flanneld appends its jumps, so they follow the prepended KUBE-* ones.
        own = extra.tables.get(table_name)
        builtin = set(BUILTIN_CHAINS[table_name])
        if own is not None:
            table.rules.extend(r for r in own.rules if r.chain in builtin)
        table.rules.extend(src.rules)
        if table_name == "filter" and n.KUBE_FIREWALL not in src.chains:
            # kubelet owns KUBE-FIREWALL and fills it even when kube-proxy's
            # localhost NodePorts are off (pkg/kubelet/kubelet_network_linux.go);
            # for IPv6 it writes no rule ("ipv6 doesn't have this issue"), but
            # kube-proxy still ensures the chain and its jumps
            # (iptablesKubeletJumpChains in pkg/proxy/iptables/proxier.go).
            table.chains.append(n.KUBE_FIREWALL)
            if data.config.ip_family == "IPv4":
                table.append(n.KUBE_FIREWALL, LOCALNET_RULE)
        if own is not None:
            table.chains.extend(own.chains)
            table.rules.extend(r for r in own.rules if r.chain not in builtin)
    return full


def compile_sync(data: ProxyInput, cache: CompileCache | None = None) -> RuleSet:
    """kube-proxy's restore input for one sync of one node. `cache` (the
    node's, see compile_partial_sync) is used and refilled: a full sync
    leaves every Service port's rules in it for the partial syncs after it."""
    return _Compiler(data, cache=cache).run()


def compile_resync(data: ProxyInput, existing: RuleSet, *, sync: RuleSet | None = None) -> RuleSet:
    """kube-proxy's restore input for a sync of a node whose kernel holds `existing`
    (parsed iptables-save): `compile_sync(data)` plus the deletion of stale chains.

    syncProxyRules (pkg/proxy/iptables/proxier.go, "Delete chains no longer in
    use") saves the nat table only, and for each existing chain that is not
    active in this sync and matches isServiceChainName it writes a chain line
    `:CHAIN - [0:0]` after the active ones (which flushes it, together with
    every rule in it that jumps to another stale chain) and `-X CHAIN` among
    the nat rules, so that all flushes precede all deletions. kube-proxy walks a
    Go set, in no fixed order; here the stale chains are sorted. In
    large-cluster mode kube-proxy does this at most once per syncPeriod; this
    function is a sync that does it.

    One difference in text only: kube-proxy's `-X` lines come just before the
    final "kubernetes service nodeports" rule of KUBE-SERVICES, while a Table
    renders its deletions after all its rules; iptables-restore applies both
    the same way.
    """
    rules = compile_sync(data) if sync is None else sync
    _delete_stale(rules.table("nat"), set(rules.table("nat").chains), existing)
    return rules


def _delete_stale(nat: Table, active: set[str], existing: RuleSet) -> None:
    """Flush and delete the service chains `existing` has in nat that are not
    `active` (see compile_resync)."""
    current = existing.tables.get("nat")
    if current is None:
        return
    stale = sorted({c for c in current.chains if c not in active and n.is_service_chain(c)})
    for chain in stale:
        nat.declare(chain)
        nat.deletions.append(chain)


@dataclass(frozen=True)
class PartialSync:
    """One partial sync: the restore input, and what it computed but left out."""

    rules: RuleSet
    # The nat chains and rules of the Services that did not change: kube-proxy
    # computes them too (to know which chains are still in use, and for
    # sync_proxy_rules_iptables_total) and throws them away.
    skipped: Table

    def rule_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(rules kube-proxy owns per table, rules this sync wrote per table):
        sync_proxy_rules_iptables_total and sync_proxy_rules_iptables_last."""
        written = rule_counts(self.rules)
        total = dict(written)
        total["nat"] = total.get("nat", 0) + len(self.skipped.rules)
        return total, written


def rule_counts(rules: RuleSet) -> dict[str, int]:
    """Rules per table of a sync's restore input (its `-X` lines are not rules)."""
    return {name: len(table.rules) for name, table in rules.tables.items()}


def compile_partial_sync(
    data: ProxyInput,
    changed: Collection[tuple[str, str]],
    existing: RuleSet | None,
    cache: CompileCache | None = None,
) -> PartialSync:
    """kube-proxy's restore input for a partial sync (syncProxyRules with
    tryPartialSync, pkg/proxy/iptables/proxier.go, ≥ 1.28; KEP-3453
    MinimizeIPTablesRestore).

    `changed` holds the (namespace, name) of every Service whose Service or
    EndpointSlices changed since the last successful sync (the trackers'
    UpdatedServices). kube-proxy then still writes every filter chain and the
    nat table's top-level chains (KUBE-SERVICES, KUBE-NODEPORTS,
    KUBE-POSTROUTING, KUBE-MARK-MASQ) in full, since each holds rules of
    every Service; but the KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW- and
    KUBE-SEP- chains only of the changed Services, all ports of each (the
    test is per Service, not per port). iptables-restore --noflush leaves a
    chain that the input does not name as it is.

    `existing` is the kernel's iptables-save (nat is all that is read): the
    service chains in it that no Service uses any more, changed or not, are
    flushed and deleted as in compile_resync. None skips that, as kube-proxy
    does in large-cluster mode between cleanups.

    kube-proxy's own test of this is TestSyncProxyRulesRepeated
    (pkg/proxy/iptables/proxier_test.go); tests/unit/test_rules_partial.py
    follows it step by step.

    `cache` (the node's, kept from sync to sync) saves recompiling the
    Service ports whose port and endpoints are unchanged; the result is the
    same with or without it.
    """
    compiler = _Compiler(data, changed=frozenset(changed), cache=cache)
    rules = compiler.run()
    if existing is not None:
        nat = rules.table("nat")
        _delete_stale(nat, set(nat.chains) | set(compiler.skipped.chains), existing)
    return PartialSync(rules, compiler.skipped)


def compile_full_resync(
    data: ProxyInput, existing: RuleSet, *, sync: RuleSet | None = None
) -> RuleSet:
    """A full sync of a node whose kernel holds `existing` (parsed
    iptables-save), as kube-proxy's forced sync after its canary vanished
    (utiliptables.Monitor → forceSyncProxyRules): `compile_resync` plus
    what a full sync ensures before its restore: KUBE-PROXY-CANARY in
    mangle, nat and filter, kubelet's KUBE-FIREWALL, and every jump from a
    built-in chain that is missing, put back at the head of its chain in the
    order kube-proxy prepends them (EnsureChain, EnsureRule(Prepend) in
    syncProxyRules). A jump counts as present when its built-in chain has a
    rule jumping to its target: iptables-save rewrites argument order, so the
    text would not compare."""
    rules = compile_resync(data, existing, sync=sync)
    rules.table("mangle").declare(n.KUBE_PROXY_CANARY)
    for table_name in ("filter", "nat"):
        table = rules.table(table_name)
        if n.KUBE_PROXY_CANARY not in table.chains:
            table.chains.insert(0, n.KUBE_PROXY_CANARY)
        current = existing.tables.get(table_name)
        if (
            table_name == "filter"
            and n.KUBE_FIREWALL not in table.chains
            and not (current and current.has_chain(n.KUBE_FIREWALL))
        ):
            table.declare(n.KUBE_FIREWALL)
            table.append(n.KUBE_FIREWALL, LOCALNET_RULE)
        for jump in (*KUBELET_JUMP_CHAINS, *JUMP_CHAINS):
            if jump.table != table_name:
                continue
            present = current is not None and any(
                rule.args.endswith(f"-j {jump.dst}") for rule in current.chain_rules(jump.src)
            )
            if present:
                continue
            args = " ".join(
                part
                for part in (jump.extra, _comment(jump.comment) if jump.comment else "")
                if part
            )
            table.inserts.append(Rule(jump.src, f"{args} -j {jump.dst}".strip()))
    return rules


@dataclass(frozen=True, slots=True)
class _Fragment:
    """One Service port's rules: in the filter table, in the nat table's
    top-level chains (KUBE-SERVICES, KUBE-NODEPORTS), and its own nat
    chains (SVC, SVL, EXT, FW, SEP) with their rules."""

    filter_rules: tuple[Rule, ...]
    nat_rules: tuple[Rule, ...]
    own_chains: tuple[str, ...]
    own_rules: tuple[Rule, ...]


_CacheKey = tuple[str, str, str, str]  # (namespace, service, port name, protocol)
_CacheEntry = tuple[ServicePortInfo, tuple[EndpointInfo, ...], _Fragment]


@dataclass
class CompileCache:
    """Each Service port's compiled rules from the last compile, with the
    port and endpoints they were compiled from, so that a sync recompiles
    only what changed. The rules depend on nothing else but the node's
    config and large-cluster mode; when either changes, everything is
    recompiled. Only the entries the last compile used are kept. One cache
    per node (one kube-proxy).

    Entries are found by the port's name and checked against its port and
    endpoints, identity first: an unchanged Service's port and endpoints are
    the very objects of the last sync (netemu.rules.inputcache), and hashing
    them whole cost more than compiling a few changed ones."""

    context: tuple[ProxyConfig, bool] | None = None
    fragments: dict[_CacheKey, _CacheEntry] = field(default_factory=dict)
    used: dict[_CacheKey, _CacheEntry] = field(default_factory=dict)
    hits: int = 0  # in the last compile

    def start(self, config: ProxyConfig, large: bool) -> None:
        if self.context != (config, large):
            self.fragments.clear()
        self.context = (config, large)
        self.used = {}
        self.hits = 0

    def get(self, sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...]) -> _Fragment | None:
        key = (sp.namespace, sp.name, sp.port_name, sp.protocol)
        entry = self.fragments.get(key)
        if entry is None:
            return None
        cached_sp, cached_endpoints, fragment = entry
        if not (cached_sp is sp or cached_sp == sp) or not (
            cached_endpoints is endpoints or cached_endpoints == endpoints
        ):
            return None
        self.hits += 1
        self.used[key] = entry
        return fragment

    def put(
        self, sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...], fragment: _Fragment
    ) -> None:
        self.used[(sp.namespace, sp.name, sp.port_name, sp.protocol)] = (sp, endpoints, fragment)

    def finish(self) -> None:
        self.fragments, self.used = self.used, {}


class _Compiler:
    def __init__(
        self,
        data: ProxyInput,
        changed: frozenset[tuple[str, str]] | None = None,
        cache: CompileCache | None = None,
    ) -> None:
        self.data = data
        self.cfg = data.config
        self.mark = n.masquerade_mark(self.cfg.masquerade_bit)
        self.rules = RuleSet()
        self.filter = self.rules.table("filter")
        self.nat = self.rules.table("nat")
        self.large_cluster = large_cluster(data)
        # None: a full sync, every Service's chains are written. Otherwise
        # the Services whose chains are; the others' go to `skipped`.
        self.changed = changed
        self.skipped = Table("nat")
        self.cache = cache

    def run(self) -> RuleSet:
        cfg, nat, flt, mark = self.cfg, self.nat, self.filter, self.mark
        for chain in (
            n.KUBE_SERVICES,
            n.KUBE_EXTERNAL_SERVICES,
            n.KUBE_FORWARD,
            n.KUBE_NODEPORTS,
            n.KUBE_PROXY_FIREWALL,
        ):
            flt.declare(chain)
        for chain in (n.KUBE_SERVICES, n.KUBE_NODEPORTS, n.KUBE_POSTROUTING, n.KUBE_MARK_MASQ):
            nat.declare(chain)

        nat.append(n.KUBE_POSTROUTING, f"-m mark ! --mark {mark}/{mark} -j RETURN")
        nat.append(n.KUBE_POSTROUTING, f"-j MARK --xor-mark {mark}")
        masq = f"{_comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE"
        nat.append(n.KUBE_POSTROUTING, masq + (" --random-fully" if cfg.random_fully else ""))
        nat.append(n.KUBE_MARK_MASQ, f"-j MARK --or-mark {mark}")

        # proxier.go: `!isIPv6 && localhostNodePorts` (localhost NodePorts are
        # off for IPv6 anyway: proxy_config).
        if cfg.localhost_node_ports and cfg.ip_family == "IPv4":
            flt.declare(n.KUBE_FIREWALL)
            flt.append(n.KUBE_FIREWALL, LOCALNET_RULE)

        cache = self.cache
        if cache is not None:
            cache.start(self.cfg, self.large_cluster)
        for sp in self.data.service_ports:
            endpoints = self.data.endpoints_of(sp)
            fragment = cache.get(sp, endpoints) if cache is not None else None
            if fragment is None:
                fragment = self.service_port(sp, endpoints)
                if cache is not None:
                    cache.put(sp, endpoints, fragment)
            self.add(sp, fragment)
        if cache is not None:
            cache.finish()

        self.nodeports_tail()

        if not cfg.tcp_be_liberal:
            nfacct = f" -m nfacct --nfacct-name {NFACCT_INVALID_DROPPED}" if cfg.nfacct else ""
            flt.append(n.KUBE_FORWARD, f"-m conntrack --ctstate INVALID{nfacct} -j DROP")
        flt.append(
            n.KUBE_FORWARD,
            f"{_comment('kubernetes forwarding rules')} -m mark --mark {mark}/{mark} -j ACCEPT",
        )
        flt.append(
            n.KUBE_FORWARD,
            f"{_comment('kubernetes forwarding conntrack rule')} "
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        )
        return self.rules

    # ---------------------------------------------------------------- per service port

    def add(self, sp: ServicePortInfo, fragment: _Fragment) -> None:
        """Append one Service port's rules: its own chains go to `skipped`
        when this is a partial sync and its Service did not change."""
        self.filter.rules.extend(fragment.filter_rules)
        self.nat.rules.extend(fragment.nat_rules)
        own = self.nat
        if self.changed is not None and (sp.namespace, sp.name) not in self.changed:
            # proxier.go: "If the SVC/SVL/EXT/FW/SEP chains have not changed
            # since the last sync then we can omit them from the restore input".
            own = self.skipped
        own.chains.extend(fragment.own_chains)
        own.rules.extend(fragment.own_rules)

    def service_port(self, sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...]) -> _Fragment:
        """One Service port's rules; they depend only on `sp`, `endpoints`,
        the config and large-cluster mode (what CompileCache keys on)."""
        cfg = self.cfg
        flt, nat_top, own = Table("filter"), Table("nat"), Table("nat")
        nat = nat_top  # KUBE-SERVICES, KUBE-NODEPORTS; `own` from below on
        proto = sp.protocol
        name = sp.name_string
        cluster, local, reachable, has_endpoints = categorize(endpoints, sp, cfg.node_name)
        hash16 = n.port_proto_hash(name, proto)
        svc_chain = n.SVC_PREFIX + hash16
        svl_chain = n.SVL_PREFIX + hash16
        ext_chain = n.EXT_PREFIX + hash16
        fw_chain = n.FW_PREFIX + hash16

        uses_cluster_chain = bool(cluster) and sp.uses_cluster_endpoints
        uses_local_chain = bool(local) and sp.uses_local_endpoints

        internal_chain, has_internal = svc_chain, has_endpoints
        if sp.internal_local:
            internal_chain = svl_chain
            has_internal = has_internal and bool(local)
        external_policy_chain, has_external = svc_chain, has_endpoints
        if sp.external_local:
            external_policy_chain = svl_chain
            has_external = has_external and bool(local)
        uses_ext_chain = has_endpoints and sp.externally_accessible
        lb_chain = ext_chain
        uses_fw_chain = (
            has_endpoints and bool(sp.load_balancer_vips) and bool(sp.load_balancer_source_ranges)
        )
        if uses_fw_chain:
            lb_chain = fw_chain

        if not has_endpoints:
            int_target = ext_target = "REJECT"
            int_comment = ext_comment = _comment(f"{name} has no endpoints")
        else:
            int_target = ext_target = ""
            int_comment = ext_comment = ""
            if not has_internal:
                int_target, int_comment = "DROP", _comment(f"{name} has no local endpoints")
            if not has_external:
                ext_target, ext_comment = "DROP", _comment(f"{name} has no local endpoints")

        match = f"-m {proto} -p {proto}"
        cluster_ip_args = (
            f"{_comment(f'{name} cluster IP')} {match} -d {sp.cluster_ip} --dport {sp.port}"
        )

        # Capture the clusterIP.
        if has_internal:
            nat.append(n.KUBE_SERVICES, f"{cluster_ip_args} -j {internal_chain}")
        else:
            flt.append(
                n.KUBE_SERVICES,
                f"{int_comment} {match} -d {sp.cluster_ip} --dport {sp.port} -j {int_target}",
            )

        # Capture externalIPs.
        for ip in sp.external_ips:
            if has_endpoints:
                nat.append(
                    n.KUBE_SERVICES,
                    f"{_comment(f'{name} external IP')} {match} -d {ip} --dport {sp.port} "
                    f"-j {ext_chain}",
                )
            if not has_external:
                flt.append(
                    n.KUBE_EXTERNAL_SERVICES,
                    f"{ext_comment} {match} -d {ip} --dport {sp.port} -j {ext_target}",
                )

        # Capture load-balancer ingress.
        for ip in sp.load_balancer_vips:
            if has_endpoints:
                nat.append(
                    n.KUBE_SERVICES,
                    f"{_comment(f'{name} loadbalancer IP')} {match} -d {ip} --dport {sp.port} "
                    f"-j {lb_chain}",
                )
            if uses_fw_chain:
                flt.append(
                    n.KUBE_PROXY_FIREWALL,
                    f"{_comment(f'{name} traffic not accepted by {fw_chain}')} {match} "
                    f"-d {ip} --dport {sp.port} -j DROP",
                )
        if not has_external:
            for ip in sp.load_balancer_vips:
                flt.append(
                    n.KUBE_EXTERNAL_SERVICES,
                    f"{ext_comment} {match} -d {ip} --dport {sp.port} -j {ext_target}",
                )

        # Capture nodeports (never subject to loadBalancerSourceRanges).
        if sp.node_port:
            if has_endpoints:
                if cfg.localhost_node_ports and cfg.nfacct and cfg.ip_family == "IPv4":
                    nat.append(
                        n.KUBE_NODEPORTS,
                        f"{_comment(name)} {match} -d 127.0.0.0/8 --dport {sp.node_port} "
                        f"-m nfacct --nfacct-name {NFACCT_LOCALHOST_NODEPORTS} -j {ext_chain}",
                    )
                nat.append(
                    n.KUBE_NODEPORTS,
                    f"{_comment(name)} {match} --dport {sp.node_port} -j {ext_chain}",
                )
            if not has_external:
                flt.append(
                    n.KUBE_EXTERNAL_SERVICES,
                    f"{ext_comment} -m addrtype --dst-type LOCAL {match} "
                    f"--dport {sp.node_port} -j {ext_target}",
                )

        # Capture healthCheckNodePorts, whether or not there are local endpoints.
        if sp.health_check_node_port:
            flt.append(
                n.KUBE_NODEPORTS,
                f"{_comment(f'{name} health check node port')} -m tcp -p tcp "
                f"--dport {sp.health_check_node_port} -j ACCEPT",
            )

        # From here on: the Service's own chains, written only when it
        # changed if this is a partial sync (see add).
        nat = own

        # Internal traffic: masquerade what comes from outside the cluster.
        if has_internal:
            local_cidr = cfg.local_traffic_cidr
            if cfg.masquerade_all:
                nat.append(internal_chain, f"{cluster_ip_args} -j {n.KUBE_MARK_MASQ}")
            elif local_cidr:
                nat.append(
                    internal_chain, f"{cluster_ip_args} ! -s {local_cidr} -j {n.KUBE_MARK_MASQ}"
                )

        # External traffic.
        if uses_ext_chain:
            nat.declare(ext_chain)
            if not sp.external_local:
                nat.append(
                    ext_chain,
                    f"{_comment(f'masquerade traffic for {name} external destinations')} "
                    f"-j {n.KUBE_MARK_MASQ}",
                )
            else:
                local_cidr = cfg.local_traffic_cidr
                if local_cidr:
                    # Pod → external destination skips both policies, as if it
                    # had gone out to a load balancer and come back.
                    nat.append(
                        ext_chain,
                        f"{_comment(f'pod traffic for {name} external destinations')} "
                        f"-s {local_cidr} -j {svc_chain}",
                    )
                nat.append(
                    ext_chain,
                    f"{_comment(f'masquerade LOCAL traffic for {name} external destinations')} "
                    f"-m addrtype --src-type LOCAL -j {n.KUBE_MARK_MASQ}",
                )
                nat.append(
                    ext_chain,
                    f"{_comment(f'route LOCAL traffic for {name} external destinations')} "
                    f"-m addrtype --src-type LOCAL -j {svc_chain}",
                )
            if has_external:
                nat.append(ext_chain, f"-j {external_policy_chain}")

        # Firewall chain for loadBalancerSourceRanges.
        if uses_fw_chain:
            nat.declare(fw_chain)
            fw_args = _comment(f"{name} loadbalancer IP")
            allow_from_node = False
            for cidr in sp.load_balancer_source_ranges:
                nat.append(fw_chain, f"{fw_args} -s {cidr} -j {ext_chain}")
                if any(_in_cidr(ip, cidr) for ip in cfg.node_ips[:1]):
                    allow_from_node = True
            # A VIP bound locally makes node → VIP traffic arrive with the VIP as source.
            if allow_from_node:
                for ip in sp.load_balancer_vips:
                    nat.append(fw_chain, f"{fw_args} -s {ip} -j {ext_chain}")
            nat.append(
                fw_chain,
                _comment(f"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"),
            )

        sep_names = {ep.text: n.endpoint_chain(name, proto, ep.text) for ep in reachable}
        if uses_cluster_chain:
            nat.declare(svc_chain)
            self.service_to_endpoints(nat, sp, svc_chain, cluster, sep_names)
        if uses_local_chain:
            nat.declare(svl_chain)
            self.service_to_endpoints(nat, sp, svl_chain, local, sep_names)

        for ep in reachable:
            sep = sep_names[ep.text]
            nat.declare(sep)
            head = [] if self.large_cluster else [_comment(name)]
            nat.append(sep, " ".join([*head, f"-s {ep.ip} -j {n.KUBE_MARK_MASQ}"]))
            recent = [f"-m recent --name {sep} --set"] if sp.affinity_timeout else []
            nat.append(
                sep, " ".join([*head, *recent, f"{match} -j DNAT --to-destination {ep.text}"])
            )
        return _Fragment(
            filter_rules=tuple(flt.rules),
            nat_rules=tuple(nat_top.rules),
            own_chains=tuple(own.chains),
            own_rules=tuple(own.rules),
        )

    def service_to_endpoints(
        self,
        nat: Table,
        sp: ServicePortInfo,
        chain: str,
        endpoints: list[EndpointInfo],
        sep_names: dict[str, str],
    ) -> None:
        name = sp.name_string
        seps = [sep_names[ep.text] for ep in endpoints]
        if sp.affinity_timeout:
            for ep, sep in zip(endpoints, seps, strict=True):
                head = f"{_comment(f'{name} -> {ep.text}')} " if not self.large_cluster else ""
                nat.append(
                    chain,
                    f"{head}-m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} "
                    f"--reap -j {sep}",
                )
        count = len(endpoints)
        for i, (ep, sep) in enumerate(zip(endpoints, seps, strict=True)):
            head = f"{_comment(f'{name} -> {ep.text}')} " if not self.large_cluster else ""
            stat = (
                f"-m statistic --mode random --probability {n.probability(count - i)} "
                if i < count - 1
                else ""
            )
            nat.append(chain, f"{head}{stat}-j {sep}")

    # ---------------------------------------------------------------- tail

    def nodeports_tail(self) -> None:
        cfg = self.cfg
        comment = _comment(
            "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
        )
        ipv6 = cfg.ip_family == "IPv6"
        if not cfg.node_port_addresses:
            dest = "-m addrtype --dst-type LOCAL"
            # Localhost NodePorts never work over IPv6; over IPv4 only with
            # route_localnet (proxier.go, the nodePorts tail call).
            if ipv6:
                dest += " ! -d ::1/128"
            elif not cfg.localhost_node_ports:
                dest += " ! -d 127.0.0.0/8"
            self.nat.append(n.KUBE_SERVICES, f"{comment} {dest} -j {n.KUBE_NODEPORTS}")
            return
        for ip in node_port_ips(
            cfg.node_port_addresses, cfg.local_ips, cfg.node_ips, cfg.ip_family
        ):
            if netaddr.IPAddress(ip).is_loopback() and (ipv6 or not cfg.localhost_node_ports):
                continue
            self.nat.append(n.KUBE_SERVICES, f"{comment} -d {ip} -j {n.KUBE_NODEPORTS}")


def categorize(
    endpoints: tuple[EndpointInfo, ...], sp: ServicePortInfo, node_name: str
) -> tuple[list[EndpointInfo], list[EndpointInfo], list[EndpointInfo], bool]:
    """kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go), without topology hints.

    Returns (cluster, local, all reachable from this node, any usable endpoint anywhere).
    Ready endpoints are preferred; when there are none, serving+terminating
    ones are used instead (terminating-endpoint fallback), separately for the
    cluster and the local set.
    """
    cluster: list[EndpointInfo] = []
    local: list[EndpointInfo] = []
    has_any = False
    if sp.uses_cluster_endpoints:
        cluster = [ep for ep in endpoints if ep.ready]
        if not cluster:
            cluster = [ep for ep in endpoints if ep.serving and ep.terminating]
        has_any = bool(cluster)
    if not sp.uses_local_endpoints:
        return cluster, local, cluster, has_any
    local_ready = local_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            local_ready = local_ready or ep.node_name == node_name
        elif ep.serving and ep.terminating:
            has_any = True
            local_terminating = local_terminating or ep.node_name == node_name
    if local_ready:
        local = [ep for ep in endpoints if ep.node_name == node_name and ep.ready]
    elif local_terminating:
        local = [
            ep for ep in endpoints if ep.node_name == node_name and ep.serving and ep.terminating
        ]
    if not sp.uses_cluster_endpoints:
        return cluster, local, local, has_any
    seen = {ep.text for ep in cluster}
    reachable = cluster + [ep for ep in local if ep.text not in seen]
    return cluster, local, reachable, has_any


def node_port_ips(
    node_port_addresses: tuple[str, ...],
    local_ips: tuple[str, ...],
    node_ips: tuple[str, ...],
    family: str = "IPv4",
) -> list[str]:
    """The node's addresses selected by nodePortAddresses ("primary" = the node IPs)."""
    selected: list[str] = []
    loopback = "::1" if family == "IPv6" else "127.0.0.1"
    for ip in sorted(set(local_ips) | {loopback}, key=lambda a: netaddr.IPAddress(a)):
        for entry in node_port_addresses:
            if entry == "primary":
                hit = ip in node_ips
            else:
                address, network = netaddr.IPAddress(ip), netaddr.IPNetwork(entry)
                hit = address.version == network.version and address in network
            if hit:
                selected.append(ip)
                break
    return selected


def _in_cidr(ip: str, cidr: str) -> bool:
    return netaddr.IPAddress(ip) in netaddr.IPNetwork(cidr)
