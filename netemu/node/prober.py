"""The kubelet's prober and container restarts in a live lab: the side of
pkg/kubelet/prober and of kuberuntime's restarts that acts.

A `ProbeManager` per node follows its kubelet's running pods that declare
a probe or have a container that could not start (other pods are left as
the control plane reports them), with
a `ContainerLife` per container (netemu.node.probes, the pure state
machine). It turns due probes into actions (netemu.kernel.kubeprobe: HTTP
GET and TCP connect from the node's namespace to the pod IP, exec in the
pod's namespace), kills and restarts containers through the kubelet, and
writes the pod's status through the control plane's client: Ready and
ContainersReady conditions and containerStatuses (ready, started,
restartCount, state, lastState), as the kubelet's status manager does.

The `ProbeLoop` (one daemon thread per lab supervisor, plus a small thread
pool that runs the probes themselves, so a slow probe delays nobody) drives
every node's manager: under the supervisor's lock it records finished
probes, restarts what is due, writes changed statuses and, when a pod's
readiness changed, runs the supervisor's reconcile, so the EndpointSlices
and every node's rules follow before the next probe; then it hands the due
probes to the pool and sleeps until the next one is due or a probe ends.

Supervisor-log lines (one per change, as the kubelet's events): a probe's
result changing, a container killed, started again or waiting out its
back-off.

An exec probe whose program does not exist on this machine (the image it
would come from is not here; netemu.kernel.programs decides, as for a
container's command) is not run: it counts as passing, with one notice per
pod in the supervisor's log, so a stand-in container (netemu.net.standin)
passes the app's own exec probes.

Owns: its thread and pool. Must not touch: anything but through the kubelet
(container kill/start) and the client (pod status).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from netemu.api.core import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    PodCondition,
)
from netemu.controlplane.client import Client
from netemu.controlplane.errors import Conflict, NotFound
from netemu.controlplane.podstatus import container_id, image_id
from netemu.kernel import kubeprobe
from netemu.kernel.programs import program_problem
from netemu.kernel.sandbox import SandboxSpec
from netemu.net.plan import NodePlan, PodPlan
from netemu.net.standin import env_path
from netemu.node.envvars import ConfigError
from netemu.node.probes import (
    EXIT_SIGKILL,
    ContainerLife,
    ExecHandler,
    Exit,
    GrpcHandler,
    HttpHandler,
    Kind,
    ProbeSpec,
    RestartPolicy,
    Result,
    probes_of,
)

# The longest the loop sleeps without a reason to wake (new pods are
# announced by `wake`, so this only bounds a missed wake-up).
IDLE_WAKE = 0.5
RESYNC_PERIOD = 1.0
PROBE_THREADS = 16
_OUTCOMES = {"success": Result.SUCCESS, "failure": Result.FAILURE, "error": Result.UNKNOWN}


class _Running(Protocol):
    @property
    def plan(self) -> PodPlan: ...

    @property
    def initializing(self) -> bool:
        """Its init containers run; its app containers have not started."""
        ...

    @property
    def failed(self) -> Mapping[str, int]:
        """Containers that could not start (their exit codes)."""
        ...

    @property
    def config_errors(self) -> Mapping[str, tuple[str, str]]:
        """Containers that cannot be made: (waiting reason, kubelet's message)."""
        ...

    @property
    def sandboxes(self) -> Mapping[str, SandboxSpec]:
        """Each container's sandbox, which its exec probes run in."""
        ...


class KubeletPort(Protocol):
    """What the prober needs of a node's kubelet (netemu.node.kubelet.Kubelet)."""

    @property
    def client(self) -> Client: ...

    @property
    def node(self) -> NodePlan: ...

    @property
    def running(self) -> Mapping[str, _Running]: ...

    def container_exit(self, key: str, name: str) -> int | None: ...

    def kill_container(self, key: str, name: str) -> int: ...

    def start_container(self, key: str, name: str) -> None: ...

    def host_network_etc(self, plan: PodPlan) -> Path | None: ...


# How often a container held by CreateContainerConfigError is tried again
# (the kubelet tries at its next sync of the pod).
CONFIG_RETRY = 1.0


def timestamp(wall: float) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def runs_to_completion(pod: Pod) -> bool:
    """restartPolicy Never or OnFailure: the pod may end Succeeded or Failed,
    so its containers' exits are followed even without probes."""
    return pod.spec.restart_policy in ("Never", "OnFailure")


def pod_phase(lives: Sequence[ContainerLife]) -> Literal["Succeeded", "Failed"] | None:
    """The kubelet's getPhase once no container runs or will run again: Succeeded
    when every container exited 0, Failed otherwise; None while one runs or
    waits to restart."""
    if not lives or any(life.running or life.waiting for life in lives):
        return None
    codes = [life.last_exit.exit_code if life.last_exit else 0 for life in lives]
    return "Succeeded" if all(code == 0 for code in codes) else "Failed"


def has_probes(pod: Pod) -> bool:
    return any(
        c.liveness_probe or c.readiness_probe or c.startup_probe for c in pod.spec.containers
    )


@dataclass(frozen=True)
class _MissingProgram:
    """An exec probe whose program cannot run here (why)."""

    problem: str


@dataclass(frozen=True)
class ProbeTask:
    """One probe to run, and whose result it is."""

    manager: ProbeManager
    pod: str
    token: int  # which tracking of the pod (a pod re-created under its name is another)
    container: str
    instance: int
    kind: Kind
    action: kubeprobe.Action
    timeout: float


@dataclass
class _Tracked:
    token: int
    running: _Running
    pod: Pod
    lives: dict[str, ContainerLife]
    specs: dict[str, Container]
    written: list[ContainerStatus] | None = None
    dirty: bool = True  # something changed that its status may show
    results: dict[tuple[str, Kind], Result] = field(default_factory=dict)
    # The pod's notice of an exec probe passed without running was logged.
    exec_noticed: bool = False

    @property
    def key(self) -> str:
        return self.running.plan.key


class ProbeManager:
    """The prober of one node's kubelet. Not thread-safe: the loop calls it
    under the supervisor's lock."""

    def __init__(self, kubelet: KubeletPort, log: Callable[[str], None] = print) -> None:
        self.kubelet = kubelet
        self.log = log
        self.pods: dict[str, _Tracked] = {}
        self._tokens = itertools.count(1)

    # -- following the kubelet's pods ---------------------------------------------

    def sync(self, now: float, wall: float) -> None:
        """Track the running pods with probes that are new, forget the gone."""
        running = self.kubelet.running
        listed = self.kubelet.client.list(Pod)
        pods = {f"{p.metadata.namespace or 'default'}/{p.metadata.name}": p for p in listed.items}
        for key in [k for k, t in self.pods.items() if running.get(k) is not t.running]:
            del self.pods[key]
        for key, run in running.items():
            pod = pods.get(key)
            if pod is None or run.initializing:
                # Its app containers start once its init containers are done.
                continue
            tracked = self.pods.get(key)
            if tracked is not None and tracked.pod.metadata.uid == pod.metadata.uid:
                tracked.pod = pod  # a deletionTimestamp may have come
                continue
            self.pods.pop(key, None)  # a pod re-created under its name is another
            if has_probes(pod) or run.failed or runs_to_completion(pod) or run.config_errors:
                self.pods[key] = self._track(run, pod, now, wall)

    def _track(self, running: _Running, pod: Pod, now: float, wall: float) -> _Tracked:
        policy = pod.spec.restart_policy
        restart: RestartPolicy = policy if policy in ("OnFailure", "Never") else "Always"
        lives, specs = {}, {}
        for c in pod.spec.containers:
            probes = probes_of(c.liveness_probe, c.readiness_probe, c.startup_probe)
            lives[c.name] = ContainerLife(c.name, probes, now, wall, restart)
            specs[c.name] = c
            code = running.failed.get(c.name)
            if code is not None:
                # It failed as it started: restarted with back-off from now.
                self.log(f"{running.plan.key}/{c.name}: container could not start (exit {code})")
                lives[c.name].exited(now, wall, code)
            error = running.config_errors.get(c.name)
            if error is not None:
                self.log(f"{running.plan.key}/{c.name}: {error[0]}: {error[1]}")
                lives[c.name].held(now, CONFIG_RETRY)
        return _Tracked(next(self._tokens), running, pod, lives, specs)

    # -- probes -------------------------------------------------------------------

    def due(self, now: float) -> list[ProbeTask]:
        tasks = []
        for tracked in self.pods.values():
            terminating = tracked.pod.metadata.deletion_timestamp is not None
            for name, life in tracked.lives.items():
                for kind in life.due(now, terminating):
                    spec = life.workers[kind].spec
                    action = self._action(tracked, tracked.specs[name], spec)
                    if isinstance(action, _MissingProgram):
                        self._pass_missing(tracked, name, life, kind, action.problem)
                        continue
                    if isinstance(action, str):
                        # The kubelet throws a probe that errs away (worker.go).
                        life.record(kind, life.instance, Result.UNKNOWN)
                        if tracked.results.get((name, kind)) != Result.UNKNOWN:
                            self._note(tracked, name, kind, Result.UNKNOWN, action)
                        continue
                    task = ProbeTask(
                        manager=self,
                        pod=tracked.key,
                        token=tracked.token,
                        container=name,
                        instance=life.instance,
                        kind=kind,
                        action=action,
                        timeout=float(spec.timeout),
                    )
                    tasks.append(task)
        return tasks

    def _pass_missing(
        self,
        tracked: _Tracked,
        name: str,
        life: ContainerLife,
        kind: Kind,
        problem: str,
    ) -> None:
        """An exec probe whose program is not on this machine: a success."""
        if not tracked.exec_noticed:
            tracked.exec_noticed = True
            self.log(
                f"{tracked.key}/{name}: exec probe not run, counted as passing: {problem} "
                "(the image it comes from is not on this machine; notice given once per pod)"
            )
        life.record(kind, life.instance, Result.SUCCESS)
        tracked.dirty = True
        worker = life.workers[kind]
        if worker.result != tracked.results.get((name, kind)):
            self._note(tracked, name, kind, worker.result, "")

    def _action(
        self, tracked: _Tracked, container: Container, spec: ProbeSpec
    ) -> kubeprobe.Action | str | _MissingProgram:
        """The probe as an action, or why it cannot be sent."""
        plan = tracked.running.plan
        handler = spec.handler
        if isinstance(handler, ExecHandler):
            env = next((c.env for c in plan.containers if c.name == container.name), ())
            program = handler.command[0] if handler.command else ""
            problem = program_problem(program, env_path(env), container.working_dir or "/")
            if problem is not None:
                return _MissingProgram(f"{program!r}: {problem}")
            # The container's sandbox: its user, environment and files
            # (a hostNetwork pod's own /etc files among its mounts).
            sandbox = tracked.running.sandboxes.get(container.name)
            if sandbox is None:
                return f"container {container.name} has not started"
            return kubeprobe.Exec(plan.netns, handler.command, sandbox)
        port = handler.port
        if isinstance(port, str):
            # probe.ResolveContainerPort: a named port of the probed container.
            found = [p.container_port for p in container.ports if p.name == port]
            if not found:
                return f"couldn't find port: {port} in container {container.name}"
            port = found[0]
        # The kubelet probes status.podIP, the primary family's address
        # (pkg/kubelet/prober/prober.go: runProbe takes status.PodIP).
        host = getattr(handler, "host", None) or plan.status_ip
        node_netns = self.kubelet.node.netns
        if isinstance(handler, HttpHandler):
            return kubeprobe.HttpGet(
                node_netns, host, port, handler.path, handler.scheme, handler.headers
            )
        if isinstance(handler, GrpcHandler):
            return kubeprobe.GrpcCheck(node_netns, host, port, handler.service or "")
        return kubeprobe.TcpConnect(node_netns, host, port)

    def record(self, task: ProbeTask, outcome: kubeprobe.Outcome, now: float, wall: float) -> None:
        tracked = self.pods.get(task.pod)
        if tracked is None or tracked.token != task.token:
            return
        life = tracked.lives[task.container]
        result = _OUTCOMES[outcome.result]
        kill = life.record(task.kind, task.instance, result)
        tracked.dirty = True
        worker = life.workers[task.kind]
        if worker.result != tracked.results.get((task.container, task.kind)):
            self._note(tracked, task.container, task.kind, worker.result, outcome.output)
        if kill is not None:
            self.log(f"{tracked.key}: {kill.message}")
            try:
                code = self.kubelet.kill_container(tracked.key, life.name)
            except Exception as exc:  # counted as killed: it is started again anyway
                self.log(f"{tracked.key}/{life.name}: could not kill the container: {exc}")
                code = EXIT_SIGKILL
            life.killed(now, wall, code, kill.message)
            self._waiting_note(tracked, life, now)

    def _note(
        self, tracked: _Tracked, container: str, kind: Kind, result: Result, why: str
    ) -> None:
        tracked.results[(container, kind)] = result
        what = f"{tracked.key}/{container}: {kind} probe"
        if result == Result.SUCCESS:
            self.log(f"{what} succeeded")
        elif result == Result.FAILURE:
            self.log(f"{what} failed: {why.strip()}")
        else:
            self.log(f"{what} errored: {why.strip()}")

    def _waiting_note(self, tracked: _Tracked, life: ContainerLife, now: float) -> None:
        if life.waiting and life.restart_at is not None and life.restart_at > now:
            self.log(
                f"{tracked.key}/{life.name}: back-off {life.backoff_delay():.0f}s restarting "
                "failed container (CrashLoopBackOff)"
            )

    # -- restarts -----------------------------------------------------------------

    def restarts(self, now: float, wall: float) -> None:
        """Containers that ended by themselves, and restarts that are due."""
        for tracked in self.pods.values():
            if tracked.pod.metadata.deletion_timestamp is not None:
                # Being stopped (netemu.node.termination): nothing restarts.
                continue
            for name, life in tracked.lives.items():
                if life.running:
                    code = self.kubelet.container_exit(tracked.key, name)
                    if code is not None:
                        tracked.dirty = True
                        self.log(f"{tracked.key}/{name}: container exited with {code}")
                        life.exited(now, wall, code)
                        self._waiting_note(tracked, life, now)
                if life.restart_due(now):
                    tracked.dirty = True
                    try:
                        self.kubelet.start_container(tracked.key, name)
                    except ConfigError:
                        # Still CreateContainerConfigError: tried again later.
                        life.held(now, CONFIG_RETRY)
                        continue
                    except Exception as exc:  # e.g. its port cannot be bound again
                        self.log(f"{tracked.key}/{name}: could not start the container: {exc}")
                        life.start(now, wall)
                        life.exited(now, wall, 128)
                        continue
                    life.start(now, wall)
                    self.log(
                        f"{tracked.key}/{name}: container started again "
                        f"(restartCount {life.restart_count})"
                    )

    # -- status -------------------------------------------------------------------

    def write_statuses(self, wall: float) -> bool:
        """Write the status of every pod whose containers changed; True if a
        pod's Ready condition changed (its endpoints must follow)."""
        changed = False
        for tracked in self.pods.values():
            if not tracked.dirty:
                continue
            tracked.dirty = False
            statuses = [
                self._container_status(tracked, name, life) for name, life in tracked.lives.items()
            ]
            if statuses == tracked.written:
                continue
            try:
                changed |= self._write(tracked, statuses, wall)
            except (NotFound, Conflict):
                # Gone (the next sync forgets it), or raced: the next pass retries.
                tracked.dirty = True
                continue
            tracked.written = statuses
            for life in tracked.lives.values():
                life.status_synced()
        return changed

    def _write(self, tracked: _Tracked, statuses: list[ContainerStatus], wall: float) -> bool:
        namespace, _, name = tracked.key.partition("/")
        pod = self.kubelet.client.get(Pod, namespace, name)
        if pod.metadata.uid != tracked.pod.metadata.uid:
            raise NotFound(f"pod {tracked.key} was replaced")
        unready = [s.name for s in statuses if not s.ready]
        ready: Literal["True", "False"] = "False" if unready else "True"
        was = pod.status.condition("Ready")
        phase = pod_phase(list(tracked.lives.values()))
        conditions = [
            _condition(c, ready, unready, wall, phase)
            if c.type in ("Ready", "ContainersReady")
            else c
            for c in pod.status.conditions
        ]
        for kind in ("Ready", "ContainersReady"):
            if not any(c.type == kind for c in conditions):
                conditions.append(
                    _condition(
                        PodCondition(type=kind, status="Unknown"), ready, unready, wall, phase
                    )
                )
        update: dict[str, Any] = {"conditions": conditions, "container_statuses": statuses}
        if phase is not None:
            update["phase"] = phase
        else:
            # A pod none of whose containers has run yet is Pending (a
            # container held by CreateContainerConfigError), Running once one has.
            never_ran = all(
                s.state is not None and s.state.waiting is not None and s.last_state is None
                for s in statuses
            )
            if never_ran and pod.status.phase == "Running":
                update["phase"] = "Pending"
            elif not never_ran and pod.status.phase == "Pending":
                update["phase"] = "Running"
        status = pod.status.model_copy(update=update)
        self.kubelet.client.update(pod.model_copy(update={"status": status}))
        if was != ready:
            self.log(f"{tracked.key}: Ready={ready}")
        if phase is not None and pod.status.phase != phase:
            self.log(f"{tracked.key}: phase {phase}")
            return True  # its Job counts it; its endpoints go
        return was != ready

    def _container_status(
        self, tracked: _Tracked, name: str, life: ContainerLife
    ) -> ContainerStatus:
        pod = tracked.pod
        state: ContainerState
        config_error = tracked.running.config_errors.get(name)
        if config_error is not None and not life.running:
            reason, message = config_error
            state = ContainerState(waiting=ContainerStateWaiting(reason=reason, message=message))
        elif life.running:
            assert life.started_wall is not None
            state = ContainerState(
                running=ContainerStateRunning(started_at=timestamp(life.started_wall))
            )
        elif life.waiting:
            state = ContainerState(
                waiting=ContainerStateWaiting(
                    reason="CrashLoopBackOff",
                    message=(
                        f"back-off {life.backoff_delay():.0f}s restarting failed container={name} "
                        f"pod={pod.metadata.name}_{pod.metadata.namespace}({pod.metadata.uid})"
                    ),
                )
            )
        else:
            state = ContainerState(terminated=_terminated(life.last_exit))
        last = None
        if life.last_exit is not None and state.terminated is None:
            last = ContainerState(terminated=_terminated(life.last_exit))
        image = tracked.specs[name].image
        return ContainerStatus(
            name=name,
            state=state,
            last_state=last,
            ready=life.ready,
            restart_count=life.restart_count,
            image=image or "",
            image_id=image_id(image),
            container_id=container_id(pod, name, life.restart_count),
            started=life.started,
        )

    def next_event(self) -> float | None:
        times = [
            t
            for tr in self.pods.values()
            for life in tr.lives.values()
            if (t := life.next_event()) is not None
        ]
        return min(times) if times else None


def _terminated(last: Exit | None) -> ContainerStateTerminated:
    if last is None:
        return ContainerStateTerminated(exit_code=0, reason="Completed")
    return ContainerStateTerminated(
        exit_code=last.exit_code,
        reason=last.reason,
        started_at=timestamp(last.started_at),
        finished_at=timestamp(last.finished_at),
    )


def _condition(
    old: PodCondition,
    ready: Literal["True", "False"],
    unready: list[str],
    wall: float,
    phase: str | None = None,
) -> PodCondition:
    """A Ready or ContainersReady condition as the kubelet generates it
    (pkg/kubelet/status/generate.go: reason PodCompleted once the pod has
    Succeeded or Failed); its transition time moves only when its status
    does."""
    reason, message = None, None
    if phase is not None:
        ready, reason = "False", "PodCompleted"
    elif ready == "False":
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
    if (old.status, old.reason, old.message) == (ready, reason, message):
        return old
    moved = old.status != ready
    return PodCondition(
        type=old.type,
        status=ready,
        last_transition_time=timestamp(wall) if moved else old.last_transition_time,
        reason=reason,
        message=message,
    )


class ProbeLoop:
    """Runs every node's prober (see the module)."""

    def __init__(
        self,
        managers: Sequence[ProbeManager],
        lock: Any,
        reconcile: Callable[[], None],
        *,
        run: Callable[[kubeprobe.Action, float], kubeprobe.Outcome] = kubeprobe.run,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
    ) -> None:
        self.managers = list(managers)
        self.lock = lock
        self.reconcile = reconcile
        self.run_probe = run
        self.clock = clock
        self.wall = wall
        self.log = log
        self._done: collections.deque[tuple[ProbeTask, kubeprobe.Outcome]] = collections.deque()
        self._wake = threading.Event()
        self._resync = threading.Event()
        self._resync.set()
        self._synced = 0.0
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="netemu-probe")
        self._thread = threading.Thread(target=self._loop, name="netemu-prober", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the kubelets' pods again now (after a reconcile)."""
        self._resync.set()
        self._wake.set()

    def close(self) -> None:
        """Stop probing. Safe to call with the supervisor's lock held: it does
        not wait for the loop thread, which stops before its next step."""
        self._stop.set()
        self._wake.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                pause = self.step()
            except Exception as exc:  # a bug here must not end probing for good
                self.log(f"prober: {type(exc).__name__}: {exc}")
                pause = IDLE_WAKE
            self._wake.wait(pause)
            self._wake.clear()

    def step(self) -> float:
        """One pass; returns how long to sleep before the next."""
        tasks: list[ProbeTask] = []
        with self.lock:
            if self._stop.is_set():
                return 0.0
            now, wall = self.clock(), self.wall()
            # Pods come and go only in a reconcile, which wakes the loop;
            # the periodic look is a safety net. First, so nothing below
            # acts on a pod the kubelet has stopped.
            if self._resync.is_set() or now - self._synced >= RESYNC_PERIOD:
                self._resync.clear()
                self._synced = now
                for manager in self.managers:
                    manager.sync(now, wall)
            while self._done:
                task, outcome = self._done.popleft()
                task.manager.record(task, outcome, now, wall)
            changed = False
            for manager in self.managers:
                manager.restarts(now, wall)
                changed |= manager.write_statuses(wall)
            if changed:
                self.reconcile()
            for manager in self.managers:
                tasks.extend(manager.due(now))
            events = [t for m in self.managers if (t := m.next_event()) is not None]
        for task in tasks:
            self._submit(task)
        if self._done:
            return 0.0
        if not events:
            return IDLE_WAKE
        return min(max(min(events) - self.clock(), 0.0), IDLE_WAKE)

    def _submit(self, task: ProbeTask) -> None:
        pool = self._pool
        if pool is None:
            # Without a pool (tests): run it here.
            self._done.append((task, self.run_probe(task.action, task.timeout)))
            return
        # A pool that was shut down refuses: the loop is stopping.
        with contextlib.suppress(RuntimeError):
            pool.submit(self._probe, task)

    def _probe(self, task: ProbeTask) -> None:
        try:
            outcome = self.run_probe(task.action, task.timeout)
        except Exception as exc:
            outcome = kubeprobe.Outcome("error", f"{type(exc).__name__}: {exc}")
        self._done.append((task, outcome))
        self._wake.set()
