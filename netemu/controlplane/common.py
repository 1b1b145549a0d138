"""Small helpers shared by the controllers: ownership, pod predicates,
templates, and writing only when something changed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from netemu.api.base import K8sModel, ObjectMeta, OwnerReference
from netemu.api.core import Pod, PodTemplateSpec
from netemu.controlplane.client import Client
from netemu.controlplane.objects import T, meta_of

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    """Values computed from frozen objects, remembered by the object's
    identity for as long as passes keep using it: what a controller derives
    from each object of a large set on every pass (a sort key, a
    conversion) is computed once while the object stays the same object.
    Only the objects used since the previous `start_pass` survive the next
    one; each entry holds its object, so its id cannot be reused while the
    entry lives."""

    def __init__(self, compute: Callable[[K], V]) -> None:
        self._compute = compute
        self._last: dict[int, tuple[K, V]] = {}
        self._now: dict[int, tuple[K, V]] = {}

    def start_pass(self) -> None:
        """Begin a pass: what the last pass used is kept, the rest forgotten."""
        self._last, self._now = self._now, {}

    def __call__(self, obj: K) -> V:
        known = self._now.get(id(obj))
        if known is None:
            known = self._last.get(id(obj)) or (obj, self._compute(obj))
            self._now[id(obj)] = known
        return known[1]


def controller_ref(meta: ObjectMeta) -> OwnerReference | None:
    """The ownerReference with controller: true, if any."""
    for ref in meta.owner_references:
        if ref.controller:
            return ref
    return None


def controlled_by(obj: K8sModel, owner: K8sModel) -> bool:
    ref = controller_ref(meta_of(obj))
    owner_meta = meta_of(owner)
    return (
        ref is not None
        and ref.kind == getattr(owner, "kind", None)
        and ref.name == owner_meta.name
        and bool(ref.uid)
        and ref.uid == owner_meta.uid
    )


def owner_reference(owner: K8sModel) -> OwnerReference:
    """metav1.NewControllerRef: controller and blockOwnerDeletion set."""
    meta = meta_of(owner)
    return OwnerReference(
        api_version=str(getattr(owner, "api_version", "v1")),
        kind=str(getattr(owner, "kind", type(owner).__name__)),
        name=meta.name or "",
        uid=meta.uid or "",
        controller=True,
        block_owner_deletion=True,
    )


def is_terminating(pod: Pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def is_terminal(pod: Pod) -> bool:
    """Succeeded or Failed: the pod's containers will not run again."""
    return pod.status.phase in ("Succeeded", "Failed")


def is_active(pod: Pod) -> bool:
    """controller.IsPodActive: not terminal and not being deleted."""
    return not is_terminal(pod) and not is_terminating(pod)


def is_pod_ready(pod: Pod) -> bool:
    return pod.status.condition("Ready") == "True"


def sorted_map(values: Mapping[str, str]) -> dict[str, str]:
    """Maps in Kubernetes JSON are sorted by key; keep generated ones that way."""
    return {k: values[k] for k in sorted(values)}


def pod_from_template(
    template: PodTemplateSpec,
    owner: K8sModel,
    *,
    name: str | None = None,
    generate_name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Pod:
    """A pod as a workload controller creates it (controller.GetPodFromTemplate)."""
    owner_meta = meta_of(owner)
    meta = ObjectMeta(
        name=name,
        generate_name=None if name else generate_name,
        namespace=owner_meta.namespace,
        labels=dict(labels if labels is not None else template.metadata.labels),
        annotations=dict(template.metadata.annotations),
        finalizers=list(template.metadata.finalizers),
        owner_references=[owner_reference(owner)],
    )
    return Pod(metadata=meta, spec=template.spec)


def delete(client: Client, obj: K8sModel) -> None:
    """Delete `obj` itself: with its uid as precondition, so an object of the
    same name created since it was read is left alone."""
    meta = meta_of(obj)
    client.delete(type(obj), meta.namespace, meta.name or "", uid=meta.uid)


def write(client: Client, old: T, new: T) -> bool:
    """Update `old` to `new` through the client if they differ; True if written.
    `new` keeps `old`'s resourceVersion, so a concurrent change is a Conflict."""
    if new == old:
        return False
    client.update(new)
    return True
