"""The tables `netemu get` prints, as kubectl prints them, in two pure steps:
`table` turns a ClusterState into a meta.k8s.io/v1 Table (columnDefinitions
and rows of cells) and `render` lays a Table out as text.

Kubernetes prints on the server side: kubectl asks the API server for a
Table and only renders it (the `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`
request). netemu does the same for a live lab: its supervisor, which holds
the objects, builds the Table (the `table` request, netemu.supervisor), and
the CLI imports only this module, the socket client and click to show it,
not pydantic's models or the control plane. Offline `get -f` builds the
Table from the state it computes. This module therefore imports the models
only for type checking.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netemu.api.base import K8sModel
    from netemu.api.core import Pod
    from netemu.controlplane.state import ClusterState

# What `get` shows, by every name kubectl accepts for it.
RESOURCES = {
    "pods": "pods",
    "pod": "pods",
    "po": "pods",
    "services": "services",
    "service": "services",
    "svc": "services",
    "endpointslices": "endpointslices",
    "endpointslice": "endpointslices",
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
}
# Between columns, as kubectl's tabwriter pads them.
GAP = "   "


def items(kind: str, state: ClusterState) -> Sequence[K8sModel]:
    """The objects of `kind` (a value of RESOURCES)."""
    found: Sequence[K8sModel] = {
        "pods": state.pods,
        "services": state.services,
        "endpointslices": state.endpoint_slices,
        "nodes": state.nodes,
    }[kind]
    return found


def in_namespace(state: ClusterState, namespace: str) -> ClusterState:
    """The namespaced objects of `namespace` only (Nodes are not namespaced)."""

    def keep(objects: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(o for o in objects if (o.metadata.namespace or "default") == namespace)

    return replace(
        state,
        pods=keep(state.pods),
        services=keep(state.services),
        endpoint_slices=keep(state.endpoint_slices),
    )


def listing(objects: Sequence[K8sModel]) -> dict[str, Any]:
    """`-o json|yaml`: the objects as a v1 List, as kubectl prints several."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [o.to_dict() for o in objects],
        "metadata": {"resourceVersion": ""},
    }


def table(kind: str, state: ClusterState, wide: bool) -> dict[str, Any]:
    """The objects of `kind` as a meta.k8s.io/v1 Table, with the columns
    kubectl prints for them (`-o wide` adds the wide ones)."""
    head, rows = _columns(kind, state, wide)
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "columnDefinitions": [{"name": name, "type": "string"} for name in head],
        "rows": [{"cells": row} for row in rows],
    }


def render(shown: dict[str, Any]) -> str:
    """A Table as `kubectl get` prints it: a header line and a line per row,
    each column left-aligned to its widest cell, GAP between columns;
    "No resources found." without rows."""
    head = [str(c["name"]) for c in shown["columnDefinitions"]]
    rows = [[str(cell) for cell in row["cells"]] for row in shown["rows"]]
    if not rows:
        return "No resources found.\n"
    widths = [max(len(line[i]) for line in [head, *rows]) for i in range(len(head))]
    return "".join(
        GAP.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + "\n"
        for line in [head, *rows]
    )


