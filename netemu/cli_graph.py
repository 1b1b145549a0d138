"""`netemu graph`: a lab drawn with Graphviz, live or from manifests; and
where everything of a lab described by manifests would live (its plan), which
the offline tracer needs too. Imported only when used (netemu.cli)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from netemu.cli import loader_notes, manifest_files, require_root, run
from netemu.controlplane.state import ClusterState
from netemu.errors import LabError, UsageError
from netemu.kernel.graphviz import (
    DOT_MISSING,
    FORMATS,
    GraphvizError,
    dot_available,
    format_of,
)
from netemu.kernel.graphviz import write as write_graph
from netemu.lab import LiveLab, resolve_lab
from netemu.net.graph import lab_graph
from netemu.net.plan import PlanError, plan_lab
from netemu.pipeline import lab_name, load_cluster
from netemu.trace.topology import Topology


@click.command()
@manifest_files(
    "Manifest file or directory (repeatable): draw the lab they describe, offline.", required=False
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
            with loader_notes() as notes:
                state = load_cluster(paths, notes=notes)
            topology = offline_topology(state, paths, "netemu graph")
        else:
            require_root("graph")
            lab = LiveLab(resolve_lab(lab_opt))
            topology, state = lab.topology(), lab.cluster_state()
        write_picture(lab_graph(topology, state), output, chosen)
        click.echo(str(output))

    run(action)


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


def offline_topology(state: ClusterState, paths: Sequence[str], needed_by: str) -> Topology:
    """Where everything would live if the manifests' lab were up (its plan):
    IPv4, dual-stack with either family first, or IPv6-only. A lab no live
    lab could be built from (netemu.api.config.live_ipv6_refusal: a CIDR of
    one family beside a dual-stack underlay, say) has no plan, and the error
    says what handles it offline."""
    if state.lab is None:
        raise UsageError(f"{needed_by} needs a Lab object (kind: Lab) naming the nodes and clients")
    try:
        plan = plan_lab(state, lab_name(state.lab, paths))
    except PlanError as exc:
        raise UsageError(f"{needed_by} needs the lab's plan: {exc}") from None
    return Topology.from_plan(plan, state, state.lab.spec.iptables_backend)
