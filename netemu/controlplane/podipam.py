"""Pod addresses and status: what each node's kubelet and CNI plugin (flannel
delegating to host-local IPAM) report once a pod is bound to the node.

Addresses come from the node's spec.podCIDR. The first host address (.1) is
the node's bridge gateway (cni0) and is never handed out; pods get
addresses from .2 up to the last address before the broadcast address.
As host-local does, each node remembers the last address it handed out
and continues after it, wrapping to the start of the range, so an address
freed by a deleted pod is handed out again once the range comes round
(host-local keeps that cursor on the node's disk; netemu keeps it in this
controller). Pods are served in creation order. hostNetwork pods get the
node's InternalIP. Succeeded/Failed pods hold no address.

Status written: phase Running, podIP/podIPs, hostIP/hostIPs, conditions
Initialized, Ready, ContainersReady, PodScheduled = True, startTime and a
containerStatus per container (running since startTime, ready as the pod,
with netemu.controlplane.podstatus's imageID and containerID). startTime is
the pod's creationTimestamp: a lab starts a pod as soon as it is bound, and
the controllers read no clock. A pod waiting for its sandbox gets
containerStatuses waiting with reason ContainerCreating. A status written
in the manifest is kept: only what is missing is filled in (a manifest's
`Ready: False` stays, and then ContainersReady defaults to False too).
Probes: offline, a pod's probes are taken to pass (the state a cluster
settles in). In a live lab (`kubelet_probes`) the node's kubelet runs them
and reports readiness itself, so a pod with a readinessProbe or a
startupProbe starts with Ready and ContainersReady False (reason
ContainersNotReady), as the kubelet reports it until the first probe
passes: a readiness probe's result starts as Failure and the other probes
wait for the startup probe (pkg/kubelet/prober/worker.go, prober_manager.go).
A pod bound to a node that does not exist, has no podCIDR, or whose range
is full stays Pending without an IP, as a pod whose sandbox cannot be
created.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from netemu.api.core import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateWaiting,
    ContainerStatus,
    Node,
    Pod,
    PodCondition,
    PodIP,
    PodStatus,
)
from netemu.controlplane.client import Client
from netemu.controlplane.common import IdentityMemo, is_terminal, write
from netemu.controlplane.informer import CreationOrder
from netemu.controlplane.podstatus import container_id, image_id, waiting_statuses
from netemu.controlplane.settings import IPAddress, IPNetwork

# Condition order as the kubelet reports them.
CONDITION_ORDER = ("Initialized", "Ready", "ContainersReady", "PodScheduled")


class PodIpamController:
    """Gives bound pods their IPs and a running status."""

    name = "pod-ipam"

    def __init__(self, client: Client, kubelet_probes: bool = False) -> None:
        self.client = client
        self.kubelet_probes = kubelet_probes
        self.order = CreationOrder(client, Pod)
        self._last_reserved: dict[str, IPAddress] = {}
        # uid -> (pod's resourceVersion, its node's) when it needed nothing.
        self._settled: dict[str, tuple[str | None, str | None]] = {}
        # The pod addresses each pod holds, by identity: every pass collects
        # every pod's, and most pods are the same objects as the pass before.
        self._holds = IdentityMemo(_held_addresses)

    def reconcile(self) -> bool:
        self.order.sync()
        self._holds.start_pass()
        nodes = {n.metadata.name: n for n in self.client.list(Node).items}
        pods = self.client.list(Pod).items
        used: set[IPAddress] = set()
        for pod in pods:
            used.update(self._holds(pod))

        changed = False
        settled: dict[str, tuple[str | None, str | None]] = {}
        pending: list[tuple[Pod, Node | None, tuple[str | None, str | None], str]] = []
        for pod in pods:
            if not pod.spec.node_name or is_terminal(pod):
                continue
            node = nodes.get(pod.spec.node_name)
            # A pod with its address whose object and node are as when it was
            # last found complete is still complete: skipping it keeps a round
            # linear in the pods that changed, which matters when a
            # StatefulSet adds one pod per round. A pod without an address is
            # always looked at again (an address may have been freed).
            key = (pod.metadata.resource_version, node.metadata.resource_version if node else None)
            uid = pod.metadata.uid or ""
            if pod.status.pod_ip and self._settled.get(uid) == key:
                settled[uid] = key
            else:
                pending.append((pod, node, key, uid))
        # The others in creation order (only they can take addresses).
        pending.sort(key=lambda item: self.order.key(item[0]))
        for pod, node, key, uid in pending:
            new = self._start(pod, node, used)
            if write(self.client, pod, new):
                changed = True
            elif pod.status.pod_ip:
                settled[uid] = key
        self._settled = settled
        return changed

    def _start(self, pod: Pod, node: Node | None, used: set[IPAddress]) -> Pod:
        status = pod.status
        host_ip = node.internal_ips()[0] if node is not None and node.internal_ips() else None
        pod_ip = status.pod_ip or (status.pod_ips[0].ip if status.pod_ips else None)
        pod_ips = [p.ip for p in status.pod_ips]
        fresh = pod_ip is None
        if pod_ip is None and node is not None:
            if pod.spec.host_network:
                pod_ip = host_ip
                # A host-network pod has the node's IPs, one per family.
                pod_ips = node.internal_ips()
            else:
                pod_ips = self._allocate_all(node, used)
                pod_ip = pod_ips[0] if pod_ips else None
        if pod_ip is None:
            # No sandbox: the pod waits (ContainerCreating), without an address.
            waiting: dict[str, Any] = {}
            if status.phase is None:
                waiting["phase"] = "Pending"
            if not status.container_statuses:
                waiting["container_statuses"] = _container_statuses(pod, None, ready=False)
            if not waiting:
                return pod
            return pod.model_copy(update={"status": status.model_copy(update=waiting)})

        update: dict[str, Any] = {
            "pod_ip": pod_ip,
            "pod_ips": list(status.pod_ips) or [PodIP(ip=ip) for ip in pod_ips or [pod_ip]],
        }
        if status.phase is None or (fresh and status.phase == "Pending"):
            update["phase"] = "Running"
        if status.host_ip is None and host_ip is not None:
            update["host_ip"] = host_ip
        host = update.get("host_ip", status.host_ip)
        if not status.host_ips and host is not None:
            # hostIPs: the node's InternalIP of each family, primary first.
            others = [ip for ip in (node.internal_ips() if node is not None else []) if ip != host]
            update["host_ips"] = [PodIP(ip=host), *(PodIP(ip=ip) for ip in others[:1])]
        # In a live lab a pod with init containers starts initializing: its
        # kubelet runs them first and reports their progress itself
        # (netemu.node.initcontainers).
        initializing = self.kubelet_probes and fresh and bool(pod.spec.init_containers)
        if initializing:
            if status.phase in (None, "Pending"):
                update["phase"] = "Pending"
            status = status.model_copy(update={"conditions": _initializing(pod, status)})
        update["conditions"] = _conditions(
            status, self.kubelet_probes and _gated(pod), pod.metadata.creation_timestamp
        )
        if status.start_time is None:
            update["start_time"] = pod.metadata.creation_timestamp
        ready = any(c.type == "Ready" and c.status == "True" for c in update["conditions"])
        creating = all(
            c.state is not None
            and c.state.waiting is not None
            and c.state.waiting.reason == "ContainerCreating"
            # A kubelet's own ContainerCreating (a volume it cannot mount)
            # carries its message, and stays.
            and not c.state.waiting.message
            for c in status.container_statuses
        )
        if initializing:
            update["container_statuses"] = waiting_statuses(pod.spec.containers, "PodInitializing")
            if status.init_container_statuses is None:
                update["init_container_statuses"] = [
                    s.to_dict()
                    for s in waiting_statuses(pod.spec.init_containers, "PodInitializing")
                ]
        elif creating:  # none yet, or only those written while the pod waited
            started = update.get("start_time", status.start_time)
            update["container_statuses"] = _container_statuses(pod, started, ready)
        new_status: PodStatus = status.model_copy(update=update)
        return pod.model_copy(update={"status": new_status})

    def _allocate_all(self, node: Node, used: set[IPAddress]) -> list[str]:
        """host-local with one range per podCIDR of the node: an address of
        each family, in the node's podCIDRs order (the primary first), or none
        at all when a family's range is full (the sandbox fails)."""
        cidrs = [_network(c) for c in node.spec.pod_cidrs or [node.spec.pod_cidr or ""]]
        found: list[IPAddress] = []
        for cidr in cidrs:
            if cidr is None:
                return []
            addr = self._allocate(node, cidr, used)
            if addr is None:
                return []
            found.append(addr)
        used.update(found)
        return [str(addr) for addr in found]

    def _allocate(self, node: Node, cidr: IPNetwork, used: set[IPAddress]) -> IPAddress | None:
        """host-local: the next free address after the last one reserved."""
        first = int(cidr.network_address) + 2  # .1 is the bridge gateway
        last = int(cidr.broadcast_address) - (1 if cidr.version == 4 else 0)
        size = last - first + 1
        if size <= 0:
            return None
        name = f"{node.metadata.name or ''}/IPv{cidr.version}"
        previous = self._last_reserved.get(name)
        start = 0
        if previous is not None and first <= int(previous) <= last:
            start = int(previous) - first + 1
        for step in range(size):
            addr = ipaddress.ip_address(first + (start + step) % size)
            if addr not in used:
                self._last_reserved[name] = addr
                return addr
        return None


