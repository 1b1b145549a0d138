"""Running the controllers: each reconcile step reads through the client and
writes through it, and returns whether it changed anything. The control
plane runs them in a fixed order, round after round, until a whole round
changes nothing (a fixed point). The order mirrors cause and effect in a
cluster (API defaulting and allocation, nodes, workloads, scheduling, pod
start-up, endpoints), so most inputs settle in two or three rounds (a
StatefulSet under OrderedReady takes one more per pod, as each waits for
the one before to be ready); the result does not depend on timing, only on
the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from netemu.controlplane.allocator import ServiceAllocatorController
from netemu.controlplane.client import Client
from netemu.controlplane.cronjob import CronJobController
from netemu.controlplane.daemonset import DaemonSetController
from netemu.controlplane.defaulting import DefaultingController
from netemu.controlplane.deployment import DeploymentController
from netemu.controlplane.endpointslice import EndpointSliceController
from netemu.controlplane.endpointsmirror import EndpointsController, EndpointsMirroringController
from netemu.controlplane.errors import AlreadyExists, Conflict, NotFound
from netemu.controlplane.gc import GarbageCollector
from netemu.controlplane.ingress import IngressStatusController
from netemu.controlplane.job import JobController
from netemu.controlplane.loadbalancer import LoadBalancerController
from netemu.controlplane.nodeipam import NodeIpamController
from netemu.controlplane.nodes import NodeController
from netemu.controlplane.podipam import PodIpamController
from netemu.controlplane.replicaset import ReplicaSetController
from netemu.controlplane.scheduler import Scheduler
from netemu.controlplane.statefulset import StatefulSetController, rounds_needed
from netemu.controlplane.store import Clock, wall_clock
from netemu.controlplane.workloadstatus import WorkloadStatusController

DEFAULT_MAX_ROUNDS = 100


class Controller(Protocol):
    name: str

    def reconcile(self) -> bool:
        """One pass over the controller's objects; True if it wrote anything."""
        ...


class FixedPointError(RuntimeError):
    """The controllers kept changing the state (a controller bug, never bad input)."""


def default_controllers(
    client: Client, kubelet_probes: bool = False, clock: Clock = wall_clock
) -> list[Controller]:
    """The standard controllers, in the order a round runs them. Controllers
    that track creation order start watching now, so objects created after
    this call are ordered as they were created. `kubelet_probes`: node
    kubelets run the pods' probes and report readiness (a live lab), so a
    probed pod starts not ready (see PodIpamController). `clock` is read by
    the Job and CronJob controllers (start times, deadlines, schedules)."""
    return [
        DefaultingController(client),
        ServiceAllocatorController(client),
        LoadBalancerController(client),
        NodeController(client),
        NodeIpamController(client),
        GarbageCollector(client),
        DeploymentController(client),
        ReplicaSetController(client),
        DaemonSetController(client),
        StatefulSetController(client),
        CronJobController(client, clock),
        JobController(client, clock),
        Scheduler(client),
        PodIpamController(client, kubelet_probes=kubelet_probes),
        EndpointSliceController(client),
        EndpointsMirroringController(client),
        EndpointsController(client),
        WorkloadStatusController(client),
        IngressStatusController(client),
    ]


class ControlPlane:
    """A set of controllers bound to one client. Keep one instance for a live
    lab: some controllers remember history (creation order, host-local's
    last reserved address) as their real counterparts do."""

    def __init__(
        self,
        client: Client,
        controllers: Sequence[Controller] | None = None,
        kubelet_probes: bool = False,
        clock: Clock = wall_clock,
    ) -> None:
        self.client = client
        self.controllers = (
            list(controllers)
            if controllers is not None
            else default_controllers(client, kubelet_probes=kubelet_probes, clock=clock)
        )

    def run_round(self) -> list[str]:
        """Run every controller once; names of those that changed something.
        A write that lost a race with another writer (Conflict, or an object
        that appeared or vanished meanwhile) counts as a change: the next
        round reads the new state and tries again."""
        changed = []
        for controller in self.controllers:
            try:
                if controller.reconcile():
                    changed.append(controller.name)
            except (Conflict, NotFound, AlreadyExists):
                changed.append(controller.name)
        return changed

    def run_to_fixed_point(self, max_rounds: int = DEFAULT_MAX_ROUNDS) -> int:
        """Run rounds until one changes nothing; returns the number of rounds.
        StatefulSets legitimately take a round per pod under OrderedReady, and
        two per pod a rolling update replaces (netemu.controlplane.statefulset),
        so they extend the limit."""
        limit = max_rounds + rounds_needed(self.client)
        for round_number in range(1, limit + 1):
            if not self.run_round():
                return round_number
        raise FixedPointError(
            f"controllers did not settle after {limit} rounds; "
            f"still changing: {', '.join(self.run_round()) or 'nothing'}"
        )


def run_to_fixed_point(client: Client, max_rounds: int = DEFAULT_MAX_ROUNDS) -> int:
    """Run the default controllers on `client` until nothing changes."""
    return ControlPlane(client).run_to_fixed_point(max_rounds)
