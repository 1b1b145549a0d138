"""kube-proxy's nftables mode, rule for rule (pkg/proxy/nftables/proxier.go,
Kubernetes 1.33: setupNFTables, syncProxyRules, writeServiceToEndpointRules).

What this module owns:

- the object model of one nftables table (`NftChain`, `NftSet`, `NftRule`,
  `NftElement`), a transaction of `add` / `flush` / `delete` operations on
  them (`Transaction`, rendered one operation a line, the text knftables
  hands to `nft -f`), and the table a sequence of transactions leaves
  (`NftRuleset`, applied the way knftables' fake applies them; `dump()`
  prints it as the fake's `Dump()` does: one `add table`, then every `add
  chain`, `add set`, `add map` sorted by name, then the rules of each chain
  in order, then the elements of each set and map — the form kube-proxy's own
  proxier_test.go writes its expected output in, and also valid `nft -f`
  input for an empty table);
- `sync`: one syncProxyRules of one kube-proxy (one IP family of one node),
  full or partial, given what the previous sync left (`NftSyncState`) and
  the time as data; it returns the stale-chain cleanup transaction, the sync
  transaction and the state after both;
- `compile_ruleset` / `render`: the table of a first full sync of a fresh
  node (the goldens under rules/<lab>/<node>.nft);
- `nftables_mode_iptables`: what a node in nftables mode still has in
  iptables (kubelet's and flanneld's chains, none of kube-proxy's).

Pure: no I/O. Running a transaction (`nft -f`) is netemu.kernel's.

Where kube-proxy walks a Go map (services, stale chains, leftover
elements) this module walks in a fixed order (sorted), so output is
deterministic; the resulting table is the same.

The proxier followed is 1.33's: base chains filter-prerouting/-input/
-forward/-output at dstnat-10 and filter-output-post-dnat at dstnat+10
(1.34 renamed and moved them, kubernetes PR #132456), the service chain's
masquerade rule matching protocol and port too (dropped in 1.34, PR
#131492), partial syncs, and element storage that writes only changed
elements. Not modelled: skipping unchanged chains in the first sync over a
table left by an earlier kube-proxy (PR #130119; netemu's kube-proxies
start on fresh namespaces), and the interface-based local-traffic
detectors (BridgeInterface, InterfaceNamePrefix), which ProxyConfig does
not carry.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import netaddr

from netemu.rules import names as n
from netemu.rules.flannel import FlannelConfig, add_flannel_rules
from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.iptables import KUBELET_JUMP_CHAINS, LOCALNET_RULE, categorize
from netemu.rules.model import BUILTIN_CHAINS, RuleSet

TABLE = "kube-proxy"
TABLE_COMMENT = "rules for kube-proxy"

# Fixed chains, sets and maps (proxier.go's constants).
FILTER_PREROUTING = "filter-prerouting"
FILTER_INPUT = "filter-input"
FILTER_FORWARD = "filter-forward"
FILTER_OUTPUT = "filter-output"
FILTER_OUTPUT_POST_DNAT = "filter-output-post-dnat"
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"
SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_IPS = "firewall-ips"
FIREWALL_CHECK = "firewall-check"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"

# knftables' named priorities: DNATPriority "dstnat" is -100, SNATPriority
# "srcnat" 100; knftables writes them as numbers.
DSTNAT = -100
SRCNAT = 100


@dataclass(frozen=True, slots=True)
class BaseChain:
    name: str
    type: Literal["filter", "nat"]
    hook: Literal["prerouting", "input", "forward", "output", "postrouting"]
    priority: int


# nftablesBaseChains (1.33). The filter chains run before DNAT so that they
# see the Service's own destination; filter-output-post-dnat runs after it,
# so cluster-ips-check sees only what no Service rule rewrote.
BASE_CHAINS: tuple[BaseChain, ...] = (
    BaseChain(FILTER_PREROUTING, "filter", "prerouting", DSTNAT - 10),
    BaseChain(FILTER_INPUT, "filter", "input", DSTNAT - 10),
    BaseChain(FILTER_FORWARD, "filter", "forward", DSTNAT - 10),
    BaseChain(FILTER_OUTPUT, "filter", "output", DSTNAT - 10),
    BaseChain(FILTER_OUTPUT_POST_DNAT, "filter", "output", DSTNAT + 10),
    BaseChain(NAT_PREROUTING, "nat", "prerouting", DSTNAT),
    BaseChain(NAT_OUTPUT, "nat", "output", DSTNAT),
    BaseChain(NAT_POSTROUTING, "nat", "postrouting", SRCNAT),
)


@dataclass(frozen=True, slots=True)
class JumpChain:
    dst: str
    src: str
    extra: str = ""


# nftablesJumpChains (1.33), in the order setupNFTables writes them. The
# endpoint checks hang off input/forward/output only: `reject` is not valid in
# prerouting on kernels before 5.9.
JUMP_CHAINS: tuple[JumpChain, ...] = (
    JumpChain(NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    JumpChain(SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    JumpChain(SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, "ct state new"),
    JumpChain(SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, "ct state new"),
    JumpChain(FIREWALL_CHECK, FILTER_PREROUTING, "ct state new"),
    JumpChain(FIREWALL_CHECK, FILTER_OUTPUT, "ct state new"),
    JumpChain(SERVICES, NAT_OUTPUT),
    JumpChain(SERVICES, NAT_PREROUTING),
    JumpChain(MASQUERADING, NAT_POSTROUTING),
    JumpChain(CLUSTER_IPS_CHECK, FILTER_FORWARD, "ct state new"),
    JumpChain(CLUSTER_IPS_CHECK, FILTER_OUTPUT_POST_DNAT, "ct state new"),
)
# The other top-level chains setupNFTables ensures after the jumps.
TOP_LEVEL_CHAINS = (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ)

# The sets and maps whose elements kube-proxy keeps in memory from sync to
# sync (nftElementStorage): a partial sync adds, replaces and deletes only
# the elements that changed; a full sync flushes and refills them. In the
# order syncProxyRules cleans up their leftover elements.
ELEMENT_CONTAINERS = (
    CLUSTER_IPS,
    SERVICE_IPS,
    FIREWALL_IPS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
    SERVICE_NODEPORTS,
)
_SETS = frozenset({CLUSTER_IPS, NODEPORT_IPS})

# kube-proxy deletes a stale chain only once it has been stale for this long:
# with kernels before 6.2 a chain stays referenced for a short while after the
# map element that pointed to it is deleted (proxier.go, "Figure out which
# chains are now stale").
STALE_CHAIN_DELAY = 1.0


# ---------------------------------------------------------------- object model


@dataclass(frozen=True, slots=True)
class NftChain:
    name: str
    base: BaseChain | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class NftSet:
    """A set, or a map when `is_map` (its type then has " : ")."""

    name: str
    type: str
    is_map: bool = False
    flags: tuple[str, ...] = ()
    timeout: int | None = None  # seconds
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class NftRule:
    chain: str
    rule: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class NftElement:
    container: str
    key: tuple[str, ...]
    value: tuple[str, ...] = ()
    comment: str | None = None
    is_map: bool = False

    @property
    def key_text(self) -> str:
        return " . ".join(self.key)

    @property
    def value_text(self) -> str:
        return " . ".join(self.value)


@dataclass(frozen=True, slots=True)
class NftTableHeader:
    comment: str | None = None


NftObject = NftTableHeader | NftChain | NftSet | NftRule | NftElement
Verb = Literal["add", "flush", "delete"]


@dataclass(frozen=True, slots=True)
class Operation:
    verb: Verb
    obj: NftObject


def _quote(text: str) -> str:
    # Go's %q for the plain ASCII kube-proxy writes: backslash and quote escaped.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_operation(op: Operation, family: str, table: str = TABLE) -> str:
    """One operation as knftables writes it (objects.go writeOperation)."""
    verb, obj = op.verb, op.obj
    where = f"{family} {table}"
    if isinstance(obj, NftTableHeader):
        line = f"{verb} table {where}"
        if verb == "add" and obj.comment is not None:
            line += f" {{ comment {_quote(obj.comment)} ; }}"
        return line
    if isinstance(obj, NftChain):
        line = f"{verb} chain {where} {obj.name}"
        if verb == "add" and (obj.base is not None or obj.comment is not None):
            parts = []
            if obj.base is not None:
                b = obj.base
                parts.append(f"type {b.type} hook {b.hook} priority {b.priority} ;")
            if obj.comment is not None:
                parts.append(f"comment {_quote(obj.comment)} ;")
            line += " { " + " ".join(parts) + " }"
        return line
    if isinstance(obj, NftSet):
        kind = "map" if obj.is_map else "set"
        line = f"{verb} {kind} {where} {obj.name}"
        if verb == "add":
            parts = [f"type {obj.type} ;"]
            if obj.flags:
                parts.append(f"flags {','.join(obj.flags)} ;")
            if obj.timeout is not None:
                parts.append(f"timeout {obj.timeout}s ;")
            if obj.comment is not None:
                parts.append(f"comment {_quote(obj.comment)} ;")
            line += " { " + " ".join(parts) + " }"
        return line
    if isinstance(obj, NftRule):
        line = f"{verb} rule {where} {obj.chain}"
        if verb == "add":
            line += f" {obj.rule}"
            if obj.comment is not None:
                line += f" comment {_quote(obj.comment)}"
        return line
    line = f"{verb} element {where} {obj.container} {{ {obj.key_text}"
    if verb == "add":
        if obj.comment is not None:
            line += f" comment {_quote(obj.comment)}"
        if obj.value:
            line += f" : {obj.value_text}"
    return line + " }"


@dataclass
class Transaction:
    """Operations for one `nft -f` run, in order; all or nothing in the kernel."""

    family: str
    ops: list[Operation] = field(default_factory=list)

    def add(self, obj: NftObject) -> None:
        self.ops.append(Operation("add", obj))

    def flush(self, obj: NftObject) -> None:
        self.ops.append(Operation("flush", obj))

    def delete(self, obj: NftObject) -> None:
        self.ops.append(Operation("delete", obj))

    def __len__(self) -> int:
        """knftables' NumOperations."""
        return len(self.ops)

    def render(self) -> str:
        return "".join(render_operation(op, self.family) + "\n" for op in self.ops)


