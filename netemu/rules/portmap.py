"""hostPort as the portmap CNI plugin programs it, as pure data.

A pod's hostPorts reach the runtime's CNI call as `runtimeConfig.portMappings`
and the portmap plugin (chained after flannel/bridge in kube-flannel.yml's
conflist) writes them into the node's nat table
(containernetworking/plugins plugins/meta/portmap/portmap.go, chain.go,
utils.go; `snat` and `markMasqBit` at their defaults):

    PREROUTING, OUTPUT: -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    POSTROUTING, first:  -m comment --comment "CNI portfwd requiring masquerade"
                         -j CNI-HOSTPORT-MASQ
    CNI-HOSTPORT-DNAT:   per pod and protocol, a multiport match of its host
                         ports (15 a rule) with the comment
                         `dnat name: "<network>" id: "<container id>"` -j CNI-DN-<hash>
    CNI-DN-<hash>:       per mapping: hairpin (-s <pod subnet>) and localhost
                         (-s 127.0.0.1) -j CNI-HOSTPORT-SETMARK, then DNAT
    CNI-HOSTPORT-SETMARK: -j MARK --set-xmark 0x2000/0x2000 (bit 13)
    CNI-HOSTPORT-MASQ:   -m mark --mark 0x2000/0x2000 -j MASQUERADE

A pod with an address of each family gets the same chains twice: ADD
(main.go cmdAdd) runs forwardPorts for its IPv4 address with iptables, then
for its IPv6 address with ip6tables. The IPv6 chains differ only where the
family does (fillDnatRules): no localhost rule (route_localnet has no IPv6
counterpart, so ::1 is never DNATed out of the node), the hairpin source is
the pod's IPv6 subnet, a hostIP matches as a /128, and the DNAT target is
`[addr]:port` (fmtIpPort). A hostIP of the other family skips the mapping.
DEL tears the pod's CNI-DN- chain down in both families.
The shared chains and entry rules stay when the last pod goes (the plugin's
DEL removes only the pod's CNI-DN- chain and its jumps). Rules are written
as iptables-save prints them, so a node's dump compares line for line.

Must not touch: the kernel (netemu.node.kubelet applies what this builds).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netemu.api.core import Pod
from netemu.api.ipfamilies import IPFamily
from netemu.rules.model import RuleSet, Table, quote

TOP_DNAT = "CNI-HOSTPORT-DNAT"
SETMARK = "CNI-HOSTPORT-SETMARK"
MASQ = "CNI-HOSTPORT-MASQ"
DNAT_PREFIX = "CNI-DN-"
MARK_MASQ_BIT = 13  # portmap's default markMasqBit
CHAIN_MAX = 28  # pkg/utils maxChainLength
MULTIPORT_MAX = 15  # the multiport match takes at most 15 ports
COMMENT_MAX = 255  # the comment match's limit

ENTRY_DNAT = "-m addrtype --dst-type LOCAL -j " + TOP_DNAT
ENTRY_MASQ = f"-m comment --comment {quote('CNI portfwd requiring masquerade')} -j {MASQ}"
# (built-in chain, rule, prepended?): the entry rules, in the order ADD writes them.
ENTRY_RULES: tuple[tuple[str, str, bool], ...] = (
    ("POSTROUTING", ENTRY_MASQ, True),
    ("PREROUTING", ENTRY_DNAT, False),
    ("OUTPUT", ENTRY_DNAT, False),
)


@dataclass(frozen=True)
class PortMapping:
    """One runtimeConfig.portMappings entry."""

    host_port: int
    container_port: int
    protocol: str  # lower case, as the runtime passes it
    host_ip: str = ""


@dataclass(frozen=True)
class PortmapPod:
    """One portmap forwardPorts call: the sandbox's container ID and one
    of its eth0 addresses (the family of `ip` is that of the chains)."""

    container_id: str
    ip: str
    prefixlen: int
    mappings: tuple[PortMapping, ...]

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.ip).version == 6


def portmap_pod(
    container_id: str,
    addresses: Iterable[tuple[str, int]],
    mappings: tuple[PortMapping, ...],
    family: IPFamily,
) -> PortmapPod | None:
    """The forwardPorts call of `family` for a sandbox whose eth0 has
    `addresses` (address, prefix length): the first address of that family,
    as parseConfig keeps one per family from the previous plugin's result;
    None if it has none (no chains of that family for it)."""
    version = 6 if family == "IPv6" else 4
    for ip, prefixlen in addresses:
        if ip and ipaddress.ip_address(ip).version == version:
            return PortmapPod(container_id, ip, prefixlen, mappings)
    return None


def port_mappings(pod: Pod) -> tuple[PortMapping, ...]:
    """The portMappings the runtime hands to CNI for `pod`: every container
    port with a hostPort, in container and port order, the protocol in lower
    case (containerd's CRI, toCNIPortMappings)."""
    spec = pod.spec
    if spec is None:
        return ()
    return tuple(
        PortMapping(p.host_port, p.container_port, p.protocol.lower(), p.host_ip or "")
        for c in spec.containers
        for p in c.ports
        if p.host_port and p.host_port > 0
    )


def chain_name(network: str, container_id: str, prefix: str = "DN-") -> str:
    """pkg/utils MustFormatChainNameWithPrefix: `CNI-<prefix>` and the hex
    SHA-512 of network name + container ID, cut to 28 characters."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    head = "CNI-" + prefix
    return head + digest[: CHAIN_MAX - len(head)]


def dnat_comment(network: str, container_id: str) -> str:
    comment = f'dnat name: "{network}" id: "{container_id}"'
    return comment if len(comment) <= COMMENT_MAX else comment[: COMMENT_MAX - 2] + "..."


def mark_spec(bit: int = MARK_MASQ_BIT) -> str:
    """Go's `%#x/%#x` of 1<<bit."""
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


def _split(ports: Sequence[int]) -> list[str]:
    return [
        ",".join(str(p) for p in ports[i : i + MULTIPORT_MAX])
        for i in range(0, len(ports), MULTIPORT_MAX)
    ]


def dnat_entry_rules(network: str, pod: PortmapPod) -> list[str]:
    """The pod's jumps in CNI-HOSTPORT-DNAT: one per protocol (sorted) and
    15 ports, in the order of its mappings."""
    chain = chain_name(network, pod.container_id)
    comment = quote(dnat_comment(network, pod.container_id))
    by_proto: dict[str, list[int]] = {}
    for m in pod.mappings:
        by_proto.setdefault(m.protocol, []).append(m.host_port)
    return [
        f"-p {proto} -m comment --comment {comment} -m multiport --dports {ports} -j {chain}"
        for proto in sorted(by_proto)
        for ports in _split(by_proto[proto])
    ]


def dnat_chain_rules(pod: PortmapPod) -> list[str]:
    """The rules of the pod's CNI-DN- chain in the family of `pod.ip`: for
    each mapping, mark hairpin (and, for IPv4, localhost) traffic for
    masquerade, then DNAT to the pod."""
    pod_net = ipaddress.ip_interface(f"{pod.ip}/{pod.prefixlen}").network
    version = 6 if pod.ipv6 else 4
    # fmtIpPort: an IPv6 literal is bracketed before its port.
    to = f"[{pod.ip}]" if pod.ipv6 else pod.ip
    rules = []
    for m in pod.mappings:
        dst = ""
        if m.host_ip:
            host_ip = ipaddress.ip_address(m.host_ip)
            if host_ip.version != version:
                continue  # a hostIP of the other family has no rule here
            if not host_ip.is_unspecified:
                dst = f"-d {host_ip}/{host_ip.max_prefixlen} "
        match = f"-p {m.protocol} -m {m.protocol} --dport {m.host_port}"
        rules.append(f"-s {pod_net} {dst}{match} -j {SETMARK}")
        if not pod.ipv6:
            # 127.0.0.1 can be DNATed out of the node (route_localnet); ::1
            # cannot, and portmap writes no such rule for IPv6.
            rules.append(f"-s 127.0.0.1/32 {dst}{match} -j {SETMARK}")
        rules.append(f"{dst}{match} -j DNAT --to-destination {to}:{m.container_port}")
    return rules


def _shared_chains(nat: Table, bit: int) -> None:
    mark = mark_spec(bit)
    comment = quote("CNI portfwd masquerade mark")
    nat.append(SETMARK, f"-m comment --comment {comment} -j MARK --set-xmark {mark}")
    nat.append(MASQ, f"-m mark --mark {mark} -j MASQUERADE")


def node_state(network: str, pods: Iterable[PortmapPod], bit: int = MARK_MASQ_BIT) -> RuleSet:
    """The node's portmap chains as iptables-save (ip6tables-save for IPv6
    `pods`, which are all of one family) shows them after ADD of `pods` in
    this order (empty if there are none: no ADD ever ran). The
    entry rules are listed in their built-in chains; POSTROUTING's comes
    before any other rule there."""
    pods = [p for p in pods if p.mappings]
    rules = RuleSet()
    if not pods:
        return rules
    nat = rules.table("nat")
    for chain, args, _ in ENTRY_RULES:
        nat.append(chain, args)
    for chain in (TOP_DNAT, SETMARK, MASQ):
        nat.declare(chain)
    _shared_chains(nat, bit)
    for pod in pods:
        nat.declare(chain_name(network, pod.container_id))
        for args in dnat_entry_rules(network, pod):
            nat.append(TOP_DNAT, args)
        for args in dnat_chain_rules(pod):
            nat.append(chain_name(network, pod.container_id), args)
    return rules


def with_portmap(
    rules: RuleSet, network: str, pods: Iterable[PortmapPod], bit: int = MARK_MASQ_BIT
) -> RuleSet:
    """`rules` (kube-proxy's for a node) with the node's portmap chains
    added where a node that ran kube-proxy first and then ADD for `pods`
    has them: POSTROUTING's masquerade jump first, the DNAT jumps after
    kube-proxy's in PREROUTING and OUTPUT. For the offline view (rules
    goldens, simulation, trace) of a node; the live kubelet uses sync_text."""
    state = node_state(network, pods, bit).tables.get("nat")
    if state is None:
        return rules
    nat = rules.table("nat")
    for chain in state.chains:
        nat.declare(chain)
    for rule in state.rules:
        if rule.chain == "POSTROUTING":
            first = next(
                (i for i, r in enumerate(nat.rules) if r.chain == "POSTROUTING"), len(nat.rules)
            )
            nat.rules.insert(first, rule)
        else:
            nat.rules.append(rule)
    return rules


def sync_text(
    network: str, pods: Iterable[PortmapPod], existing: RuleSet, bit: int = MARK_MASQ_BIT
) -> str:
    """One `iptables-restore --noflush` transaction (ip6tables-restore for
    IPv6 `pods`) that takes a node whose nat table of that family is
    `existing` (parsed iptables-save) to the portmap state of `pods` (the
    node's running pods with hostPorts, their addresses of the one family,
    in ADD order): the shared chains and entry rules are created if
    missing, CNI-HOSTPORT-DNAT and every pod's CNI-DN- chain are rewritten,
    and the CNI-DN- chains of pods that are gone are flushed and deleted.
    Empty if nothing is to be done (no pod ever had a hostPort)."""
    pods = [p for p in pods if p.mappings]
    nat = existing.tables.get("nat") or Table("nat")
    live = [c for c in nat.chains if c.startswith(DNAT_PREFIX)]
    if not pods and not live:
        return ""
    own = [chain_name(network, p.container_id) for p in pods]
    stale = sorted(c for c in live if c not in own)
    out = ["*nat"]
    out.extend(f":{chain} - [0:0]" for chain in (TOP_DNAT, SETMARK, MASQ, *own, *stale))
    have = {(r.chain, r.args) for r in nat.rules}
    for chain, args, prepend in ENTRY_RULES:
        if (chain, args) not in have:
            out.append(f"-I {chain} 1 {args}" if prepend else f"-A {chain} {args}")
    shared = Table("nat")
    _shared_chains(shared, bit)
    out.extend(rule.line() for rule in shared.rules)
    for pod in pods:
        out.extend(f"-A {TOP_DNAT} {args}" for args in dnat_entry_rules(network, pod))
    for pod, chain in zip(pods, own, strict=True):
        out.extend(f"-A {chain} {args}" for args in dnat_chain_rules(pod))
    out.extend(f"-X {chain}" for chain in stale)
    out.append("COMMIT")
    return "\n".join(out) + "\n"
