"""`netemu get`: pods, services, endpointslices, nodes, namespaces and
workloads as kubectl prints them, computed from manifests or read from a
live lab. Imported only when it runs (netemu.cli).

A live lab's supervisor builds the table (or the -o json|yaml List) itself,
as Kubernetes' API server does for kubectl, so this path imports click, the
socket client and netemu.cli_table only; `get -f` computes the state here
with the manifest pipeline and pydantic's models, imported when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from netemu.cli import create_namespaces_option, loader_notes, manifest_files, require_root, run
from netemu.cli_table import (
    RESOURCES,
    dump_json,
    dump_yaml,
    in_namespace,
    items,
    listing,
    render,
    table,
)
from netemu.errors import UsageError
from netemu.lab import LiveLab, resolve_lab

if TYPE_CHECKING:
    from netemu.controlplane.state import ClusterState


@click.command()
@click.argument("resource", metavar="RESOURCE")
@manifest_files(
    "Manifest file or directory (repeatable): show the computed state offline.", required=False
)
@click.option("--lab", "lab_name_", help="Live lab to read (default: the only lab that is up).")
@click.option("-o", "--output", type=click.Choice(["wide", "json", "yaml"]), help="Output format.")
@click.option("-n", "--namespace", help="Only objects in this namespace.")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Objects in every namespace (the default)."
)
@create_namespaces_option
def get(
    resource: str,
    paths: tuple[str, ...],
    lab_name_: str | None,
    output: str | None,
    namespace: str | None,
    all_namespaces: bool,
    create_namespaces: bool,
) -> None:
    """Show pods, services, endpointslices, nodes, namespaces, deployments,
    replicasets, daemonsets, statefulsets, replicationcontrollers, jobs,
    cronjobs, endpoints, ingresses or ingressclasses (as kubectl would), computed
    from manifests (-f) or read from a live lab. Unlike kubectl, every
    namespace is listed (with a NAMESPACE column, as kubectl -A) unless -n
    names one: a lab is small, and its kube-system objects (the DNS addon)
    are part of what it shows. Kinds netemu stores but does not emulate
    (serviceaccounts, roles, configmaps, custom resources, ...) are listed
    by plural, kind or short name, with NAME and AGE."""

    def action() -> None:
        if namespace is not None and all_namespaces:
            raise UsageError("-n and -A cannot be used together")
        if paths:
            with loader_notes() as notes:
                state = _computed_state(paths, notes, create_namespaces)
            kind = RESOURCES.get(resource) or _stored_kind(resource)
            if namespace is not None:
                state = in_namespace(state, namespace)
            print_resources(kind, state, output, with_namespace=namespace is None)
        else:
            require_root("get")
            # A kind the lab stores but does not emulate is resolved by the lab,
            # which knows its custom resources' names.
            kind = RESOURCES.get(resource, resource)
            shown = LiveLab(resolve_lab(lab_name_)).table(kind, namespace, output)
            _print(shown, output)

    run(action)


def _computed_state(
    paths: tuple[str, ...], notes: list[str], create_namespaces: bool
) -> ClusterState:
    """The state the control plane computes from manifests (-f). The manifest
    pipeline (YAML, validation, the rule compiler) is imported only here:
    reading a live lab does not need it (benchmarks/startup.py)."""
    from netemu.pipeline import load_cluster

    return load_cluster(paths, notes=notes, create_namespaces=create_namespaces)


def _stored_kind(resource: str) -> str:
    """The kind of objects stored but not emulated that `resource` names (after
    loading, so custom resources' CRDs are known), as kubectl resolves it."""
    from netemu.api.generic import resource_kind

    kind = resource_kind(resource)
    if kind is None:
        raise UsageError(f'the server doesn\'t have a resource type "{resource}"')
    return kind


def print_resources(
    kind: str, state: ClusterState, output: str | None, *, with_namespace: bool = True
) -> None:
    """Print the objects of `kind` in `state` as `get` does."""
    if output in ("json", "yaml"):
        _print({"list": listing(items(kind, state))}, output)
    else:
        shown = table(kind, state, wide=output == "wide", with_namespace=with_namespace)
        _print({"table": shown}, output)


def _print(shown: dict[str, Any], output: str | None) -> None:
    """A Table, or for -o json|yaml a List ({"table": ...} or {"list": ...},
    as LiveLab.table returns them)."""
    if output == "json":
        click.echo(dump_json(shown["list"]), nl=False)
    elif output == "yaml":
        click.echo(dump_yaml(shown["list"]), nl=False)
    else:
        click.echo(render(shown["table"]), nl=False)
