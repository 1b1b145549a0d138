"""How the kubelet stops a pod that is being deleted (graceful deletion):
the side of pkg/kubelet/kuberuntime's killPod that acts.

A pod's deletion (netemu.controlplane.store, with `graceful_pods`) leaves
it in place with `deletionTimestamp` and `deletionGracePeriodSeconds`. Its
kubelet then stops every container at once, each as killContainer does:

1. the container's preStop hook, if it has one (`exec`: the command in the
   pod's namespace, as an exec probe runs; `httpGet`: a request from the
   node to the pod, as the kubelet sends it; `sleep`: a pause), given at
   most the grace period;
2. SIGTERM (a built-in server stops accepting and drops its connections,
   as an app does on SIGTERM);
3. SIGKILL once the rest of the grace period is over, but never sooner
   than 2 s after SIGTERM (minimumGracePeriodInSeconds).

Then the pod is removed (CNI DEL) and its object deleted. Meanwhile the
pod is still in its Services' EndpointSlices, as a terminating endpoint
(ready=false, serving=its readiness, terminating=true), so kube-proxy's
terminating-endpoint fallback may send it traffic until it stops.

`pre_stop_of` is pure; `terminate` runs on a thread of its own, one per
pod, so a long grace period delays nothing else.

Owns: the termination threads. Must not touch: the store, but through the
`finish` callback the kubelet gets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from netemu.api.core import Container
from netemu.kernel import kubeprobe
from netemu.node.probes import ExecHandler, HttpHandler

# killContainer never gives a container less than this after SIGTERM.
MINIMUM_GRACE = 2.0


@dataclass(frozen=True)
class SleepHandler:
    """The `sleep` lifecycle handler (PodLifecycleSleepAction)."""

    seconds: int


HookHandler = ExecHandler | HttpHandler | SleepHandler


def pre_stop_of(container: Container) -> HookHandler | None:
    """A container's preStop handler, None when it has none. The API server
    accepts exactly one of exec, httpGet, sleep (tcpSocket only for old
    clients, and the kubelet does not run it): anything else is None."""
    lifecycle: Any = container.lifecycle
    hook = lifecycle.get("preStop") if isinstance(lifecycle, dict) else None
    if not isinstance(hook, dict):
        return None
    exec_ = hook.get("exec")
    if isinstance(exec_, dict) and isinstance(exec_.get("command"), list):
        return ExecHandler(tuple(str(arg) for arg in exec_["command"]))
    get = hook.get("httpGet")
    if isinstance(get, dict) and isinstance(get.get("port"), int | str):
        scheme: Literal["HTTP", "HTTPS"] = "HTTPS" if get.get("scheme") == "HTTPS" else "HTTP"
        headers = tuple(
            (str(h.get("name", "")), str(h.get("value", "")))
            for h in get.get("httpHeaders") or []
            if isinstance(h, dict)
        )
        return HttpHandler(
            port=get["port"],
            path=str(get.get("path") or "/"),
            host=str(get["host"]) if get.get("host") else None,
            scheme=scheme,
            headers=headers,
        )
    sleep = hook.get("sleep")
    if isinstance(sleep, dict) and isinstance(sleep.get("seconds"), int):
        return SleepHandler(max(int(sleep["seconds"]), 0))
    return None


@dataclass(frozen=True)
class Stoppable:
    """One container of a pod being stopped."""

    name: str
    hook: HookHandler | None
    # The hook as an action to run (None for sleep or no hook), or why it
    # cannot run (a named port the container does not have).
    action: kubeprobe.Action | str | None
    # Sends SIGTERM, waits up to the given seconds, then SIGKILLs.
    stop: Callable[[float], None]


def terminate(
    key: str,
    containers: Sequence[Stoppable],
    grace: float,
    finish: Callable[[], None],
    log: Callable[[str], None],
    *,
    run: Callable[[kubeprobe.Action, float], kubeprobe.Outcome] = kubeprobe.run,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Stop the containers of pod `key` within `grace` seconds, each on a
    thread of its own (as killContainersWithSyncResult), then `finish`."""
    deadline = clock() + grace

    def one(container: Stoppable) -> None:
        where = f"{key}/{container.name}"
        if container.hook is not None:
            budget = max(deadline - clock(), 0.0)
            if isinstance(container.hook, SleepHandler):
                log(f"{where}: preStop hook: sleep {container.hook.seconds}s")
                sleep(min(float(container.hook.seconds), budget))
            elif isinstance(container.action, str):
                log(f"{where}: preStop hook failed: {container.action}")
            elif container.action is not None:
                log(f"{where}: preStop hook: {_describe(container.hook)}")
                outcome = run(container.action, budget)
                if outcome.result != "success":
                    # A failed hook is an event; the container is stopped anyway.
                    log(f"{where}: preStop hook failed: {outcome.output.strip()}")
        remaining = max(deadline - clock(), MINIMUM_GRACE)
        log(f"{where}: stopping container (SIGTERM, SIGKILL after {remaining:.0f}s)")
        container.stop(remaining)

    threads = [
        threading.Thread(target=one, args=(c,), name=f"kill {key}/{c.name}", daemon=True)
        for c in containers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finish()


def _describe(hook: HookHandler) -> str:
    if isinstance(hook, ExecHandler):
        return f"exec {list(hook.command)}"
    if isinstance(hook, HttpHandler):
        return f"http-get {hook.scheme.lower()}://{hook.host or ''}:{hook.port}{hook.path}"
    return f"sleep {hook.seconds}s"
