"""Init containers: the kubelet's sequence (netemu.node.initcontainers.
run_init) with fake processes, the statuses it writes, the pod IPAM's
first status for such a pod in a live lab, and `get pods`' STATUS and
RESTARTS as kubectl prints them."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence

from manifests import objects

from netemu.api.base import ObjectMeta
from netemu.api.core import Container, ContainerStatus, Pod, PodSpec, PodStatus
from netemu.cli_table import _pod_status, _restarts
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.net.plan import ContainerPlan
from netemu.node.initcontainers import initialized_status, pod_status, run_init
from netemu.node.probes import ContainerLife

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class FakeProcess:
    def __init__(self, code: int) -> None:
        self.code = code

    def wait(self, timeout: float | None = None) -> int:
        return self.code


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plans(*names: str, commandless: str = "") -> list[ContainerPlan]:
    return [
        ContainerPlan(name=n, argv=() if n == commandless else ("run", n), env=(), ports=())
        for n in names
    ]


def sequence(
    containers: Sequence[ContainerPlan],
    codes: dict[str, list[int]],
    policy: str = "Always",
    cancel: threading.Event | None = None,
) -> tuple[list[str], list[tuple[list[str], bool]], list[str]]:
    """Run the sequence: (containers started, (states, failed) published, log)."""
    started: list[str] = []
    published: list[tuple[list[str], bool]] = []
    lines: list[str] = []
    clock = FakeClock()

    def start(plan: ContainerPlan) -> FakeProcess | None:
        started.append(plan.name)
        if not plan.argv:
            return None
        return FakeProcess(codes[plan.name].pop(0))

    def publish(lives: Sequence[ContainerLife | None], failed: bool) -> None:
        states = []
        for life in lives:
            if life is None:
                states.append("-")
            elif life.running:
                states.append("running")
            elif life.waiting:
                states.append("backoff")
            else:
                assert life.last_exit is not None
                states.append(f"exit {life.last_exit.exit_code}")
        published.append((states, failed))

    def done(lives: Sequence[ContainerLife | None]) -> None:
        started.append("APP")

    stop = cancel or threading.Event()

    def wait_cancel(timeout: float | None = None) -> bool:
        clock.now += timeout or 0
        return stop.is_set()

    stop.wait = wait_cancel  # type: ignore[method-assign]
    run_init(
        "default/p",
        containers,
        policy,  # type: ignore[arg-type]
        start,
        lambda code: code,
        publish,
        done,
        stop,
        lines.append,
        clock=clock,
        wall=clock,
    )
    return started, published, lines


def test_init_containers_run_in_order_then_the_app() -> None:
    started, published, lines = sequence(
        plans("a", "b", "c", commandless="c"), {"a": [0], "b": [0]}
    )
    assert started == ["a", "b", "c", "APP"]
    assert [p[0] for p in published] == [
        ["running", "-", "-"],
        ["exit 0", "-", "-"],
        ["exit 0", "running", "-"],
        ["exit 0", "exit 0", "-"],
        ["exit 0", "exit 0", "exit 0"],
    ]
    assert "default/p/c: init container has no command to run here: completed at once" in lines


def test_a_failure_with_restart_policy_never_fails_the_pod() -> None:
    started, published, _ = sequence(plans("a", "b"), {"a": [3]}, policy="Never")
    assert started == ["a"]
    assert published[-1] == (["exit 3", "-"], True)


def test_a_failure_is_retried_at_once_then_after_back_off() -> None:
    started, published, lines = sequence(plans("a"), {"a": [1, 1, 0]}, policy="OnFailure")
    assert started == ["a", "a", "a", "APP"]
    assert (["backoff"], False) in published
    assert "default/p/a: back-off 10s restarting failed container" in lines


def test_a_sidecar_is_started_and_the_next_follows_at_once() -> None:
    sidecar = ContainerPlan(name="proxy", argv=("run",), env=(), ports=(), sidecar=True)
    started, _, lines = sequence([sidecar, *plans("a")], {"proxy": [0], "a": [0]})
    assert started == ["proxy", "a", "APP"]
    assert "default/p/proxy: sidecar container started" in lines


def test_a_cancelled_sequence_starts_no_app() -> None:
    cancel = threading.Event()
    cancel.set()
    started, _, _ = sequence(plans("a"), {"a": [0]}, cancel=cancel)
    assert started == []


def pod(init: list[Container], statuses: list[ContainerStatus] | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u"),
        spec=PodSpec(containers=[Container(name="web")], init_containers=init, node_name="n"),
        status=PodStatus(
            phase="Pending",
            init_container_statuses=[s.to_dict() for s in statuses] if statuses else None,
        ),
    )


def test_statuses_while_initializing_and_after() -> None:
    p = pod([Container(name="a", image="busybox"), Container(name="b")])
    life = ContainerLife("a", {}, 0.0, 1_700_000_000.0, "OnFailure")
    status = pod_status(p, plans("a", "b"), [life, None], failed=False)
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions["Initialized"] == ("False", "ContainersNotInitialized")
    assert conditions["Ready"] == ("False", "ContainersNotReady")
    assert status.phase == "Pending"
    a, b = (ContainerStatus.model_validate(s) for s in status.init_container_statuses)
    assert a.state is not None and a.state.running is not None and a.image == "busybox"
    assert b.state is not None and b.state.waiting is not None
    assert b.state.waiting.reason == "PodInitializing"
    (web,) = status.container_statuses
    assert web.state is not None and web.state.waiting is not None
    assert web.state.waiting.reason == "PodInitializing"
    assert _pod_status(p.model_copy(update={"status": status})) == "Init:0/2"

    life.exited(1.0, 1_700_000_001.0, 0)
    second = ContainerLife("b", {}, 1.0, 1_700_000_001.0, "OnFailure")
    status = pod_status(p, plans("a", "b"), [life, second], failed=False)
    assert _pod_status(p.model_copy(update={"status": status})) == "Init:1/2"

    second.exited(2.0, 1_700_000_002.0, 0)
    done = initialized_status(p, plans("a", "b"), [life, second], 1_700_000_002.0, gated=False)
    after = {c.type: c.status for c in done.conditions}
    assert after == {"Initialized": "True", "Ready": "True", "ContainersReady": "True"}
    assert done.phase == "Running"
    ready = p.model_copy(update={"status": done})
    assert _pod_status(ready) == "Running"


def status_of(name: str, **state: object) -> ContainerStatus:
    return ContainerStatus.model_validate({"name": name, "state": state, "restartCount": 0})


def test_get_pods_status_for_init_containers_as_kubectl() -> None:
    init = [Container(name="a"), Container(name="b")]
    done = status_of("a", terminated={"exitCode": 0, "reason": "Completed"})
    failed = pod(init, [done, status_of("b", terminated={"exitCode": 2, "reason": "Error"})])
    assert _pod_status(failed) == "Init:Error"
    no_reason = pod(init, [done, status_of("b", terminated={"exitCode": 2})])
    assert _pod_status(no_reason) == "Init:ExitCode:2"
    signalled = pod(init, [done, status_of("b", terminated={"exitCode": 137, "signal": 9})])
    assert _pod_status(signalled) == "Init:Signal:9"
    looping = pod(init, [done, status_of("b", waiting={"reason": "CrashLoopBackOff"})])
    assert _pod_status(looping) == "Init:CrashLoopBackOff"
    # A sidecar that has started counts as done.
    sidecar = [Container(name="a", restart_policy="Always"), Container(name="b")]
    started = status_of("a", running={}).model_copy(update={"started": True})
    assert _pod_status(pod(sidecar, [started, status_of("b", running={})])) == "Init:1/2"


def test_restarts_count_the_init_containers() -> None:
    crashed = ContainerStatus.model_validate(
        {
            "name": "a",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "restartCount": 3,
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-12-31T23:59:50Z"}},
        }
    )
    assert _restarts(pod([Container(name="a")], [crashed]), NOW) == "3 (10s ago)"


POD = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes: [{name: node-1, underlayIP: 192.168.56.11}]
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers: [{name: migrate, command: [sh, -c, "true"]}]
  containers: [{name: web}]
"""


def test_a_live_lab_starts_a_pod_with_init_containers_initializing() -> None:
    client = LocalClient(Store())
    plane = ControlPlane(client, kubelet_probes=True)
    apply_objects(client, objects(POD))
    plane.run_to_fixed_point()
    p = client.get(Pod, "default", "p")
    assert p.status.phase == "Pending" and p.status.pod_ip
    assert p.status.condition("Initialized") == "False"
    assert p.status.condition("Ready") == "False"
    assert _pod_status(p) == "Init:0/1"


def test_offline_a_pod_with_init_containers_is_taken_as_running() -> None:
    client = LocalClient(Store())
    plane = ControlPlane(client)
    apply_objects(client, objects(POD))
    plane.run_to_fixed_point()
    p = client.get(Pod, "default", "p")
    assert p.status.phase == "Running" and p.status.condition("Ready") == "True"