@dataclass
class NftRuleset:
    """One table as the kernel holds it after some transactions (knftables'
    FakeTable): chains with their rules, sets and maps with their elements.
    Elements keep the order they were added in; a re-added key keeps its place."""

    family: str
    header: NftTableHeader | None = None
    chains: dict[str, NftChain] = field(default_factory=dict)
    rules: dict[str, list[NftRule]] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)  # sets and maps
    elements: dict[str, dict[str, NftElement]] = field(default_factory=dict)

    def applied(self, tx: Transaction) -> NftRuleset:
        """The table after `tx`; `self` is left as it was. Only what `tx`
        touches is copied, so a small partial sync stays cheap."""
        out = NftRuleset(
            self.family,
            self.header,
            dict(self.chains),
            dict(self.rules),
            dict(self.sets),
            dict(self.elements),
        )
        owned_rules: set[str] = set()
        owned_elements: set[str] = set()

        def rules_of(chain: str) -> list[NftRule]:
            if chain not in owned_rules:
                out.rules[chain] = list(out.rules.get(chain, ()))
                owned_rules.add(chain)
            return out.rules[chain]

        def elements_of(name: str) -> dict[str, NftElement]:
            if name not in owned_elements:
                out.elements[name] = dict(out.elements.get(name, {}))
                owned_elements.add(name)
            return out.elements[name]

        for op in tx.ops:
            obj = op.obj
            if isinstance(obj, NftTableHeader):
                if op.verb == "add" and out.header is None:
                    out.header = obj
                elif op.verb == "delete":
                    out = NftRuleset(self.family)
                    owned_rules.clear()
                    owned_elements.clear()
            elif isinstance(obj, NftChain):
                if op.verb == "add":
                    if obj.name not in out.chains:
                        out.chains[obj.name] = obj
                        out.rules[obj.name] = []
                        owned_rules.add(obj.name)
                elif op.verb == "flush":
                    out.rules[obj.name] = []
                    owned_rules.add(obj.name)
                else:
                    out.chains.pop(obj.name, None)
                    out.rules.pop(obj.name, None)
            elif isinstance(obj, NftSet):
                if op.verb == "add":
                    if obj.name not in out.sets:
                        out.sets[obj.name] = obj
                        out.elements[obj.name] = {}
                        owned_elements.add(obj.name)
                elif op.verb == "flush":
                    out.elements[obj.name] = {}
                    owned_elements.add(obj.name)
                else:
                    out.sets.pop(obj.name, None)
                    out.elements.pop(obj.name, None)
            elif isinstance(obj, NftRule):
                rules_of(obj.chain).append(obj)
            else:
                container = elements_of(obj.container)
                if op.verb == "add":
                    container[obj.key_text] = obj
                else:
                    container.pop(obj.key_text, None)
        return out

    def dump(self, table: str = TABLE) -> str:
        """The table as knftables' Fake.Dump() prints it ("" if it does not exist)."""
        if self.header is None:
            return ""
        lines = [render_operation(Operation("add", self.header), self.family, table)]
        chains = sorted(self.chains)
        sets = sorted(s for s in self.sets if not self.sets[s].is_map)
        maps = sorted(s for s in self.sets if self.sets[s].is_map)
        lines.extend(
            render_operation(Operation("add", self.chains[c]), self.family, table) for c in chains
        )
        lines.extend(
            render_operation(Operation("add", self.sets[s]), self.family, table)
            for s in (*sets, *maps)
        )
        for c in chains:
            lines.extend(
                render_operation(Operation("add", r), self.family, table) for r in self.rules[c]
            )
        for s in (*sets, *maps):
            lines.extend(
                render_operation(Operation("add", e), self.family, table)
                for e in self.elements[s].values()
            )
        return "".join(line + "\n" for line in lines)

    def rule_count(self) -> int:
        return sum(len(rules) for rules in self.rules.values())

    def element_count(self) -> int:
        return sum(len(elements) for elements in self.elements.values())