def _container_statuses(pod: Pod, started_at: Any, ready: bool) -> list[ContainerStatus]:
    """A status per container as the kubelet first reports it: running since
    `started_at` (waiting in ContainerCreating when None), never restarted."""
    statuses = []
    for container in pod.spec.containers:
        running = started_at is not None
        state = (
            ContainerState(running=ContainerStateRunning(started_at=started_at))
            if running
            else ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
        )
        statuses.append(
            ContainerStatus(
                name=container.name,
                state=state,
                ready=ready and running,
                restart_count=0,
                image=container.image or "",
                image_id=image_id(container.image) if running else "",
                container_id=container_id(pod, container.name, 0) if running else None,
                # A startup probe holds `started` false until it passes.
                started=running and (ready or container.startup_probe is None),
            )
        )
    return statuses


def _initializing(pod: Pod, status: PodStatus) -> list[PodCondition]:
    """The conditions of a pod whose init containers have yet to run, as
    the kubelet's generate.go writes them; conditions given are kept."""
    given = {c.type for c in status.conditions}
    inits = " ".join(c.name for c in pod.spec.init_containers)
    apps = " ".join(c.name for c in pod.spec.containers)
    fresh = [
        PodCondition(
            type="Initialized",
            status="False",
            reason="ContainersNotInitialized",
            message=f"containers with incomplete status: [{inits}]",
        ),
        *(
            PodCondition(
                type=kind,
                status="False",
                reason="ContainersNotReady",
                message=f"containers with unready status: [{apps}]",
            )
            for kind in ("Ready", "ContainersReady")
        ),
    ]
    return [*status.conditions, *(c for c in fresh if c.type not in given)]


