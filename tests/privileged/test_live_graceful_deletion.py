"""Graceful deletion in a live lab (netemu.node.termination).

- A pod deleted with a 5 s grace period whose preStop hook sleeps 3 s stays
  as a terminating endpoint (ready=false, serving=true, terminating=true),
  `get pods` shows it Terminating, and, being its Service's only endpoint,
  kube-proxy's terminating-endpoint fallback still sends it the Service's
  traffic, which it answers until its SIGTERM; then it stops answering and
  is removed.
- A preStop httpGet hook reaches the pod's built-in server before its
  SIGTERM (which would close the server): the request is in the
  container's access log, and the kubelet's lines in the supervisor log
  name the hook before the stop. `delete` (waiting, as kubectl does)
  returns once the pod is gone.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, cluster_ip, lab_name, running_lab

from netemu.kernel.journal import LOG, run_dir
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

GRACE = 5
HOOK_SLEEP = 3

PODS = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: drain, labels: {{app: drain}}}}
spec:
  terminationGracePeriodSeconds: {GRACE}
  containers:
    - name: web
      image: registry.k8s.io/e2e-test-images/agnhost:2.52
      ports: [{{name: http, containerPort: 8080}}]
      lifecycle:
        preStop:
          sleep: {{seconds: {HOOK_SLEEP}}}
---
apiVersion: v1
kind: Service
metadata: {{name: drain}}
spec:
  selector: {{app: drain}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hooked, labels: {{app: hooked}}}}
spec:
  terminationGracePeriodSeconds: {GRACE}
  containers:
    - name: web
      image: registry.k8s.io/e2e-test-images/agnhost:2.52
      ports: [{{name: http, containerPort: 8080}}]
      lifecycle:
        preStop:
          httpGet: {{path: /prestop-hook, port: http}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    directory = tmp_path_factory.mktemp("graceful") / "graceful"
    directory.mkdir()
    shutil.copy(CONTROLPLANE / "default" / "lab.yaml", directory / "lab.yaml")
    (directory / "pods.yaml").write_text(PODS)
    with running_lab([directory], lab_name("grace")) as live:
        yield live


def _pod(state: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any] | None:
    for pod in state["pods"]:
        if pod["metadata"]["name"] == name:
            return pod
    return None


def _conditions(state: dict[str, list[dict[str, Any]]], service: str) -> list[dict[str, Any]]:
    return [
        endpoint.get("conditions", {})
        for eps in state["endpointslices"]
        if eps["metadata"].get("labels", {}).get("kubernetes.io/service-name") == service
        for endpoint in eps.get("endpoints") or []
    ]


def _status(lab: LiveLab, pod: str) -> str:
    table = lab.table("pods", "default", None)["table"]
    names = [c["name"] for c in table["columnDefinitions"]]
    for row in table["rows"]:
        cells = dict(zip(names, row["cells"], strict=True))
        if cells["NAME"] == pod:
            return str(cells["STATUS"])
    raise AssertionError(f"no pod {pod} in get pods")


def test_a_terminating_pod_serves_through_the_fallback_until_its_sigterm(lab: LiveLab) -> None:
    state = lab.state()
    vip = cluster_ip(state, "drain")
    node = lab.target("node-1").netns
    first = http_get(node, vip, 80, timeout=2.0)
    assert first.outcome == "answered" and first.reply is not None
    assert first.reply["pod"] == "drain"

    deleted = time.monotonic()
    assert lab.delete([("Pod", "default", "drain")], wait=False) == ["Pod/drain"]
    state = lab.state()
    pod = _pod(state, "drain")
    assert pod is not None, "a pod deleted with a grace period stays while it stops"
    assert pod["metadata"]["deletionGracePeriodSeconds"] == GRACE
    assert pod["metadata"]["deletionTimestamp"]
    assert _conditions(state, "drain") == [{"ready": False, "serving": True, "terminating": True}]
    assert _status(lab, "drain") == "Terminating"

    # During the preStop hook the pod has had no SIGTERM: the Service's
    # only endpoint is terminating, and the fallback still sends it traffic.
    answered_until = deleted
    while time.monotonic() - deleted < HOOK_SLEEP - 0.5:
        result = http_get(node, vip, 80, timeout=1.0)
        assert result.outcome == "answered", f"{time.monotonic() - deleted:.1f}s: {result}"
        assert result.reply is not None and result.reply["pod"] == "drain"
        answered_until = time.monotonic()
        time.sleep(0.2)
    assert answered_until - deleted >= HOOK_SLEEP - 1.0

    # Then SIGTERM: it stops answering, and is removed well within its grace period.
    while _pod(lab.state(), "drain") is not None:
        assert time.monotonic() - deleted < GRACE + 2, "the pod outlived its grace period"
        time.sleep(0.1)
    gone = time.monotonic() - deleted
    assert gone >= HOOK_SLEEP - 0.2, f"removed after {gone:.1f}s, before its preStop hook ended"
    result = http_get(node, vip, 80, timeout=1.0)
    assert result.outcome != "answered", f"answered after its removal: {result}"


def test_pre_stop_http_get_reaches_the_pod_before_its_sigterm(lab: LiveLab) -> None:
    assert lab.delete([("Pod", "default", "hooked")]) == ["Pod/hooked"]
    # kubectl delete waits: the pod is gone when it returns.
    assert _pod(lab.state(), "hooked") is None
    access = run_dir(lab.name) / "logs" / "default" / "hooked" / "web.log"
    assert "GET /prestop-hook" in access.read_text(), access.read_text()
    log = (run_dir(lab.name) / LOG).read_text().splitlines()
    hook = next(i for i, line in enumerate(log) if "default/hooked/web: preStop hook" in line)
    stop = next(i for i, line in enumerate(log) if "default/hooked/web: stopping container" in line)
    assert hook < stop, log[hook : stop + 1]
