"""Container commands, exec probes and `netemu exec` run sandboxed: the
host filesystem read-only, private /tmp, nobody unless the manifest says
root, and only the container's environment, never the caller's."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.api.validate import load_and_validate
from netemu.lab import LiveLab

PROJECT = Path(__file__).resolve().parents[2]
# What each container tries as it starts (its log shows the outcome).
TRY_WRITES = (
    f"id -u; for f in /etc/netemu-x /root/netemu-x {PROJECT}/netemu-x /tmp/ok; do "
    'if touch "$f" 2>/dev/null; then echo "wrote $f"; else echo "refused $f"; fi; done; '
    "exec sleep 300"
)
MANIFEST = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: plain}}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", {TRY_WRITES!r}]
      env: [{{name: GREETING, value: hello}}]
      readinessProbe:
        exec: {{command: ["sh", "-c", "test $(id -u) = 65534 && test $GREETING = hello"]}}
        periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: rooted}}
spec:
  securityContext: {{runAsUser: 1000}}
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", {TRY_WRITES!r}]
      securityContext: {{runAsUser: 0}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    manifest = tmp_path_factory.mktemp("sandbox") / "pods.yaml"
    manifest.write_text(MANIFEST)
    with running_lab([CONTROLPLANE / "default"], lab_name("sandbox")) as lab:
        lab.apply([item.obj for item in load_and_validate([manifest])])
        yield lab


def log_of(lab: LiveLab, pod: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = lab.logs(pod)
        if "/tmp/ok" in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{pod} wrote no complete log: {lab.logs(pod)!r}")


def test_a_command_runs_as_nobody_and_cannot_write_the_host(lab: LiveLab) -> None:
    assert log_of(lab, "plain").splitlines() == [
        "65534",
        "refused /etc/netemu-x",
        "refused /root/netemu-x",
        f"refused {PROJECT}/netemu-x",
        "wrote /tmp/ok",
    ]
    assert not Path("/etc/netemu-x").exists()
    assert not (PROJECT / "netemu-x").exists()
    # `netemu exec` sees the container's own /tmp, as kubectl exec does.
    assert lab.exec("plain", ["ls", "/tmp"]).stdout.split() == ["ok"]


def test_run_as_user_0_is_root_in_the_sandbox_yet_cannot_write_the_host(lab: LiveLab) -> None:
    assert log_of(lab, "rooted").splitlines() == [
        "0",
        "refused /etc/netemu-x",
        "refused /root/netemu-x",
        f"refused {PROJECT}/netemu-x",
        "wrote /tmp/ok",
    ]
    assert not Path("/root/netemu-x").exists()


def test_exec_probe_runs_in_the_container_sandbox(lab: LiveLab) -> None:
    # The readiness probe passes only as nobody with the container's env.
    deadline = time.monotonic() + 10
    ready = ""
    while time.monotonic() < deadline:
        rows = lab.table("pods", "default", None)["table"]["rows"]
        ready = next(row["cells"][1] for row in rows if row["cells"][0] == "plain")
        if ready == "1/1":
            break
        time.sleep(0.2)
    assert ready == "1/1"


def test_exec_env_is_the_container_environment_never_the_caller(
    lab: LiveLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETEMU_CALLER_ONLY", "leaked")
    result = lab.exec("plain", ["env"])
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "NETEMU_CALLER_ONLY" not in env
    assert "NETEMU_CALLER_ONLY" in os.environ
    assert env["GREETING"] == "hello"
    assert env["HOSTNAME"] == "plain"
    # Everything else is a Service variable (kubelet's, for the pod's namespace).
    own = {"PATH", "HOSTNAME", "HOME", "PWD", "GREETING"}
    assert all("_SERVICE_" in key or "_PORT" in key for key in set(env) - own), env
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lab.exec("plain", ["id", "-u"]).stdout.strip() == "65534"
    assert lab.exec("rooted", ["id", "-u"]).stdout.strip() == "0"


def test_a_non_root_container_may_bind_low_ports_and_ping_as_under_containerd(
    lab: LiveLab,
) -> None:
    bind = "import socket; s = socket.socket(); s.bind(('0.0.0.0', 81)); print('bound')"
    result = lab.exec("plain", ["python3", "-c", bind])
    assert (result.returncode, result.stdout) == (0, "bound\n"), result.stderr
    ping = lab.exec("plain", ["ping", "-c", "1", "-W", "1", "127.0.0.1"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
