"""Stand-in containers in a live lab (netemu.net.standin): the default lab
plus one pod `shop` whose containers are those of a published app, with
programs this machine does not have:

- `app` runs /opt/shop/bin/server (missing): a stand-in, Ready through its
  own readiness probe (httpGet on a named port and a path, with a header),
  a tcpSocket liveness probe on a port it does not declare, and an exec
  startup probe whose program is missing;
- `tls` has no command (its image's entrypoint): an HTTPS readiness probe on
  8443 and an exec liveness probe whose program is missing;
- `cart` has no command and a grpc readiness probe: the stand-in serves the
  gRPC health service on its port;
- `shell` runs `sh -c 'sleep 1000'`, which exists here: not replaced.

The pod is Ready within 10 s of `up` and stays so without restarts; the two
missing exec programs give one notice; the containers' ports answer (HTTP,
HTTPS, UDP, gRPC health, the probe-only TCP port); the fail switch takes the pod out of
Ready through its own probe path and back; `get pods -o wide` and the pod's
annotation name the stand-ins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, lab_name, netemu_cli, processes_in_lab, running_lab

from netemu.kernel import kubeprobe
from netemu.kernel.journal import LOG, run_dir
from netemu.kernel.probe import http_get, udp_request
from netemu.lab import LiveLab
from netemu.net.standin import STAND_IN_ANNOTATION

pytestmark = pytest.mark.privileged

SHOP = """\
apiVersion: v1
kind: Pod
metadata:
  name: shop
  labels: {app: shop}
spec:
  containers:
    - name: app
      image: example/shop:1.0
      command: [/opt/shop/bin/server]
      args: [--port, "9080"]
      ports:
        - {name: http, containerPort: 9080}
        - {name: discovery, containerPort: 5353, protocol: UDP}
      readinessProbe:
        httpGet:
          path: /health/ready?verbose=1
          port: http
          httpHeaders: [{name: X-Shop-Probe, value: kubelet}]
        periodSeconds: 1
      livenessProbe:
        tcpSocket: {port: 9090}
        periodSeconds: 1
      startupProbe:
        exec: {command: [/opt/shop/bin/healthcheck]}
        periodSeconds: 1
    - name: tls
      image: example/shop-tls:1.0
      ports: [{name: web, containerPort: 8443}]
      readinessProbe:
        httpGet: {path: /ready, port: 8443, scheme: HTTPS}
        periodSeconds: 1
      livenessProbe:
        exec: {command: [grpc_health_probe, -addr=:8443]}
        periodSeconds: 1
    - name: cart
      image: example/cartservice:1.0
      ports: [{name: grpc, containerPort: 7070}]
      readinessProbe:
        grpc: {port: 7070}
        periodSeconds: 1
    - name: shell
      image: busybox
      command: [sh, -c, sleep 1000]
"""
READY_WITHIN = 10.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveLab, float]]:
    manifest = tmp_path_factory.mktemp("standin") / "shop.yaml"
    manifest.write_text(SHOP)
    with running_lab([CONTROLPLANE / "default", manifest], lab_name("standin")) as lab:
        yield lab, time.monotonic()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def shop(lab: LiveLab) -> dict[str, Any]:
    (pod,) = [p for p in lab.state()["pods"] if p["metadata"]["name"] == "shop"]
    return pod


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def restarts(pod: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["restartCount"] for s in pod["status"].get("containerStatuses", [])}


def node_netns(lab: LiveLab, pod: dict[str, Any]) -> str:
    netns_name, _ = lab.node_netns(pod["spec"]["nodeName"])
    return netns_name


def test_ready_within_10s_and_stays_up(lab: tuple[LiveLab, float]) -> None:
    live, since = lab
    wait_for(lambda: ready(shop(live)), READY_WITHIN - (time.monotonic() - since), "shop Ready")
    # Three liveness periods and more: a failing liveness probe (threshold
    # 3) would have restarted a container by now.
    time.sleep(4.0)
    pod = shop(live)
    assert ready(pod)
    assert restarts(pod) == {"app": 0, "tls": 0, "cart": 0, "shell": 0}


def test_missing_exec_programs_pass_with_one_notice(lab: tuple[LiveLab, float]) -> None:
    live, _ = lab
    wait_for(lambda: ready(shop(live)), READY_WITHIN, "shop Ready")
    lines = (run_dir(live.name) / LOG).read_text().splitlines()
    notices = [line for line in lines if "default/shop/" in line and "exec probe not run" in line]
    assert len(notices) == 1, notices
    assert "counted as passing" in notices[0]
    assert not [line for line in lines if "default/shop/" in line and "probe failed" in line]


def test_the_containers_ports_answer(lab: tuple[LiveLab, float]) -> None:
    live, _ = lab
    wait_for(lambda: ready(shop(live)), READY_WITHIN, "shop Ready")
    pod = shop(live)
    ip, netns_name = pod["status"]["podIP"], node_netns(live, pod)
    plain = http_get(netns_name, ip, 9080)
    assert plain.outcome == "answered" and plain.reply is not None
    assert plain.reply["pod"] == "shop"
    probe_path = http_get(netns_name, ip, 9080, "/health/ready")
    assert (probe_path.status, probe_path.body) == (200, "ok")
    https = kubeprobe.http_get(kubeprobe.HttpGet(netns_name, ip, 8443, "/", "HTTPS"), 2.0)
    assert https.result == "success" and json.loads(https.output)["pod"] == "shop"
    assert kubeprobe.tcp_connect(kubeprobe.TcpConnect(netns_name, ip, 9090), 2.0).result == (
        "success"
    )
    grpc = kubeprobe.grpc_check(kubeprobe.GrpcCheck(netns_name, ip, 7070, "hipstershop.Cart"), 2.0)
    assert grpc == kubeprobe.Outcome("success", "service healthy")
    udp = udp_request(netns_name, ip, 5353)
    assert udp.outcome == "answered" and udp.reply is not None and udp.reply["pod"] == "shop"


def test_a_command_that_exists_is_not_replaced(lab: tuple[LiveLab, float]) -> None:
    live, _ = lab
    wait_for(lambda: ready(shop(live)), READY_WITHIN, "shop Ready")
    assert [p for p in processes_in_lab(live, ["sleep"]) if "_pod_default_shop" in p]
    assert shop(live)["metadata"]["annotations"][STAND_IN_ANNOTATION] == "app,tls,cart"
    shown = netemu_cli("get", "pods", "--lab", live.name, "-n", "default", "-o", "wide")
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split()[-1] == "STAND-INS"
    (row,) = [r for r in rows if r.startswith("shop ")]
    assert row.split()[-1] == "app,tls,cart"
    web = [r for r in rows if r.startswith("web-")]
    assert web and all(r.split()[-1] == "web" for r in web)


def test_the_fail_switch_works_on_the_stand_ins_probe_path(lab: tuple[LiveLab, float]) -> None:
    live, _ = lab
    wait_for(lambda: ready(shop(live)), READY_WITHIN, "shop Ready")
    pod = shop(live)
    ip, netns_name = pod["status"]["podIP"], node_netns(live, pod)
    assert http_get(netns_name, ip, 9080, "/fail-readiness").status == 200
    wait_for(lambda: not ready(shop(live)), 3 * 1 + 2.0, "shop not Ready")
    assert http_get(netns_name, ip, 9080, "/health/ready").status == 500
    assert http_get(netns_name, ip, 9080, "/pass-readiness").status == 200
    wait_for(lambda: ready(shop(live)), 1 + 2.0, "shop Ready again")
    assert restarts(shop(live)) == {"app": 0, "tls": 0, "cart": 0, "shell": 0}
