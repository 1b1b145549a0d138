"""The kubelet's probe and restart state machine, pure: no clock, no I/O.
Every method takes the time (`now`, seconds on a monotonic clock; `wall`,
seconds since the epoch for the timestamps a status shows), so unit tests
drive it with a fake clock and the prober (netemu.node.prober) with the
real one.

One `ContainerLife` per container of a running pod holds a `Worker` per
probe it declares, as pkg/kubelet/prober does:

- Results: a readiness probe's result starts as Failure, a liveness
  probe's as Success, a startup probe's as Unknown (worker.go, newWorker),
  and again so for every new instance of the container.
- Timing: each worker ticks every periodSeconds from when it was created
  (the container's first start); a tick probes unless the container is not
  running, runs for less than initialDelaySeconds, or the worker is on
  hold. Ticks missed while a probe runs collapse into one, taken as soon as
  it ends (Go's ticker keeps one). No random initial jitter (the kubelet
  adds one only right after it starts).
- Thresholds: a result is recorded once the same outcome came
  failureThreshold (or successThreshold) times in a row (worker.doProbe).
  The run counter survives a container restart, as the kubelet's does.
- Startup gating: until the startup probe has succeeded, the container is
  not started, and liveness and readiness probes do not run; once it has,
  the startup probe stops (worker.doProbe). A container without a startup
  probe is started as soon as it runs (prober_manager.go, UpdatePodStatus).
- Ready: started, and its readiness result is Success (or it has no
  readiness probe). Whenever the pod's status is synced while a started
  container is not ready, its readiness probe runs at once
  (UpdatePodStatus's manual trigger), which is why a pod is ready right
  after a (re)start rather than one period later.
- Liveness or startup failure: the worker goes on hold until a new
  instance runs, and the container is killed and restarted subject to the
  pod's restartPolicy (Always and OnFailure restart a killed container,
  Never does not) and to the crash-loop back-off of
  pkg/kubelet/kuberuntime (doBackOff, with client-go's flowcontrol.Backoff:
  10 s doubling to at most 300 s, forgotten once a container ran 600 s).
  The first restart is immediate. A container that ends by itself is
  restarted the same way (Always; OnFailure unless it exited 0).
- A terminating pod (deletionTimestamp set) runs no liveness or startup
  probes: they count as Success from then on (doProbe's graceful shutdown).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from netemu.api.core import Probe

Kind = Literal["startup", "liveness", "readiness"]
KINDS: tuple[Kind, ...] = ("startup", "liveness", "readiness")
RestartPolicy = Literal["Always", "OnFailure", "Never"]

# SetDefaults_Probe (pkg/apis/core/v1/defaults.go): a zero or unset value.
DEFAULT_TIMEOUT_SECONDS = 1
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3

# The kubelet's crash-loop back-off (pkg/kubelet/kubelet.go: backOffPeriod,
# MaxContainerBackOff); an entry is forgotten after twice the maximum.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0

# Exit codes of a process ended by a signal, as a container runtime reports them.
EXIT_SIGTERM = 128 + 15
EXIT_SIGKILL = 128 + 9


class Result(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"


# worker.go, newWorker: the result before the first probe of an instance.
INITIAL_RESULT: dict[Kind, Result] = {
    "readiness": Result.FAILURE,
    "liveness": Result.SUCCESS,
    "startup": Result.UNKNOWN,
}


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ExecHandler:
    command: tuple[str, ...]


@dataclass(frozen=True)
class HttpHandler:
    port: int | str
    path: str = "/"
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TcpHandler:
    port: int | str
    host: str | None = None


@dataclass(frozen=True)
class GrpcHandler:
    port: int
    service: str | None = None


Handler = ExecHandler | HttpHandler | TcpHandler | GrpcHandler


@dataclass(frozen=True)
class ProbeSpec:
    """A probe with the API server's defaults applied."""

    handler: Handler
    initial_delay: int = 0
    timeout: int = DEFAULT_TIMEOUT_SECONDS
    period: int = DEFAULT_PERIOD_SECONDS
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD

    @classmethod
    def from_api(cls, probe: Probe) -> ProbeSpec:
        handler: Handler
        if probe.exec is not None:
            handler = ExecHandler(tuple(probe.exec.command))
        elif probe.http_get is not None:
            get = probe.http_get
            handler = HttpHandler(
                port=get.port,
                path=get.path or "/",
                host=get.host or None,
                scheme=get.scheme or "HTTP",
                headers=tuple((h.name, h.value) for h in get.http_headers),
            )
        elif probe.tcp_socket is not None:
            handler = TcpHandler(port=probe.tcp_socket.port, host=probe.tcp_socket.host or None)
        elif probe.grpc is not None:
            handler = GrpcHandler(port=probe.grpc.port, service=probe.grpc.service)
        else:
            raise ValueError("a probe needs a handler (exec, httpGet, tcpSocket or grpc)")
        return cls(
            handler=handler,
            initial_delay=probe.initial_delay_seconds or 0,
            timeout=probe.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
            period=probe.period_seconds or DEFAULT_PERIOD_SECONDS,
            success_threshold=probe.success_threshold or DEFAULT_SUCCESS_THRESHOLD,
            failure_threshold=probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD,
        )

    def describe(self) -> str:
        """As `kubectl describe pod` shows a probe."""
        h = self.handler
        if isinstance(h, ExecHandler):
            what = f"exec {list(h.command)}"
        elif isinstance(h, HttpHandler):
            what = f"http-get {h.scheme.lower()}://{h.host or ''}:{h.port}{h.path}"
        elif isinstance(h, TcpHandler):
            what = f"tcp-socket {h.host or ''}:{h.port}"
        else:
            what = f"grpc <pod>:{h.port} {h.service or ''}".rstrip()
        return (
            f"{what} delay={self.initial_delay}s timeout={self.timeout}s period={self.period}s "
            f"#success={self.success_threshold} #failure={self.failure_threshold}"
        )


