"""The `netemu` commands that work on live labs: down, exec, apply, delete,
scale, create job, logs, rules and labs, and the body of up (netemu.cli_up). Each needs
root and says so in one line without it. Imported only when one of them
runs (netemu.cli)."""

from __future__ import annotations

import os
import sys
import time
from subprocess import Popen
from typing import Any

import click
from rich.console import Console

from netemu.api.config import DEFAULT_LAB_NOTICE, Lab
from netemu.api.load import Loaded, Origin
from netemu.api.validate import load_and_validate
from netemu.cli import create_namespaces_option, loader_notes, manifest_files, require_root, run
from netemu.controlplane.objects import LAB_KINDS, SCALABLE, is_namespaced, kind_of
from netemu.errors import LabError, LabUsageError
from netemu.lab import (
    LiveLab,
    SupervisorNotAnswering,
    down,
    down_all,
    kind_named,
    resolve_lab,
    running_labs,
    up,
)
from netemu.pipeline import lab_name

_lab_option = click.option("--lab", "lab_opt", help="Lab name (default: the only lab that is up).")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def bring_up(
    paths: tuple[str, ...],
    name: str | None,
    supervisor: Popen[bytes],
    create_namespaces: bool = False,
) -> None:
    """`netemu up` once its supervisor has started (netemu.cli_up)."""

    def action() -> None:
        started = time.monotonic()
        # Validation errors with file:line before the lab is named; the
        # supervisor runs the control plane itself.
        with loader_notes() as notes:
            loaded = load_and_validate(
                paths, notes=notes, create_namespaces=create_namespaces, default_lab=True
            )
        objects = [item.obj for item in loaded]
        labs = [obj for obj in objects if isinstance(obj, Lab)]
        if not labs:
            raise LabUsageError(
                f"{', '.join(paths)}: a live lab needs a Lab object (apiVersion "
                "netemu/v1alpha1, kind Lab) with its nodes, or no Node objects (then "
                "the built-in lab is used); see controlplane/default/lab.yaml"
            )
        # On the built-in lab, the lab is named after the manifests.
        built_in = DEFAULT_LAB_NOTICE in notes
        lab = name or lab_name(None if built_in else labs[0], paths)
        console = Console(stderr=True, highlight=False)
        with console.status(f"lab {lab}: starting") as status:

            def show(progress: dict[str, Any]) -> None:
                count = f" {progress['done']}/{progress['total']}" if progress["total"] else ""
                status.update(f"lab {lab}: {progress['stage']}{count}")

            live = up(
                paths,
                lab,
                on_progress=show,
                supervisor=supervisor,
                create_namespaces=create_namespaces,
            )
        elapsed = time.monotonic() - started
        info = live.info()
        counts = ", ".join(
            _count(len(info[key]), noun)
            for key, noun in (
                ("nodes", "node"),
                ("pods", "pod"),
                ("clients", "external client"),
            )
        )
        click.echo(
            f"lab {lab} is up in {elapsed:.2f} s: {counts} "
            f"({info['overlay']} overlay, iptables-{info['backend']})"
        )

    run(action)


@click.command("down")
@click.argument("lab", required=False)
@click.option("--all", "all_", is_flag=True, help="Take every lab down.")
def down_command(lab: str | None, all_: bool) -> None:
    """Take a lab down, removing everything it created (also after a crash)."""
    require_root("down")

    def action() -> None:
        def note(line: str) -> None:
            click.echo(f"warning: {line}", err=True)

        if all_:
            for name, removed in down_all(note).items():
                click.echo(f"lab {name} is down ({len(removed)} objects removed)")
            return
        name = resolve_lab(lab)
        removed = down(name, note)
        click.echo(f"lab {name} is down ({len(removed)} objects removed)")

    run(action)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@_lab_option
@click.option(
    "-n", "--namespace", help="The pod's namespace (TARGET is then the pod's name, as kubectl)."
)
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(
    lab_opt: str | None, namespace: str | None, target: str, command: tuple[str, ...]
) -> None:
    """Run COMMAND in a pod, node or external client: netemu exec TARGET -- CMD ..."""
    require_root("exec")

    def action() -> None:
        if namespace is not None:
            if "/" in target:
                raise LabUsageError(
                    f"-n {namespace} names the namespace: give the pod as NAME, not {target!r}"
                )
            chosen = f"{namespace}/{target}"
        else:
            chosen = target
        argv = LiveLab(resolve_lab(lab_opt)).exec_argv(chosen, list(command))
        sys.stdout.flush()
        os.execvp(argv[0], argv)

    run(action)


