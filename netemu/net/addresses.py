"""Which addresses a node owns, as the datapath assigns them (flannel style).

A lab node has its underlay IP, the pod bridge gateway (the first host of
its pod CIDR, on cni0) and, with the vxlan overlay, the pod CIDR's network
address on the VXLAN device (flannel.1). kube-proxy sees all of them as
LOCAL (`-m addrtype`), and nodePortAddresses selects among them.
"""

from __future__ import annotations

import netaddr

from netemu.api.config import Lab
from netemu.api.core import Node


def host_port(ip: str, port: int) -> str:
    """ "ip:port" as Go's net.JoinHostPort writes it: an IPv6 address in
    brackets (kubelet's URLs, probe messages, agnhost's /clientip)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def bridge_gateway(pod_cidr: str) -> str:
    return str(netaddr.IPNetwork(pod_cidr)[1])


def overlay_address(pod_cidr: str) -> str:
    return str(netaddr.IPNetwork(pod_cidr).network)


def node_addresses(node: Node, lab: Lab | None) -> list[str]:
    """Every address on the node (loopback excluded), primary first: its
    InternalIPs, then per podCIDR (one per family on a dual-stack node) the
    bridge gateway and, with vxlan, the overlay address (flannel.1, and
    flannel-v6.1 for the IPv6 podCIDR)."""
    addresses = list(node.internal_ips())
    if lab is not None:
        for cidr in node.spec.pod_cidrs or ([node.spec.pod_cidr] if node.spec.pod_cidr else []):
            addresses.append(bridge_gateway(cidr))
            if lab.spec.overlay == "vxlan":
                addresses.append(overlay_address(cidr))
    return addresses