def probes_of(
    liveness: Probe | None, readiness: Probe | None, startup: Probe | None
) -> dict[Kind, ProbeSpec]:
    given: dict[Kind, Probe | None] = {
        "startup": startup,
        "liveness": liveness,
        "readiness": readiness,
    }
    return {kind: ProbeSpec.from_api(p) for kind, p in given.items() if p is not None}


# ---------------------------------------------------------------- one probe


class Worker:
    """One probe of one container (prober/worker.go)."""

    def __init__(self, kind: Kind, spec: ProbeSpec, created: float) -> None:
        self.kind = kind
        self.spec = spec
        self.result = INITIAL_RESULT[kind]
        self.last_result: Result | None = None
        self.run = 0
        self.on_hold = False
        self.in_flight = False
        self.triggered = False
        self.next_tick = created + spec.period

    def due(self, now: float) -> bool:
        return not self.in_flight and (self.triggered or now >= self.next_tick)

    def take_tick(self, now: float) -> None:
        """Consume the trigger and every tick up to `now` (a ticker whose
        reader was busy keeps one of the ticks it missed, drops the rest)."""
        self.triggered = False
        if now >= self.next_tick:
            missed = int((now - self.next_tick) // self.spec.period) + 1
            self.next_tick += missed * self.spec.period

    def new_instance(self) -> None:
        self.result = INITIAL_RESULT[self.kind]
        self.on_hold = False

    def record(self, outcome: Result) -> bool:
        """Count one probe's outcome; True if it set the result (threshold met)."""
        if outcome == self.last_result:
            self.run += 1
        else:
            self.last_result = outcome
            self.run = 1
        threshold = (
            self.spec.failure_threshold
            if outcome == Result.FAILURE
            else self.spec.success_threshold
        )
        if self.run < threshold:
            return False
        self.result = outcome
        if self.kind != "readiness" and outcome == Result.FAILURE:
            # The container will be restarted; stop probing until a new one runs.
            self.on_hold = True
            self.run = 0
        return True


# ---------------------------------------------------------------- back-off


class Backoff:
    """client-go's flowcontrol.Backoff for one container, without jitter."""

    def __init__(self, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay: float | None = None
        self.last_update = 0.0

    def _expired(self, event: float) -> bool:
        return event - self.last_update > 2 * self.maximum

    def in_backoff_since(self, event: float, now: float) -> bool:
        if self.delay is None or self._expired(event):
            return False
        return now - event < self.delay

    def next(self, event: float, now: float) -> None:
        if self.delay is None or self._expired(event):
            self.delay = self.initial
        else:
            self.delay = min(self.delay * 2, self.maximum)
        self.last_update = now


# ---------------------------------------------------------------- one container


@dataclass(frozen=True)
class Exit:
    """An instance of a container that has ended."""

    exit_code: int
    reason: str  # "Completed" or "Error"
    started_at: float  # wall clock
    finished_at: float  # wall clock
    finished_mono: float
    message: str = ""


@dataclass(frozen=True)
class Kill:
    """A container to kill now (liveness or startup probe failed)."""

    container: str
    message: str


class ContainerLife:
    """One container of a running pod: its instances, probes and restarts."""

    def __init__(
        self,
        name: str,
        probes: Mapping[Kind, ProbeSpec],
        now: float,
        wall: float,
        restart_policy: RestartPolicy = "Always",
    ) -> None:
        self.name = name
        self.restart_policy = restart_policy
        self.workers = {kind: Worker(kind, probes[kind], now) for kind in KINDS if kind in probes}
        self.instance = 0
        self.restart_count = 0
        self.running_since: float | None = None
        self.started_wall: float | None = None
        self.last_exit: Exit | None = None
        self.backoff = Backoff()
        self.restart_at: float | None = None  # a restart waiting for its back-off
        self._restart_event: float | None = None
        self.start(now, wall)

    # -- state -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.running_since is not None

    @property
    def started(self) -> bool:
        startup = self.workers.get("startup")
        return self.running and (startup is None or startup.result == Result.SUCCESS)

    @property
    def ready(self) -> bool:
        readiness = self.workers.get("readiness")
        return self.started and (readiness is None or readiness.result == Result.SUCCESS)

    @property
    def waiting(self) -> bool:
        """Killed or exited, and waiting out its back-off before it starts again."""
        return not self.running and self.restart_at is not None

    def backoff_delay(self) -> float:
        return self.backoff.delay or 0.0

    # -- probes ------------------------------------------------------------------

    def due(self, now: float, terminating: bool = False) -> list[Kind]:
        """The probes to run now (each marked in flight until `record`)."""
        kinds: list[Kind] = []
        for kind, worker in self.workers.items():
            if not worker.due(now):
                continue
            worker.take_tick(now)
            if worker.on_hold or self.running_since is None:
                continue
            if terminating and kind != "readiness":
                worker.result = Result.SUCCESS
                continue
            if now - self.running_since < worker.spec.initial_delay:
                continue
            if (kind == "startup") == self.started:
                # The startup probe runs until the container has started,
                # the others only from then on.
                continue
            worker.in_flight = True
            kinds.append(kind)
        return kinds

    def record(self, kind: Kind, instance: int, outcome: Result) -> Kill | None:
        """A probe's outcome for instance `instance`. UNKNOWN (the probe could
        not be sent) and outcomes for an earlier instance are thrown away."""
        worker = self.workers[kind]
        worker.in_flight = False
        if instance != self.instance or outcome == Result.UNKNOWN or not self.running:
            return None
        if not worker.record(outcome):
            return None
        if kind != "readiness" and outcome == Result.FAILURE:
            what = "liveness" if kind == "liveness" else "startup"
            verb = (
                "will be restarted" if self.restart_policy != "Never" else "will not be restarted"
            )
            return Kill(self.name, f"Container {self.name} failed {what} probe, {verb}")
        return None

    def status_synced(self) -> None:
        """The pod's status was just written: a started container that is not
        ready has its readiness probe run at once (UpdatePodStatus)."""
        readiness = self.workers.get("readiness")
        if readiness is not None and self.started and readiness.result != Result.SUCCESS:
            readiness.triggered = True

    # -- instances ---------------------------------------------------------------

    def start(self, now: float, wall: float) -> None:
        """A new instance runs (the first one, or a restart)."""
        if self.instance:
            self.restart_count += 1
        self.instance += 1
        self.running_since, self.started_wall = now, wall
        self.restart_at = self._restart_event = None
        for worker in self.workers.values():
            worker.new_instance()

    def killed(self, now: float, wall: float, exit_code: int, message: str = "") -> None:
        """The kubelet killed the running instance (a failed liveness or
        startup probe). Whether it starts again now is decided by the
        back-off as seen just before the kill (kuberuntime kills and starts
        in one SyncPod, from a status taken before the kill)."""
        before = self.last_exit
        self._ended(now, wall, exit_code, message)
        if self.restart_policy == "Never":
            return
        self._schedule(now, before.finished_mono if before else None)

    def exited(self, now: float, wall: float, exit_code: int) -> None:
        """The running instance ended by itself."""
        self._ended(now, wall, exit_code, "")
        if self.restart_policy == "Never" or (
            self.restart_policy == "OnFailure" and exit_code == 0
        ):
            return
        self._schedule(now, now)

    def _ended(self, now: float, wall: float, exit_code: int, message: str) -> None:
        self.last_exit = Exit(
            exit_code=exit_code,
            reason="Completed" if exit_code == 0 else "Error",
            started_at=self.started_wall if self.started_wall is not None else wall,
            finished_at=wall,
            finished_mono=now,
            message=message,
        )
        self.running_since = self.started_wall = None
        for worker in self.workers.values():
            worker.in_flight = False

    def _schedule(self, now: float, event: float | None) -> None:
        """doBackOff: `event` is when the last exited instance finished."""
        assert self.last_exit is not None
        if event is None:
            self.restart_at, self._restart_event = now, None
        elif not self.backoff.in_backoff_since(event, now):
            self.backoff.next(event, now)
            self.restart_at, self._restart_event = now, None
        else:
            # CrashLoopBackOff; the next sync measures from the newest exit.
            latest = self.last_exit.finished_mono
            self.restart_at, self._restart_event = latest + self.backoff_delay(), latest

    def held(self, now: float, retry: float) -> None:
        """The container cannot be created (its env references do not
        resolve: CreateContainerConfigError): it does not run and is tried
        again `retry` from now. One that never ran stays at its first
        instance, so its first start is no restart."""
        self.running_since = self.started_wall = None
        if self.last_exit is None and self.restart_count == 0:
            self.instance = 0
        self.restart_at, self._restart_event = now + retry, None
        for worker in self.workers.values():
            worker.in_flight = False

    def restart_due(self, now: float) -> bool:
        """Whether a waiting container starts now (then call `start`)."""
        if self.running or self.restart_at is None or now < self.restart_at:
            return False
        if self._restart_event is not None:
            self.backoff.next(self._restart_event, now)
        return True

    def next_event(self) -> float | None:
        """The earliest time at which `due` or `restart_due` may change."""
        times = [w.next_tick for w in self.workers.values() if not w.in_flight]
        if self.restart_at is not None and not self.running:
            times.append(self.restart_at)
        return min(times) if times else None
