"""`netemu trace`: a real packet followed through a live lab, or a simulated
one walked through the compiled rules (--offline). Imported only when it
runs (netemu.cli).

A live trace runs in the lab's supervisor, which has the lab's state, the
models and Scapy imported already: this command sends it FROM and TO, gets
back the report (as trace.json holds it) and the pcaps' bytes, writes them
under captures/ as the invoking user (netemu.kernel.owner) and prints the
report. So its path imports click, the socket client and rich only; the
offline tracer's imports (the manifest pipeline, the simulator) and --svg's
(which draws with the lab's state here) come with the options that need them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from netemu.cli import manifest_files, require_root, run, stdout_width
from netemu.errors import LabError, UsageError
from netemu.lab import LiveLab, resolve_lab

if TYPE_CHECKING:
    from rich.console import RenderableType

    from netemu.controlplane.state import ClusterState
    from netemu.rules.simulate import Simulation
    from netemu.trace.flow import Flow

# As netemu.trace.live names them.
REPORT = "trace.json"


@click.command()
@click.argument("frm", required=False, metavar="FROM")
@click.argument("to", required=False, metavar="TO")
@click.option("--lab", "lab_opt", help="Live lab (default: the only lab that is up).")
@click.option(
    "--port",
    "port_text",
    metavar="PORT",
    help="Destination port (for TO): a number, or a name (the Service's port name, or a "
    "pod's container port name).",
)
@click.option(
    "-n",
    "--namespace",
    help="Namespace of pods and Services named in FROM and TO without NAMESPACE/.",
)
@click.option(
    "--proto", type=click.Choice(["tcp", "udp", "icmp", "sctp"]), default="tcp", show_default=True
)
@click.option(
    "--family",
    type=click.Choice(["IPv4", "IPv6"]),
    help="(live) The IP family of TO named as a Service, node or pod: its clusterIP, or "
    "address, of that family (default: the Service's first clusterIP, the IPv4 address). "
    "An IPv6 address is written [ADDRESS]:PORT or ADDRESS with --port.",
)
@click.option("-6", "ipv6", is_flag=True, help="(live) Same as --family IPv6.")
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
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False),
    help="(TO an https:// URL) CA certificate to verify the Ingress's certificate with.",
)
@click.option("--offline", is_flag=True, help="Simulate with the rule compiler; no lab needed.")
@manifest_files("(--offline) Manifest file or directory (repeatable).", required=False)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False),
    help="(--offline) A real node's rules: an iptables-save dump, or nftables rules "
    "(`nft list ruleset` output, or an nft -f script such as rules/<lab>/<node>.nft).",
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
@click.option(
    "--check",
    is_flag=True,
    help="(live) Exit 1 when what the kernel did differs from the offline simulator's "
    "prediction for the same packet over the entry node's rules: the verdict "
    "(DNAT, ACCEPT, REJECT, DROP, NONE), the endpoint (the one chosen must be one "
    "predicted) and masquerade. The report is printed either way.",
)
def trace(
    frm: str | None,
    to: str | None,
    lab_opt: str | None,
    port_text: str | None,
    namespace: str | None,
    proto: str,
    family: str | None,
    ipv6: bool,
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
    check: bool,
    cacert: str | None,
) -> None:
    """Follow a packet from FROM to TO.

    Live (a lab is up): send a real flow and show every hop, NAT and rule
    verdict, with pcaps under captures/<lab>/<trace-id>/. FROM is a pod,
    node or external client; TO a Service, a pod, NODE:NODEPORT or an IP
    (with --port). With TO an http:// or https:// URL (FROM an external
    client), one request through the Ingress controller: both legs, joined
    by its X-Request-ID.

    Offline (--offline -f DIR FROM TO, or --src/--dst/--dport): walk the
    packet through the compiled rules of the node it meets first.
    """

    def action() -> None:
        port: int | str | None = _port(port_text)
        query = _OfflineQuery(paths, rules_file, local_ip, node, src, dst, dport)
        if offline and svg is not None:
            raise UsageError(
                "--svg draws the path a live trace saw: it does not go with --offline "
                "(netemu graph -f PATH -o FILE draws the lab without a path)"
            )
        if offline and check:
            raise UsageError(
                "--check compares a live trace with the offline prediction: "
                "it does not go with --offline"
            )
        if offline:
            _trace_offline(frm, to, port, proto, output, query, namespace)
            return
        if query.given():
            raise UsageError(
                "-f, --rules, --local-ip, --node, --src, --dst and --dport are for "
                "simulated traces: add --offline (a live trace takes FROM TO)"
            )
        if frm is None or to is None:
            raise UsageError("give FROM and TO (or --offline with manifests)")
        if _is_url(to):
            _trace_url(lab_opt, frm, to, output, not no_pcap, captures, cacert)
            return
        if cacert is not None:
            raise UsageError("--cacert goes with TO an https:// URL")
        if proto == "sctp":
            raise UsageError("--proto sctp: live traces send tcp, udp or icmp")
        if ipv6 and family == "IPv4":
            raise UsageError("-6 and --family IPv4 disagree")
        family_of_to = "IPv6" if ipv6 else family
        source, target = frm, to
        if namespace is not None or isinstance(port, str):
            source, target, port = _live_names(lab_opt, frm, to, port, proto, namespace)
        assert not isinstance(port, str)
        if family_of_to is not None:
            target = _live_family(lab_opt, target, family_of_to, port, proto)
        report = live_trace(
            lab_opt, source, target, port, proto, output, not no_pcap, captures, timeout, svg
        )
        if check:
            from netemu.trace.render import prediction_differences

            differences = prediction_differences(report)
            if differences:
                raise LabError(
                    "the live trace differs from the offline prediction: " + "; ".join(differences)
                )

    run(action)


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _trace_url(
    lab_opt: str | None,
    client: str,
    url: str,
    output: str,
    pcap: bool,
    captures: Path,
    cacert: str | None,
) -> None:
    """One HTTP(S) request from an external client through the Ingress
    controller (netemu.trace.ingress), run here as root."""
    require_root("trace")
    from netemu.trace.ingress import IngressTraceOptions, render_text, trace_url

    lab = LiveLab(resolve_lab(lab_opt))
    report = trace_url(lab, client, url, IngressTraceOptions(cacert, pcap, captures))
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_text(report), nl=False)


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


def _port(text: str | None) -> int | str | None:
    """--port: a number 1-65535, or a port name (resolved against TO)."""
    if text is None or not text.isdigit():
        if text is not None and not text:
            raise UsageError("--port: expected a number or a port name")
        return text
    if not 1 <= int(text) <= 65535:
        raise UsageError(f"--port {text}: expected 1 to 65535, or a port name")
    return int(text)


def _named(
    state: ClusterState,
    topology: Any,
    frm: str,
    to: str,
    port: int | str | None,
    proto: str,
    namespace: str | None,
) -> tuple[str, str, int | None]:
    """FROM, TO and the port number as -n and a --port name mean them."""
    from netemu.trace.flow import FlowError, in_namespace, named_port

    frm = in_namespace(topology, frm, namespace, source=True)
    to = in_namespace(topology, to, namespace, source=False)
    if isinstance(port, str):
        try:
            port = named_port(state, topology, to, port, proto)
        except FlowError as exc:
            raise UsageError(str(exc)) from None
    return frm, to, port


def _live_names(
    lab_opt: str | None,
    frm: str,
    to: str,
    port: int | str | None,
    proto: str,
    namespace: str | None,
) -> tuple[str, str, int | None]:
    """_named for a live lab: its state is read only when it is needed."""
    require_root("trace")
    lab = LiveLab(resolve_lab(lab_opt))
    state = lab.cluster_state()
    return _named(state, lab.topology(), frm, to, port, proto, namespace)


def _live_family(lab_opt: str | None, to: str, family: str, port: int | None, proto: str) -> str:
    """TO as an address of `family` in the live lab (netemu.trace.flow.to_family)."""
    from netemu.trace.flow import FlowError, to_family

    require_root("trace")
    lab = LiveLab(resolve_lab(lab_opt))
    try:
        return to_family(lab.cluster_state(), lab.topology(), to, family, port, proto)
    except FlowError as exc:
        raise UsageError(str(exc)) from None


def _trace_offline(
    frm: str | None,
    to: str | None,
    port: int | str | None,
    proto: str,
    output: str,
    query: _OfflineQuery,
    namespace: str | None = None,
) -> None:
    from netemu.pipeline import pick_node, proxy_families, simulate_on_node
    from netemu.rules.input import IPFamily
    from netemu.rules.model import ParseError, read_rules
    from netemu.rules.nftmodel import is_nftables_file, read_nft_rules
    from netemu.rules.nftsimulate import simulate_nft
    from netemu.rules.simulate import Packet, simulate

    paths, rules_file, local_ip, node = query.paths, query.rules_file, query.local_ip, query.node
    src, dst, dport = query.src, query.dst, query.dport
    described: dict[str, Any] = {}
    result: Simulation
    if frm is not None or to is not None:
        if frm is None or to is None:
            raise UsageError("give both FROM and TO")
        if not paths:
            raise UsageError("--offline FROM TO needs the lab's manifests: -f PATH")
        if src or dst or dport:
            raise UsageError("use either FROM TO or --src/--dst/--dport, not both")
        state = _load_noted(paths)
        if namespace is not None or isinstance(port, str):
            from netemu.cli_graph import offline_topology

            topology = offline_topology(state, paths, "FROM/TO")
            frm, to, port = _named(state, topology, frm, to, port, proto, namespace)
        assert not isinstance(port, str)
        flow = offline_flow(state, paths, frm, to, port, proto)
        if flow.entry_node is None:
            raise UsageError(f"{flow.describe()}: no node of the lab is on the way")
        node_name: str | None = flow.entry_node
        packet = Packet(src=flow.source.ip, dst=flow.dst, dport=flow.dport, proto=flow.proto)
        # The proxier of the packet's family: an IPv6 flow meets ip6tables'
        # (or ip6 kube-proxy's) rules, as the live tracer's prediction does.
        flow_family: IPFamily = "IPv6" if ":" in flow.dst else "IPv4"
        result = simulate_on_node(state, flow.entry_node, packet, family=flow_family)
        described = {"from": flow.source.label, "to": flow.target, "service": flow.service}
    else:
        if not (src and dst and dport):
            raise UsageError("give FROM TO, or --src, --dst and --dport")
        _check_ip("--src", src)
        _check_ip("--dst", dst)
        family = _ip_family(dst)
        if _ip_family(src) != family:
            raise UsageError(
                f"--src {src} and --dst {dst} are of different IP families: a packet has one"
            )
        packet = Packet(src=src, dst=dst, dport=dport, proto=proto)
        if rules_file:
            if paths:
                raise UsageError("use either --rules or -f, not both")
            if not local_ip:
                raise UsageError("--rules needs the node's addresses: --local-ip IP (repeatable)")
            for ip in local_ip:
                _check_ip("--local-ip", ip)
            try:
                if is_nftables_file(Path(rules_file)):
                    # An nft script (rules/<lab>/<node>.nft) or `nft list ruleset`.
                    result = simulate_nft(read_nft_rules(Path(rules_file)), list(local_ip), packet)
                else:
                    result = simulate(read_rules(Path(rules_file)), list(local_ip), packet)
            except ParseError as exc:  # a rule the walk refused: name the file too
                raise (exc if exc.source else exc.located(rules_file)) from None
            node_name = None
        else:
            if not paths:
                raise UsageError("give manifests with -f PATH, or a dump with --rules FILE")
            state = _load_noted(paths)
            node_name = pick_node(state, node)
            # The proxier of the packet's family: ip6tables or ip6 kube-proxy for IPv6.
            families = proxy_families(state, node_name)
            if family not in families:
                raise UsageError(
                    f"--dst {dst} is {family}, but the lab's kube-proxy runs only "
                    f"{' and '.join(families)} (its serviceCIDR)"
                )
            result = simulate_on_node(state, node_name, packet, family=family)
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
    from netemu.cli_graph import offline_topology
    from netemu.trace.flow import FlowError, resolve_flow

    topology = offline_topology(state, paths, "FROM/TO")
    try:
        return resolve_flow(state, topology, frm, to, port, proto)
    except FlowError as exc:
        raise UsageError(str(exc)) from None


def _check_ip(flag: str, value: str) -> None:
    import netaddr

    try:
        netaddr.IPAddress(value)
    except (netaddr.AddrFormatError, ValueError):
        raise UsageError(f"{flag}: {value!r} is not an IPv4 or IPv6 address") from None


def _ip_family(value: str) -> str:
    return "IPv6" if ":" in value else "IPv4"


def _print_simulation(result: Simulation, node: str | None) -> None:
    pkt = result.packet
    where = f" on {node}" if node else ""
    origin = "local" if result.local_origin else "from outside the node"
    dst = f"[{pkt.dst}]" if ":" in pkt.dst else pkt.dst
    click.echo(f"{pkt.proto} {pkt.src} → {dst}:{pkt.dport}{where} ({origin}): {result.verdict}")
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


def live_trace(
    lab_opt: str | None,
    frm: str,
    to: str,
    port: int | None,
    proto: str,
    output: str,
    pcap: bool,
    captures: Path,
    timeout: float,
    svg: Path | None = None,
) -> dict[str, Any]:
    """Trace, print the report, and return it (as trace.json holds it)."""
    require_root("trace")
    if svg is not None:
        return _live_trace_with_picture(
            lab_opt, frm, to, port, proto, output, pcap, captures, timeout, svg
        )
    from netemu.kernel.owner import OutputDirectory, OutputPathError

    lab = LiveLab(resolve_lab(lab_opt))
    if pcap:
        # Before the trace: a captures/ that cannot be written safely should
        # not cost a trace first. Its own directory comes with the report.
        try:
            OutputDirectory(captures, lab.name).close()
        except OutputPathError as exc:
            raise LabError(f"cannot write the captures: {exc}") from None
    reply = lab.request(
        "trace",
        timeout=timeout + 120,  # the trace's own work besides waiting for answers
        **{"from": frm, "to": to},
        port=port,
        proto=proto,
        pcap=pcap,
        captures=str(captures),
        wait=timeout,
    )
    report: dict[str, Any] = reply["report"]
    if pcap:
        _write_captures(captures, lab.name, report, reply["files"])
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return report


def _write_captures(
    captures: Path, lab: str, report: Mapping[str, Any], files: Mapping[str, str]
) -> None:
    """captures/<lab>/<trace-id>/: the pcaps and trace.json, each a new file of
    the invoking user (mode 0600) reached without following symlinks; nothing
    is left half-written."""
    from netemu.kernel.owner import OutputDirectory, OutputPathError

    trace_id = str(report["id"])
    try:
        directory = OutputDirectory(captures, lab, trace_id, fresh=True)
    except OutputPathError as exc:
        raise LabError(f"trace {trace_id}: cannot write its captures: {exc}") from None
    try:
        for name, data in files.items():
            directory.write(name, base64.b64decode(data))
        directory.write(REPORT, (json.dumps(report, indent=2) + "\n").encode())
    except OutputPathError as exc:
        directory.discard()
        raise LabError(f"cannot write the captures: {exc}") from None
    except OSError as exc:
        directory.discard()
        raise LabError(f"cannot write the captures in {directory.path}: {exc.strerror}") from None
    finally:
        directory.close()


def _live_trace_with_picture(
    lab_opt: str | None,
    frm: str,
    to: str,
    port: int | None,
    proto: str,
    output: str,
    pcap: bool,
    captures: Path,
    timeout: float,
    svg: Path,
) -> dict[str, Any]:
    """A live trace run here, and the lab drawn with its path (--svg): the
    picture needs the lab's state and the hops as objects."""
    from netemu.cli_graph import check_picture, write_picture
    from netemu.net.graph import lab_graph
    from netemu.trace.live import TraceOptions, trace

    # Before the trace: a picture that cannot be written should not cost a
    # trace first.
    check_picture(svg, "svg")
    lab = LiveLab(resolve_lab(lab_opt))
    options = TraceOptions(port=port, proto=proto, pcap=pcap, captures=captures, timeout=timeout)
    # The picture shows the lab as the trace resolved FROM and TO against it.
    view = (lab.topology(), lab.cluster_state())
    report = trace(lab, frm, to, options, view)
    write_picture(lab_graph(*view, report.hops, caption=report.summary()), svg, "svg")
    data = report.to_dict()
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        _print_report(data)
    # stderr under -o json: stdout is the report alone.
    click.echo(f"graph: {svg}", err=output == "json")
    return data


def _print(renderable: RenderableType) -> None:
    from rich.console import Console

    Console(width=stdout_width(), highlight=False).print(renderable)


def _print_report(report: Mapping[str, Any]) -> None:
    from netemu.trace.render import render

    _print(render(report))


def _load_noted(paths: tuple[str, ...]) -> Any:
    """The computed state of `paths`, the loader's notices on stderr."""
    from netemu.cli import loader_notes
    from netemu.pipeline import load_cluster

    with loader_notes() as notes:
        return load_cluster(paths, notes=notes)
