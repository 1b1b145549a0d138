"""`netemu validate` and `netemu compile`: manifests in, diagnostics or
kube-proxy's rules out. Imported only when one of them runs (netemu.cli)."""

from __future__ import annotations

from pathlib import Path

import click

from netemu.cli import create_namespaces_option, loader_notes, manifest_files, run
from netemu.pipeline import (
    ProxyMode,
    compile_nftables,
    compile_rules,
    lab_name,
    load_cluster,
    pending_pod_warnings,
    pick_node,
    proxy_families,
    proxy_mode,
    rules_suffix,
)
from netemu.rules.input import IPFamily

RULES_DIR = Path("rules")


def parse_mode(text: str) -> ProxyMode:
    """--mode's value (click has checked it is one of the two)."""
    return "nftables" if text == "nftables" else "iptables"


@click.command()
@manifest_files("Manifest file or directory (repeatable).")
@create_namespaces_option
def validate(paths: tuple[str, ...], create_namespaces: bool) -> None:
    """Check manifests; print every problem as file:line: object: field: message."""

    def action() -> None:
        with loader_notes() as notes:
            state = load_cluster(paths, notes=notes, create_namespaces=create_namespaces)
            notes.extend(pending_pod_warnings(state))
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
    help="Write each node's rules under rules/<lab>/: <node>.iptables and <node>.ip6tables "
    "(iptables mode), <node>.nft and <node>.ip6.nft (nftables mode), one per IP family.",
)
@create_namespaces_option
def compile_command(
    paths: tuple[str, ...], node: str | None, mode: str | None, write: bool, create_namespaces: bool
) -> None:
    """Print the rules kube-proxy would apply on a node (iptables or nftables).

    iptables mode: its iptables-restore input (ip6tables-restore input for
    IPv6); nftables mode: its `ip kube-proxy` (`ip6 kube-proxy`) table, as
    `nft -f` input. On a dual-stack lab, each family's, primary first, each
    under a `# <family>` comment line."""

    def action() -> None:
        with loader_notes() as notes:
            state = load_cluster(paths, notes=notes, create_namespaces=create_namespaces)
            notes.extend(pending_pod_warnings(state))
        chosen: ProxyMode = proxy_mode(state) if mode is None else parse_mode(mode)

        def text(name: str, family: IPFamily) -> str:
            if chosen == "nftables":
                return compile_nftables(state, name, family=family).dump()
            return compile_rules(state, name, family=family, mode="iptables").render()

        if write:
            out_dir = RULES_DIR / lab_name(state.lab, paths)
            out_dir.mkdir(parents=True, exist_ok=True)
            for n in state.nodes:
                name = n.metadata.name or ""
                for family in proxy_families(state, name):
                    target = out_dir / f"{name}.{rules_suffix(chosen, family)}"
                    target.write_text(text(name, family))
                    click.echo(f"wrote {target}")
            return
        name = pick_node(state, node)
        families = proxy_families(state, name)
        for family in families:
            if len(families) > 1:
                click.echo(f"# {family}: {rules_suffix(chosen, family)}")
            click.echo(text(name, family), nl=False)

    run(action)
