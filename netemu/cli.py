"""The `netemu` command. Exit codes: 0 ok, 1 the operation failed, 2 bad input.

Each command lives in a module of its own kind (netemu.cli_manifests,
cli_get, cli_trace, cli_graph, cli_live, cli_up) that is imported only when the
command runs: the control plane, pydantic's models, rich and Scapy cost
tenths of a second to import, which `netemu --version`, `--help` and every
command that does not need them should not pay. This module therefore
imports nothing heavier than click, and `--help` lists the commands from
COMMANDS below rather than from the modules (a unit test holds each
summary equal to the command's own help).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from netemu import __version__
from netemu.api.errors import InputError
from netemu.errors import LabError, LabUsageError, UsageError, needs_root
from netemu.heap import gc_paused
from netemu.rules.model import ParseError

FC = TypeVar("FC", bound=Callable[..., Any])


@dataclass(frozen=True)
class LazyCommand:
    """Where a command is defined, and what `netemu --help` says of it."""

    module: str
    attribute: str
    summary: str  # the first sentence of the command's help


COMMANDS: dict[str, LazyCommand] = {
    "apply": LazyCommand(
        "netemu.cli_live",
        "apply_command",
        "Create or update objects in a live lab; pods and rules follow at once.",
    ),
    "compile": LazyCommand(
        "netemu.cli_manifests",
        "compile_command",
        "Print the rules kube-proxy would apply on a node (iptables or nftables).",
    ),
    "delete": LazyCommand(
        "netemu.cli_live",
        "delete_command",
        "Delete objects: netemu delete -f PATH, or netemu delete KIND NAME.",
    ),
    "describe": LazyCommand(
        "netemu.cli_describe",
        "describe_command",
        "Show a live Service in detail, with its load balancer's health per node.",
    ),
    "create": LazyCommand(
        "netemu.cli_live",
        "create_command",
        "Create a Job from a CronJob now: netemu create job NAME --from=cronjob/CJ.",
    ),
    "down": LazyCommand(
        "netemu.cli_live",
        "down_command",
        "Take a lab down, removing everything it created (also after a crash).",
    ),
    "exec": LazyCommand(
        "netemu.cli_live",
        "exec_command",
        "Run COMMAND in a pod, node or external client: netemu exec TARGET -- CMD ...",
    ),
    "get": LazyCommand(
        "netemu.cli_get",
        "get",
        "Show pods, services, endpointslices, nodes, namespaces, deployments, "
        "replicasets, daemonsets, statefulsets, replicationcontrollers, jobs, "
        "cronjobs, endpoints, ingresses or ingressclasses (as kubectl would), computed "
        "from manifests (-f) or read from a live lab.",
    ),
    "graph": LazyCommand(
        "netemu.cli_graph",
        "graph",
        "Draw a lab with Graphviz: nodes, pods, bridges, veths, overlay tunnels, "
        "external clients and Services.",
    ),
    "labs": LazyCommand("netemu.cli_live", "labs_command", "List the labs that are up."),
    "logs": LazyCommand(
        "netemu.cli_live",
        "logs_command",
        "Print a container's log: its command's stdout and stderr, or the "
        "built-in test server's access log (POD or NAMESPACE/POD).",
    ),
    "rules": LazyCommand(
        "netemu.cli_live",
        "rules_command",
        "Show a node's live iptables rules (iptables-save format).",
    ),
    "scale": LazyCommand(
        "netemu.cli_live",
        "scale_command",
        "Scale a Deployment, ReplicaSet, StatefulSet or ReplicationController "
        "(e.g. rc/web --replicas 2).",
    ),
    "trace": LazyCommand("netemu.cli_trace", "trace", "Follow a packet from FROM to TO."),
    "up": LazyCommand(
        "netemu.cli_up",
        "up_command",
        "Bring a lab up: namespaces, links, overlay, pods and kube-proxy rules.",
    ),
    "validate": LazyCommand(
        "netemu.cli_manifests",
        "validate",
        "Check manifests; print every problem as file:line: object: field: message.",
    ),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use (see COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry.module), entry.attribute)
        assert isinstance(command, click.Command), entry
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing uses click's own layout on stand-ins that carry only
        # each command's summary: listing must not import every command.
        stand_ins = {name: click.Command(name, help=c.summary) for name, c in COMMANDS.items()}
        click.Group(commands=stand_ins).format_commands(ctx, formatter)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, package_name="netemu")
def main() -> None:
    """netemu: Kubernetes service networking, packet by packet."""


def run(action: Callable[[], None]) -> None:
    """Run a command's body, turning the errors it may raise into one line
    per problem on stderr and exit code 2 (bad input) or 1 (failed).

    The cyclic garbage collector is paused meanwhile (netemu.heap): a
    command runs once and exits, the objects a large input makes live until
    then, and walking them again after each of the loader's own pauses was
    a tenth of `compile`'s CPU time at 10,000 Services (timed with
    gc.callbacks). What a command leaves in cycles is little (about 2,000
    objects for that input) and goes at exit. The supervisor is a process
    of its own, with its collector on."""
    with gc_paused():
        try:
            action()
        except InputError as exc:
            for diagnostic in exc.diagnostics:
                click.echo(str(diagnostic), err=True)
            click.echo(f"{len(exc.diagnostics)} error(s)", err=True)
            sys.exit(2)
        except (UsageError, ParseError, LabUsageError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except LabError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


def require_root(command: str) -> None:
    """Exit 1 with one line unless root: live commands work in network namespaces."""
    message = needs_root(command)
    if message:
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


def manifest_files(text: str, *, required: bool = True, exists: bool = False) -> Callable[[FC], FC]:
    """The -f/--filename option (repeatable) of commands that read manifests."""
    return click.option(
        "-f",
        "--filename",
        "paths",
        multiple=True,
        required=required,
        type=click.Path(exists=exists),
        help=text,
    )


def create_namespaces_option(func: FC) -> FC:
    """--create-namespaces: namespaces used but not defined are created."""
    return click.option(
        "--create-namespaces",
        is_flag=True,
        help="Create namespaces objects use but no Namespace defines (else an error, "
        'as kubectl apply says: namespaces "x" not found).',
    )(func)


@contextlib.contextmanager
def loader_notes() -> Iterator[list[str]]:
    """A list for the loader's notices and warnings, printed one line each on
    stderr when the block ends, whether the input loaded or not."""
    notes: list[str] = []
    try:
        yield notes
    finally:
        for line in notes:
            click.echo(line, err=True)


def stdout_width() -> int | None:
    """Scripts read our tables: never wrap them when stdout is not a terminal."""
    return None if sys.stdout.isatty() else 10_000
