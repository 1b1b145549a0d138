"""Node registration from the Lab: what each lab node's kubelet would write
when it registers (name, the hostname, os and arch labels, also the beta
os/arch ones, plus the lab's labels, InternalIP and Hostname addresses,
and the machine's status: conditions, nodeInfo, capacity/allocatable and
the kubelet's daemon endpoint, see netemu.controlplane.nodeinfo), plus an
explicit per-node podCIDR from the Lab. Nodes given directly in manifests
are left as they are; a Node that both the Lab and a manifest describe keeps
the manifest's values and only gains what is missing."""

from __future__ import annotations

from typing import Any

from netemu.api.base import ObjectMeta
from netemu.api.config import Lab, LabNode
from netemu.api.core import Node, NodeAddress, NodeSpec, NodeStatus
from netemu.controlplane.client import Client
from netemu.controlplane.common import sorted_map, write
from netemu.controlplane.errors import NotFound
from netemu.controlplane.nodeinfo import (
    HostFacts,
    capacity,
    conditions,
    daemon_endpoints,
    host_facts,
    node_info,
)

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
# The kubelet still writes the deprecated beta labels too (kubelet_node_status.go, initialNode).
LABEL_BETA_OS = "beta.kubernetes.io/os"
LABEL_BETA_ARCH = "beta.kubernetes.io/arch"


class NodeController:
    """Creates a Node per lab node (the kubelet's self-registration)."""

    name = "nodes"

    def __init__(self, client: Client, facts: HostFacts | None = None) -> None:
        self.client = client
        self.facts = facts

    def reconcile(self) -> bool:
        labs = self.client.list(Lab).items
        if not labs:
            return False
        changed = False
        facts = self.facts or host_facts()
        for lab_node in labs[0].spec.nodes:
            desired = node_for(lab_node, facts.architecture)
            try:
                current = self.client.get(Node, None, lab_node.name)
            except NotFound:
                # The kubelet registers its Node with the machine's status
                # (conditions, capacity, allocatable) in one go: the scheduler
                # must never see a lab node without its allocatable pods.
                current = self.client.create(desired)
                changed = True
            machine = _machine_status(current, facts, lab_node.max_pods)
            changed |= write(self.client, current, _fill(current, desired, machine))
        return changed


def node_for(lab_node: LabNode, architecture: str) -> Node:
    # The kubelet sets the well-known labels first; --node-labels override them.
    labels = {
        LABEL_BETA_ARCH: architecture,
        LABEL_BETA_OS: "linux",
        LABEL_ARCH: architecture,
        LABEL_HOSTNAME: lab_node.name,
        LABEL_OS: "linux",
        **lab_node.labels,
    }
    spec = NodeSpec()
    if lab_node.pod_cidrs:
        spec = NodeSpec(pod_cidr=lab_node.pod_cidrs[0], pod_cidrs=lab_node.pod_cidrs)
    return Node(
        metadata=ObjectMeta(name=lab_node.name, labels=sorted_map(labels)),
        spec=spec,
        status=NodeStatus(
            # A kubelet given --node-ip=IPv4,IPv6 reports an InternalIP per
            # family, primary first (pkg/kubelet/nodestatus/setters.go).
            addresses=[
                *(NodeAddress(type="InternalIP", address=ip) for ip in lab_node.underlay_ips),
                NodeAddress(type="Hostname", address=lab_node.name),
            ]
        ),
    )


def _machine_status(current: Node, facts: HostFacts, max_pods: int) -> dict[str, Any]:
    """What the kubelet reports of its machine once registered."""
    name = current.metadata.name or ""
    return {
        # Conditions hold times: the registration's (the controllers read no clock).
        "conditions": conditions(current.metadata.creation_timestamp),
        "node_info": node_info(name, facts),
        "capacity": capacity(facts, max_pods),
        "allocatable": capacity(facts, max_pods),
        "daemon_endpoints": daemon_endpoints(),
    }


def _fill(current: Node, desired: Node, machine: dict[str, Any]) -> Node:
    labels = {**desired.metadata.labels, **current.metadata.labels}
    labels = sorted_map(labels) if labels != current.metadata.labels else current.metadata.labels
    spec = current.spec
    if not spec.pod_cidr and desired.spec.pod_cidr:
        spec = spec.model_copy(
            update={"pod_cidr": desired.spec.pod_cidr, "pod_cidrs": list(desired.spec.pod_cidrs)}
        )
    status = current.status
    if not status.addresses:
        status = status.model_copy(update={"addresses": list(desired.status.addresses)})
    missing = {k: v for k, v in machine.items() if getattr(status, k) is None}
    if missing:
        status = status.model_copy(update=missing)
    return current.model_copy(
        update={
            "metadata": current.metadata.model_copy(update={"labels": labels}),
            "spec": spec,
            "status": status,
        }
    )
