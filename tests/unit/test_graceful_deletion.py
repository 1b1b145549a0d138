"""Graceful deletion of pods: the store's side (deletionTimestamp and
deletionGracePeriodSeconds as the API server sets them), the controllers
that must leave a terminating pod alone, the kubelet's termination
sequence (netemu.node.termination) with fake containers, and `netemu
delete`'s grace period as kubectl computes it."""

from __future__ import annotations

import datetime
import threading

import pytest
from manifests import objects

from netemu.api.apps import ReplicaSet
from netemu.api.base import ObjectMeta
from netemu.api.core import Container, EndpointSlice, Pod, PodSpec, PodStatus
from netemu.cli_live import delete_grace_period
from netemu.controlplane import ControlPlane, LocalClient, apply_objects
from netemu.controlplane.errors import NotFound
from netemu.controlplane.store import Store
from netemu.kernel import kubeprobe
from netemu.kernel.sandbox import SandboxSpec
from netemu.node.probes import ExecHandler, HttpHandler
from netemu.node.termination import MINIMUM_GRACE, SleepHandler, Stoppable, pre_stop_of, terminate
from netemu.supervisor import RequestError, _checked_request

T0 = datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def pod(
    name: str, node: str | None = "node-1", grace: int | None = None, phase: str = "Running"
) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=PodSpec(
            containers=[Container(name="c")],
            node_name=node,
            termination_grace_period_seconds=grace,
        ),
        status=PodStatus(phase=phase),
    )


def test_a_bound_pod_is_marked_with_its_own_grace_period_and_kept() -> None:
    store = Store(clock=Clock(), graceful_pods=True)
    store.create(pod("web", grace=20))
    left = store.delete(Pod, "default", "web")
    assert left.metadata.deletion_timestamp == "2026-03-01T10:00:20Z"
    assert left.metadata.deletion_grace_period_seconds == 20
    assert store.get(Pod, "default", "web").metadata.deletion_timestamp == "2026-03-01T10:00:20Z"


def test_the_default_grace_period_is_30_seconds_and_a_request_overrides_it() -> None:
    store = Store(clock=Clock(), graceful_pods=True)
    store.create(pod("a"))
    store.create(pod("b", grace=20))
    assert store.delete(Pod, "default", "a").metadata.deletion_grace_period_seconds == 30
    left = store.delete(Pod, "default", "b", grace_period_seconds=5)
    assert left.metadata.deletion_grace_period_seconds == 5
    assert left.metadata.deletion_timestamp == "2026-03-01T10:00:05Z"


def test_unbound_finished_and_zero_grace_pods_go_at_once() -> None:
    store = Store(clock=Clock(), graceful_pods=True)
    store.create(pod("pending", node=None))
    store.create(pod("done", phase="Succeeded"))
    store.create(pod("forced"))
    store.delete(Pod, "default", "pending")
    store.delete(Pod, "default", "done")
    store.delete(Pod, "default", "forced", grace_period_seconds=0)
    assert store.list(Pod).items == ()


def test_deleting_again_only_shortens_and_zero_removes() -> None:
    clock = Clock()
    store = Store(clock=clock, graceful_pods=True)
    store.create(pod("web", grace=30))
    first = store.delete(Pod, "default", "web")
    clock.now = T0 + datetime.timedelta(seconds=10)
    # A longer period changes nothing (no write).
    again = store.delete(Pod, "default", "web", grace_period_seconds=60)
    assert again.metadata.resource_version == first.metadata.resource_version
    # A shorter one counts from when the deletion began.
    shorter = store.delete(Pod, "default", "web", grace_period_seconds=12)
    assert shorter.metadata.deletion_timestamp == "2026-03-01T10:00:12Z"
    assert shorter.metadata.deletion_grace_period_seconds == 12
    store.delete(Pod, "default", "web", grace_period_seconds=0)
    with pytest.raises(NotFound):
        store.get(Pod, "default", "web")


def test_without_graceful_pods_deletion_is_immediate() -> None:
    store = Store(clock=Clock())
    store.create(pod("web"))
    store.delete(Pod, "default", "web")
    assert store.list(Pod).items == ()


LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
  - {name: node-2, underlayIP: 192.168.56.12}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_scale_down_leaves_a_terminating_endpoint_and_the_controllers_settle() -> None:
    client = LocalClient(Store(graceful_pods=True))
    plane = ControlPlane(client)
    apply_objects(client, objects(LAB))
    plane.run_to_fixed_point()
    rs = client.get(ReplicaSet, "default", "web")
    client.update(rs.model_copy(update={"spec": rs.spec.model_copy(update={"replicas": 1})}))
    plane.run_to_fixed_point()  # would not return if a controller kept deleting
    pods = client.list(Pod).items
    going = [p for p in pods if p.metadata.deletion_timestamp is not None]
    assert len(pods) == 2 and len(going) == 1
    (eps,) = client.list(EndpointSlice).items
    by_pod = {e.target_ref.name: e.conditions for e in eps.endpoints if e.target_ref}
    gone = by_pod[going[0].metadata.name]
    assert (gone.ready, gone.serving, gone.terminating) == (False, True, True)
    # Deleting the set: its pods are deleted gracefully by the garbage
    # collector, once, and nothing loops.
    client.delete(ReplicaSet, "default", "web")
    plane.run_to_fixed_point()
    assert all(p.metadata.deletion_timestamp is not None for p in client.list(Pod).items)


