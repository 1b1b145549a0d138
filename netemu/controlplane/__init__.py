"""The minimal control plane: an object store with watch, the client
interface to it, and the controllers that turn manifests into the cluster
state later stages read (defaulted Services with cluster IPs and node ports,
Nodes with pod CIDRs, workload Pods scheduled and addressed, EndpointSlices).

Owns: `store` (objects, resourceVersions, watch history), `client` (the API
interface controllers and agents use), the controllers (`defaulting`,
`allocator`, `nodes`, `nodeipam`, `gc`, `deployment`, `replicaset`,
`daemonset`, `statefulset`, `replicaset` (also ReplicationControllers),
`cronjob`, `job`, `scheduler`, `podipam`, `endpointslice`,
`endpointsmirror` (v1 Endpoints and their mirrored slices)), the
fixed-point `runner`, and `ClusterState` (`state`).
Must not touch: the kernel, the network, files, the clock or randomness
(the same input always yields byte-identical output; the one exception is
the clock for creationTimestamp and the Job and CronJob controllers' times,
which callers may fix); manifest loading and
validation (netemu.api) and rule compilation (netemu.rules) live elsewhere.
Controllers talk to the API only through a `Client`.

Entry points: `build_cluster_state(objects)` for a one-shot state;
`ControlPlane(client)` plus `apply_objects` for a lab that keeps running.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, ReplicationController, StatefulSet
from netemu.api.base import K8sModel, ObjectMeta
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
from netemu.api.generic import generic_kinds
from netemu.api.networking import Ingress, IngressClass
from netemu.controlplane.client import Client, LocalClient
from netemu.controlplane.errors import AlreadyExists
from netemu.controlplane.objects import is_namespaced, key_of, kind_of, meta_of
from netemu.controlplane.runner import ControlPlane, FixedPointError, run_to_fixed_point
from netemu.controlplane.state import ClusterState
from netemu.controlplane.store import Clock, Store, wall_clock

__all__ = [
    "Client",
    "ClusterState",
    "ControlPlane",
    "FixedPointError",
    "LocalClient",
    "Store",
    "apply_objects",
    "build_cluster_state",
    "run_to_fixed_point",
    "snapshot",
]

# The namespaces a kubeadm cluster starts with.
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
DEFAULT_NAMESPACE = "default"
DEFAULT_LAB_NAME = "lab"
DEFAULT_PROXY_CONFIG_NAME = "kube-proxy"

ObjectKey = tuple[str, str, str]  # (kind, namespace, name)


def build_cluster_state(objects: Sequence[K8sModel], clock: Clock = wall_clock) -> ClusterState:
    """Store every object, run the controllers to a fixed point, and return the
    resulting state.

    Namespaced objects without a namespace go to "default"; namespaces that
    objects use (and kubeadm's system namespaces) are created if the input
    does not define them. A later object with the same kind, namespace and
    name replaces an earlier one, as a second `kubectl apply` would. The Lab
    and KubeProxyConfiguration are stored too (controllers read them) and
    returned as given in `lab` and `proxy_config`. `clock` stamps
    creationTimestamp (the only input besides `objects`).
    """
    client = LocalClient(Store(clock=clock))
    plane = ControlPlane(client, clock=clock)  # before any object exists, to see creation order
    originals = apply_objects(client, objects)
    plane.run_to_fixed_point()

    labs = client.list(Lab).items
    lab = originals.get(key_of(labs[0])) if labs else None
    configs = client.list(KubeProxyConfiguration).items
    config = originals.get(key_of(configs[0])) if configs else None
    return snapshot(
        client,
        lab=lab if isinstance(lab, Lab) else None,
        proxy_config=config if isinstance(config, KubeProxyConfiguration) else None,
    )


def apply_objects(client: Client, objects: Sequence[K8sModel]) -> dict[ObjectKey, K8sModel]:
    """Create each object through `client`, or replace it if it exists (as
    `kubectl apply` does for a whole file set): server-set identity fields
    are dropped, namespaced objects without a namespace go to "default", and
    namespaces that are used but not defined are created (Namespaces in the
    input first). Returns the input object behind each stored key."""
    prepared = [_prepare(obj) for obj in objects]
    originals: dict[ObjectKey, K8sModel] = {}
    for original, obj in zip(objects, prepared, strict=True):
        originals[key_of(obj)] = original

    for obj in prepared:
        if isinstance(obj, Namespace):
            _put(client, obj)
    wanted = set(SYSTEM_NAMESPACES)
    for obj in prepared:
        if is_namespaced(kind_of(type(obj))):
            wanted.add(meta_of(obj).namespace or DEFAULT_NAMESPACE)
    existing = {ns.metadata.name for ns in client.list(Namespace).items}
    for name in sorted(wanted - existing):
        client.create(Namespace(metadata=ObjectMeta(name=name)))
    for obj in prepared:
        if not isinstance(obj, Namespace):
            _put(client, obj)
    return originals


def snapshot(
    client: Client,
    *,
    lab: Lab | None = None,
    proxy_config: KubeProxyConfiguration | None = None,
) -> ClusterState:
    """The current state as a `ClusterState`, every tuple sorted by (namespace, name)."""
    return ClusterState(
        nodes=client.list(Node).items,
        namespaces=client.list(Namespace).items,
        services=client.list(Service).items,
        pods=client.list(Pod).items,
        endpoint_slices=client.list(EndpointSlice).items,
        proxy_config=proxy_config if proxy_config is not None else KubeProxyConfiguration(),
        lab=lab,
        deployments=client.list(Deployment).items,
        replica_sets=client.list(ReplicaSet).items,
        daemon_sets=client.list(DaemonSet).items,
        stateful_sets=client.list(StatefulSet).items,
        others=tuple(obj for cls in generic_kinds() for obj in client.list(cls).items),
        replication_controllers=client.list(ReplicationController).items,
        jobs=client.list(Job).items,
        cron_jobs=client.list(CronJob).items,
        endpoints=client.list(Endpoints).items,
        ingresses=client.list(Ingress).items,
        ingress_classes=client.list(IngressClass).items,
        config_maps=client.list(ConfigMap).items,
        secrets=client.list(Secret).items,
    )


def _prepare(obj: K8sModel) -> K8sModel:
    """The object as a client would send it to create: identity fields set by the
    server removed, namespace defaulted, and a name for the config kinds."""
    if isinstance(obj, KubeProxyConfiguration) and not isinstance(obj.metadata, ObjectMeta):
        raw: Any = obj.metadata
        name = raw.get("name") if isinstance(raw, dict) else None
        meta = ObjectMeta(
            name=name if isinstance(name, str) and name else DEFAULT_PROXY_CONFIG_NAME
        )
        obj = obj.model_copy(update={"metadata": meta})
    meta = meta_of(obj)
    update: dict[str, Any] = {"resource_version": None, "uid": None}
    if is_namespaced(kind_of(type(obj))):
        update["namespace"] = meta.namespace or DEFAULT_NAMESPACE
    else:
        update["namespace"] = None
    if not meta.name and not meta.generate_name and isinstance(obj, Lab):
        update["name"] = DEFAULT_LAB_NAME
    if all(getattr(meta, field) == value for field, value in update.items()):
        return obj  # as sent already (most manifests): the store copies what it keeps
    return obj.model_copy(update={"metadata": meta.model_copy(update=update)})


def _put(client: Client, obj: K8sModel) -> None:
    try:
        client.create(obj)
    except AlreadyExists:
        _, namespace, name = key_of(obj)
        client.update(_keep_server_fields(client.get(type(obj), namespace, name), obj))


def _keep_server_fields(current: K8sModel, new: K8sModel) -> K8sModel:
    """What a re-apply leaves alone: a status the new manifest does not write,
    and the node a pod is bound to (pod specs are immutable once bound)."""
    update: dict[str, Any] = {}
    status = getattr(new, "status", None)
    if status is not None and status == type(status)():
        update["status"] = getattr(current, "status", status)
    if isinstance(new, Pod) and isinstance(current, Pod) and not new.spec.node_name:
        update["spec"] = new.spec.model_copy(update={"node_name": current.spec.node_name})
    return new.model_copy(update=update) if update else new
