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
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{MODE: fast, GREETING: hi}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app-secret}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: configured, labels: {{app: shop}}}}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", "echo mode=$(MODE) pw=$PASSWORD; exec sleep 300"]
      envFrom: [{{configMapRef: {{name: app-config}}, prefix: CFG_}}]
      env:
        - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: app-config, key: MODE}}}}}}
        - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: app-secret, key: password}}}}}}
        - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
        - {{name: MY_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: waiting}}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", "echo level=$LEVEL; exec sleep 300"]
      env:
        - {{name: LEVEL, valueFrom: {{configMapKeyRef: {{name: late, key: level}}}}}}
"""
VOLUMES = """\
apiVersion: v1
kind: Pod
metadata: {name: mounted, labels: {app: shop}}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", "echo written > /cache/note; exec sleep 300"]
      volumeMounts:
        - {name: config, mountPath: /etc/app}
        - {name: secret, mountPath: /etc/secret-pw, subPath: password}
        - {name: cache, mountPath: /cache}
        - {name: info, mountPath: /etc/podinfo}
        - {name: token, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}
        - {name: host, mountPath: /host-etc}
  volumes:
    - name: config
      configMap:
        name: app-config
        items: [{key: MODE, path: conf/mode, mode: 0600}]
    - {name: secret, secret: {secretName: app-secret}}
    - {name: cache, emptyDir: {}}
    - name: info
      downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
    - name: token
      projected: {sources: [{serviceAccountToken: {path: token}}]}
    - {name: host, hostPath: {path: /etc}}
---
apiVersion: v1
kind: Pod
metadata: {name: unmounted}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sleep", "300"]
      volumeMounts: [{name: v, mountPath: /v}]
  volumes: [{name: v, configMap: {name: absent}}]
"""
LATE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: late}
data: {level: debug}
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


def pod_row(lab: LiveLab, name: str) -> list[str]:
    rows = lab.table("pods", "default", None)["table"]["rows"]
    cells: list[str] = next(row["cells"] for row in rows if row["cells"][0] == name)
    return cells


def test_config_map_and_secret_env_reach_the_container(lab: LiveLab) -> None:
    deadline = time.monotonic() + 5
    while "mode=" not in lab.logs("configured") and time.monotonic() < deadline:
        time.sleep(0.1)
    # $(MODE) in the command is expanded by the kubelet, $PASSWORD by the shell.
    assert lab.logs("configured") == "mode=fast pw=s3cret\n"
    result = lab.exec("configured", ["env"])
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    ip = lab.info()["pods"]["default/configured"]["ip"]
    assert {k: env.get(k) for k in ("CFG_MODE", "CFG_GREETING", "APP", "MY_IP")} == {
        "CFG_MODE": "fast",
        "CFG_GREETING": "hi",
        "APP": "shop",
        "MY_IP": ip,
    }


def test_a_missing_config_map_holds_the_container_until_it_appears(
    lab: LiveLab, tmp_path: Path
) -> None:
    deadline = time.monotonic() + 5
    while pod_row(lab, "waiting")[2] != "CreateContainerConfigError":
        assert time.monotonic() < deadline, pod_row(lab, "waiting")
        time.sleep(0.1)
    pod = next(p for p in lab.cluster_state().pods if p.metadata.name == "waiting")
    waiting = pod.status.container_statuses[0].state
    assert waiting is not None and waiting.waiting is not None
    assert waiting.waiting.message == 'configmap "late" not found'
    assert pod.status.phase == "Pending"
    assert pod.status.condition("Ready") == "False"
    assert lab.logs("waiting") == ""

    late = tmp_path / "late.yaml"
    late.write_text(LATE)
    lab.apply([item.obj for item in load_and_validate([late])])
    deadline = time.monotonic() + 5
    while pod_row(lab, "waiting")[1:3] != ["1/1", "Running"]:
        assert time.monotonic() < deadline, pod_row(lab, "waiting")
        time.sleep(0.1)
    assert pod_row(lab, "waiting")[3] == "0"  # its first start, no restart
    deadline = time.monotonic() + 3
    while "level=" not in lab.logs("waiting") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.logs("waiting") == "level=debug\n"


def test_volumes_appear_as_files_in_the_container(lab: LiveLab, tmp_path: Path) -> None:
    manifest = tmp_path / "mounted.yaml"
    manifest.write_text(VOLUMES)
    lab.apply([item.obj for item in load_and_validate([manifest])])

    def run(*argv: str) -> str:
        result = lab.exec("mounted", list(argv))
        assert result.returncode == 0, result.stderr
        return result.stdout

    # items with their own path and mode, in kubelet's atomic-writer layout;
    # the container (nobody) cannot read a 0600 file root wrote, as in Kubernetes.
    listed = run("ls", "-A", "/etc/app").split()
    assert listed[-2:] == ["..data", "conf"] and listed[0].startswith("..20")
    assert run("stat", "-L", "-c", "%a", "/etc/app/conf/mode").strip() == "600"
    assert run("cat", "/etc/secret-pw") == "s3cret"
    assert run("cat", "/etc/podinfo/labels") == 'app="shop"'
    assert "stand-in" in run("cat", "/var/run/secrets/kubernetes.io/serviceaccount/token")
    deadline = time.monotonic() + 3
    while "written" not in run("sh", "-c", "cat /cache/note 2>/dev/null || true"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Not emulated: an empty directory, never the host's /etc.
    assert run("ls", "-A", "/host-etc") == ""
    # API volumes are read-only whatever the mount says.
    assert lab.exec("mounted", ["touch", "/etc/podinfo/x"]).returncode != 0
    # A volume whose ConfigMap is missing holds its container, as kubelet does.
    deadline = time.monotonic() + 5
    while pod_row(lab, "unmounted")[2] != "ContainerCreating":
        assert time.monotonic() < deadline, pod_row(lab, "unmounted")
        time.sleep(0.1)
    pod = next(p for p in lab.cluster_state().pods if p.metadata.name == "unmounted")
    state = pod.status.container_statuses[0].state
    assert state is not None and state.waiting is not None
    assert state.waiting.message == (
        'MountVolume.SetUp failed for volume "v" : configmap "absent" not found'
    )
