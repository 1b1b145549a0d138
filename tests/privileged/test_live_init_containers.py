"""Init containers in a live lab (netemu.node.initcontainers).

- Two init containers run in order, each to completion, before the app
  container starts: `get pods` shows Init:0/2, then Init:1/2, then
  Running; the app's port refuses until both are done and answers after;
  the second init container starts only after the first finished; the pod
  is Ready (and in its Service's endpoints) only then.
- An init container that exits non-zero in a pod with restartPolicy Never
  fails the pod: Init:Error, phase Failed, the app never starts.
- With restartPolicy Always it is started again with back-off: its
  restartCount grows and `get pods` shows Init:CrashLoopBackOff.
- An init container without a command completes at once.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

STEP = 2  # seconds each ordered init container runs

PODS = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: ordered, labels: {{app: ordered}}}}
spec:
  initContainers:
    - name: first
      image: busybox
      command: [sh, -c, "sleep {STEP}"]
    - name: second
      image: busybox
      command: [sh, -c, "sleep {STEP}"]
    - name: instant
      image: busybox
  containers:
    - name: web
      image: registry.k8s.io/e2e-test-images/agnhost:2.52
      ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: broken}}
spec:
  restartPolicy: Never
  initContainers:
    - name: migrate
      image: busybox
      command: [sh, -c, "exit 3"]
  containers:
    - name: web
      image: registry.k8s.io/e2e-test-images/agnhost:2.52
      ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: crashing}}
spec:
  initContainers:
    - name: migrate
      image: busybox
      command: [sh, -c, "exit 1"]
  containers:
    - name: web
      image: registry.k8s.io/e2e-test-images/agnhost:2.52
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    directory = tmp_path_factory.mktemp("init") / "init"
    directory.mkdir()
    shutil.copy(CONTROLPLANE / "default" / "lab.yaml", directory / "lab.yaml")
    (directory / "pods.yaml").write_text(PODS)
    with running_lab([directory], lab_name("init")) as live:
        yield live


def _pod(lab: LiveLab, name: str) -> dict[str, Any]:
    for pod in lab.state()["pods"]:
        if pod["metadata"]["name"] == name:
            return pod
    raise AssertionError(f"no pod {name}")


def _row(lab: LiveLab, pod: str) -> dict[str, str]:
    table = lab.table("pods", "default", None)["table"]
    names = [c["name"] for c in table["columnDefinitions"]]
    for row in table["rows"]:
        cells = dict(zip(names, (str(c) for c in row["cells"]), strict=True))
        if cells["NAME"] == pod:
            return cells
    raise AssertionError(f"no pod {pod} in get pods")


def test_init_containers_run_in_order_before_the_app(lab: LiveLab) -> None:
    node = lab.target("node-1").netns
    started = time.monotonic()
    seen: list[str] = []
    ip = ""
    while time.monotonic() - started < 4 * STEP + 5:
        status = _row(lab, "ordered")["STATUS"]
        if not seen or seen[-1] != status:
            seen.append(status)
        pod = _pod(lab, "ordered")
        ip = pod["status"].get("podIP", "")
        if status.startswith("Init:") and ip:
            result = http_get(node, ip, 8080, timeout=0.5)
            assert result.outcome != "answered", f"the app answered during {status}"
        if status == "Running":
            break
        time.sleep(0.2)
    assert seen[-1] == "Running", seen
    assert "Init:0/3" in seen and "Init:1/3" in seen, seen
    assert seen.index("Init:0/3") < seen.index("Init:1/3")
    result = http_get(node, ip, 8080, timeout=2.0)
    assert result.outcome == "answered" and result.reply and result.reply["pod"] == "ordered"

    pod = _pod(lab, "ordered")
    inits = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    first = inits["first"]["state"]["terminated"]
    second = inits["second"]["state"]["terminated"]
    assert first["exitCode"] == 0 and second["exitCode"] == 0
    assert first["finishedAt"] <= second["startedAt"]
    assert inits["instant"]["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Initialized"] == "True" and conditions["Ready"] == "True"
    assert pod["status"]["phase"] == "Running"


def test_a_failed_init_container_fails_a_never_restarting_pod(lab: LiveLab) -> None:
    deadline = time.monotonic() + 10
    while _row(lab, "broken")["STATUS"] != "Init:Error":
        assert time.monotonic() < deadline, _row(lab, "broken")
        time.sleep(0.2)
    pod = _pod(lab, "broken")
    assert pod["status"]["phase"] == "Failed"
    (migrate,) = pod["status"]["initContainerStatuses"]
    assert migrate["state"]["terminated"]["exitCode"] == 3
    assert [s["state"] for s in pod["status"]["containerStatuses"]] == [
        {"waiting": {"reason": "PodInitializing"}}
    ]


def test_a_failing_init_container_is_restarted_with_back_off(lab: LiveLab) -> None:
    # The first restart is immediate, the second waits out 10 s of back-off.
    deadline = time.monotonic() + 10
    while _row(lab, "crashing")["STATUS"] != "Init:CrashLoopBackOff":
        assert time.monotonic() < deadline, _row(lab, "crashing")
        time.sleep(0.2)
    row = _row(lab, "crashing")
    assert row["RESTARTS"].split()[0] == "1", row
    pod = _pod(lab, "crashing")
    (migrate,) = pod["status"]["initContainerStatuses"]
    assert migrate["lastState"]["terminated"]["exitCode"] == 1
    assert migrate["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert pod["status"]["phase"] == "Pending"


def test_a_pod_deleted_while_initializing_goes_at_once(lab: LiveLab) -> None:
    # `ordered` is done by now; `crashing` waits out its back-off: nothing
    # of it runs, so its deletion need not wait for its grace period.
    began = time.monotonic()
    assert lab.delete([("Pod", "default", "crashing")]) == ["Pod/crashing"]
    took = time.monotonic() - began
    assert all(p["metadata"]["name"] != "crashing" for p in lab.state()["pods"])
    assert "default/crashing" not in lab.info()["pods"]
    assert took < 5, f"deleting took {took:.1f}s"
