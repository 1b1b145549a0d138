"""Per-node pod CIDRs (kube-controller-manager's node IPAM, range allocator).

Nodes without spec.podCIDR get the first free block of the cluster CIDR
(the Lab's podCIDR, else KubeProxyConfiguration.clusterCIDR, else
10.244.0.0/16), /24 blocks as kubeadm's default node-cidr-mask-size. Lab
nodes are served in lab order, then other Nodes by name; blocks overlapping
any podCIDR already set are skipped. spec.podCIDRs mirrors spec.podCIDR.
On a dual-stack cluster (a cluster CIDR per family) a node gets one block
of each, in the cluster CIDRs' order, IPv4 /24 and IPv6 /64 (the range
allocator's dual-stack mode, one CIDR set per --cluster-cidr entry,
pkg/controller/nodeipam/ipam/range_allocator.go).
When the cluster CIDR is exhausted a node keeps no podCIDR (Kubernetes
reports CIDRNotAvailable) and its pods get no IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from netemu.api.core import Node
from netemu.controlplane.client import Client
from netemu.controlplane.common import write
from netemu.controlplane.settings import IPNetwork, read_settings


class NodeIpamController:
    """Assigns spec.podCIDR / spec.podCIDRs to Nodes."""

    name = "node-ipam"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        settings = read_settings(self.client)
        nodes = list(self.client.list(Node).items)
        lab_order = (
            {n.name: i for i, n in enumerate(settings.lab.spec.nodes)} if settings.lab else {}
        )
        nodes.sort(
            key=lambda n: (
                lab_order.get(n.metadata.name or "", len(lab_order)),
                n.metadata.name or "",
            )
        )

        taken: list[IPNetwork] = []
        for node in nodes:
            for cidr in [node.spec.pod_cidr, *node.spec.pod_cidrs]:
                try:
                    taken.append(ipaddress.ip_network(cidr or "", strict=False))
                except ValueError:
                    continue
        blocks = [
            _free_blocks(cidr, settings.node_cidr_prefix_of(cidr), taken)
            for cidr in settings.cluster_cidrs or (settings.cluster_cidr,)
        ]

        changed = False
        for node in nodes:
            spec = node.spec
            if spec.pod_cidr:
                if not spec.pod_cidrs:
                    new_spec = spec.model_copy(update={"pod_cidrs": [spec.pod_cidr]})
                    changed |= write(self.client, node, node.model_copy(update={"spec": new_spec}))
                continue
            if spec.pod_cidrs:
                new_spec = spec.model_copy(update={"pod_cidr": spec.pod_cidrs[0]})
                changed |= write(self.client, node, node.model_copy(update={"spec": new_spec}))
                continue
            chosen = [next(family_blocks, None) for family_blocks in blocks]
            if any(block is None for block in chosen):
                continue  # CIDRNotAvailable: all families or none
            cidrs = [str(block) for block in chosen]
            new_spec = spec.model_copy(update={"pod_cidr": cidrs[0], "pod_cidrs": cidrs})
            changed |= write(self.client, node, node.model_copy(update={"spec": new_spec}))
        return changed


def _free_blocks(cluster: IPNetwork, prefix: int, taken: list[IPNetwork]) -> Iterator[IPNetwork]:
    for block in cluster.subnets(new_prefix=prefix):
        if not any(block.version == t.version and block.overlaps(t) for t in taken):
            yield block