# ---------------------------------------------------------------- preStop hooks


def container(lifecycle: object) -> Container:
    return Container(name="c", lifecycle=lifecycle)


def test_pre_stop_handlers_are_read_from_the_container() -> None:
    assert pre_stop_of(container(None)) is None
    assert pre_stop_of(container({"postStart": {"exec": {"command": ["x"]}}})) is None
    assert pre_stop_of(container({"preStop": {"exec": {"command": ["sh", "-c", "x"]}}})) == (
        ExecHandler(("sh", "-c", "x"))
    )
    get = pre_stop_of(
        container(
            {
                "preStop": {
                    "httpGet": {
                        "path": "/quit",
                        "port": "http",
                        "scheme": "HTTPS",
                        "httpHeaders": [{"name": "X", "value": "1"}],
                    }
                }
            }
        )
    )
    assert get == HttpHandler(port="http", path="/quit", scheme="HTTPS", headers=(("X", "1"),))
    assert pre_stop_of(container({"preStop": {"sleep": {"seconds": 3}}})) == SleepHandler(3)
    # tcpSocket is accepted by the API for old clients, and never run.
    assert pre_stop_of(container({"preStop": {"tcpSocket": {"port": 80}}})) is None


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_termination_runs_the_hook_then_sigterm_with_the_rest_of_the_grace_period() -> None:
    time = FakeTime()
    events: list[str] = []
    ran: list[tuple[kubeprobe.Action, float]] = []

    def run(action: kubeprobe.Action, timeout: float) -> kubeprobe.Outcome:
        ran.append((action, timeout))
        events.append("hook")
        time.now += 4  # the hook takes 4 s
        return kubeprobe.Outcome("success")

    action = kubeprobe.Exec("ns", ("drain",), SandboxSpec(hostname="web"))
    hooked = Stoppable("app", ExecHandler(("drain",)), action, lambda s: events.append(f"term {s}"))
    terminate(
        "default/web",
        [hooked],
        10,
        lambda: events.append("finish"),
        lambda line: None,
        run=run,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert ran == [(action, 10.0)]
    assert events == ["hook", "term 6.0", "finish"]


def test_a_long_hook_still_leaves_the_minimum_grace_after_sigterm() -> None:
    time = FakeTime()
    stops: list[float] = []
    terminate(
        "default/web",
        [Stoppable("app", SleepHandler(60), None, stops.append)],
        5,
        lambda: None,
        lambda line: None,
        clock=time.clock,
        sleep=time.sleep,
    )
    # The sleep is cut at the grace period; SIGKILL no sooner than 2 s after SIGTERM.
    assert time.now == 105.0
    assert stops == [MINIMUM_GRACE]


def test_a_failed_or_impossible_hook_is_logged_and_the_container_still_stops() -> None:
    lines: list[str] = []
    stops: list[str] = []
    terminate(
        "default/web",
        [
            Stoppable(
                "a",
                HttpHandler(port="nope"),
                "couldn't find port: nope",
                lambda s: stops.append("a"),
            ),
            Stoppable(
                "b",
                ExecHandler(("false",)),
                kubeprobe.Exec("ns", ("false",), SandboxSpec(hostname="web")),
                lambda s: stops.append("b"),
            ),
        ],
        3,
        lambda: None,
        lines.append,
        run=lambda action, timeout: kubeprobe.Outcome("failure", "exit 1"),
    )
    assert sorted(stops) == ["a", "b"]
    assert "default/web/a: preStop hook failed: couldn't find port: nope" in lines
    assert "default/web/b: preStop hook failed: exit 1" in lines


# ---------------------------------------------------------------- the CLI and requests


def test_delete_grace_period_follows_kubectl() -> None:
    assert delete_grace_period(-1, False) is None
    assert delete_grace_period(0, False) == 1
    assert delete_grace_period(-1, True) == 0
    assert delete_grace_period(0, True) == 0
    assert delete_grace_period(7, False) == 7


def test_delete_request_checks_its_grace_period() -> None:
    refs = [{"kind": "Pod", "namespace": "default", "name": "web"}]
    op, fields = _checked_request({"op": "delete", "refs": refs, "gracePeriod": 5, "wait": False})
    assert (op, fields["gracePeriod"], fields["wait"]) == ("delete", 5, False)
    with pytest.raises(RequestError, match="'gracePeriod': expected 0 or more"):
        _checked_request({"op": "delete", "refs": refs, "gracePeriod": -3})
