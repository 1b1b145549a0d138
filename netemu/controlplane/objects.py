"""Vocabulary shared by the store and every client: list results, watch
events, and how an object's kind, scope and identity are read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from netemu.api.base import K8sModel, ObjectMeta
from netemu.api.generic import is_cluster_scoped_generic
from netemu.controlplane.errors import Invalid

T = TypeVar("T", bound=K8sModel)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

# Kinds without a namespace, as in Kubernetes (plus netemu's own config kinds).
CLUSTER_SCOPED_KINDS = frozenset(
    {"Node", "Namespace", "Lab", "KubeProxyConfiguration", "IngressClass"}
)


@dataclass(frozen=True)
class ObjectList(Generic[T]):
    """A consistent list: the items (sorted by namespace, name) as of `resource_version`."""

    items: tuple[T, ...]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent(Generic[T]):
    """One change. For DELETED, `object` is the last state, stamped with the
    resourceVersion of the deletion (as the API server does)."""

    type: EventType
    object: T
    resource_version: str


class WatchStream(Protocol[T]):
    """An open watch: iterate for events; `stop()` ends the iteration (from any thread)."""

    def __iter__(self) -> Iterator[WatchEvent[T]]: ...

    def stop(self) -> None: ...

    @property
    def resource_version(self) -> str:
        """The version up to which this watch has looked (events of other
        kinds included), usable as `since_rv` for a later watch."""
        ...


# kubectl's names and short names for the kinds `delete` and `scale` take.
KIND_ALIASES = {
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "service": "Service",
    "services": "Service",
    "svc": "Service",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "deploy": "Deployment",
    "replicaset": "ReplicaSet",
    "replicasets": "ReplicaSet",
    "rs": "ReplicaSet",
    "daemonset": "DaemonSet",
    "daemonsets": "DaemonSet",
    "ds": "DaemonSet",
    "statefulset": "StatefulSet",
    "statefulsets": "StatefulSet",
    "sts": "StatefulSet",
    "endpointslice": "EndpointSlice",
    "endpointslices": "EndpointSlice",
    "replicationcontroller": "ReplicationController",
    "replicationcontrollers": "ReplicationController",
    "rc": "ReplicationController",
    "job": "Job",
    "jobs": "Job",
    "cronjob": "CronJob",
    "cronjobs": "CronJob",
    "cj": "CronJob",
    "endpoints": "Endpoints",
    "ep": "Endpoints",
    "ingress": "Ingress",
    "ingresses": "Ingress",
    "ing": "Ingress",
    "ingressclass": "IngressClass",
    "ingressclasses": "IngressClass",
    "configmap": "ConfigMap",
    "configmaps": "ConfigMap",
    "cm": "ConfigMap",
    "secret": "Secret",
    "secrets": "Secret",
}
SCALABLE = ("Deployment", "ReplicaSet", "StatefulSet", "ReplicationController")
# The kinds that describe a live lab itself: fixed while it runs (`netemu
# down` and `up` change them), never applied to or deleted from it.
LAB_KINDS = ("Lab", "KubeProxyConfiguration")


def kind_of(cls: type[K8sModel]) -> str:
    """The Kubernetes kind of a resource type (the default of its `kind` field)."""
    field = cls.model_fields.get("kind")
    if field is not None and isinstance(field.default, str):
        return field.default
    return cls.__name__


def is_namespaced(kind: str) -> bool:
    return kind not in CLUSTER_SCOPED_KINDS and not is_cluster_scoped_generic(kind)


def meta_of(obj: K8sModel) -> ObjectMeta:
    """The object's ObjectMeta; objects without one cannot be stored."""
    meta = getattr(obj, "metadata", None)
    if not isinstance(meta, ObjectMeta):
        raise Invalid(f"{type(obj).__name__}: metadata must be an ObjectMeta")
    return meta


def key_of(obj: K8sModel) -> tuple[str, str, str]:
    """(kind, namespace, name); namespace is "" for cluster-scoped kinds."""
    kind = kind_of(type(obj))
    meta = meta_of(obj)
    namespace = (meta.namespace or "") if is_namespaced(kind) else ""
    return kind, namespace, meta.name or ""
