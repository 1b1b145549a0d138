"""What a pod's status says about its containers, computed from its spec:
the QoS class (pkg/apis/core/v1/helper/qos, GetPodQOS) and the identities a
container runtime reports (imageID, containerID).

netemu has no images and no container runtime: a container is a process or
the built-in server in the pod's namespace. Its `containerID` is therefore
`netemu://` and 64 hex digits (the form `<runtime>://<id>` kubelet reports),
derived from the pod's uid, the container's name and its restart count (a
restarted container is a new container, with a new id), and its `imageID`
is the image name with a digest derived from that name, so both are stable
and distinct without pretending a registry was asked.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import Any

from netemu.api.core import (
    Container,
    ContainerState,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
)

RUNTIME = "netemu"
# The resources that decide the QoS class (qos.go: supportedQoSComputeResources).
_QOS_RESOURCES = ("cpu", "memory")
_SUFFIXES = {
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def quantity(text: Any) -> Decimal | None:
    """A resource.Quantity's value ("500m", "1Gi", "2", "1e3"); None if unreadable."""
    raw = str(text).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if raw.endswith(suffix) and raw[: -len(suffix)]:
            try:
                return Decimal(raw[: -len(suffix)]) * _SUFFIXES[suffix]
            except InvalidOperation:
                return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        return None


def _resources(container: Container, which: str) -> dict[str, Decimal]:
    resources = container.resources if isinstance(container.resources, dict) else {}
    given = resources.get(which)
    if not isinstance(given, dict):
        return {}
    out: dict[str, Decimal] = {}
    for name, value in given.items():
        amount = quantity(value)
        if name in _QOS_RESOURCES and amount is not None:
            out[name] = amount
    return out


def qos_class(pod: Pod) -> str:
    """GetPodQOS: BestEffort when no container requests or limits cpu or
    memory; Guaranteed when every container limits both and the summed
    requests (defaulted to the limits) equal the summed limits; Burstable
    otherwise.
    Zero quantities count as unset, as in qos.go."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        own_limits = {k: v for k, v in _resources(container, "limits").items() if v != 0}
        own_requests = {k: v for k, v in _resources(container, "requests").items() if v != 0}
        # Requests default to limits (SetDefaults_Pod copies them).
        own_requests = {**own_limits, **own_requests}
        for name, value in own_requests.items():
            requests[name] = requests.get(name, Decimal(0)) + value
        for name, value in own_limits.items():
            limits[name] = limits.get(name, Decimal(0)) + value
        if set(own_limits) != set(_QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    # Summed over the containers, requests must equal limits.
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def container_id(pod: Pod, name: str, restart_count: int) -> str:
    seed = f"{pod.metadata.uid}/{name}#{restart_count}"
    return f"{RUNTIME}://{hashlib.sha256(seed.encode()).hexdigest()}"


def image_id(image: str | None) -> str:
    """`<repository>@sha256:<digest>` as a runtime reports a pulled image;
    the digest here is derived from the image's name."""
    if not image:
        return ""
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def waiting_statuses(containers: list[Container], reason: str) -> list[ContainerStatus]:
    """A status per container, waiting for `reason` (PodInitializing,
    ContainerCreating...), never started: what the kubelet reports before
    a container runs."""
    return [
        ContainerStatus(
            name=c.name,
            state=ContainerState(waiting=ContainerStateWaiting(reason=reason)),
            ready=False,
            restart_count=0,
            image=c.image or "",
            image_id="",
            started=False,
        )
        for c in containers
    ]