# ---------------------------------------------------------------- sync


@dataclass(frozen=True)
class NftSyncState:
    """What one kube-proxy knows after a successful sync: the table as it
    left it, the stale chains with the time each was last found stale
    (proxier.staleChains), and whether its first sync already re-created
    the base chains (proxier.flushed). The element storage kube-proxy keeps
    in memory equals the table's elements of ELEMENT_CONTAINERS."""

    ruleset: NftRuleset
    stale_chains: Mapping[str, float] = field(default_factory=dict)
    base_chains_recreated: bool = True

    def after_failure(self) -> NftSyncState:
        """The state to sync from after a transaction failed: kube-proxy clears
        staleChains ("we can recompute it next time"); the next sync must be
        full. The table is this state's, the kernel having refused the change."""
        return replace(self, stale_chains={})


@dataclass(frozen=True)
class NftSync:
    """One syncProxyRules: `cleanup` (stale-chain deletions, its own `nft`
    run, first; may be empty) and `transaction` (the sync itself), and the
    state once both have run."""

    cleanup: Transaction
    transaction: Transaction
    state: NftSyncState
    full: bool
    # The state to sync from instead when the kernel refuses `cleanup`:
    # kube-proxy has already dropped those chains from staleChains, and
    # the sync's listing of the table finds them stale again, so they are
    # flushed anew and deleted by a later sync ("will retry later").
    previous_if_cleanup_refused: NftSyncState


@dataclass(frozen=True, slots=True)
class _Family:
    family: str  # nft table family: ip / ip6
    ip: str  # the expression prefix: ip / ip6
    addr_type: str  # ipv4_addr / ipv6_addr
    no_localhost: str
    version: int

    @staticmethod
    def of(config: ProxyConfig) -> _Family:
        if config.ip_family == "IPv6":
            return _Family("ip6", "ip6", "ipv6_addr", "ip6 daddr != ::1", 6)
        return _Family("ip", "ip", "ipv4_addr", "ip daddr != 127.0.0.0/8", 4)


