"""The `netemu` command. Exit codes: 0 ok, 1 the operation failed, 2 bad input."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import netaddr
import yaml
from rich.console import Console
from rich.table import Table

from netemu.api.base import K8sModel
from netemu.api.core import Pod
from netemu.api.errors import InputError
from netemu.controlplane.state import ClusterState
from netemu.kernel.graphviz import (
    DOT_MISSING,
    FORMATS,
    GraphvizError,
    dot_available,
    format_of,
)
from netemu.kernel.graphviz import write as write_graph
from netemu.lab import LabError, LabUsageError
from netemu.net.graph import lab_graph
from netemu.net.plan import PlanError, plan_lab
from netemu.pipeline import (
    UsageError,
    compile_rules,
    lab_name,
    load_cluster,
    local_ips,
    pick_node,
)
from netemu.rules.model import ParseError, parse_restore
from netemu.rules.simulate import Packet, Simulation, simulate
from netemu.trace.flow import Flow, FlowError, resolve_flow
from netemu.trace.topology import Topology

RULES_DIR = Path("rules")

_files = click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(),
    help="Manifest file or directory (repeatable).",
)


def _out() -> Console:
    # Scripts read our tables: never wrap or colour them when not on a terminal.
    return Console(width=None if sys.stdout.isatty() else 10_000, highlight=False)


def _fail_input(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(2)


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except InputError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(str(diagnostic), err=True)
        click.echo(f"{len(exc.diagnostics)} error(s)", err=True)
        sys.exit(2)
    except (UsageError, ParseError, LabUsageError) as exc:
        _fail_input(f"error: {exc}")
    except LabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netemu")
def main() -> None:
    """netemu: Kubernetes service networking, packet by packet."""


# ---------------------------------------------------------------- validate


@main.command()
@_files
def validate(paths: tuple[str, ...]) -> None:
    """Check manifests; print every problem as file:line: object: field: message."""

    def action() -> None:
        state = load_cluster(paths)
        count = len(state.services) + len(state.nodes)
        click.echo(
            f"valid: {len(state.nodes)} node(s), {len(state.services)} service(s), "
            f"{len(state.pods)} pod(s), {len(state.endpoint_slices)} endpointslice(s)"
            if count
            else "valid: no objects"
        )

    _run(action)


# ---------------------------------------------------------------- compile


@main.command("compile")
@_files
@click.option("--node", help="Node to compile for (default: the only node).")
@click.option(
    "--mode",
    type=click.Choice(["iptables"]),
    default="iptables",
    show_default=True,
    help="kube-proxy mode.",
)
@click.option("--write", is_flag=True, help="Write rules/<lab>/<node>.iptables for every node.")
def compile_command(paths: tuple[str, ...], node: str | None, mode: str, write: bool) -> None:
    """Print the iptables-restore input kube-proxy would apply on a node."""

    def action() -> None:
        state = load_cluster(paths)
        if write:
            out_dir = RULES_DIR / lab_name(state.lab, paths)
            out_dir.mkdir(parents=True, exist_ok=True)
            for n in state.nodes:
                name = n.metadata.name or ""
                target = out_dir / f"{name}.{mode}"
                target.write_text(compile_rules(state, name).render())
                click.echo(f"wrote {target}")
            return
        click.echo(compile_rules(state, pick_node(state, node)).render(), nl=False)

    _run(action)


# ---------------------------------------------------------------- get

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


@main.command()
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
            state = load_cluster(paths)
        else:
            from netemu.cli_live import live_state

            state = live_state(lab_name_)
        if namespace is not None:
            state = in_namespace(state, namespace)
        print_resources(_RESOURCES[resource], state, output)

    _run(action)


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
    _out().print(table)


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


# ---------------------------------------------------------------- trace


@main.command()
@click.argument("frm", required=False, metavar="FROM")
@click.argument("to", required=False, metavar="TO")
@click.option("--lab", "lab_opt", help="Live lab (default: the only lab that is up).")
@click.option("--port", type=click.IntRange(1, 65535), help="Destination port (for TO).")
@click.option(
    "--proto", type=click.Choice(["tcp", "udp", "icmp", "sctp"]), default="tcp", show_default=True
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--no-pcap", is_flag=True, help="Write no pcaps and no trace.json.")
@click.option(
    "--captures",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("captures"),
    show_default=True,
    help="Where captures/<lab>/<trace-id>/ go.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="Seconds to wait for an answer.",
)
@click.option("--offline", is_flag=True, help="Simulate with the rule compiler; no lab needed.")
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(),
    help="(--offline) Manifest file or directory (repeatable).",
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False),
    help="(--offline) An iptables-save dump taken from a real node.",
)
@click.option(
    "--local-ip",
    "local_ip",
    multiple=True,
    help="(--offline) An address of the node the dump came from (repeatable; with --rules).",
)
@click.option("--node", help="(--offline) Node to trace on (default: the only node).")
@click.option("--src", help="(--offline) Source IP of the packet.")
@click.option("--dst", help="(--offline) Destination IP of the packet.")
@click.option("--dport", type=click.IntRange(1, 65535), help="(--offline) Destination port.")
@click.option(
    "--svg",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the lab with the traced path on it, as SVG (live traces; Graphviz).",
)
def trace(
    frm: str | None,
    to: str | None,
    lab_opt: str | None,
    port: int | None,
    proto: str,
    output: str,
    no_pcap: bool,
    captures: Path,
    timeout: float,
    offline: bool,
    paths: tuple[str, ...],
    rules_file: str | None,
    local_ip: tuple[str, ...],
    node: str | None,
    src: str | None,
    dst: str | None,
    dport: int | None,
    svg: Path | None,
) -> None:
    """Follow a packet from FROM to TO.

    Live (a lab is up): send a real flow and show every hop, NAT and rule
    verdict, with pcaps under captures/<lab>/<trace-id>/. FROM is a pod,
    node or external client; TO a Service, a pod, NODE:NODEPORT or an IP
    (with --port).

    Offline (--offline -f DIR FROM TO, or --src/--dst/--dport): walk the
    packet through the compiled rules of the node it meets first.
    """

    def action() -> None:
        query = _OfflineQuery(paths, rules_file, local_ip, node, src, dst, dport)
        if offline and svg is not None:
            raise UsageError(
                "--svg draws the path a live trace saw: it does not go with --offline "
                "(netemu graph -f PATH -o FILE draws the lab without a path)"
            )
        if offline:
            _trace_offline(frm, to, port, proto, output, query)
            return
        if query.given():
            raise UsageError(
                "-f, --rules, --local-ip, --node, --src, --dst and --dport are for "
                "simulated traces: add --offline (a live trace takes FROM TO)"
            )
        if frm is None or to is None:
            raise UsageError("give FROM and TO (or --offline with manifests)")
        if proto == "sctp":
            raise UsageError("--proto sctp: live traces send tcp, udp or icmp")
        from netemu.cli_live import live_trace

        live_trace(lab_opt, frm, to, port, proto, output, not no_pcap, captures, timeout, svg)

    _run(action)


@dataclass(frozen=True)
class _OfflineQuery:
    """The options only a simulated trace takes."""

    paths: tuple[str, ...]
    rules_file: str | None
    local_ip: tuple[str, ...]
    node: str | None
    src: str | None
    dst: str | None
    dport: int | None

    def given(self) -> bool:
        return any(
            (self.paths, self.rules_file, self.local_ip, self.node, self.src, self.dst, self.dport)
        )


def _trace_offline(
    frm: str | None,
    to: str | None,
    port: int | None,
    proto: str,
    output: str,
    query: _OfflineQuery,
) -> None:
    paths, rules_file, local_ip, node = query.paths, query.rules_file, query.local_ip, query.node
    src, dst, dport = query.src, query.dst, query.dport
    described: dict[str, Any] = {}
    if frm is not None or to is not None:
        if frm is None or to is None:
            raise UsageError("give both FROM and TO")
        if not paths:
            raise UsageError("--offline FROM TO needs the lab's manifests: -f PATH")
        if src or dst or dport:
            raise UsageError("use either FROM TO or --src/--dst/--dport, not both")
        state = load_cluster(paths)
        flow = offline_flow(state, paths, frm, to, port, proto)
        if flow.entry_node is None:
            raise UsageError(f"{flow.describe()}: no node of the lab is on the way")
        node_name: str | None = flow.entry_node
        packet = Packet(src=flow.source.ip, dst=flow.dst, dport=flow.dport, proto=flow.proto)
        result = simulate(
            compile_rules(state, flow.entry_node), local_ips(state, flow.entry_node), packet
        )
        described = {"from": flow.source.label, "to": flow.target, "service": flow.service}
    else:
        if not (src and dst and dport):
            raise UsageError("give FROM TO, or --src, --dst and --dport")
        _check_ip("--src", src)
        _check_ip("--dst", dst)
        packet = Packet(src=src, dst=dst, dport=dport, proto=proto)
        if rules_file:
            if paths:
                raise UsageError("use either --rules or -f, not both")
            if not local_ip:
                raise UsageError("--rules needs the node's addresses: --local-ip IP (repeatable)")
            for ip in local_ip:
                _check_ip("--local-ip", ip)
            ruleset = parse_restore(Path(rules_file).read_text())
            result = simulate(ruleset, list(local_ip), packet)
            node_name = None
        else:
            if not paths:
                raise UsageError("give manifests with -f PATH, or a dump with --rules FILE")
            state = load_cluster(paths)
            node_name = pick_node(state, node)
            result = simulate(compile_rules(state, node_name), local_ips(state, node_name), packet)
    if output == "json":
        data: dict[str, Any] = {"node": node_name, **described, **result.to_dict()}
        click.echo(json.dumps(data, indent=2))
    else:
        if described:
            click.echo(f"{described['from']} → {described['to']}")
        _print_simulation(result, node_name)


def offline_flow(
    state: ClusterState, paths: Sequence[str], frm: str, to: str, port: int | None, proto: str
) -> Flow:
    """FROM/TO resolved against the lab the manifests describe, as it would run."""
    topology = offline_topology(state, paths, "FROM/TO")
    try:
        return resolve_flow(state, topology, frm, to, port, proto)
    except FlowError as exc:
        raise UsageError(str(exc)) from None


def offline_topology(state: ClusterState, paths: Sequence[str], needed_by: str) -> Topology:
    """Where everything would live if the manifests' lab were up (its plan)."""
    if state.lab is None:
        raise UsageError(f"{needed_by} needs a Lab object (kind: Lab) naming the nodes and clients")
    try:
        plan = plan_lab(state, lab_name(state.lab, paths))
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    return Topology.from_plan(plan, state, state.lab.spec.iptables_backend)


