"""The offline pipeline, stage by stage: load and validate manifests, run the
control plane, and compile or simulate one node's kube-proxy rules.

Pure: reads the manifest files it is given and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from netemu.api.config import Lab
from netemu.api.validate import load_and_validate
from netemu.controlplane import build_cluster_state
from netemu.controlplane.common import is_terminal
from netemu.controlplane.state import ClusterState
from netemu.errors import UsageError as UsageError
from netemu.heap import gc_paused
from netemu.net.addresses import node_addresses
from netemu.net.plan import CNI_NETWORK, sandbox_id
from netemu.rules import nftmodel
from netemu.rules.flannel import flannel_config
from netemu.rules.input import (
    IPFamily,
    ProxyInput,
    endpoints_by_port,
    family_of,
    proxy_config,
    service_ports,
)
from netemu.rules.inputcache import ProxyInputCache
from netemu.rules.iptables import compile_node
from netemu.rules.model import RuleSet
from netemu.rules.nftables import NftRuleset, compile_ruleset, nftables_mode_iptables
from netemu.rules.nftsimulate import simulate_nft
from netemu.rules.portmap import PortmapPod, port_mappings, portmap_pod, with_portmap
from netemu.rules.simulate import Packet, Simulation, simulate


def load_cluster(
    paths: Iterable[str | Path],
    *,
    notes: list[str] | None = None,
    create_namespaces: bool = False,
) -> ClusterState:
    """Manifests → validated objects → the control plane's computed state. An
    input without a Lab (and without Nodes) runs on the built-in lab; `notes`
    gets that and the loader's other notices (netemu.api.validate)."""
    with gc_paused():  # objects by the million, none of them garbage (see gc_paused)
        loaded = load_and_validate(
            paths, notes=notes, create_namespaces=create_namespaces, default_lab=True
        )
        return build_cluster_state([item.obj for item in loaded])


def pending_pod_warnings(state: ClusterState) -> list[str]:
    """One warning line per reason pods wait without an address: not
    scheduled (with the scheduler's message), or bound to a node that cannot
    give them one. Such pods are no Service's endpoints, which the rules
    alone do not show. At most three pods are named per line."""
    nodes = {node.metadata.name: node for node in state.nodes}
    waiting: dict[str, list[str]] = {}
    for pod in state.pods:
        if pod.status.pod_ip or is_terminal(pod):
            continue
        where = pod.spec.node_name
        if not where:
            scheduled = next((c for c in pod.status.conditions if c.type == "PodScheduled"), None)
            reason = "not scheduled" + (
                f": {scheduled.message}" if scheduled and scheduled.message else ""
            )
        elif (node := nodes.get(where)) is None:
            reason = f"bound to node {where}, which does not exist"
        elif not node.spec.pod_cidrs and not node.spec.pod_cidr:
            reason = f"on node {where}, which has no podCIDR"
        else:
            cidrs = ",".join(node.spec.pod_cidrs or [node.spec.pod_cidr or ""])
            reason = f"on node {where}, whose podCIDR {cidrs} has no free address"
        waiting.setdefault(reason, []).append(f"{pod.metadata.namespace}/{pod.metadata.name}")
    lines = []
    for reason, pods in waiting.items():
        named = ", ".join(pods[:3]) + (f" and {len(pods) - 3:,} more" if len(pods) > 3 else "")
        count = "1 pod is" if len(pods) == 1 else f"{len(pods):,} pods are"
        lines.append(f"warning: {count} Pending without an address, {reason} ({named})")
    return lines


def lab_name(lab: Lab | None, paths: Sequence[str]) -> str:
    """The Lab's name, or the name of the first manifest path without one."""
    if lab is not None and lab.metadata.name:
        return lab.metadata.name
    return Path(paths[0]).resolve().stem if paths else "default"