def sync(
    data: ProxyInput,
    previous: NftSyncState | None,
    *,
    full: bool,
    changed: Collection[tuple[str, str]] = (),
    now: float,
) -> NftSync:
    """One syncProxyRules of the kube-proxy `data` describes.

    `previous`: the state the last successful sync returned (None: the first
    sync of this kube-proxy, on a node with no kube-proxy table; that sync is
    full). A kube-proxy that starts over a table left by an earlier one
    passes `NftSyncState(<that table>, {}, base_chains_recreated=False)` and
    `full=True`, as kube-proxy lists the kernel's chains and sets.
    `full`: kube-proxy's needFullSync (at start, after a failed sync,
    after the node's labels changed); otherwise a partial sync rewrites the
    chains of the Services in `changed` ((namespace, name) of every Service
    whose Service or EndpointSlices changed since the last sync) and updates
    the elements that changed, for every Service. `now`: seconds on any
    clock that the caller keeps using; a stale chain is deleted once it was
    found stale more than STALE_CHAIN_DELAY earlier.
    """
    if previous is None:
        full = True
        previous = NftSyncState(NftRuleset(_Family.of(data.config).family), {}, False)
    return _Sync(data, previous, full, frozenset(changed), now).run()


def compile_ruleset(data: ProxyInput) -> NftRuleset:
    """The table after the first (full) sync on a fresh node."""
    return sync(data, None, full=True, now=0.0).state.ruleset


def render(data: ProxyInput) -> str:
    """compile_ruleset as knftables' Dump() prints it (rules/<lab>/<node>.nft)."""
    return compile_ruleset(data).dump()