def _columns(kind: str, state: ClusterState, wide: bool) -> tuple[list[str], list[list[str]]]:
    rows: list[list[str]] = []
    if kind == "pods":
        head = ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"]
        if wide:
            head += ["IP", "NODE"]
        for pod in state.pods:
            total = len(pod.spec.containers)
            statuses = pod.status.container_statuses
            if statuses:
                ready = sum(1 for s in statuses if s.ready)
            else:
                ready = total if pod.status.condition("Ready") == "True" else 0
            row = [
                pod.metadata.namespace or "default",
                pod.metadata.name or "",
                f"{ready}/{total}",
                _pod_status(pod),
                _restarts(pod),
            ]
            if wide:
                row += [pod.status.pod_ip or "<none>", pod.spec.node_name or "<none>"]
            rows.append(row)
    elif kind == "services":
        head = ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
        if wide:
            head.append("SELECTOR")
        for svc in state.services:
            spec = svc.spec
            external = [i.ip or i.hostname or "" for i in svc.status.load_balancer.ingress]
            external += spec.external_ips
            if not external:
                external = ["<pending>"] if spec.type == "LoadBalancer" else ["<none>"]
            ports = ",".join(
                f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}"
                for p in spec.ports
            )
            row = [
                svc.metadata.namespace or "default",
                svc.metadata.name or "",
                spec.type or "ClusterIP",
                spec.cluster_ip or "<none>",
                ",".join(external),
                ports or "<none>",
            ]
            if wide:
                sel = spec.selector or {}
                row.append(",".join(f"{k}={v}" for k, v in sel.items()) or "<none>")
            rows.append(row)
    elif kind == "endpointslices":
        head = ["NAMESPACE", "NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"]
        for eps in state.endpoint_slices:
            addresses = [a for ep in eps.endpoints for a in ep.addresses]
            shown = ",".join(addresses[:3]) + (
                f" + {len(addresses) - 3} more..." if len(addresses) > 3 else ""
            )
            rows.append(
                [
                    eps.metadata.namespace or "default",
                    eps.metadata.name or "",
                    eps.address_type,
                    ",".join(str(p.port) for p in eps.ports) or "<unset>",
                    shown or "<unset>",
                ]
            )
    else:
        head = ["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR"]
        if wide:
            head.append("LABELS")
        for node in state.nodes:
            status = "Ready,SchedulingDisabled" if node.spec.unschedulable else "Ready"
            row = [
                node.metadata.name or "",
                status,
                ",".join(node.internal_ips()) or "<none>",
                node.spec.pod_cidr or "<none>",
            ]
            if wide:
                row.append(",".join(f"{k}={v}" for k, v in node.metadata.labels.items()))
            rows.append(row)
    return head, rows


def _pod_status(pod: Pod) -> str:
    """kubectl's STATUS: a container's waiting or terminated reason
    (CrashLoopBackOff, Error), else the pod's phase."""
    reason = pod.status.phase or "Pending"
    for status in reversed(pod.status.container_statuses):
        state = status.state
        if state is None:
            continue
        if state.waiting is not None and state.waiting.reason:
            reason = state.waiting.reason
        elif state.terminated is not None:
            terminated = state.terminated
            reason = terminated.reason or (
                f"Signal:{terminated.signal}"
                if terminated.signal
                else f"ExitCode:{terminated.exit_code}"
            )
    return reason


def _restarts(pod: Pod) -> str:
    """kubectl's RESTARTS: the containers' restarts, with how long ago the
    last one ended when one has (`2 (5s ago)`)."""
    statuses = pod.status.container_statuses
    count = sum(s.restart_count for s in statuses)
    ages = [
        _seconds_since(str(s.last_state.terminated.finished_at))
        for s in statuses
        if s.restart_count and s.last_state is not None and s.last_state.terminated is not None
    ]
    known = [a for a in ages if a is not None]
    return f"{count} ({human_duration(min(known))} ago)" if known else str(count)


def _seconds_since(timestamp: str) -> int | None:
    try:
        when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return int((datetime.datetime.now(datetime.UTC) - when).total_seconds())


def human_duration(seconds: int) -> str:
    """An age as kubectl prints it (apimachinery's duration.HumanDuration)."""
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


# -- the emulated cloud load balancer's view (live labs only) -----------------


def lb_health_text(nodes: dict[str, Any]) -> str:
    """A Service's health per node as one cell without spaces (a column of
    its own): `node-1:healthy,node-2:unhealthy(503)`, the reason short."""
    return ",".join(
        f"{name}:healthy" if h["healthy"] else f"{name}:unhealthy({_short_reason(h['reason'])})"
        for name, h in nodes.items()
    )


def _short_reason(reason: str) -> str:
    """`HTTP 503` → `503`, `connection refused` → `connection-refused`."""
    return reason.removeprefix("HTTP ").replace(" ", "-")


def with_lb_health(shown: dict[str, Any], balancer: dict[str, Any]) -> dict[str, Any]:
    """A services Table with an LB-HEALTH column added (the load balancer's
    `loadbalancer` status, netemu.node.cloudlb): each LoadBalancer Service
    it serves shows its nodes' health; others show <none>. The rows' first
    two cells are NAMESPACE and NAME."""
    services = balancer.get("services", {})
    rows = []
    for row in shown["rows"]:
        cells = row["cells"]
        entry = services.get(f"{cells[0]}/{cells[1]}")
        rows.append({"cells": [*cells, lb_health_text(entry["nodes"]) if entry else "<none>"]})
    return {
        **shown,
        "columnDefinitions": [*shown["columnDefinitions"], {"name": "LB-HEALTH", "type": "string"}],
        "rows": rows,
    }
