"""`netemu validate` and `netemu compile`: manifests in, diagnostics or
kube-proxy's rules out. Imported only when one of them runs (netemu.cli)."""

from __future__ import annotations

from pathlib import Path

import click

from netemu.cli import create_namespaces_option, loader_notes, manifest_files, run
from netemu.pipeline import (
    compile_nftables,
    compile_rules,
    lab_name,
    load_cluster,
    pick_node,
    proxy_mode,
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
    type=click.Choice(["iptables", "nftables"]),
    default=None,
    help="kube-proxy mode (default: the lab's: KubeProxyConfiguration mode, else Lab proxyMode).",
)
@click.option(
    "--write",
    is_flag=True,
    help="Write rules/<lab>/<node>.iptables (iptables mode) or <node>.nft (nftables mode) "
    "for every node.",
)
@create_namespaces_option
def compile_command(
    paths: tuple[str, ...], node: str | None, mode: str | None, write: bool, create_namespaces: bool
) -> None:
    """Print the rules kube-proxy would apply on a node (iptables or nftables).

    iptables mode: its iptables-restore input; nftables mode: its
    `ip kube-proxy` table, as `nft -f` input."""

    def action() -> None:
        with loader_notes() as notes:
            state = load_cluster(paths, notes=notes, create_namespaces=create_namespaces)
        chosen = proxy_mode(state) if mode is None else mode

        def text(name: str) -> str:
            if chosen == "nftables":
                return compile_nftables(state, name).dump()
            return compile_rules(state, name, "iptables").render()

        if write:
            out_dir = RULES_DIR / lab_name(state.lab, paths)
            out_dir.mkdir(parents=True, exist_ok=True)
            suffix = "nft" if chosen == "nftables" else "iptables"
            for n in state.nodes:
                name = n.metadata.name or ""
                target = out_dir / f"{name}.{suffix}"
                target.write_text(text(name))
                click.echo(f"wrote {target}")
            return
        click.echo(text(pick_node(state, node)), nl=False)

    run(action)
