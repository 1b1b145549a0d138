"""Probes in a live lab, as the kubelet runs them (netemu.node.prober).

The lab is controlplane/default with probes on the web Deployment
(readiness GET /readyz and liveness GET /healthz, periodSeconds 1,
failureThreshold 2), flipped through the built-in test server's switches
(/fail-readiness, /fail-liveness and their pass-) and flag files:

- a pod whose readiness fails leaves its Service's EndpointSlice and
  node-1's rules within periodSeconds x failureThreshold + 1 s, requests
  sent to the ClusterIP meanwhile are all answered, none by it once it has
  left, and it comes back within periodSeconds + 1 s of passing again;
- a failing liveness probe restarts the container: restartCount 1 (in the
  pod's status and `netemu get pods`), the restarted server has forgotten
  the switch, `netemu logs --previous` shows the instance before;
- a command container with an exec liveness probe and a tcpSocket
  readiness probe is killed and started again, its output before the
  restart in <container>.previous.log;
- a startup probe with a long failure window keeps a failing liveness
  probe from restarting the container until it has passed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, cluster_ip, endpoint_ips, lab_name, running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel.iptables import KernelIptables
from netemu.kernel.journal import run_dir
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab

PERIOD = 1
FAILURE_THRESHOLD = 2
# The bound: periodSeconds x failureThreshold, plus one second.
LEAVE_WITHIN = PERIOD * FAILURE_THRESHOLD + 1.0
RETURN_WITHIN = PERIOD * 1 + 1.0  # successThreshold 1
PROBES = f"""\
          readinessProbe:
            httpGet: {{path: /readyz, port: http}}
            periodSeconds: {PERIOD}
            failureThreshold: {FAILURE_THRESHOLD}
          livenessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: {PERIOD}
            failureThreshold: {FAILURE_THRESHOLD}
"""
PORTS = """\
          ports:
            - name: http
              containerPort: 8080
"""
State = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """controlplane/default with probes on the web Deployment's container."""
    target = tmp_path_factory.mktemp("probes") / "default-probes"
    shutil.copytree(CONTROLPLANE / "default", target)
    web = target / "web.yaml"
    text = web.read_text()
    assert text.count(PORTS) == 1, "controlplane/default/web.yaml's container ports changed"
    web.write_text(text.replace(PORTS, PORTS + PROBES))
    return target


@pytest.fixture(scope="module")
def lab(lab_dir: Path) -> Iterator[LiveLab]:
    with running_lab([lab_dir], lab_name("probes")) as lab:
        wait_for(lambda: len(web_ready(lab.state())) == 3, 5.0, "the 3 web pods to be ready")
        yield lab


# -- helpers --------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def pods(state: State, prefix: str) -> list[dict[str, Any]]:
    return sorted(
        (p for p in state["pods"] if p["metadata"]["name"].startswith(prefix)),
        key=lambda p: str(p["metadata"]["name"]),
    )


def pod_named(state: State, name: str) -> dict[str, Any]:
    (pod,) = [p for p in state["pods"] if p["metadata"]["name"] == name]
    return pod


def web_ready(state: State) -> set[str]:
    return endpoint_ips(state, "web")


def container_status(state: State, pod: str) -> dict[str, Any]:
    """The pod's one container's status ({} until the kubelet reported it:
    its prober does so right after the pod started, not before apply returns)."""
    statuses = pod_named(state, pod)["status"].get("containerStatuses") or [{}]
    assert len(statuses) == 1, statuses
    status: dict[str, Any] = statuses[0]
    return status


def restarts(lab: LiveLab, pod: str) -> int:
    return int(container_status(lab.state(), pod).get("restartCount", 0))


def is_ready(lab: LiveLab, pod: str) -> bool:
    return bool(container_status(lab.state(), pod).get("ready"))


def dnat_targets(lab: LiveLab, node: str) -> str:
    """node's live iptables rules (iptables-save), for `--to-destination` checks."""
    netns_name, backend = lab.node_netns(node)
    return KernelIptables(netns_name, backend).save()


def in_rules(lab: LiveLab, node: str, ip: str) -> bool:
    return f"--to-destination {ip}:8080" in dnat_targets(lab, node)


def ask(lab: LiveLab, node: str, ip: str, path: str) -> str:
    """GET http://ip:8080/path from a node (as the kubelet's probes come)."""
    netns_name, _ = lab.node_netns(node)
    result = http_get(netns_name, ip, 8080, path)
    assert result.outcome == "answered" and result.status == 200, result
    return result.body