class _Sync:
    def __init__(
        self,
        data: ProxyInput,
        previous: NftSyncState,
        full: bool,
        changed: frozenset[tuple[str, str]],
        now: float,
    ) -> None:
        self.data = data
        self.cfg = data.config
        self.fam = _Family.of(data.config)
        self.previous = previous
        self.full = full
        self.changed = changed
        self.now = now
        self.mark = n.masquerade_mark(self.cfg.masquerade_bit)
        self.tx = Transaction(self.fam.family)
        self.stale = dict(previous.stale_chains)
        self.deleted_stale_chains: set[str] = set()
        self.active_chains: set[str] = set()
        self.active_affinity_sets: set[str] = set()
        # nftElementStorage: key → value text per container, and the keys no
        # Service has claimed yet in this sync.
        self.storage: dict[str, dict[str, str]] = {}
        self.leftover: dict[str, dict[str, None]] = {}
        self.existing = previous.ruleset

    # ------------------------------------------------------------ top level

    def run(self) -> NftSync:
        cleanup = self.delete_stale_chains()
        if cleanup.ops:
            self.existing = self.existing.applied(cleanup)
        for name in ELEMENT_CONTAINERS:
            self.storage[name] = {
                key: e.value_text for key, e in self.existing.elements.get(name, {}).items()
            }
        if self.full:
            self.setup()
        for name in ELEMENT_CONTAINERS:
            self.leftover[name] = dict.fromkeys(self.storage[name])

        for sp in self.data.service_ports:
            self.service_port(sp, self.data.endpoints_of(sp))

        tx = self.tx
        # Stale chains are flushed now and deleted by a later sync
        # (STALE_CHAIN_DELAY); a chain in use again stops being stale.
        for chain in sorted(self.existing.chains):
            if not n.is_nft_service_chain(chain):
                continue
            if chain not in self.active_chains:
                tx.flush(NftChain(chain))
                self.stale[chain] = self.now
            else:
                self.stale.pop(chain, None)
        # Stale affinity sets can go at once.
        for name in sorted(self.existing.sets):
            if n.is_nft_affinity_set(name) and name not in self.active_affinity_sets:
                tx.delete(NftSet(name, self.fam.addr_type))
        for name in ELEMENT_CONTAINERS:
            is_map = name not in _SETS
            for key in self.leftover[name]:
                tx.delete(NftElement(name, tuple(key.split(" . ")), is_map=is_map))
                del self.storage[name][key]

        ruleset = self.existing.applied(tx)
        state = NftSyncState(ruleset, self.stale, True)
        forgotten = {
            chain: since
            for chain, since in self.previous.stale_chains.items()
            if chain not in self.deleted_stale_chains
        }
        refused = replace(self.previous, stale_chains=forgotten)
        return NftSync(cleanup, tx, state, self.full, refused)

    def delete_stale_chains(self) -> Transaction:
        cleanup = Transaction(self.fam.family)
        horizon = self.now - STALE_CHAIN_DELAY
        for chain, since in sorted(self.stale.items()):
            if since < horizon:
                cleanup.delete(NftChain(chain))
                del self.stale[chain]
                self.deleted_stale_chains.add(chain)
        return cleanup

    def setup(self) -> None:
        """setupNFTables: the table, base and top-level chains, the fixed rules,
        sets and maps; the element containers flushed."""
        tx, fam, mark = self.tx, self.fam, self.mark
        tx.add(NftTableHeader(TABLE_COMMENT))
        if not self.previous.base_chains_recreated:
            # Once per kube-proxy: delete the base chains so that a change of
            # their hook or priority since an older kube-proxy cannot fail the
            # transaction ("add" of an existing chain with other properties).
            for bc in BASE_CHAINS:
                tx.add(NftChain(bc.name))
                tx.delete(NftChain(bc.name))
        for bc in BASE_CHAINS:
            base = NftChain(bc.name, bc)
            tx.add(base)
            tx.flush(base)
        created: set[str] = set()
        for jump in JUMP_CHAINS:
            self.ensure_chain(jump.dst, created)
            tx.add(NftRule(jump.src, _concat(jump.extra, "jump", jump.dst)))
        for chain in TOP_LEVEL_CHAINS:
            self.ensure_chain(chain, created)

        tx.add(NftRule(MARK_MASQ, f"mark set mark or {mark}"))
        tx.add(NftRule(MASQUERADING, f"mark and {mark} == 0 return"))
        tx.add(NftRule(MASQUERADING, f"mark set mark xor {mark}"))
        tx.add(NftRule(MASQUERADING, "masquerade fully-random"))

        tx.add(NftSet(CLUSTER_IPS, fam.addr_type, comment="Active ClusterIPs"))
        tx.add(
            NftRule(
                CLUSTER_IPS_CHECK,
                f"{fam.ip} daddr @{CLUSTER_IPS} reject",
                "Reject traffic to invalid ports of ClusterIPs",
            )
        )
        service_cidrs = ",".join(
            c for c in self.cfg.service_cidrs if _version(c.split("/")[0]) == fam.version
        )
        if service_cidrs:
            tx.add(
                NftRule(
                    CLUSTER_IPS_CHECK,
                    f"{fam.ip} daddr {{ {service_cidrs} }} drop",
                    "Drop traffic to unallocated ClusterIPs",
                )
            )

        # nodeport-ips exists only when nodePortAddresses limits NodePorts
        # ("add" then "delete" so that deleting a missing set cannot fail).
        nodeport_ips = NftSet(
            NODEPORT_IPS, fam.addr_type, comment="IPs that accept NodePort traffic"
        )
        tx.add(nodeport_ips)
        addresses = self.node_port_ips()
        if addresses is None:
            tx.delete(NftSet(NODEPORT_IPS, fam.addr_type))
        else:
            tx.flush(nodeport_ips)
            for ip in addresses:
                tx.add(NftElement(NODEPORT_IPS, (ip,)))

        tx.add(
            NftSet(
                NO_ENDPOINT_SERVICES,
                f"{fam.addr_type} . inet_proto . inet_service : verdict",
                is_map=True,
                comment="vmap to drop or reject packets to services with no endpoints",
            )
        )
        tx.add(
            NftSet(
                NO_ENDPOINT_NODEPORTS,
                "inet_proto . inet_service : verdict",
                is_map=True,
                comment="vmap to drop or reject packets to service nodeports with no endpoints",
            )
        )
        reject = NftChain(
            REJECT_CHAIN, comment="helper for @no-endpoint-services / @no-endpoint-nodeports"
        )
        tx.add(reject)
        tx.flush(NftChain(REJECT_CHAIN))
        tx.add(NftRule(REJECT_CHAIN, "reject"))
        tx.add(
            NftRule(
                SERVICE_ENDPOINTS_CHECK,
                f"{fam.ip} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",
            )
        )
        nodeport_dest = fam.no_localhost if addresses is None else f"{fam.ip} daddr @{NODEPORT_IPS}"
        tx.add(
            NftRule(
                NODEPORT_ENDPOINTS_CHECK,
                f"{nodeport_dest} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}",
            )
        )

        tx.add(
            NftSet(
                FIREWALL_IPS,
                f"{fam.addr_type} . inet_proto . inet_service : verdict",
                is_map=True,
                comment="destinations that are subject to LoadBalancerSourceRanges",
            )
        )
        self.ensure_chain(FIREWALL_CHECK, created)
        tx.add(
            NftRule(
                FIREWALL_CHECK, f"{fam.ip} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"
            )
        )

        tx.add(
            NftSet(
                SERVICE_IPS,
                f"{fam.addr_type} . inet_proto . inet_service : verdict",
                is_map=True,
                comment="ClusterIP, ExternalIP and LoadBalancer IP traffic",
            )
        )
        tx.add(
            NftSet(
                SERVICE_NODEPORTS,
                "inet_proto . inet_service : verdict",
                is_map=True,
                comment="NodePort traffic",
            )
        )
        tx.add(NftRule(SERVICES, f"{fam.ip} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"))
        nodeport_match = (
            f"fib daddr type local {fam.no_localhost}"
            if addresses is None
            else f"{fam.ip} daddr @{NODEPORT_IPS}"
        )
        tx.add(
            NftRule(SERVICES, f"{nodeport_match} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
        )

        # The element containers start empty (nftElementStorage.reset).
        for name in ELEMENT_CONTAINERS:
            is_map = name not in _SETS
            tx.flush(NftSet(name, "", is_map=is_map))
            self.storage[name] = {}

    def node_port_ips(self) -> list[str] | None:
        """The addresses of nodeport-ips, or None when NodePorts are open on
        every local address (NodePortAddresses.MatchAll).

        nftables mode defaults nodePortAddresses to "primary" (its backend's
        Init, cmd/kube-proxy): the node's first IP of each family, as /32 or
        /128. Then only this family's CIDRs count; none left means all
        addresses. The set holds the node's local addresses inside them,
        loopback excepted (kube-proxy logs and skips it)."""
        cfg, version = self.cfg, self.fam.version
        entries = cfg.node_port_addresses or ("primary",)
        cidrs: list[netaddr.IPNetwork] = []
        for entry in entries:
            if entry == "primary":
                # kube-proxy turns "primary" into the node IPs of both families
                # (server.go, NewProxyServer), loopback excepted.
                for family in (4, 6):
                    ip = next((a for a in cfg.node_ips if _version(a) == family), None)
                    if ip is not None and not netaddr.IPAddress(ip).is_loopback():
                        cidrs.append(netaddr.IPNetwork(f"{ip}/{32 if family == 4 else 128}"))
            else:
                cidrs.append(netaddr.IPNetwork(entry))
        cidrs = [c for c in cidrs if c.version == version]
        if not cidrs or any(c.prefixlen == 0 for c in cidrs):
            return None
        local = [a for a in (*cfg.local_ips, *cfg.node_ips) if _version(a) == version]
        selected = []
        for ip in sorted(set(local), key=netaddr.IPAddress):
            addr = netaddr.IPAddress(ip)
            if addr.is_loopback():
                continue
            if any(addr in c for c in cidrs):
                selected.append(ip)
        return selected

    def ensure_chain(self, chain: str, created: set[str], skip: bool = False) -> None:
        """ensureChain: add and flush a chain once per transaction; with
        `skip` (an unchanged Service in a partial sync) only note it in use."""
        if chain in created:
            return
        created.add(chain)
        if skip:
            return
        self.tx.add(NftChain(chain))
        self.tx.flush(NftChain(chain))

    def ensure_element(self, element: NftElement) -> None:
        """nftElementStorage.ensureElem: write an element only if it is new or
        its value changed (delete + add then); either way it is not leftover."""
        stored = self.storage[element.container]
        key, value = element.key_text, element.value_text
        if key in stored:
            if stored[key] != value:
                self.tx.delete(element)
                self.tx.add(element)
                stored[key] = value
            self.leftover[element.container].pop(key, None)
        else:
            self.tx.add(element)
            stored[key] = value

    # ------------------------------------------------------------ per service port

    def service_port(self, sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...]) -> None:
        tx, fam, cfg = self.tx, self.fam, self.cfg
        proto = sp.protocol
        port_name = sp.name_string
        plan = _plan(sp, endpoints, cfg.node_name)
        base = plan.base
        cluster_chain = n.NFT_SERVICE_PREFIX + base
        local_chain = n.NFT_LOCAL_PREFIX + base
        external_chain = n.NFT_EXTERNAL_PREFIX + base
        firewall_chain = n.NFT_FIREWALL_PREFIX + base
        cluster, local, reachable = plan.cluster, plan.local, plan.reachable
        has_endpoints = plan.has_endpoints
        skip = not self.full and (sp.namespace, sp.name) not in self.changed
        affinity = sp.affinity_timeout is not None

        ep_base = plan.endpoint_bases
        for ep in reachable:
            self.ensure_chain(n.NFT_ENDPOINT_PREFIX + ep_base[ep.text], self.active_chains, skip)
            if affinity:
                self.active_affinity_sets.add(n.NFT_AFFINITY_PREFIX + ep_base[ep.text])

        uses_cluster_chain = bool(cluster) and sp.uses_cluster_endpoints
        if uses_cluster_chain:
            self.ensure_chain(cluster_chain, self.active_chains, skip)
        uses_local_chain = bool(local) and sp.uses_local_endpoints
        if uses_local_chain:
            self.ensure_chain(local_chain, self.active_chains, skip)

        internal_chain, has_internal = cluster_chain, has_endpoints
        if sp.internal_local:
            internal_chain = local_chain
            has_internal = has_internal and bool(local)
        external_policy_chain, has_external = cluster_chain, has_endpoints
        if sp.external_local:
            external_policy_chain = local_chain
            has_external = has_external and bool(local)
        # Based on has_endpoints, not has_external: the short-circuit rules for
        # local traffic are needed even without externally usable endpoints.
        uses_external_chain = has_endpoints and sp.externally_accessible
        if uses_external_chain:
            self.ensure_chain(external_chain, self.active_chains, skip)

        if not has_endpoints:
            internal_verdict = external_verdict = f"goto {REJECT_CHAIN}"
        else:
            internal_verdict = "" if has_internal else "drop"
            external_verdict = "" if has_external else "drop"

        def element(container: str, key: tuple[str, ...], verdict: str, comment: bool) -> None:
            self.ensure_element(
                NftElement(container, key, (verdict,), port_name if comment else None, True)
            )

        port = str(sp.port)
        # Capture the clusterIP.
        self.ensure_element(NftElement(CLUSTER_IPS, (sp.cluster_ip,)))
        if has_internal:
            element(SERVICE_IPS, (sp.cluster_ip, proto, port), f"goto {internal_chain}", False)
        else:
            element(NO_ENDPOINT_SERVICES, (sp.cluster_ip, proto, port), internal_verdict, True)

        # Capture externalIPs.
        for ip in sp.external_ips:
            if has_endpoints:
                element(SERVICE_IPS, (ip, proto, port), f"goto {external_chain}", False)
            if not has_external:
                element(NO_ENDPOINT_SERVICES, (ip, proto, port), external_verdict, True)

        uses_firewall_chain = bool(sp.load_balancer_vips) and bool(sp.load_balancer_source_ranges)
        if uses_firewall_chain:
            self.ensure_chain(firewall_chain, self.active_chains, skip)

        # Capture load-balancer ingress.
        for ip in sp.load_balancer_vips:
            if has_endpoints:
                element(SERVICE_IPS, (ip, proto, port), f"goto {external_chain}", False)
            if uses_firewall_chain:
                element(FIREWALL_IPS, (ip, proto, port), f"goto {firewall_chain}", False)
        if not has_external:
            for ip in sp.load_balancer_vips:
                element(NO_ENDPOINT_SERVICES, (ip, proto, port), external_verdict, True)

        # Capture nodeports; never subject to loadBalancerSourceRanges.
        if sp.node_port:
            node_port = str(sp.node_port)
            if has_endpoints:
                element(SERVICE_NODEPORTS, (proto, node_port), f"goto {external_chain}", False)
            if not has_external:
                element(NO_ENDPOINT_NODEPORTS, (proto, node_port), external_verdict, True)

        # The rest is the Service's own chains: an unchanged Service's stay as
        # they are in a partial sync.
        if skip:
            return

        not_local, is_local = self.local_detector()
        if has_internal:
            dest = f"{fam.ip} daddr {sp.cluster_ip} {proto} dport {sp.port}"
            if cfg.masquerade_all:
                tx.add(NftRule(internal_chain, f"{dest} jump {MARK_MASQ}"))
            elif not_local is not None:
                # Off-cluster traffic to a ClusterIP (a static route to the
                # service range via some node) may leave the node: masquerade.
                tx.add(NftRule(internal_chain, f"{dest} {not_local} jump {MARK_MASQ}"))

        if uses_external_chain:
            if not sp.external_local:
                tx.add(NftRule(external_chain, f"jump {MARK_MASQ}"))
            else:
                if is_local is not None:
                    # Pod → external destination skips both policies, as if
                    # it had gone out to a load balancer and come back.
                    tx.add(
                        NftRule(
                            external_chain,
                            f"{is_local} goto {cluster_chain}",
                            "short-circuit pod traffic",
                        )
                    )
                tx.add(
                    NftRule(
                        external_chain,
                        f"fib saddr type local jump {MARK_MASQ}",
                        "masquerade local traffic",
                    )
                )
                tx.add(
                    NftRule(
                        external_chain,
                        f"fib saddr type local goto {cluster_chain}",
                        "short-circuit local traffic",
                    )
                )
            if has_external:
                tx.add(NftRule(external_chain, f"goto {external_policy_chain}"))

        if uses_firewall_chain:
            sources = list(sp.load_balancer_source_ranges)
            node_ip = next((a for a in cfg.node_ips if _version(a) == fam.version), None)
            allow_from_node = node_ip is not None and any(
                netaddr.IPAddress(node_ip) in netaddr.IPNetwork(c) for c in sources
            )
            # A VIP bound locally makes node → VIP traffic arrive with the VIP
            # as its source.
            if allow_from_node:
                sources.extend(sp.load_balancer_vips)
            tx.add(NftRule(firewall_chain, f"{fam.ip} saddr != {{ {' , '.join(sources)} }} drop"))

        if affinity:
            for ep in reachable:
                tx.add(
                    NftSet(
                        n.NFT_AFFINITY_PREFIX + ep_base[ep.text],
                        fam.addr_type,
                        flags=("dynamic", "timeout"),
                        timeout=sp.affinity_timeout,
                    )
                )

        if uses_cluster_chain:
            self.service_to_endpoints(sp, cluster_chain, cluster, ep_base)
        if uses_local_chain:
            self.service_to_endpoints(sp, local_chain, local, ep_base)

        for ep in reachable:
            chain = n.NFT_ENDPOINT_PREFIX + ep_base[ep.text]
            # Traffic that loops back to the endpoint itself needs SNAT.
            tx.add(NftRule(chain, f"{fam.ip} saddr {ep.ip} jump {MARK_MASQ}"))
            if affinity:
                tx.add(
                    NftRule(
                        chain,
                        f"update @{n.NFT_AFFINITY_PREFIX + ep_base[ep.text]} {{ {fam.ip} saddr }}",
                    )
                )
            tx.add(NftRule(chain, f"meta l4proto {proto} dnat to {ep.text}"))

    def service_to_endpoints(
        self,
        sp: ServicePortInfo,
        chain: str,
        endpoints: Sequence[EndpointInfo],
        ep_base: Mapping[str, str],
    ) -> None:
        """writeServiceToEndpointRules: affinity lookups first, then one
        `numgen random mod N vmap` over the endpoint chains."""
        tx = self.tx
        if sp.affinity_timeout is not None:
            for ep in endpoints:
                tx.add(
                    NftRule(
                        chain,
                        f"{self.fam.ip} saddr @{n.NFT_AFFINITY_PREFIX + ep_base[ep.text]} "
                        f"goto {n.NFT_ENDPOINT_PREFIX + ep_base[ep.text]}",
                    )
                )
        targets = " , ".join(
            f"{i} : goto {n.NFT_ENDPOINT_PREFIX + ep_base[ep.text]}"
            for i, ep in enumerate(endpoints)
        )
        tx.add(NftRule(chain, f"numgen random mod {len(endpoints)} vmap {{ {targets} }}"))

    def local_detector(self) -> tuple[str | None, str | None]:
        """(IfNotLocalNFT, IfLocalNFT) of kube-proxy's CIDR-based local-traffic
        detector; (None, None) when it is not implemented (no CIDR of this
        family)."""
        cidr = self.cfg.local_traffic_cidr
        if not cidr or _version(cidr.split("/")[0]) != self.fam.version:
            return None, None
        return f"{self.fam.ip} saddr != {cidr}", f"{self.fam.ip} saddr {cidr}"


