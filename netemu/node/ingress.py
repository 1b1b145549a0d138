"""The ingress controller of a live lab: Debian's nginx in every running
pod whose template asks for it (`netemu/builtin-server: ingress`, the
`ingress-nginx/ingress-nginx-controller` addon's pods), configured from the
cluster state as ingress-nginx configures its nginx.

`sync` runs in the supervisor's reconcile, after the rules and DNS follow a
change: it renders nginx.conf for the nginx class (netemu.controlplane.
ingressconf), and where the text differs from what a pod's nginx runs, has
it checked (`nginx -t`) and applied (a graceful reload, or the start of a
new pod's nginx). A configuration nginx refuses is reported in the
supervisor's log and not applied: the previous one keeps serving. Pods that
are gone get their nginx stopped.

Each nginx's prefix is /run/netemu/<lab>/ingress/<namespace>/<pod>/ (its
configuration, certificates, logs, pid and temporary files); its master
runs as root in the pod's network namespace to bind 80 and 443 there, its
workers as nginx's unprivileged default user. Its pid goes to the lab's
journal, so `netemu down` stops it even after a crash.

Owns: the nginx processes and prefix directories it starts. Must not touch:
anything else (rules, pods' other containers, the store).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netemu.controlplane.addons import BUILTIN_INGRESS, INGRESS_CLASS
from netemu.controlplane.ingressconf import class_ingresses, render, tls_pairs
from netemu.controlplane.state import ClusterState
from netemu.kernel.journal import Journal, run_dir
from netemu.kernel.nginx import Nginx, NginxConfigError
from netemu.net.plan import PodPlan

INGRESS_DIR = "ingress"


@dataclass
class _Running:
    nginx: Nginx
    conf: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


def is_ingress_pod(plan: PodPlan) -> bool:
    return any(c.builtin == BUILTIN_INGRESS and not c.argv for c in plan.containers)


class IngressController:
    def __init__(self, lab_name: str, journal: Journal, log: Callable[[str], None] = print) -> None:
        self.root = run_dir(lab_name) / INGRESS_DIR
        self.journal = journal
        self.log = log
        self.running: dict[str, _Running] = {}

    def prefix(self, plan: PodPlan) -> Path:
        return self.root / plan.namespace / plan.name

    def sync(self, state: ClusterState, plans: Sequence[PodPlan]) -> None:
        """Every ingress pod in `plans` (the running pods of every node)
        serves the configuration `state` renders."""
        pods = {p.key: p for p in plans if is_ingress_pod(p)}
        for key in sorted(set(self.running) - set(pods)):
            self.running.pop(key).nginx.stop()
        if not pods:
            return
        rendered = render(
            class_ingresses(state.ingresses, state.ingress_classes, INGRESS_CLASS),
            state.services,
            state.endpoint_slices,
            tls_pairs(state.secrets),
        )
        for key, plan in sorted(pods.items()):
            running = self.running.get(key)
            if running is None:
                running = _Running(Nginx(self.prefix(plan), plan.netns))
                self.running[key] = running
            if running.conf == rendered.conf and running.nginx.running():
                continue
            if rendered.warnings != running.warnings:
                for warning in rendered.warnings:
                    self.log(f"ingress-nginx {key}: {warning}")
                running.warnings = rendered.warnings
            started = running.nginx.running()
            try:
                running.nginx.apply(rendered.conf, rendered.files)
            except NginxConfigError as exc:
                self.log(f"ingress-nginx {key}: configuration not applied: {exc}")
                continue
            running.conf = rendered.conf
            if not started and running.nginx.process is not None:
                self.journal.process(running.nginx.process.pid)
                self.log(f"ingress-nginx {key}: nginx started")
            else:
                self.log(f"ingress-nginx {key}: nginx reloaded")

    def close(self) -> None:
        for key in sorted(self.running):
            self.running.pop(key).nginx.stop()
