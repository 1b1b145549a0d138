"""The offline pipeline, stage by stage: load and validate manifests, run the
control plane, and compile or simulate one node's kube-proxy rules.

Pure: reads the manifest files it is given and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from netemu.api.config import Lab
from netemu.api.load import gc_paused
from netemu.api.validate import load_and_validate
from netemu.controlplane import build_cluster_state
from netemu.controlplane.state import ClusterState
from netemu.errors import UsageError as UsageError
from netemu.net.addresses import node_addresses
from netemu.rules.flannel import flannel_config
from netemu.rules.input import ProxyInput, endpoints_by_port, proxy_config, service_ports
from netemu.rules.iptables import compile_node
from netemu.rules.model import RuleSet


def load_cluster(paths: Iterable[str | Path]) -> ClusterState:
    """Manifests → validated objects → the control plane's computed state."""
    with gc_paused():  # objects by the million, none of them garbage (see gc_paused)
        loaded = load_and_validate(paths)
        return build_cluster_state([item.obj for item in loaded])


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


def proxy_input(state: ClusterState, node_name: str) -> ProxyInput:
    node = state.node(node_name)
    config = proxy_config(node, state.proxy_config, state.lab, node_addresses(node, state.lab))
    return ProxyInput(
        config=config,
        service_ports=tuple(service_ports(state.services)),
        endpoints=endpoints_by_port(state.endpoint_slices),
    )


def compile_rules(state: ClusterState, node_name: str) -> RuleSet:
    with gc_paused():
        data = proxy_input(state, node_name)
        return compile_node(data, flannel_config(state.lab, data.config.node_pod_cidr))


def local_ips(state: ClusterState, node_name: str) -> list[str]:
    return node_addresses(state.node(node_name), state.lab)