@dataclass(frozen=True)
class _Plan:
    """What one Service port's rules rest on besides the config: its name
    base, its endpoints by policy (CategorizeEndpoints) and each reachable
    endpoint's name base (by its `ip:port`)."""

    base: str
    cluster: tuple[EndpointInfo, ...]
    local: tuple[EndpointInfo, ...]
    reachable: tuple[EndpointInfo, ...]
    has_endpoints: bool
    endpoint_bases: Mapping[str, str]


# A node's Service ports are mostly the same from one sync to the next, and
# hashing their names is most of the work of a partial sync: remember plans.
@functools.lru_cache(maxsize=1 << 15)
def _plan(sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...], node_name: str) -> _Plan:
    cluster, local, reachable, has_endpoints = categorize(endpoints, sp, node_name)
    bases = {
        ep.text: n.nft_endpoint_base(
            sp.namespace, sp.name, sp.protocol, sp.port_name, ep.ip, ep.port
        )
        for ep in reachable
    }
    return _Plan(
        n.nft_service_base(sp.namespace, sp.name, sp.protocol, sp.port_name),
        tuple(cluster),
        tuple(local),
        tuple(reachable),
        has_endpoints,
        bases,
    )


def _concat(*parts: str) -> str:
    """knftables.Concat of plain strings: the non-empty ones, space-separated."""
    return " ".join(p for p in parts if p)


