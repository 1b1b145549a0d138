"""The prober (netemu.node.prober) against a real control plane and a fake
kubelet, on a fake clock and with fake probe answers: the pod status it
writes (conditions, containerStatuses), the endpoints that follow its
readiness through the supervisor's reconcile, and liveness restarts.
No root: nothing is sent, nothing is started."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netemu.api.config import Lab
from netemu.api.core import EndpointSlice, Pod
from netemu.api.validate import load_and_validate
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects, snapshot
from netemu.controlplane.client import Client
from netemu.kernel import kubeprobe
from netemu.kernel.sandbox import SandboxSpec
from netemu.net.plan import NodePlan, PodPlan, plan_lab, plan_pod
from netemu.node.prober import ProbeLoop, ProbeManager

REPO = Path(__file__).resolve().parents[2]
POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
    - name: web
      image: agnhost
      ports: [{name: http, containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        periodSeconds: 1
        failureThreshold: 2
      livenessProbe:
        httpGet: {path: /healthz, port: 8080}
        periodSeconds: 1
        failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: plain
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
    - name: web
      image: agnhost
      ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


@dataclass
class FakeRunning:
    plan: PodPlan
    failed: dict[str, int] = field(default_factory=dict)
    initializing: bool = False
    sandboxes: dict[str, SandboxSpec] = field(default_factory=dict)
    config_errors: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # As the kubelet's: every started container has its sandbox.
        for c in self.plan.containers:
            self.sandboxes.setdefault(c.name, SandboxSpec(hostname=self.plan.hostname))


@dataclass
class FakeKubelet:
    client: Client
    node: NodePlan
    running: dict[str, FakeRunning] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def container_exit(self, key: str, name: str) -> int | None:
        return None

    def kill_container(self, key: str, name: str) -> int:
        self.calls.append(f"kill {key}/{name}")
        return 143

    def start_container(self, key: str, name: str) -> None:
        self.calls.append(f"start {key}/{name}")

    def host_network_etc(self, plan: PodPlan) -> Path | None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    client: LocalClient
    plane: ControlPlane
    kubelet: FakeKubelet
    loop: ProbeLoop
    clock: Clock
    failing: set[str]  # paths whose probe fails
    sent: list[kubeprobe.Action]
    reconciles: list[float]
    log: list[str]

    def run_until(self, end: float, step: float = 0.05) -> None:
        while self.clock.now <= end + 1e-9:
            self.loop.step()
            self.loop.step()  # records what the first one ran
            self.clock.now = round(self.clock.now + step, 6)

    def pod(self, name: str = "web") -> Pod:
        return self.client.get(Pod, "default", name)

    def endpoint_ready(self, pod: str = "web") -> bool | None:
        for eps in self.client.list(EndpointSlice).items:
            for endpoint in eps.endpoints:
                if endpoint.target_ref is not None and endpoint.target_ref.name == pod:
                    return endpoint.conditions.ready
        return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(POD)
    objects = [
        item.obj for item in load_and_validate([REPO / "controlplane/default/lab.yaml", manifest])
    ]
    (lab,) = [o for o in objects if isinstance(o, Lab)]
    client = LocalClient(Store())
    plane = ControlPlane(client, kubelet_probes=True)
    apply_objects(client, objects)
    plane.run_to_fixed_point()
    plan = plan_lab(snapshot(client, lab=lab), "t")
    node = next(n for n in plan.nodes if n.name == "node-1")
    kubelet = FakeKubelet(client, node)
    for pod in client.list(Pod).items:
        kubelet.running[f"default/{pod.metadata.name}"] = FakeRunning(plan_pod("t", node, pod))
    failing: set[str] = set()
    sent: list[kubeprobe.Action] = []
    reconciles: list[float] = []
    log: list[str] = []
    clock = Clock()

    def run(action: kubeprobe.Action, timeout: float) -> kubeprobe.Outcome:
        sent.append(action)
        assert isinstance(action, kubeprobe.HttpGet)
        if action.path in failing:
            return kubeprobe.Outcome("failure", "HTTP probe failed with statuscode: 500")
        return kubeprobe.Outcome("success", "ok")

    def reconcile() -> None:
        reconciles.append(clock.now)
        plane.run_to_fixed_point()

    loop = ProbeLoop(
        [ProbeManager(kubelet, log=log.append)],
        threading.RLock(),
        reconcile,
        run=run,
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.now,
        log=log.append,
    )
    yield Cluster(client, plane, kubelet, loop, clock, failing, sent, reconciles, log)
    loop.close()


def test_a_probed_pod_starts_not_ready_and_a_plain_one_ready(cluster: Cluster) -> None:
    web = cluster.pod()
    assert web.status.condition("Ready") == "False"
    assert web.status.condition("ContainersReady") == "False"
    assert cluster.endpoint_ready("web") is False
    assert cluster.pod("plain").status.condition("Ready") == "True"
    assert cluster.endpoint_ready("plain") is True


def test_readiness_makes_the_pod_ready_and_its_endpoint_follows(cluster: Cluster) -> None:
    cluster.run_until(100.0)
    web = cluster.pod()
    assert web.status.condition("Ready") == "True"
    assert cluster.endpoint_ready("web") is True
    assert cluster.reconciles == [100.0]
    (status,) = web.status.container_statuses
    assert status.name == "web" and status.ready and status.started
    assert status.restart_count == 0
    assert status.state is not None and status.state.running is not None
    # Probes come from the node, to the pod IP; a named port is resolved.
    first = cluster.sent[0]
    assert isinstance(first, kubeprobe.HttpGet)
    assert (first.netns, first.host, first.port, first.path) == (
        cluster.kubelet.node.netns,
        web.status.pod_ip,
        8080,
        "/readyz",
    )
    # The pod without probes is left as the control plane reports it.
    # (the control plane's statuses: running since start, never restarted)
    (plain,) = cluster.pod("plain").status.container_statuses
    assert plain.restart_count == 0 and plain.ready
    assert plain.state is not None and plain.state.running is not None


def test_readiness_failure_takes_the_endpoint_out_and_back(cluster: Cluster) -> None:
    cluster.run_until(102.0)
    cluster.failing.add("/readyz")
    cluster.run_until(103.9)
    assert cluster.pod().status.condition("Ready") == "True", "one failure is below the threshold"
    cluster.run_until(104.0)
    web = cluster.pod()
    assert web.status.condition("Ready") == "False"
    ready = next(c for c in web.status.conditions if c.type == "Ready")
    assert ready.reason == "ContainersNotReady"
    assert ready.message == "containers with unready status: [web]"
    assert ready.last_transition_time == "2023-11-14T22:15:04Z"
    assert cluster.endpoint_ready("web") is False
    assert "default/web/web: readiness probe failed: HTTP probe failed with statuscode: 500" in (
        cluster.log
    )
    cluster.failing.clear()
    cluster.run_until(105.0)
    assert cluster.pod().status.condition("Ready") == "True"
    assert cluster.endpoint_ready("web") is True
    assert cluster.kubelet.calls == []


def test_liveness_failure_restarts_the_container(cluster: Cluster) -> None:
    cluster.run_until(101.0)
    cluster.failing.add("/healthz")
    cluster.run_until(103.0)
    assert cluster.kubelet.calls == ["kill default/web/web", "start default/web/web"]
    assert "default/web: Container web failed liveness probe, will be restarted" in cluster.log
    cluster.failing.clear()
    cluster.run_until(104.0)
    (status,) = cluster.pod().status.container_statuses
    assert status.restart_count == 1
    assert status.ready
    assert status.last_state is not None and status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code == 143
    assert status.last_state.terminated.reason == "Error"
