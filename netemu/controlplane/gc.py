"""Garbage collection of dependents (kube-controller-manager's garbage
collector, background propagation): when an owner is deleted, objects whose
every ownerReference points at deleted owners are deleted too, so deleting
a Deployment removes its ReplicaSets and then their Pods.

Owners are recognised by uid from the watch's DELETED events; an
ownerReference to an object this store never held (a manifest copied from a
real cluster, say) is left alone rather than treated as dangling.
"""

from __future__ import annotations

from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, ReplicationController, StatefulSet
from netemu.api.base import K8sModel
from netemu.api.batch import CronJob, Job
from netemu.api.core import EndpointSlice, Pod, Service
from netemu.controlplane.client import Client
from netemu.controlplane.common import delete
from netemu.controlplane.errors import Expired, NotFound
from netemu.controlplane.objects import meta_of

OWNER_KINDS: tuple[type[K8sModel], ...] = (
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    ReplicationController,
    CronJob,
    Job,
    Service,
)
DEPENDENT_KINDS: tuple[type[K8sModel], ...] = (ReplicaSet, Job, Pod, EndpointSlice)


class GarbageCollector:
    """Deletes objects whose owners have all been deleted."""

    name = "garbage-collector"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.deleted: set[str] = set()
        self._rv: dict[type[K8sModel], str] = {
            kind: client.list(kind).resource_version for kind in OWNER_KINDS
        }

    def reconcile(self) -> bool:
        for kind in OWNER_KINDS:
            try:
                stream = self.client.watch(kind, self._rv[kind], timeout=0)
                for event in stream:
                    if event.type == "DELETED" and meta_of(event.object).uid:
                        self.deleted.add(meta_of(event.object).uid or "")
                self._rv[kind] = stream.resource_version
            except Expired:
                # Deletions in the gap are missed, as by a collector that restarts;
                # later deletions are seen again.
                self._rv[kind] = self.client.list(kind).resource_version
        if not self.deleted:
            return False
        changed = False
        for kind in DEPENDENT_KINDS:
            for obj in self.client.list(kind).items:
                meta = meta_of(obj)
                refs = [r.uid for r in meta.owner_references]
                if meta.deletion_timestamp is not None:
                    continue  # being deleted already (a pod's graceful deletion)
                if refs and all(uid in self.deleted for uid in refs):
                    try:
                        delete(self.client, obj)
                    except NotFound:
                        continue
                    changed = True
        return changed
