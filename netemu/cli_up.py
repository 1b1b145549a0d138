"""`netemu up`. Light on purpose: the command starts the lab's supervisor
before it imports anything heavy, so that the supervisor's imports run on
another CPU while this process imports and validates the manifests
(netemu.launch); the rest of the command is netemu.cli_live.bring_up."""

from __future__ import annotations

import click

from netemu.cli import create_namespaces_option, manifest_files, require_root
from netemu.launch import supervisor_ahead


@click.command("up")
@manifest_files("Lab directory or manifests.", exists=True)
@click.option("--name", help="Lab name (default: the Lab object's name).")
@create_namespaces_option
def up_command(paths: tuple[str, ...], name: str | None, create_namespaces: bool) -> None:
    """Bring a lab up: namespaces, links, overlay, pods and kube-proxy rules."""
    require_root("up")
    with supervisor_ahead() as supervisor:
        # Imported after the supervisor has started, and why it is here.
        from netemu.cli_live import bring_up

        bring_up(paths, name, supervisor, create_namespaces)
