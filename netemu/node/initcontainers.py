"""Init containers in a live lab: the kubelet runs a pod's init containers
one after the other, each to completion, before its app containers start
(pkg/kubelet/kuberuntime, computeInitContainerActions).

- An init container that exits 0 is done; the next one starts.
- One that exits non-zero is started again with the crash-loop back-off
  (the first restart at once, then 10 s doubling to 300 s; netemu.node.
  probes' ContainerLife) when the pod's restartPolicy is Always or
  OnFailure; with Never the pod fails (phase Failed).
- An init container with `restartPolicy: Always` is a sidecar (1.29+): it
  is started, the next init container follows at once, and it runs on
  beside the app containers.
- An init container without a command has no image to run here: it
  completes at once (one notice in the supervisor log).

While this goes on the pod is Pending: Initialized, ContainersReady and
Ready are False, each app container waits with reason PodInitializing,
and initContainerStatuses say where each init container is, which
`get pods` shows as Init:N/M, Init:Error or Init:CrashLoopBackOff.

`pod_status` is pure; `run_init` runs on a thread of its own per pod and
acts only through the callables it is given.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from netemu.api.core import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    PodCondition,
    PodStatus,
)
from netemu.controlplane.podstatus import container_id, image_id, waiting_statuses
from netemu.net.plan import ContainerPlan
from netemu.node.probes import ContainerLife, Exit, RestartPolicy

# How often a waiting init sequence looks whether it was called off.
POLL = 0.1


def _time(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _terminated(last: Exit) -> ContainerStateTerminated:
    return ContainerStateTerminated(
        exit_code=last.exit_code,
        reason=last.reason,
        started_at=_time(last.started_at),
        finished_at=_time(last.finished_at),
    )


def init_status(pod: Pod, name: str, life: ContainerLife | None, sidecar: bool) -> ContainerStatus:
    """One init container's status: waiting (PodInitializing) before it
    first starts, then running, terminated, or waiting out its back-off."""
    image = next((c.image for c in pod.spec.init_containers if c.name == name), None)
    state: ContainerState
    last = None
    ready = False
    if life is None:
        state = ContainerState(waiting=ContainerStateWaiting(reason="PodInitializing"))
    elif life.running:
        assert life.started_wall is not None
        state = ContainerState(running=ContainerStateRunning(started_at=_time(life.started_wall)))
        ready = sidecar
    elif life.waiting:
        meta = pod.metadata
        state = ContainerState(
            waiting=ContainerStateWaiting(
                reason="CrashLoopBackOff",
                message=(
                    f"back-off {life.backoff_delay():.0f}s restarting failed container={name} "
                    f"pod={meta.name}_{meta.namespace}({meta.uid})"
                ),
            )
        )
    else:
        assert life.last_exit is not None
        state = ContainerState(terminated=_terminated(life.last_exit))
        # An init container that completed counts as ready (kubelet_pods.go).
        ready = life.last_exit.exit_code == 0
    if life is not None and life.last_exit is not None and state.terminated is None:
        last = ContainerState(terminated=_terminated(life.last_exit))
    started = life is not None and life.running
    count = life.restart_count if life is not None else 0
    return ContainerStatus(
        name=name,
        state=state,
        last_state=last,
        ready=ready,
        restart_count=count,
        image=image or "",
        image_id=image_id(image) if life is not None else "",
        container_id=container_id(pod, name, count) if life is not None else None,
        started=started,
    )


def pod_status(
    pod: Pod,
    plans: Sequence[ContainerPlan],
    lives: Sequence[ContainerLife | None],
    failed: bool,
) -> PodStatus:
    """The pod's status while its init containers run (or after one failed
    for good, `failed`): phase, conditions, initContainerStatuses, and app
    containers waiting for them (generate.go's conditions)."""
    inits = [
        init_status(pod, plan.name, life, plan.sidecar)
        for plan, life in zip(plans, lives, strict=True)
    ]
    incomplete = [
        s.name
        for s, plan in zip(inits, plans, strict=True)
        if not (s.ready if plan.sidecar else s.state and s.state.terminated and s.ready)
    ]
    apps = [c.name for c in pod.spec.containers]
    reason = "PodInitializing"
    conditions = {
        "Initialized": PodCondition(
            type="Initialized",
            status="False",
            reason="ContainersNotInitialized",
            message=f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
        "Ready": PodCondition(
            type="Ready",
            status="False",
            reason="ContainersNotReady",
            message=f"containers with unready status: [{' '.join(apps)}]",
        ),
        "ContainersReady": PodCondition(
            type="ContainersReady",
            status="False",
            reason="ContainersNotReady",
            message=f"containers with unready status: [{' '.join(apps)}]",
        ),
    }
    kept = pod.status.conditions
    merged = [_moved(c, conditions[c.type]) if c.type in conditions else c for c in kept]
    merged.extend(c for kind, c in conditions.items() if not any(k.type == kind for k in kept))
    waiting = waiting_statuses(pod.spec.containers, reason)
    return pod.status.model_copy(
        update={
            "phase": "Failed" if failed else "Pending",
            "conditions": merged,
            "init_container_statuses": [s.to_dict() for s in inits],
            "container_statuses": waiting,
        }
    )


def initialized_status(
    pod: Pod,
    plans: Sequence[ContainerPlan],
    lives: Sequence[ContainerLife | None],
    wall: float,
    gated: bool,
) -> PodStatus:
    """The pod's status once its init containers are done and its app
    containers run: Running, Initialized; Ready unless a readiness or
    startup probe must pass first (the prober takes over from here)."""
    inits = [
        init_status(pod, plan.name, life, plan.sidecar)
        for plan, life in zip(plans, lives, strict=True)
    ]
    ready: Literal["True", "False"] = "False" if gated else "True"
    now = _time(wall)
    fresh = {
        "Initialized": PodCondition(type="Initialized", status="True", last_transition_time=now),
        "Ready": PodCondition(type="Ready", status=ready, last_transition_time=now),
        "ContainersReady": PodCondition(
            type="ContainersReady", status=ready, last_transition_time=now
        ),
    }
    if gated:
        apps = " ".join(c.name for c in pod.spec.containers)
        for kind in ("Ready", "ContainersReady"):
            fresh[kind] = fresh[kind].model_copy(
                update={
                    "reason": "ContainersNotReady",
                    "message": f"containers with unready status: [{apps}]",
                }
            )
    merged = [_moved(c, fresh[c.type]) if c.type in fresh else c for c in pod.status.conditions]
    merged.extend(
        c for kind, c in fresh.items() if not any(k.type == kind for k in pod.status.conditions)
    )
    running = [
        ContainerStatus(
            name=c.name,
            state=ContainerState(running=ContainerStateRunning(started_at=now)),
            ready=not gated,
            restart_count=0,
            image=c.image or "",
            image_id=image_id(c.image),
            container_id=container_id(pod, c.name, 0),
            started=c.startup_probe is None,
        )
        for c in pod.spec.containers
    ]
    return pod.status.model_copy(
        update={
            "phase": "Running",
            "conditions": merged,
            "init_container_statuses": [s.to_dict() for s in inits],
            "container_statuses": running,
        }
    )


def _moved(old: PodCondition, new: PodCondition) -> PodCondition:
    """`new`, keeping `old`'s lastTransitionTime unless its status changed."""
    if old.status == new.status:
        return new.model_copy(update={"last_transition_time": old.last_transition_time})
    return new


class Started(Protocol):
    """An init container's process as started (subprocess.Popen)."""

    def wait(self, timeout: float | None = None) -> int: ...


def run_init(
    key: str,
    plans: Sequence[ContainerPlan],
    restart_policy: RestartPolicy,
    start: Callable[[ContainerPlan], Started | None],
    exit_code: Callable[[int], int],
    publish: Callable[[Sequence[ContainerLife | None], bool], None],
    done: Callable[[Sequence[ContainerLife | None]], None],
    cancel: threading.Event,
    log: Callable[[str], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> None:
    """Run the init containers of pod `key` in order (see the module).
    `start` starts one (None: it has no command, and is done at once);
    `publish(lives, failed)` writes the pod's status; `done(lives)` starts
    the app containers. Returns early once `cancel` is set (the pod is
    going)."""
    lives: list[ContainerLife | None] = [None] * len(plans)
    # An init container is started again only after a failure, whichever
    # of Always and OnFailure the pod has.
    policy: RestartPolicy = "Never" if restart_policy == "Never" else "OnFailure"
    for index, plan in enumerate(plans):
        where = f"{key}/{plan.name}"
        while True:
            if cancel.is_set():
                return
            process = start(plan)
            life = lives[index]
            if life is None:
                life = lives[index] = ContainerLife(plan.name, {}, clock(), wall(), policy)
            else:
                life.start(clock(), wall())
            if process is None:
                log(f"{where}: init container has no command to run here: completed at once")
                code = 0
            else:
                publish(lives, False)
                if plan.sidecar:
                    log(f"{where}: sidecar container started")
                    break
                waited = _wait(process, cancel, exit_code)
                if waited is None:
                    return
                code = waited
            life.exited(clock(), wall(), code)
            if code == 0:
                log(f"{where}: init container completed")
                publish(lives, False)
                break
            log(f"{where}: init container exited with {code}")
            if restart_policy == "Never":
                publish(lives, True)
                return
            # Restarted with the crash-loop back-off: at once the first
            # time, later after a wait shown as CrashLoopBackOff.
            if not life.restart_due(clock()):
                log(f"{where}: back-off {life.backoff_delay():.0f}s restarting failed container")
                publish(lives, False)
                while not life.restart_due(clock()):
                    left = (life.restart_at or 0.0) - clock()
                    if cancel.wait(min(max(left, 0.0), POLL * 5) or POLL):
                        return
    if not cancel.is_set():
        done(lives)


def _wait(process: Started, cancel: threading.Event, exit_code: Callable[[int], int]) -> int | None:
    """The exit code of `process`, or None once `cancel` is set."""
    while not cancel.is_set():
        try:
            return exit_code(process.wait(timeout=POLL))
        except subprocess.TimeoutExpired:
            continue
    return None
