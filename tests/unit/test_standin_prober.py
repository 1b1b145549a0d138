"""Exec probes whose program is not on this machine (netemu.node.prober):
not run, counted as passing, with one notice per pod; an exec probe whose
program exists is run as before. A real control plane, a fake kubelet and a
fake clock; nothing is started."""

from __future__ import annotations

import threading
from pathlib import Path

from test_kubelet_prober import REPO, Clock, FakeKubelet, FakeRunning

from netemu.api.config import Lab
from netemu.api.core import Pod
from netemu.api.validate import load_and_validate
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects, snapshot
from netemu.kernel import kubeprobe
from netemu.kernel.programs import program_problem
from netemu.net.plan import plan_lab, plan_pod
from netemu.node.prober import ProbeLoop, ProbeManager

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: db}
spec:
  nodeName: node-1
  containers:
    - name: mysql
      image: mysql:8
      ports: [{containerPort: 3306}]
      readinessProbe:
        exec: {command: [mysqladmin, ping, -h, 127.0.0.1]}
        periodSeconds: 1
      livenessProbe:
        exec: {command: [/usr/local/bin/healthcheck.sh]}
        periodSeconds: 1
    - name: exporter
      image: mysqld-exporter
      readinessProbe:
        exec: {command: [/bin/grpc_health_probe, -addr=:9104]}
        periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  nodeName: node-1
  containers:
    - name: app
      image: busybox
      command: [sh, -c, sleep 1000]
      readinessProbe:
        exec: {command: [sh, -c, "true"]}
        periodSeconds: 1
"""


def test_missing_exec_programs_pass_with_one_notice_per_pod(tmp_path: Path) -> None:
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(PODS)
    objects = [
        item.obj for item in load_and_validate([REPO / "controlplane/default/lab.yaml", manifest])
    ]
    (lab,) = [o for o in objects if isinstance(o, Lab)]
    client = LocalClient(Store())
    plane = ControlPlane(client, kubelet_probes=True)
    apply_objects(client, objects)
    plane.run_to_fixed_point()
    node = next(n for n in plan_lab(snapshot(client, lab=lab), "t").nodes if n.name == "node-1")
    kubelet = FakeKubelet(client, node)
    for pod in client.list(Pod).items:
        plan = plan_pod("t", node, pod, check_program=program_problem)
        kubelet.running[f"default/{pod.metadata.name}"] = FakeRunning(plan)
    sent: list[kubeprobe.Action] = []
    log: list[str] = []
    clock = Clock()

    def run(action: kubeprobe.Action, timeout: float) -> kubeprobe.Outcome:
        sent.append(action)
        return kubeprobe.Outcome("success", "")

    loop = ProbeLoop(
        [ProbeManager(kubelet, log=log.append)],
        threading.RLock(),
        lambda: None,  # readiness changes need no endpoints here
        run=run,
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.now,
        log=log.append,
    )
    try:
        for _ in range(60):  # three seconds: every probe ran a few times
            loop.step()
            loop.step()
            clock.now = round(clock.now + 0.05, 6)
    finally:
        loop.close()

    db = client.get(Pod, "default", "db")
    assert db.status.condition("Ready") == "True"
    assert all(s.ready and s.restart_count == 0 for s in db.status.container_statuses)
    notices = [line for line in log if "exec probe not run" in line]
    assert len(notices) == 1, log
    # The first probe run is mysql's readiness probe: a started container
    # that is not ready has it run at once.
    assert notices[0] == (
        "default/db/mysql: exec probe not run, counted as passing: 'mysqladmin': executable "
        'file not found in $PATH ("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")'
        " (the image it comes from is not on this machine; notice given once per pod)"
    )
    # Only the probe whose program exists was run, and it is an exec.
    assert sent and all(isinstance(a, kubeprobe.Exec) for a in sent)
    assert {a.argv for a in sent if isinstance(a, kubeprobe.Exec)} == {("sh", "-c", "true")}
    assert client.get(Pod, "default", "shell").status.condition("Ready") == "True"
