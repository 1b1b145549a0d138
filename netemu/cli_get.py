"""`netemu get`: pods, services, endpointslices or nodes as kubectl prints
them, computed from manifests or read from a live lab. Imported only when
it runs (netemu.cli)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from netemu.api.base import K8sModel
from netemu.api.core import Pod
from netemu.cli import require_root, run, stdout_width
from netemu.controlplane.state import ClusterState
from netemu.errors import UsageError
from netemu.lab import LiveLab, resolve_lab

_RESOURCES = {
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


@click.command()
@click.argument("resource", type=click.Choice(sorted(_RESOURCES)), metavar="RESOURCE")
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(),
    help="Manifest file or directory (repeatable): show the computed state offline.",
)
@click.option("--lab", "lab_name_", help="Live lab to read (default: the only lab that is up).")
@click.option("-o", "--output", type=click.Choice(["wide", "json", "yaml"]), help="Output format.")
@click.option("-n", "--namespace", help="Only objects in this namespace.")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Objects in every namespace (the default)."
)
def get(
    resource: str,
    paths: tuple[str, ...],
    lab_name_: str | None,
    output: str | None,
    namespace: str | None,
    all_namespaces: bool,
) -> None:
    """Show pods, services, endpointslices or nodes (as kubectl would), computed
    from manifests (-f) or read from a live lab. Unlike kubectl, every
    namespace is listed unless -n names one: a lab is small, and its
    kube-system objects (the DNS addon) are part of what it shows."""

    def action() -> None:
        if namespace is not None and all_namespaces:
            raise UsageError("-n and -A cannot be used together")
        if paths:
            state = _computed_state(paths)
        else:
            require_root("get")
            state = LiveLab(resolve_lab(lab_name_)).cluster_state()
        if namespace is not None:
            state = in_namespace(state, namespace)
        print_resources(_RESOURCES[resource], state, output)

    run(action)


def _computed_state(paths: tuple[str, ...]) -> ClusterState:
    """The state the control plane computes from manifests (-f). The manifest
    pipeline (YAML, validation, the rule compiler) is imported only here:
    reading a live lab does not need it, and starts a fifth faster without
    it (benchmarks/startup.py)."""
    from netemu.pipeline import load_cluster

    return load_cluster(paths)


def in_namespace(state: ClusterState, namespace: str) -> ClusterState:
    """The namespaced objects of `namespace` only (Nodes are not namespaced)."""

    def keep(items: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(o for o in items if (o.metadata.namespace or "default") == namespace)

    return replace(
        state,
        pods=keep(state.pods),
        services=keep(state.services),
        endpoint_slices=keep(state.endpoint_slices),
    )


def print_resources(kind: str, state: ClusterState, output: str | None) -> None:
    items: Sequence[K8sModel] = {
        "pods": state.pods,
        "services": state.services,
        "endpointslices": state.endpoint_slices,
        "nodes": state.nodes,
    }[kind]
    if output in ("json", "yaml"):
        listing = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [item.to_dict() for item in items],
            "metadata": {"resourceVersion": ""},
        }
        if output == "json":
            click.echo(json.dumps(listing, indent=4))
        else:
            import yaml  # only -o yaml needs PyYAML here

            click.echo(yaml.safe_dump(listing, sort_keys=False), nl=False)
        return
    _print_table(kind, state, wide=output == "wide")


def _print_table(kind: str, state: ClusterState, wide: bool) -> None:
    rows: list[list[str]]
    if kind == "pods":
        head = ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"]
        if wide:
            head += ["IP", "NODE"]
        rows = []
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
        rows = []
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
        rows = []
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
        rows = []
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
    if not rows:
        click.echo("No resources found.")
        return
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 3, 0, 0))
    for column in head:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    Console(width=stdout_width(), highlight=False).print(table)


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