@click.command("apply")
@manifest_files("Manifest file or directory.", exists=True)
@_lab_option
@create_namespaces_option
def apply_command(paths: tuple[str, ...], lab_opt: str | None, create_namespaces: bool) -> None:
    """Create or update objects in a live lab; pods and rules follow at once."""
    require_root("apply")

    def action() -> None:
        lab = LiveLab(resolve_lab(lab_opt))
        with loader_notes() as notes:
            loaded = load_and_validate(
                paths, _running_lab(lab), notes=notes, create_namespaces=create_namespaces
            )
        objects = [item.obj for item in loaded]
        for line in lab.apply(objects):
            click.echo(f"{line} applied")

    run(action)


def _running_lab(lab: LiveLab) -> list[Loaded]:
    """The Lab the lab runs, its Namespaces and Services, for checking what is
    applied against its ranges, nodes, namespaces, cluster IPs and nodePorts
    here, with the files' own lines, before the lab sees it."""
    from netemu.api.core import Namespace, Service

    where = Origin(f"lab {lab.name}", 0)
    raw = lab.info().get("lab")
    in_place = [] if raw is None else [Loaded(Lab.model_validate(raw), where)]
    state = lab.state()
    in_place += [Loaded(Namespace.model_validate(o), where) for o in state.get("namespaces", [])]
    in_place += [Loaded(Service.model_validate(o), where) for o in state["services"]]
    return in_place


def delete_grace_period(given: int, force: bool) -> int | None:
    """The grace period a delete asks for, as kubectl computes it: None for
    each pod's own; 0 (remove at once) only with --force, else 1."""
    if given == 0 and not force:
        return 1
    if force and given < 0:
        return 0
    return given if given >= 0 else None


@click.command("delete")
@manifest_files("Delete the objects in these manifests.", required=False, exists=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--grace-period",
    type=int,
    default=-1,
    show_default=True,
    help="Seconds a pod gets to stop (negative: its terminationGracePeriodSeconds); "
    "0 only with --force.",
)
@click.option("--force", is_flag=True, help="Remove pods at once, without waiting for them.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Return once deleted pods are gone."
)
@_lab_option
@click.argument("kind_and_name", nargs=-1)
def delete_command(
    paths: tuple[str, ...],
    namespace: str,
    grace_period: int,
    force: bool,
    wait: bool,
    lab_opt: str | None,
    kind_and_name: tuple[str, ...],
) -> None:
    """Delete objects: netemu delete -f PATH, or netemu delete KIND NAME.
    Pods are deleted gracefully: each container's preStop hook, then
    SIGTERM, then SIGKILL when the grace period is over."""
    require_root("delete")
    grace = delete_grace_period(grace_period, force)
    if grace == 0:
        click.echo(
            "warning: pods are removed at once; their containers are killed without "
            "waiting for them to stop",
            err=True,
        )

    def action() -> None:
        refs: list[tuple[str, str | None, str]] = []
        lab = resolve_lab(lab_opt)
        if paths:
            if kind_and_name:
                raise LabUsageError("give either -f PATH or KIND NAME, not both")
            for item in load_and_validate(paths):
                kind = kind_of(type(item.obj))
                meta: Any = getattr(item.obj, "metadata", None)
                if kind in LAB_KINDS:
                    # The lab's own description: a lab is taken down as a whole.
                    click.echo(
                        f"{kind}/{meta.name} skipped: netemu down {lab} takes the lab down",
                        err=True,
                    )
                    continue
                ns = (meta.namespace or "default") if is_namespaced(kind) else None
                refs.append((kind, ns, meta.name))
        elif len(kind_and_name) == 2:
            kind = kind_named(kind_and_name[0])
            refs.append((kind, namespace, kind_and_name[1]))
        elif len(kind_and_name) == 1 and "/" in kind_and_name[0]:
            kind_name, obj = kind_and_name[0].split("/", 1)
            refs.append((kind_named(kind_name), namespace, obj))
        else:
            raise LabUsageError("expected -f PATH, KIND NAME or KIND/NAME")
        if not refs:
            return
        for line in LiveLab(lab).delete(refs, grace_period=grace, wait=wait):
            click.echo(f"{line} deleted")

    run(action)