def netemu(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "netemu", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass(frozen=True)
class Sent:
    started: float
    pod: str | None  # None: not answered
    detail: str


class Traffic:
    """Requests to a Service's ClusterIP from node-1, one new connection
    each, back to back, in a thread."""

    def __init__(self, lab: LiveLab, vip: str) -> None:
        self.netns, _ = lab.node_netns("node-1")
        self.vip = vip
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            result = http_get(self.netns, self.vip, 80, timeout=2.0)
            pod = result.reply["pod"] if result.reply else None
            self.sent.append(Sent(started, pod, f"{result.outcome} {result.detail}"))
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def apply(lab: LiveLab, directory: Path, text: str) -> None:
    manifest = directory / "pod.yaml"
    manifest.write_text(text)
    lab.apply([item.obj for item in load_and_validate([manifest])])


# -- readiness ------------------------------------------------------------------


def test_readiness_failure_takes_a_pod_out_of_endpoints_and_rules(lab: LiveLab) -> None:
    state = lab.state()
    vip = cluster_ip(state, "web")
    pod = pods(state, "web-")[0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    node = pod["spec"]["nodeName"]
    assert ip in web_ready(state) and in_rules(lab, "node-1", ip)

    with Traffic(lab, vip) as traffic:
        time.sleep(0.3)
        failed_at = time.monotonic()
        assert ask(lab, node, ip, "/fail-readiness") == f"{name}: readiness (/readyz) now fails\n"
        left = wait_for(
            lambda: ip not in web_ready(lab.state()), LEAVE_WITHIN, f"{name} leaving the endpoints"
        )
        out_at = time.monotonic()
        # The reconcile that wrote the EndpointSlice programmed every node.
        assert not in_rules(lab, "node-1", ip), f"{ip} still in node-1's rules"
        assert not in_rules(lab, "node-2", ip), f"{ip} still in node-2's rules"
        status = pod_named(lab.state(), name)["status"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
        assert status["containerStatuses"][0]["ready"] is False
        time.sleep(0.5)

        passed_at = time.monotonic()
        assert ask(lab, node, ip, "/pass-readiness") == f"{name}: readiness (/readyz) now passes\n"
        back = wait_for(lambda: ip in web_ready(lab.state()), RETURN_WITHIN, f"{name} coming back")
        assert in_rules(lab, "node-1", ip)
        time.sleep(0.5)

    sent = traffic.sent
    assert sent, "no request was sent"
    unanswered = [s for s in sent if s.pod is None]
    assert not unanswered, f"{len(unanswered)} of {len(sent)} requests unanswered: {unanswered[:3]}"
    # Once it had left, nothing reached it until it had passed again.
    during = [s for s in sent if out_at <= s.started < passed_at]
    assert during, "no request while the pod was out"
    assert name not in {s.pod for s in during}, f"{name} answered while not ready"
    assert {s.pod for s in sent if s.started >= failed_at} - {None}, "no answers"
    after = [s for s in sent if s.started >= passed_at + back]
    assert name in {s.pod for s in after}, f"{name} got no traffic after coming back"
    print(f"left the endpoints {left:.2f} s after failing, back {back:.2f} s after passing")


def test_a_readiness_flag_file_fails_the_pod_too(lab: LiveLab) -> None:
    state = lab.state()
    pod = pods(state, "web-")[2]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    flag = run_dir(lab.name) / "health" / "default" / name / "fail-readiness"
    assert flag.parent.is_dir(), "the kubelet makes the pod's flag directory"
    flag.touch()
    try:
        wait_for(lambda: ip not in web_ready(lab.state()), LEAVE_WITHIN, "leaving on a flag file")
    finally:
        flag.unlink()
    wait_for(lambda: ip in web_ready(lab.state()), RETURN_WITHIN, "coming back without it")


# -- liveness -------------------------------------------------------------------


def test_liveness_failure_restarts_the_container(lab: LiveLab) -> None:
    state = lab.state()
    pod = pods(state, "web-")[1]
    name, ip, node = pod["metadata"]["name"], pod["status"]["podIP"], pod["spec"]["nodeName"]
    assert restarts(lab, name) == 0
    before = container_status(state, name)["state"]["running"]["startedAt"]

    ask(lab, node, ip, "/fail-liveness")
    took = wait_for(lambda: restarts(lab, name) == 1, LEAVE_WITHIN, f"{name} restarting")
    print(f"restarted {took:.2f} s after /fail-liveness")
    status = container_status(lab.state(), name)
    assert status["lastState"]["terminated"]["exitCode"] == 143
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert "startedAt" in status["state"]["running"]
    # The restarted server forgot the switch, as a restarted process would.
    assert ask(lab, node, ip, "/healthz") == "ok"
    wait_for(lambda: ip in web_ready(lab.state()), RETURN_WITHIN, f"{name} ready again")
    time.sleep(PERIOD * FAILURE_THRESHOLD + 0.5)
    assert restarts(lab, name) == 1, "restarted more than once"
    assert before <= status["state"]["running"]["startedAt"]

    table = netemu("get", "pods", "--lab", lab.name)
    row = next(line.split() for line in table.splitlines() if line.split()[1:2] == [name])
    assert row[2:5] == ["1/1", "Running", "1"], row
    assert row[5].startswith("(") and row[6] == "ago)", row
    previous = netemu("logs", "--lab", lab.name, name, "--previous")
    assert '"GET /fail-liveness HTTP/1.1" 200' in previous
    assert '"GET /healthz HTTP/1.1" 500' in previous
    assert "kube-probe/" in previous
    current = lab.logs(name)
    assert "/fail-liveness" not in current and '"GET /healthz HTTP/1.1" 200' in current
    assert lab.logs(name, tail=1).count("\n") == 1


COMMAND_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
    - name: server
      image: python:3.11
      command: ["python3", "-u", "-c", "{script}"]
      ports: [{{containerPort: 9000}}]
      readinessProbe:
        tcpSocket: {{port: 9000}}
        periodSeconds: 1
      livenessProbe:
        exec:
          command: ["sh", "-c", "test ! -e {kill}"]
        periodSeconds: 1
        failureThreshold: 2
"""
SCRIPT = (
    "import socket, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 9000)); "
    "s.listen(); print('listening', time.time()); time.sleep(300)"
)


def test_exec_liveness_restarts_a_command_container(lab: LiveLab, tmp_path: Path) -> None:
    name = "probed-command"
    # In the container's own /tmp, which its exec probes and `netemu exec` share.
    kill = "/tmp/kill-me"
    apply(lab, tmp_path, COMMAND_POD.format(name=name, script=SCRIPT, kill=kill))
    try:
        # tcpSocket readiness: ready once the process listens.
        wait_for(lambda: is_ready(lab, name), 3.0, "ready (tcpSocket)")
        wait_for(lambda: "listening" in lab.logs(name), 3.0, "the command's output")
        assert lab.exec(name, ["touch", kill]).returncode == 0
        took = wait_for(lambda: restarts(lab, name) == 1, LEAVE_WITHIN, "an exec-probe restart")
        assert lab.exec(name, ["rm", kill]).returncode == 0
        print(f"restarted {took:.2f} s after the exec probe began failing")
        logs = run_dir(lab.name) / "logs" / "default" / name
        assert (logs / "server.previous.log").read_text().count("listening") == 1
        wait_for(lambda: "listening" in lab.logs(name), 3.0, "the new instance's output")
        assert lab.logs(name, previous=True).count("listening") == 1
        wait_for(lambda: is_ready(lab, name), 3.0, "ready again")
        assert restarts(lab, name) == 1
    finally:
        lab.delete([("Pod", "default", name)])


STARTUP_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
    - name: web
      ports: [{{name: http, containerPort: 8080}}]
      startupProbe:
        exec:
          command: ["test", "-e", "{started}"]
        periodSeconds: 1
        failureThreshold: 30
      livenessProbe:
        httpGet: {{path: /healthz, port: http}}
        periodSeconds: 1
        failureThreshold: 1
"""


def test_startup_probe_delays_liveness(lab: LiveLab, tmp_path: Path) -> None:
    name = "slow-start"
    started = "/tmp/started"  # the container's own /tmp, shared with `netemu exec`
    # /healthz fails from the start: without the startup probe the first
    # liveness probe (1 s in) would restart the container.
    flags = run_dir(lab.name) / "health" / "default" / name
    flags.mkdir(parents=True, exist_ok=True)
    (flags / "fail-liveness").touch()
    apply(lab, tmp_path, STARTUP_POD.format(name=name, started=started))
    try:
        time.sleep(3.0)
        status = container_status(lab.state(), name)
        assert status, "no container status 3 s after the pod started"
        assert status["restartCount"] == 0, "liveness ran before the startup probe passed"
        assert status["started"] is False and status["ready"] is False
        assert lab.exec(name, ["touch", started]).returncode == 0
        # Startup passes at its next tick, liveness fails at its next one.
        took = wait_for(lambda: restarts(lab, name) >= 1, 3.0, "the liveness restart")
        print(f"restarted {took:.2f} s after the startup probe could pass")
    finally:
        lab.delete([("Pod", "default", name)])
