"""The control plane's output: the computed cluster state every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, ReplicationController, StatefulSet
from netemu.api.batch import CronJob, Job
from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.core import (
    ConfigMap,
    Endpoints,
    EndpointSlice,
    Namespace,
    Node,
    Pod,
    Secret,
    Service,
)
from netemu.api.generic import GenericObject
from netemu.api.networking import Ingress, IngressClass


@dataclass(frozen=True)
class ClusterState:
    """Everything the controllers computed, sorted by (namespace, name).

    Services carry their API-server defaults and allocations (type, clusterIP,
    nodePorts, healthCheckNodePort, targetPort, traffic policies); Pods carry
    spec.nodeName, status.podIP, status.hostIP and a Ready condition; Nodes
    carry status.addresses (InternalIP) and spec.podCIDR; EndpointSlices are
    as the EndpointSlice controller wrote them, plus user-supplied ones for
    Services without selectors and mirrored from users' v1 Endpoints. The
    workload objects (Deployments with their ReplicaSets, DaemonSets,
    StatefulSets, ReplicationControllers, CronJobs with their Jobs) and the
    v1 Endpoints are included for display, and ConfigMaps and Secrets
    (Secrets as stored: stringData merged into data).
    """

    nodes: tuple[Node, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    services: tuple[Service, ...] = ()
    pods: tuple[Pod, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    proxy_config: KubeProxyConfiguration = field(default_factory=KubeProxyConfiguration)
    lab: Lab | None = None
    deployments: tuple[Deployment, ...] = ()
    replica_sets: tuple[ReplicaSet, ...] = ()
    daemon_sets: tuple[DaemonSet, ...] = ()
    stateful_sets: tuple[StatefulSet, ...] = ()
    # Objects stored but not emulated (netemu.api.generic), by kind, namespace, name.
    others: tuple[GenericObject, ...] = ()
    replication_controllers: tuple[ReplicationController, ...] = ()
    jobs: tuple[Job, ...] = ()
    cron_jobs: tuple[CronJob, ...] = ()
    endpoints: tuple[Endpoints, ...] = ()
    ingresses: tuple[Ingress, ...] = ()
    ingress_classes: tuple[IngressClass, ...] = ()
    config_maps: tuple[ConfigMap, ...] = ()
    secrets: tuple[Secret, ...] = ()

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.metadata.name == name:
                return node
        raise KeyError(name)