def pick_node(state: ClusterState, name: str | None) -> str:
    """The node named, or the only node; InputError otherwise."""
    names = [node.metadata.name or "" for node in state.nodes]
    if name is not None:
        if name not in names:
            known = ", ".join(names) or "none"
            raise UsageError(f"no node {name!r}; nodes: {known}")
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError("no nodes: add a Lab or Node objects")
    raise UsageError(f"several nodes ({', '.join(names)}): choose one with --node")


ProxyMode = Literal["iptables", "nftables"]

# The suffix of each proxier's rules file under rules/<lab>/, by mode and family.
RULES_SUFFIXES: dict[tuple[ProxyMode, IPFamily], str] = {
    ("iptables", "IPv4"): "iptables",
    ("iptables", "IPv6"): "ip6tables",
    ("nftables", "IPv4"): "nft",
    ("nftables", "IPv6"): "ip6.nft",
}


def rules_suffix(mode: ProxyMode, family: IPFamily) -> str:
    """`<node>.<suffix>`: the file `netemu compile --write` writes for the
    proxier of `family` in `mode`."""
    return RULES_SUFFIXES[(mode, family)]


def proxy_mode(state: ClusterState) -> ProxyMode:
    """The mode every kube-proxy of the lab runs in.

    One rule: a KubeProxyConfiguration's explicit `mode` wins; when it is
    unset or "" (kube-proxy's "iptables on Linux"), the Lab's
    `spec.proxyMode` decides (default iptables), the Lab being what
    configures its kube-proxies. Validation (netemu.api.validate) has already
    refused any other mode (ipvs, kernelspace) and a Lab and a
    KubeProxyConfiguration that both name a mode and disagree.
    """
    mode = state.proxy_config.mode
    if mode == "iptables" or mode == "nftables":
        return mode
    if mode:
        raise UsageError(f"unsupported kube-proxy mode {mode!r}: expected iptables or nftables")
    return state.lab.spec.proxy_mode if state.lab is not None else "iptables"


def proxy_families(state: ClusterState, node_name: str) -> list[IPFamily]:
    """The families kube-proxy runs a proxier for on the node, primary first:
    the cluster's service IP families (the Lab's serviceCIDR, one or a
    dual-stack pair); without a Lab, those of the node's InternalIPs."""
    if state.lab is not None:
        texts = state.lab.spec.service_cidrs
    else:
        texts = state.node(node_name).internal_ips()
    found: list[IPFamily] = []
    for text in texts:
        family = family_of(text)
        if family is not None and family not in found:
            found.append(family)
    return found or ["IPv4"]


def proxy_input(
    state: ClusterState,
    node_name: str,
    *,
    family: IPFamily = "IPv4",
    mode: ProxyMode | None = None,
    cache: ProxyInputCache | None = None,
) -> ProxyInput:
    """What the node's kube-proxy proxier of `family` sees, in `mode`
    (default: proxy_mode). `cache` (kept from call to call, one per family)
    converts only the Services and EndpointSlices that changed since its
    last call; the result is the same without it."""
    node = state.node(node_name)
    config = proxy_config(
        node,
        state.proxy_config,
        state.lab,
        node_addresses(node, state.lab),
        mode=mode or proxy_mode(state),
        family=family,
    )
    if cache is not None:
        assert cache.family == family, f"a {cache.family} input cache for the {family} proxier"
        ports = cache.service_ports(state.services)
        endpoints = cache.endpoints_by_port(state.endpoint_slices)
    else:
        ports = tuple(service_ports(state.services, family))
        endpoints = endpoints_by_port(state.endpoint_slices, family)
    return ProxyInput(config=config, service_ports=ports, endpoints=endpoints)


def compile_rules(
    state: ClusterState,
    node_name: str,
    *,
    family: IPFamily = "IPv4",
    mode: ProxyMode | None = None,
) -> RuleSet:
    """The node's iptables (IPv4) or ip6tables (IPv6) rules, and the portmap
    CNI plugin's for the hostPorts of the pods on it (the chains of the pods'
    addresses of `family`). In iptables mode (default:
    proxy_mode) they hold kube-proxy's; in nftables mode only kubelet's and
    flanneld's (kube-proxy's are compile_nftables')."""
    mode = mode or proxy_mode(state)
    with gc_paused():
        data = proxy_input(state, node_name, family=family, mode=mode)
        flannel = flannel_config(state.lab, data.config.node_pod_cidr)
        if mode == "nftables":
            rules = nftables_mode_iptables(flannel, family=family)
        else:
            rules = compile_node(data, flannel)
    return with_portmap(rules, CNI_NETWORK, portmap_pods(state, node_name, family))


