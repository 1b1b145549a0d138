"""The scheduler: binds pods without spec.nodeName to a node.

Feasible nodes are those not marked unschedulable (unless the pod tolerates
`node.kubernetes.io/unschedulable`) whose labels and name satisfy the pod's
nodeSelector and required node affinity (netemu.controlplane.nodeaffinity),
which have the pod's hostPorts free (the NodePorts filter), room for one
more pod under their allocatable `pods` (the pod count of NodeResourcesFit;
requests of cpu and memory are not weighed), and whose domains satisfy the
required pod affinity and anti-affinity of the pod and of the pods already
placed (InterPodAffinity, netemu.controlplane.podaffinity). Among them netemu spreads
deterministically: fewest pods of the same controller (owner uid), then
fewest pods overall, then node name. This replaces kube-scheduler's
scoring plugins, whose default weights would also spread replicas but break
ties randomly. Pods are taken in creation order, as from the scheduling
queue.

A pod that fits nowhere stays Pending with condition PodScheduled=False,
reason Unschedulable, and kube-scheduler's message, e.g.
"0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't
match Pod's node affinity/selector." or "0/2 nodes are available: 2 Too
many pods." (the trailing preemption note of real clusters is left out).
Binding sets PodScheduled=True.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from netemu.api.core import Namespace, Node, Pod, PodCondition, PodStatus
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    IdentityMemo,
    controller_ref,
    is_active,
    is_terminal,
    write,
)
from netemu.controlplane.informer import CreationOrder
from netemu.controlplane.nodeaffinity import node_fits
from netemu.controlplane.podaffinity import (
    PlacedPods,
    PodAffinityFilter,
    PodTerms,
    required_terms,
)
from netemu.controlplane.podstatus import quantity

REASON_UNSCHEDULABLE_NODE = "node(s) were unschedulable"
REASON_SELECTOR = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"
ANY_IP = "0.0.0.0"

# (hostIP, protocol, hostPort), hostIP "0.0.0.0" when unset, as the
# scheduler's HostPortInfo keeps them (pkg/scheduler/framework/types.go).
HostPort = tuple[str, str, int]
NO_NODES = "no nodes available to schedule pods"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


class Scheduler:
    """Places pending pods on nodes."""

    name = "scheduler"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.order = CreationOrder(client, Pod)
        # Each pod's owner, hostPorts and required pod (anti-)affinity, by
        # identity: every pass counts them for every bound pod, and most pods
        # are the same objects as the pass before (a StatefulSet under
        # OrderedReady adds one per round).
        self._placement = IdentityMemo(_placement_of)

    def reconcile(self) -> bool:
        self.order.sync()
        pods = self.client.list(Pod).items
        queue = [p for p in pods if not p.spec.node_name and is_active(p)]
        if not queue:
            return False
        self._placement.start_pass()
        nodes = sorted(self.client.list(Node).items, key=lambda n: n.metadata.name or "")
        total: Counter[str] = Counter()
        per_owner: Counter[tuple[str, str]] = Counter()
        used: dict[str, set[HostPort]] = {}
        placed = PlacedPods(
            {node.metadata.name or "": node.metadata.labels for node in nodes},
            {
                ns.metadata.name or "": ns.metadata.labels
                for ns in self.client.list(Namespace).items
            },
        )
        for pod in pods:
            if pod.spec.node_name and not is_terminal(pod):
                owner, ports, terms = self._placement(pod)
                total[pod.spec.node_name] += 1
                per_owner[(owner, pod.spec.node_name)] += 1
                if ports:
                    used.setdefault(pod.spec.node_name, set()).update(ports)
                placed.add(pod, terms, pod.spec.node_name)

        changed = False
        for pod in sorted(queue, key=self.order.key):
            terms = self._placement(pod)[2]
            affinity = placed.filter_for(pod, terms)
            feasible, message = filter_nodes(pod, nodes, used, total, affinity)
            if not feasible:
                changed |= write(self.client, pod, _unschedulable(pod, message))
                continue
            owner = _owner_uid(pod)
            best = min(
                feasible,
                key=lambda n: (
                    per_owner[(owner, n)] if owner else 0,
                    total[n],
                    n,
                ),
            )
            total[best] += 1
            per_owner[(owner, best)] += 1
            used.setdefault(best, set()).update(host_ports(pod))
            placed.add(pod, terms, best)
            changed |= write(self.client, pod, bind(pod, best))
        return changed


def filter_nodes(
    pod: Pod,
    nodes: list[Node],
    used: dict[str, set[HostPort]] | None = None,
    pods_on: Counter[str] | None = None,
    affinity: PodAffinityFilter | None = None,
) -> tuple[list[str], str]:
    """Names of feasible nodes and, if there are none, why (FitError's message).
    Filters run in kube-scheduler's order and a node fails on the first.
    `used`: the hostPorts of the pods already on each node; `pods_on`: how
    many pods each node runs; `affinity`: the pod's InterPodAffinity filter."""
    if not nodes:
        return [], NO_NODES
    tolerates = tolerates_unschedulable(pod.spec.tolerations)
    wanted = host_ports(pod)
    feasible: list[str] = []
    reasons: Counter[str] = Counter()
    for node in nodes:
        if node.spec.unschedulable and not tolerates:
            reasons[REASON_UNSCHEDULABLE_NODE] += 1
        elif not node_fits(pod.spec, node):
            reasons[REASON_SELECTOR] += 1
        elif ports_conflict(wanted, (used or {}).get(node.metadata.name or "", set())):
            reasons[REASON_PORTS] += 1
        elif is_full(node, (pods_on or Counter())[node.metadata.name or ""]):
            reasons[REASON_TOO_MANY_PODS] += 1
        elif affinity is not None and (why := affinity.reason(node)) is not None:
            reasons[why] += 1
        else:
            feasible.append(node.metadata.name or "")
    histogram = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return feasible, f"0/{len(nodes)} nodes are available: {', '.join(histogram)}."


def is_full(node: Node, running: int) -> bool:
    """Whether a node running `running` pods takes no more: NodeResourcesFit
    refuses a pod when the node's pods plus one exceed its allocatable `pods`
    (pkg/scheduler/framework/plugins/noderesources/fit.go, fitsRequest).
    A Node whose status reports no allocatable at all, as a Node written into
    a manifest by hand, is not limited: netemu schedules onto it as a
    registered node."""
    allocatable = node.status.allocatable
    if not isinstance(allocatable, dict):
        return False
    allowed = quantity(allocatable.get("pods", 0))
    return allowed is None or running + 1 > allowed


def _placement_of(pod: Pod) -> tuple[str, tuple[HostPort, ...], PodTerms]:
    """What a pod counts for on its node: its owner, its hostPorts and its
    required pod (anti-)affinity."""
    return _owner_uid(pod), tuple(host_ports(pod)), required_terms(pod)


def host_ports(pod: Pod) -> list[HostPort]:
    """The hostPorts `pod` asks for (its containers', as the NodePorts plugin counts them)."""
    return [
        (port.host_ip or ANY_IP, port.protocol, port.host_port)
        for container in pod.spec.containers
        for port in container.ports
        if port.host_port and port.host_port > 0
    ]


def ports_conflict(wanted: list[HostPort], used: set[HostPort]) -> bool:
    """HostPortInfo.CheckConflict: the same protocol and port conflict when
    either side binds every address (0.0.0.0) or both bind the same one."""
    for ip, protocol, port in wanted:
        for used_ip, used_protocol, used_port in used:
            if (protocol, port) != (used_protocol, used_port):
                continue
            if ANY_IP in (ip, used_ip) or ip == used_ip:
                return True
    return False


def tolerates_unschedulable(tolerations: Any) -> bool:
    if not isinstance(tolerations, list):
        return False
    for tol in tolerations:
        if not isinstance(tol, dict):
            continue
        effect = tol.get("effect")
        if effect not in (None, "", "NoSchedule"):
            continue
        key, operator = tol.get("key"), tol.get("operator", "Equal")
        if (not key and operator == "Exists") or key == TAINT_UNSCHEDULABLE:
            return True
    return False


def bind(pod: Pod, node_name: str) -> Pod:
    conditions = [c for c in pod.status.conditions if c.type != "PodScheduled"]
    conditions.append(PodCondition(type="PodScheduled", status="True"))
    return pod.model_copy(
        update={
            "spec": pod.spec.model_copy(update={"node_name": node_name}),
            "status": pod.status.model_copy(update={"conditions": conditions}),
        }
    )


def _unschedulable(pod: Pod, message: str) -> Pod:
    conditions = [c for c in pod.status.conditions if c.type != "PodScheduled"]
    conditions.append(
        PodCondition(type="PodScheduled", status="False", reason="Unschedulable", message=message)
    )
    status: PodStatus = pod.status.model_copy(update={"phase": "Pending", "conditions": conditions})
    return pod.model_copy(update={"status": status})


def _owner_uid(pod: Pod) -> str:
    ref = controller_ref(pod.metadata)
    return ref.uid if ref is not None else ""
