"""`netemu validate` and `netemu compile`: manifests in, diagnostics or
kube-proxy's rules out. Imported only when one of them runs (netemu.cli)."""

from __future__ import annotations

from pathlib import Path

import click

from netemu.cli import create_namespaces_option, loader_notes, manifest_files, run
from netemu.pipeline import (
    RULES_SUFFIX,
    compile_rules,
    lab_name,
    load_cluster,
    pick_node,
    proxy_families,
)

RULES_DIR = Path("rules")


@click.command()
@manifest_files("Manifest file or directory (repeatable).")
@create_namespaces_option
def validate(paths: tuple[str, ...], create_namespaces: bool) -> None:
    """Check manifests; print every problem as file:line: object: field: message."""

    def action() -> None:
        with loader_notes() as notes:
            state = load_cluster(paths, notes=notes, create_namespaces=create_namespaces)
        count = len(state.services) + len(state.nodes)
        click.echo(
            f"valid: {len(state.nodes)} node(s), {len(state.services)} service(s), "
            f"{len(state.pods)} pod(s), {len(state.endpoint_slices)} endpointslice(s)"
            if count
            else "valid: no objects"
        )

    run(action)


@click.command("compile")
@manifest_files("Manifest file or directory (repeatable).")
@click.option("--node", help="Node to compile for (default: the only node).")
@click.option(
    "--mode",
    type=click.Choice(["iptables"]),
    default="iptables",
    show_default=True,
    help="kube-proxy mode.",
)
@click.option(
    "--write",
    is_flag=True,
    help="Write rules/<lab>/<node>.iptables (and <node>.ip6tables for IPv6) for every node.",
)
@create_namespaces_option
def compile_command(
    paths: tuple[str, ...], node: str | None, mode: str, write: bool, create_namespaces: bool
) -> None:
    """Print the iptables-restore input kube-proxy would apply on a node.

    On a dual-stack lab, each family's (ip6tables-restore input for IPv6),
    primary first, each under a `# <family>` comment line."""

    def action() -> None:
        with loader_notes() as notes:
            state = load_cluster(paths, notes=notes, create_namespaces=create_namespaces)
        if write:
            out_dir = RULES_DIR / lab_name(state.lab, paths)
            out_dir.mkdir(parents=True, exist_ok=True)
            for n in state.nodes:
                name = n.metadata.name or ""
                for family in proxy_families(state, name):
                    target = out_dir / f"{name}.{RULES_SUFFIX[family]}"
                    target.write_text(compile_rules(state, name, family).render())
                    click.echo(f"wrote {target}")
            return
        name = pick_node(state, node)
        families = proxy_families(state, name)
        for family in families:
            if len(families) > 1:
                click.echo(f"# {family}: {RULES_SUFFIX[family]}-restore input")
            click.echo(compile_rules(state, name, family).render(), nl=False)

    run(action)