def _gated(pod: Pod) -> bool:
    """Whether a kubelet reports the pod not ready until a probe passes."""
    return any(c.readiness_probe or c.startup_probe for c in pod.spec.containers)


def _conditions(
    status: PodStatus, not_ready: bool = False, since: Any = None
) -> list[PodCondition]:
    """The kubelet's four conditions, the given ones kept; a condition
    without a lastTransitionTime gets `since` (the pod's start: the
    controllers read no clock)."""
    given = {c.type: c for c in status.conditions}
    if not_ready and "Ready" not in given:
        for kind in ("Ready", "ContainersReady"):
            given.setdefault(
                kind, PodCondition(type=kind, status="False", reason="ContainersNotReady")
            )
    ready = given["Ready"].status if "Ready" in given else "True"
    defaults = {"ContainersReady": ready}
    out = [
        given.get(kind) or PodCondition(type=kind, status=defaults.get(kind, "True"))
        for kind in CONDITION_ORDER
    ]
    if since is not None:
        out = [
            c
            if c.last_transition_time is not None
            else c.model_copy(update={"last_transition_time": since})
            for c in out
        ]
    out.extend(c for c in status.conditions if c.type not in CONDITION_ORDER)
    return out


def _held_addresses(pod: Pod) -> tuple[IPAddress, ...]:
    """The pod network addresses `pod` holds: none for a hostNetwork pod
    (the node's own) or a Succeeded/Failed one (its sandbox is gone)."""
    if pod.spec.host_network or is_terminal(pod):
        return ()
    texts = [pod.status.pod_ip, *(p.ip for p in pod.status.pod_ips)]
    return tuple(addr for addr in map(_address, texts) if addr is not None)


def _network(text: str | None) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text or "", strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _address(text: str | None) -> IPAddress | None:
    """Parsed once per text: every round reads every pod's addresses."""
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None
