"""What a lab node's kubelet reports about its machine: status.nodeInfo,
capacity/allocatable, the kubelet's conditions and daemon endpoint.

Every lab node is a network namespace on this one host, so the facts of
the machine are the host's, as every node of a kind cluster reports its
host's: kernel, OS image, architecture, CPUs, memory and disk
(`host_facts`, the control plane's one look at the host, read once per
process). The identities a real machine has of its own (machineID,
systemUUID, bootID) are derived from the lab and node name, so each node
has distinct, stable ones. The container runtime is netemu itself
(`netemu://<version>`), since no container runtime runs the pods.

Conditions and messages are the kubelet's (pkg/kubelet/nodestatus/setters.go):
MemoryPressure, DiskPressure and PIDPressure False, Ready True with reason
KubeletReady. Allocatable equals capacity (kubeadm reserves nothing by
default; the eviction threshold is not modelled).
"""

from __future__ import annotations

import functools
import os
import platform
import uuid
from dataclasses import dataclass
from typing import Any

import netemu

# The Kubernetes release netemu's components follow (kube-proxy's rules,
# the kubelet's probes).
KUBERNETES_VERSION = "v1.31.0"
KUBELET_PORT = 10250
_NODE_UUID_NAMESPACE = uuid.UUID("0c7e4d0a-8f59-5b6e-a1e8-6e6f6465696e")
# Go's GOARCH names for the machine types Python reports.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


@dataclass(frozen=True)
class HostFacts:
    kernel_version: str
    os_image: str
    architecture: str
    cpus: int
    memory_kib: int
    ephemeral_storage_kib: int


@functools.cache
def host_facts() -> HostFacts:
    try:
        os_image = platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
    except OSError:
        os_image = "Linux"
    memory_kib = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
    except (OSError, ValueError):
        pass
    try:
        disk = os.statvfs("/")
        storage_kib = disk.f_blocks * disk.f_frsize // 1024
    except OSError:
        storage_kib = 0
    machine = platform.machine()
    return HostFacts(
        kernel_version=platform.release(),
        os_image=os_image,
        architecture=_GOARCH.get(machine, machine),
        cpus=os.cpu_count() or 1,
        memory_kib=memory_kib,
        ephemeral_storage_kib=storage_kib,
    )


def _node_uuid(node: str, what: str) -> uuid.UUID:
    return uuid.uuid5(_NODE_UUID_NAMESPACE, f"{node}/{what}")


def node_info(node: str, facts: HostFacts) -> dict[str, Any]:
    return {
        "architecture": facts.architecture,
        "bootID": str(_node_uuid(node, "boot")),
        "containerRuntimeVersion": f"netemu://{netemu.__version__}",
        "kernelVersion": facts.kernel_version,
        "kubeProxyVersion": KUBERNETES_VERSION,
        "kubeletVersion": KUBERNETES_VERSION,
        # /etc/machine-id: 32 hex digits.
        "machineID": _node_uuid(node, "machine").hex,
        "operatingSystem": "linux",
        "osImage": facts.os_image,
        "systemUUID": str(_node_uuid(node, "system")),
    }


def capacity(facts: HostFacts, max_pods: int) -> dict[str, str]:
    return {
        "cpu": str(facts.cpus),
        "ephemeral-storage": f"{facts.ephemeral_storage_kib}Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{facts.memory_kib}Ki",
        "pods": str(max_pods),
    }


def conditions(since: Any) -> list[dict[str, Any]]:
    """The kubelet's node conditions, all true since `since` (an RFC 3339 time)."""
    given = (
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    )
    return [
        {
            "lastHeartbeatTime": since,
            "lastTransitionTime": since,
            "message": message,
            "reason": reason,
            "status": status,
            "type": kind,
        }
        for kind, status, reason, message in given
    ]


def daemon_endpoints() -> dict[str, Any]:
    return {"kubeletEndpoint": {"Port": KUBELET_PORT}}