def _version(ip: str) -> int:
    try:
        return int(netaddr.IPAddress(ip.strip()).version)
    except (netaddr.AddrFormatError, ValueError):
        return 0


# ---------------------------------------------------------------- iptables in nftables mode


KUBE_IPTABLES_HINT = "KUBE-IPTABLES-HINT"
KUBE_KUBELET_CANARY = "KUBE-KUBELET-CANARY"


def nftables_mode_iptables(
    flannel: FlannelConfig | None = None, *, family: str = "IPv4"
) -> RuleSet:
    """The iptables rules of a node whose kube-proxy runs in nftables mode:
    none of kube-proxy's (it writes no iptables rules in this mode), but
    kubelet's and flanneld's.

    kubelet (pkg/kubelet/kubelet_network_linux.go, syncIPTablesRules) makes
    KUBE-IPTABLES-HINT in mangle (so that others can tell iptables-nft from
    legacy), KUBE-FIREWALL in filter with the localnet rule, jumped from
    OUTPUT and INPUT (each prepended), and its monitor's KUBE-KUBELET-CANARY
    in mangle, nat and filter. flanneld appends FLANNEL-POSTRTG and
    FLANNEL-FWD as in iptables mode; its masquerade exemption still matches
    kube-proxy's mark, which nftables mode sets too. The portmap CNI
    plugin's chains are the pipeline's to add (netemu.rules.portmap).
    For IPv6 (ip6tables) kubelet writes no localnet rule: 127.0.0.0/8 is
    IPv4's, and ::1 is never routed off the host.
    """
    rules = RuleSet()
    mangle = rules.table("mangle")
    for chain in BUILTIN_CHAINS["mangle"]:
        mangle.policies[chain] = "ACCEPT"
    mangle.declare(KUBE_IPTABLES_HINT)
    mangle.declare(KUBE_KUBELET_CANARY)
    extra = RuleSet()
    if flannel is not None:
        add_flannel_rules(extra, flannel)
    for table_name in ("filter", "nat"):
        table = rules.table(table_name)
        for chain in BUILTIN_CHAINS[table_name]:
            table.policies[chain] = "ACCEPT"
        if table_name == "filter":
            table.declare(n.KUBE_FIREWALL)
        table.declare(KUBE_KUBELET_CANARY)
        own = extra.tables.get(table_name)
        builtin = set(BUILTIN_CHAINS[table_name])
        for chain in BUILTIN_CHAINS[table_name]:
            # Prepended one after the other, so they read in reverse order.
            for jump in reversed([j for j in KUBELET_JUMP_CHAINS if j.table == table_name]):
                if jump.src == chain:
                    table.append(chain, f"-j {jump.dst}")
        if own is not None:
            table.rules.extend(r for r in own.rules if r.chain in builtin)
        if table_name == "filter" and family == "IPv4":
            table.append(n.KUBE_FIREWALL, LOCALNET_RULE)
        if own is not None:
            table.chains.extend(own.chains)
            table.rules.extend(r for r in own.rules if r.chain not in builtin)
    return rules


def sort_dump_lines(text: str) -> list[str]:
    """A dump or transaction in kube-proxy's comparison order
    (sortNFTablesTransaction in pkg/proxy/nftables/helpers_test.go): blank
    and `#` lines dropped; by object type (table, chain, rule, set, map,
    element), then by object name; rules keep their order within a chain,
    other lines of one object sort by their text. Two dumps that sort the
    same are the same table, whatever order their elements were added in."""
    order = {"table": 0, "chain": 1, "rule": 2, "set": 3, "map": 4, "element": 5}
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]

    def key(item: tuple[int, str]) -> tuple[int, str, int | str]:
        index, line = item
        words = line.split(" ")
        kind = words[1] if len(words) > 1 else ""
        name = words[4] if len(words) > 4 else ""
        return (order.get(kind, 6), name, index if kind == "rule" else line)

    return [line for _, line in sorted(enumerate(lines), key=key)]


def iter_chain_rules(ruleset: NftRuleset, chain: str) -> Iterable[str]:
    """The rule texts of one chain, comments included, in order."""
    for rule in ruleset.rules.get(chain, ()):
        yield rule.rule if rule.comment is None else f"{rule.rule} comment {_quote(rule.comment)}"