def compile_nftables(
    state: ClusterState, node_name: str, *, family: IPFamily = "IPv4"
) -> NftRuleset:
    """The node's kube-proxy table of `family` in nftables mode after its
    first sync (`ip kube-proxy` for IPv4, `ip6 kube-proxy` for IPv6)."""
    with gc_paused():
        return compile_ruleset(proxy_input(state, node_name, family=family, mode="nftables"))


def nftables_node_rules(
    state: ClusterState, node_name: str, *, family: IPFamily = "IPv4"
) -> tuple[nftmodel.NftRuleset, RuleSet]:
    """A node in nftables mode as the offline simulator reads it: kube-proxy's
    table of `family` (its dump, read back as any nftables rules are) and
    what the node still has in iptables (ip6tables for IPv6): kubelet's,
    flanneld's and the portmap plugin's."""
    table = nftmodel.parse_nft(compile_nftables(state, node_name, family=family).dump())
    return table, compile_rules(state, node_name, family=family, mode="nftables")


def simulate_on_node(
    state: ClusterState, node_name: str, packet: Packet, *, family: IPFamily | None = None
) -> Simulation:
    """Walk `packet` (of `family`: by default its destination's) through the
    rules of `node_name` in the lab's proxy mode."""
    family = family or ("IPv6" if ":" in packet.dst else "IPv4")
    addresses = local_ips(state, node_name)
    if proxy_mode(state) == "nftables":
        table, iptables = nftables_node_rules(state, node_name, family=family)
        return simulate_nft(table, addresses, packet, iptables)
    return simulate(compile_rules(state, node_name, family=family), addresses, packet)


def portmap_pods(
    state: ClusterState, node_name: str, family: IPFamily = "IPv4"
) -> list[PortmapPod]:
    """The node's pods with hostPorts, as portmap's ADD gets them for
    `family` (each pod's address of that family; a pod without one has no
    chains there), in the order a lab's kubelet starts them (by
    namespace/name). hostNetwork pods do not go through CNI."""
    prefixlen = _pod_prefixlen(state, node_name, family)
    pods = []
    for pod in state.pods:
        spec, status = pod.spec, pod.status
        if spec.node_name != node_name or spec.host_network or is_terminal(pod):
            continue
        mappings = port_mappings(pod)
        ips = [p.ip for p in status.pod_ips] or [status.pod_ip or ""]
        namespace, name = pod.metadata.namespace or "default", pod.metadata.name or ""
        pod_map = portmap_pod(
            sandbox_id(namespace, name), [(ip, prefixlen) for ip in ips], mappings, family
        )
        if not mappings or pod_map is None:
            continue
        pods.append((f"{namespace}/{name}", pod_map))
    return [p for _, p in sorted(pods, key=lambda item: item[0])]


def _pod_prefixlen(state: ClusterState, node_name: str, family: IPFamily) -> int:
    """The prefix length of the node's podCIDR of `family` (host-local's
    subnet: the pod's eth0 prefix, which portmap's hairpin rule matches)."""
    node = state.node(node_name)
    spec = node.spec
    cidrs = (spec.pod_cidrs or ([spec.pod_cidr] if spec.pod_cidr else [])) if spec else []
    want_v6 = family == "IPv6"
    cidr = next((c for c in cidrs if (":" in c) == want_v6), None)
    if cidr is not None:
        return int(cidr.rsplit("/", 1)[1])
    return 64 if want_v6 else 24


def local_ips(state: ClusterState, node_name: str) -> list[str]:
    """Every address on the node, both families."""
    return node_addresses(state.node(node_name), state.lab)
