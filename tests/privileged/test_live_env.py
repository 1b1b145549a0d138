"""Service environment variables in a live lab, as kubelet sets them: a
container started after a Service exists has `WEB_SERVICE_HOST` and the
rest with the Service's live ClusterIP; a Service applied later is not in a
running container's environment (the limitation DNS removes) but is in a
pod started after it; `enableServiceLinks: false` turns them off.

Each pod's command writes its environment to its container log
(/run/netemu/<lab>/logs/<ns>/<pod>/<container>.log), then sleeps.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, cluster_ip, lab_name, running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel import netns
from netemu.kernel.journal import run_dir
from netemu.lab import LiveLab

END = "--- end of env ---"
WRITTEN_WITHIN = 5.0


def pod_manifest(name: str, extra_spec: str = "") -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
{extra_spec}  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "env | sort; echo '{END}'; exec sleep 3600"]
      env:
        - name: WEB_URL
          value: "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)/"
        - name: WEB_SERVICE_PORT_HTTP
          value: "own value"
"""


LATE_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: late-svc
spec:
  selector:
    app: web
  ports:
    - name: alt
      port: 8080
      protocol: UDP
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    directory = tmp_path_factory.mktemp("env") / "default"
    shutil.copytree(CONTROLPLANE / "default", directory)
    (directory / "env-pods.yaml").write_text(
        pod_manifest("env-before")
        + "---\n"
        + pod_manifest("env-off", "  enableServiceLinks: false\n")
    )
    with running_lab([directory], lab_name("env")) as lab:
        yield lab


def logged_env(lab: LiveLab, pod: str) -> dict[str, str]:
    """The environment pod `pod`'s container wrote to its log at start."""
    log = run_dir(lab.name) / "logs" / "default" / pod / "app.log"
    deadline = time.monotonic() + WRITTEN_WITHIN
    while True:
        text = log.read_text() if log.exists() else ""
        if END in text:
            break
        assert time.monotonic() < deadline, f"{log} has no complete env after {WRITTEN_WITHIN} s"
        time.sleep(0.02)
    lines = text.split(END)[0].splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def running_env(lab: LiveLab, pod: str) -> dict[str, str]:
    """The environment of the `sleep` the container's shell became (once it has)."""
    logged_env(lab, pod)
    pod_ns = str(lab.info()["pods"][f"default/{pod}"]["netns"])
    deadline = time.monotonic() + WRITTEN_WITHIN
    while True:
        pids = netns.pids(pod_ns)
        comms = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids]
        if comms == ["sleep"]:
            break
        assert time.monotonic() < deadline, f"pod {pod}: processes {comms}, not one sleep"
        time.sleep(0.02)
    raw = Path(f"/proc/{pids[0]}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def apply_text(lab: LiveLab, tmp_path: Path, text: str) -> list[str]:
    manifest = tmp_path / "apply.yaml"
    manifest.write_text(text)
    return lab.apply([item.obj for item in load_and_validate([manifest])])


def service_vars(env: dict[str, str]) -> set[str]:
    return {k for k in env if "_SERVICE_" in k or k.endswith("_PORT") or "_PORT_" in k}


def test_container_gets_the_services_of_its_namespace(lab: LiveLab) -> None:
    state = lab.state()
    web = cluster_ip(state, "web")
    env = logged_env(lab, "env-before")
    assert env["WEB_SERVICE_HOST"] == web
    assert env["WEB_SERVICE_PORT"] == "80"
    assert env["WEB_PORT"] == f"tcp://{web}:80"
    assert env["WEB_PORT_80_TCP"] == f"tcp://{web}:80"
    assert env["WEB_PORT_80_TCP_PROTO"] == "tcp"
    assert env["WEB_PORT_80_TCP_PORT"] == "80"
    assert env["WEB_PORT_80_TCP_ADDR"] == web
    for name in ("empty", "web-local", "web-nodeport"):
        prefix = name.upper().replace("-", "_")
        assert env[f"{prefix}_SERVICE_HOST"] == cluster_ip(state, name)
    # The container's own env wins, and may refer to Service variables.
    assert env["WEB_SERVICE_PORT_HTTP"] == "own value"
    assert env["WEB_URL"] == f"http://{web}:80/"
    # A live lab has default/kubernetes (https 443 at the first service IP).
    api = cluster_ip(state, "kubernetes", "default")
    assert api == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_HOST"] == api
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT_443_TCP"] == f"tcp://{api}:443"


MASTER_SERVICE_VARS = {
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBERNETES_SERVICE_PORT_HTTPS",
    "KUBERNETES_PORT",
    "KUBERNETES_PORT_443_TCP",
    "KUBERNETES_PORT_443_TCP_PROTO",
    "KUBERNETES_PORT_443_TCP_PORT",
    "KUBERNETES_PORT_443_TCP_ADDR",
}


def test_enable_service_links_false_gives_no_service_variables(lab: LiveLab) -> None:
    env = logged_env(lab, "env-off")
    # Only the master Service's variables, which kubelet adds whatever
    # enableServiceLinks says (kubelet_pods.go, getServiceEnvVarMap).
    expected = {"WEB_SERVICE_PORT_HTTP", *MASTER_SERVICE_VARS}
    assert service_vars(env) == expected, sorted(service_vars(env))
    # With nothing to refer to, the references stay as written (kubelet's expansion).
    assert env["WEB_URL"] == "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)/"


def test_later_service_reaches_only_containers_started_after_it(
    lab: LiveLab, tmp_path: Path
) -> None:
    before = running_env(lab, "env-before")
    assert before["WEB_SERVICE_HOST"] == cluster_ip(lab.state(), "web")

    assert apply_text(lab, tmp_path, LATE_SERVICE) == ["Service/late-svc"]
    late = cluster_ip(lab.state(), "late-svc")

    # The running container keeps the environment it started with.
    after_apply = running_env(lab, "env-before")
    assert after_apply == before
    assert not [k for k in after_apply if k.startswith("LATE_SVC_")]
    assert not [k for k in logged_env(lab, "env-before") if k.startswith("LATE_SVC_")]

    # A pod started now gets it: UDP first port, named port, dash to underscore.
    assert apply_text(lab, tmp_path, pod_manifest("env-after")) == ["Pod/env-after"]
    env = logged_env(lab, "env-after")
    assert env["LATE_SVC_SERVICE_HOST"] == late
    assert env["LATE_SVC_SERVICE_PORT"] == "8080"
    assert env["LATE_SVC_SERVICE_PORT_ALT"] == "8080"
    assert env["LATE_SVC_PORT"] == f"udp://{late}:8080"
    assert env["LATE_SVC_PORT_8080_UDP"] == f"udp://{late}:8080"
    assert env["LATE_SVC_PORT_8080_UDP_PROTO"] == "udp"
    assert env["LATE_SVC_PORT_8080_UDP_PORT"] == "8080"
    assert env["LATE_SVC_PORT_8080_UDP_ADDR"] == late
    assert env["WEB_SERVICE_HOST"] == cluster_ip(lab.state(), "web")