def _check_ip(flag: str, value: str) -> None:
    try:
        netaddr.IPAddress(value, version=4)
    except (netaddr.AddrFormatError, ValueError):
        raise UsageError(f"{flag}: {value!r} is not an IPv4 address") from None


def _print_simulation(result: Simulation, node: str | None) -> None:
    pkt = result.packet
    where = f" on {node}" if node else ""
    origin = "local" if result.local_origin else "from outside the node"
    click.echo(f"{pkt.proto} {pkt.src} → {pkt.dst}:{pkt.dport}{where} ({origin}): {result.verdict}")
    if result.endpoints:
        click.echo(f"  endpoints: {', '.join(result.endpoints)}")
    click.echo(f"  masquerade: {'yes' if result.masquerade else 'no'}")
    for i, path in enumerate(result.paths, start=1):
        label = path.endpoint or path.verdict
        masq = ", masquerade" if path.masquerade else ""
        click.echo(f"\npath {i}: {label} (p={path.probability:.4f}{masq})")
        for rule in path.rules:
            click.echo(f"  {rule.table:<7} {rule.rule}")
    click.echo("\nassumptions:")
    for text in result.assumptions:
        click.echo(f"  - {text}")


# ---------------------------------------------------------------- graph


@main.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(),
    help="Manifest file or directory (repeatable): draw the lab they describe, offline.",
)
@click.option("--lab", "lab_opt", help="Live lab to draw (default: the only lab that is up).")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="svg, png or dot (default: from the file's suffix).",
)
def graph(paths: tuple[str, ...], lab_opt: str | None, output: Path, fmt: str | None) -> None:
    """Draw a lab with Graphviz: nodes, pods, bridges, veths, overlay tunnels,
    external clients and Services. Live (a lab is up), or offline from the
    manifests (-f). Prints the file's path."""

    def action() -> None:
        chosen = check_picture(output, fmt)
        if paths and lab_opt:
            raise UsageError("use either -f PATH (offline) or --lab LAB (live), not both")
        if paths:
            state = load_cluster(paths)
            topology = offline_topology(state, paths, "netemu graph")
        else:
            from netemu.cli_live import live_view

            topology, state = live_view(lab_opt)
        write_picture(lab_graph(topology, state), output, chosen)
        click.echo(str(output))

    _run(action)


def check_picture(output: Path, fmt: str | None) -> str:
    """The format to write `output` in; usage errors before any work is done,
    and a missing `dot` too (exit 1)."""
    chosen = fmt or format_of(output)
    if chosen is None:
        raise UsageError(
            f"{output}: cannot tell the format from the suffix; "
            f"name it .svg, .png or .dot, or give --format {'|'.join(FORMATS)}"
        )
    if not output.parent.is_dir():
        raise UsageError(f"{output}: no directory {output.parent}")
    if chosen != "dot" and not dot_available():
        raise LabError(DOT_MISSING)
    return chosen


def write_picture(source: str, output: Path, fmt: str) -> None:
    try:
        write_graph(source, output, fmt)
    except GraphvizError as exc:
        raise LabError(str(exc)) from None


# Live-lab commands (up, down, exec, apply, delete, scale, rules) register themselves.
from netemu import cli_live  # noqa: E402

cli_live.register(main, _run)