@click.command("scale")
@click.argument("resource")
@click.option("--replicas", required=True, type=click.IntRange(0, 1000))
@click.option("-n", "--namespace", default="default", show_default=True)
@_lab_option
def scale_command(resource: str, replicas: int, namespace: str, lab_opt: str | None) -> None:
    """Scale a Deployment, ReplicaSet, StatefulSet or ReplicationController
    (e.g. rc/web --replicas 2)."""
    require_root("scale")

    def action() -> None:
        if "/" not in resource:
            raise LabUsageError(f"expected KIND/NAME such as deployment/web, got {resource!r}")
        kind_name, name = resource.split("/", 1)
        kind = kind_named(kind_name)
        if kind not in SCALABLE:
            raise LabUsageError(f"{kind} cannot be scaled; scalable: {', '.join(sorted(SCALABLE))}")
        click.echo(LiveLab(resolve_lab(lab_opt)).scale(kind, namespace, name, replicas))

    run(action)


@click.command("create")
@click.argument("kind", type=click.Choice(["job"]))
@click.argument("name")
@click.option(
    "--from",
    "source",
    required=True,
    help="The CronJob whose jobTemplate the Job is made from: cronjob/NAME.",
)
@click.option("-n", "--namespace", default="default", show_default=True)
@_lab_option
def create_command(kind: str, name: str, source: str, namespace: str, lab_opt: str | None) -> None:
    """Create a Job from a CronJob now: netemu create job NAME --from=cronjob/CJ."""
    require_root("create")

    def action() -> None:
        kind_name, _, cronjob = source.partition("/")
        if kind_name not in ("cronjob", "cronjobs", "cj", "cronjob.batch") or not cronjob:
            raise LabUsageError(
                f"--from: expected cronjob/NAME, got {source!r} (only a CronJob can be the source)"
            )
        click.echo(LiveLab(resolve_lab(lab_opt)).create_job(namespace, name, cronjob))

    run(action)


@click.command("logs")
@click.argument("pod")
@click.option("-c", "--container", help="Container (default: the pod's first).")
@click.option(
    "-p", "--previous", is_flag=True, help="The container's instance before its last restart."
)
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("-n", "--namespace", default="default", show_default=True)
@_lab_option
def logs_command(
    pod: str,
    container: str | None,
    previous: bool,
    tail: int | None,
    namespace: str,
    lab_opt: str | None,
) -> None:
    """Print a container's log: its command's stdout and stderr, or the
    built-in test server's access log (POD or NAMESPACE/POD)."""
    require_root("logs")

    def action() -> None:
        text = LiveLab(resolve_lab(lab_opt)).logs(
            pod, container, namespace=namespace, previous=previous, tail=tail
        )
        click.echo(text, nl=False)

    run(action)


@click.command("rules")
@click.argument("node")
@click.option(
    "--counters",
    is_flag=True,
    help="Packet and byte counters ([pkts:bytes], as iptables-save -c).",
)
@_lab_option
def rules_command(node: str, counters: bool, lab_opt: str | None) -> None:
    """Show a node's live iptables rules (iptables-save format).

    In kube-proxy's nftables mode, its `kube-proxy` table follows (as `nft
    list table` prints it)."""
    require_root("rules")

    def action() -> None:
        from netemu.kernel.counters import read_counters
        from netemu.kernel.iptables import KernelIptables
        from netemu.kernel.nftables import KernelNftables

        live = LiveLab(resolve_lab(lab_opt))
        netns_name, backend = live.node_netns(node)
        text = (
            read_counters(netns_name, backend)
            if counters
            else KernelIptables(netns_name, backend).save()
        )
        click.echo(text, nl=False)
        if live.info().get("proxyMode") == "nftables":
            nft = KernelNftables(netns_name)
            for family in ("ip", "ip6"):
                if nft.has_table(family, "kube-proxy"):
                    click.echo(nft.list_table(family, "kube-proxy"), nl=False)

    run(action)


@click.command("labs")
def labs_command() -> None:
    """List the labs that are up."""
    require_root("labs")
    for name in running_labs():
        try:
            progress = LiveLab(name).status()
            state = "ready" if progress["ready"] else progress["stage"]
        except SupervisorNotAnswering:
            state = f"supervisor not answering (netemu down {name} takes it down)"
        except LabError:
            state = "supervisor gone (netemu down cleans up)"
        click.echo(f"{name}\t{state}")
