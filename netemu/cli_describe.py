"""`netemu describe svc NAME`: a live Service as `kubectl describe service`
shows it, plus what the lab's emulated cloud load balancer makes of it
(netemu.node.cloudlb): where it checks each node, each node's health and
why, and which nodes new connections go to. Imported only when it runs
(netemu.cli); reads the lab through its supervisor, never the models."""

from __future__ import annotations

from typing import Any

import click

from netemu.cli import require_root, run
from netemu.errors import LabError, UsageError
from netemu.lab import LiveLab, resolve_lab

SERVICE_NAMES = ("svc", "service", "services")
LABEL_WIDTH = 26  # as kubectl's describe aligns its values


def _line(label: str, value: object) -> str:
    return f"{label + ':':<{LABEL_WIDTH}}{value}\n"


def _pairs(values: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (values or {}).items()) or "<none>"


def describe_service(svc: dict[str, Any], balancer: dict[str, Any] | None) -> str:
    """The text for one Service (its API dict) and the load balancer's status."""
    meta, spec = svc["metadata"], svc.get("spec", {})
    namespace = meta.get("namespace", "default")
    ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    out = _line("Name", meta["name"]) + _line("Namespace", namespace)
    out += _line("Labels", _pairs(meta.get("labels")))
    out += _line("Selector", _pairs(spec.get("selector")))
    out += _line("Type", spec.get("type", "ClusterIP"))
    out += _line("IP", spec.get("clusterIP", "<none>"))
    if ingress:
        shown = [f"{i['ip']} ({i.get('ipMode', 'VIP')})" for i in ingress if i.get("ip")]
        out += _line("LoadBalancer Ingress", ", ".join(shown) or "<none>")
    for port in spec.get("ports", []):
        name = port.get("name", "<unset>")
        proto = port.get("protocol", "TCP")
        out += _line("Port", f"{name}  {port['port']}/{proto}")
        out += _line("TargetPort", f"{port.get('targetPort', port['port'])}/{proto}")
        if port.get("nodePort"):
            out += _line("NodePort", f"{name}  {port['nodePort']}/{proto}")
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        out += _line("External Traffic Policy", spec.get("externalTrafficPolicy", "Cluster"))
    if spec.get("healthCheckNodePort"):
        out += _line("HealthCheck NodePort", spec["healthCheckNodePort"])
    key = f"{namespace}/{meta['name']}"
    entry = (balancer or {}).get("services", {}).get(key)
    if balancer is None or entry is None:
        return out
    check = balancer["healthCheck"]
    out += _line(
        "Load Balancer",
        f"{balancer['ip']} checks {entry['healthCheck']} every {check['intervalSeconds']} s "
        f"(timeout {check['timeoutSeconds']} s, healthy after {check['healthyThreshold']}, "
        f"unhealthy after {check['unhealthyThreshold']})",
    )
    rows = [["NODE", "HEALTH", "LAST CHECK", "LOCAL ENDPOINTS"]]
    for node, health in entry["nodes"].items():
        local = health.get("localEndpoints")
        rows.append(
            [
                node,
                "healthy" if health["healthy"] else "unhealthy",
                health["reason"],
                "-" if local is None else str(local),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out += "  " + "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        out += "\n"
    for ip in entry["ips"]:
        spread = balancer["spread"].get(ip)
        if spread is None:
            continue
        mode = entry["ipMode"].get(ip, "VIP")
        nodes = ", ".join(spread["nodes"])
        why = " (no node healthy: fail open to every node)" if spread["failOpen"] else ""
        out += f"  {ip} ({mode}): new connections go to {nodes}{why}\n"
    return out


@click.command("describe")
@click.argument("resource")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--lab", "lab_name_", help="Lab name (default: the only lab that is up).")
def describe_command(resource: str, name: str, namespace: str, lab_name_: str | None) -> None:
    """Show a live Service in detail, with its load balancer's health per node."""

    def action() -> None:
        if resource not in SERVICE_NAMES:
            raise UsageError(f"describe {resource}: expected one of {', '.join(SERVICE_NAMES)}")
        require_root("describe")
        lab = LiveLab(resolve_lab(lab_name_))
        services = lab.state()["services"]
        found = [
            s
            for s in services
            if s["metadata"]["name"] == name
            and s["metadata"].get("namespace", "default") == namespace
        ]
        if not found:
            raise LabError(f'services "{name}" not found in namespace {namespace}')
        balancer = lab.request("loadbalancer").get("loadBalancer")
        click.echo(describe_service(found[0], balancer), nl=False)

    run(action)
