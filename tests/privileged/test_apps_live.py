"""Public applications as published (tests/data/apps/<app>/, unmodified)
come up in a live lab with `netemu up -f <app>` alone (netemu's built-in
default Lab: two nodes, one external client), every pod turns Ready, and the
app's entry Service answers: from a pod of the app by its DNS name (a TCP
connect, and an HTTP(S) GET where the app speaks HTTP), and, for every
NodePort or LoadBalancer Service of the app, from the external client
through each node's nodePort.

"Ready in time" means: within READY_WITHIN s after `up` returned, plus the
time Kubernetes itself needs before it may call the pods ready (their
readinessProbes' initialDelaySeconds on the kubelet's probe ticks, and a
StatefulSet's pods one after another); `readiness_floor` computes that from
the manifests. The Ready condition's lastTransitionTime is what is checked,
so a test that runs after its app's deadline still judges the app by when
its pods turned ready, not by when the test looked.

All the apps' labs are brought up together (PARALLEL at a time, the slowest
first) by one module fixture and taken down together at its end, so the
module takes about as long as its slowest app. An app that cannot pass is in
LEFT_OUT with the reason, which its SOURCE file states too.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from netemu.api.core import Pod
from netemu.controlplane.addons import BUILTIN_DNS, BUILTIN_INGRESS, BUILTIN_SERVER
from netemu.testing.plugin import LabFactory
from netemu.testing.testlab import NetemuLab, unique_lab_name

APPS_DIR = Path(__file__).parents[2] / "tests" / "data" / "apps"
READY_WITHIN = 10.0
PARALLEL = 4
CONNECT_TIMEOUT = 5  # s, for each curl or TCP connect
# kubelet's default readinessProbe periodSeconds.
DEFAULT_PERIOD = 10


@dataclass(frozen=True)
class App:
    name: str  # its directory under tests/data/apps
    service: str  # the entry Service
    port: int  # its port
    protocol: Literal["http", "https", "tcp"]
    pods: int  # pods the app runs in the default Lab (two nodes)
    namespace: str = "default"


APPS = (
    App("azure-vote", "azure-vote-front", 80, "http", pods=2),
    App("bookinfo", "productpage", 9080, "http", pods=6),
    App("guestbook", "frontend", 80, "http", pods=6),
    App("guestbook-go", "guestbook", 3000, "http", pods=6),
    App("microservices-demo", "frontend", 80, "http", pods=12),
    App("nginx", "my-nginx", 80, "http", pods=2),
    # kube-rbac-proxy serves HTTPS on hostPort 9100 of each node (hostNetwork).
    App("node-exporter", "node-exporter", 9100, "https", pods=2, namespace="monitoring"),
    App("podinfo", "podinfo", 9898, "http", pods=1),
    App("tensorflow-serving", "tf-serving", 8501, "http", pods=1),
    App("voting-app", "vote", 8080, "http", pods=5),
)
BY_NAME = {app.name: app for app in APPS}

LEFT_OUT = {
    "ingress-nginx": (
        "the controller mounts Secret ingress-nginx-admission, which only the admission Job's "
        "program (kube-webhook-certgen) creates, through the API server; a lab has no images"
    ),
    "cassandra": (
        "its readinessProbe runs /bin/bash -c /ready-probe.sh: bash is on the machine, so the "
        "probe runs, and fails (exit 127) for want of the image's script"
    ),
    "mysql": (
        "the xtrabackup container's bash script ends in `exec ncat ...` (exit 127: not on the "
        "machine) and its cd /var/lib/mysql needs the volumeClaimTemplate's volume mounted"
    ),
}


# -- what the manifests ask for ---------------------------------------------------


def documents(app: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((APPS_DIR / app).glob("*.y*ml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict))
    return docs


def readiness_floor(app: str) -> float:
    """The least time, in seconds after its containers start, Kubernetes
    takes to call every pod of the app ready. The kubelet's prober ticks
    every periodSeconds and skips the ticks before initialDelaySeconds
    (pkg/kubelet/prober/worker.go), so a probed container turns ready on the
    first tick at or after its initial delay; a StatefulSet with the default
    podManagementPolicy OrderedReady starts each pod when the one before it
    is ready. (microservices-demo's load generator waits in an init
    container for the frontend, retrying every 10 s: frontend's 10 s + 10 s,
    below adservice's 30 s.)"""
    floor = 0.0
    for doc in documents(app):
        spec = doc.get("spec") or {}
        template = spec.get("template", {}).get("spec") if doc["kind"] != "Pod" else spec
        if not isinstance(template, dict):
            continue
        pod_floor = 0.0
        for container in template.get("containers", []):
            probe = container.get("readinessProbe")
            if probe:
                period = probe.get("periodSeconds", DEFAULT_PERIOD)
                pod_floor = max(
                    pod_floor, math.ceil(probe.get("initialDelaySeconds", 0) / period) * period
                )
        ordered = doc["kind"] == "StatefulSet" and spec.get("podManagementPolicy") != "Parallel"
        floor = max(floor, pod_floor * (spec.get("replicas", 1) if ordered else 1))
    return floor


def exposed_ports(app: str) -> list[tuple[str, int]]:
    """(Service, port) of every NodePort or LoadBalancer Service port."""
    return [
        (doc["metadata"]["name"], port["port"])
        for doc in documents(app)
        if doc["kind"] == "Service"
        and doc.get("spec", {}).get("type") in ("NodePort", "LoadBalancer")
        for port in doc["spec"]["ports"]
    ]


EXPOSED = [app.name for app in APPS if exposed_ports(app.name)]


# -- the labs ---------------------------------------------------------------------


@dataclass
class Brought:
    lab: NetemuLab | None
    error: BaseException | None
    up_at: float  # time.time() when `up` returned (or failed)


@pytest.fixture(scope="module")
def labs(netemu_lab_module: LabFactory) -> Iterator[dict[str, Brought]]:
    contexts: list[contextlib.AbstractContextManager[NetemuLab]] = []

    def bring_up(app: App) -> Brought:
        context = netemu_lab_module(APPS_DIR / app.name, name=unique_lab_name(f"app-{app.name}"))
        try:
            lab = context.__enter__()
        except Exception as exc:  # reported by this app's tests, not the others'
            return Brought(None, exc, time.time())
        contexts.append(context)
        return Brought(lab, None, time.time())

    slowest_first = sorted(APPS, key=lambda app: -readiness_floor(app.name))
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            brought = dict(
                zip(
                    (app.name for app in slowest_first),
                    pool.map(bring_up, slowest_first),
                    strict=True,
                )
            )
        yield brought
    finally:
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda context: context.__exit__(None, None, None), contexts))


def lab_of(labs: dict[str, Brought], app: App) -> tuple[NetemuLab, float]:
    brought = labs[app.name]
    if brought.lab is None:
        pytest.fail(f"{app.name} did not come up: {brought.error}")
    return brought.lab, brought.up_at


def app_pods(lab: NetemuLab, app: App) -> list[Pod]:
    """The app's pods, not being deleted: not the lab's addons (the cluster
    DNS, and the ingress-nginx controller an app's Ingress brings)."""
    return [
        pod
        for pod in lab.state().pods
        if pod.metadata.annotations.get(BUILTIN_SERVER) not in (BUILTIN_DNS, BUILTIN_INGRESS)
        and not pod.metadata.deletion_timestamp
    ]


def ready_since(pod: Pod) -> float | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready" and cond.status == "True":
            if cond.last_transition_time is None:
                return None
            return datetime.fromisoformat(str(cond.last_transition_time)).timestamp()
    return None


def wait_ready(lab: NetemuLab, app: App, up_at: float) -> list[Pod]:
    """The app's pods once all are Ready, or as they are at its deadline."""
    deadline = up_at + readiness_floor(app.name) + READY_WITHIN
    while True:
        pods = app_pods(lab, app)
        if len(pods) == app.pods and all(ready_since(p) is not None for p in pods):
            return pods
        if time.time() > deadline:
            return pods
        time.sleep(0.5)


def describe(pods: list[Pod]) -> str:
    return "; ".join(
        f"{p.metadata.name}: {p.status.phase} "
        + ",".join(f"{c.type}={c.status}({c.reason or ''})" for c in p.status.conditions)
        for p in pods
    )


# -- the tests --------------------------------------------------------------------


def test_every_app_is_live_tested_or_left_out_with_its_reason() -> None:
    stored = {p.name for p in APPS_DIR.iterdir() if p.is_dir()}
    assert set(BY_NAME) | set(LEFT_OUT) == stored
    assert not set(BY_NAME) & set(LEFT_OUT)
    assert len(APPS) >= 10
    for name in LEFT_OUT:
        assert "\nlive: left out" in (APPS_DIR / name / "SOURCE").read_text()


@pytest.mark.parametrize("name", [app.name for app in APPS])
def test_app_pods_all_ready_in_time(labs: dict[str, Brought], name: str) -> None:
    app = BY_NAME[name]
    lab, up_at = lab_of(labs, app)
    pods = wait_ready(lab, app, up_at)
    assert len(pods) == app.pods, describe(pods)
    deadline = up_at + readiness_floor(name) + READY_WITHIN
    for pod in pods:
        since = ready_since(pod)
        assert since is not None, f"{pod.metadata.name} is not Ready: {describe([pod])}"
        # lastTransitionTime has whole seconds: one more for the rounding.
        assert since <= deadline + 1, (
            f"{pod.metadata.name} turned Ready {since - up_at:.0f} s after up, "
            f"later than {deadline - up_at:.0f} s"
        )


def in_namespace(name: str, namespace: str, caller: Pod) -> str:
    """The Service's DNS name as a pod in `caller`'s namespace writes it."""
    return name if (caller.metadata.namespace or "default") == namespace else f"{name}.{namespace}"


def client_pod(lab: NetemuLab, app: App) -> Pod:
    """A pod of the app on the pod network (hostNetwork pods resolve with
    the node's resolv.conf, as in Kubernetes); if the app has none, a
    plain pod applied to the lab for the purpose."""
    ours = sorted(
        (p for p in app_pods(lab, app) if not p.spec.host_network),
        key=lambda p: (p.metadata.namespace or "default", p.metadata.name),
    )
    if ours:
        return ours[0]
    lab.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "dns-client", "namespace": "default"},
            "spec": {"containers": [{"name": "client", "image": "busybox"}]},
        }
    )
    return next(p for p in lab.state().pods if p.metadata.name == "dns-client")


def tcp_connect(host: str, port: int) -> list[str]:
    """argv: open a TCP connection to host:port (resolved by the libc
    resolver, with the pod's resolv.conf) and close it."""
    return [
        "timeout",
        str(CONNECT_TIMEOUT),
        "bash",
        "-c",
        'exec 3<>"/dev/tcp/$0/$1"',
        host,
        str(port),
    ]


def http_get(url: str) -> list[str]:
    """argv: GET url, print the status code; -k: the HTTPS servers' own
    certificates are self-signed, as kube-rbac-proxy's default is."""
    return [
        "curl",
        "-sS",
        "-k",
        "-m",
        str(CONNECT_TIMEOUT),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]


def assert_http_ok(lab: NetemuLab, target: str, url: str) -> None:
    got = lab.exec(target, http_get(url))
    assert got.ok, f"GET {url} from {target}: {got.stderr.strip()}"
    assert 200 <= int(got.stdout.strip()) < 400, f"GET {url} from {target}: {got.stdout}"


@pytest.mark.parametrize("name", [app.name for app in APPS])
def test_entry_service_answers_a_pod_by_dns_name(labs: dict[str, Brought], name: str) -> None:
    app = BY_NAME[name]
    lab, up_at = lab_of(labs, app)
    wait_ready(lab, app, up_at)
    caller = client_pod(lab, app)
    target = f"{caller.metadata.namespace or 'default'}/{caller.metadata.name}"
    host = in_namespace(app.service, app.namespace, caller)
    got = lab.exec(target, tcp_connect(host, app.port))
    assert got.ok, f"TCP {host}:{app.port} from {target}: exit {got.returncode} {got.stderr}"
    if app.protocol != "tcp":
        assert_http_ok(lab, target, f"{app.protocol}://{host}:{app.port}/")


@pytest.mark.parametrize("name", EXPOSED)
def test_exposed_services_answer_the_external_client_on_every_node(
    labs: dict[str, Brought], name: str
) -> None:
    app = BY_NAME[name]
    lab, up_at = lab_of(labs, app)
    wait_ready(lab, app, up_at)
    info = lab.info()
    clients = sorted(info["clients"])
    assert clients, "the lab has no external client"
    node_ips = [node["ip"] for node in info["nodes"].values()]
    assert len(node_ips) >= 2
    for service, port in exposed_ports(name):
        svc = lab.service(service, app.namespace)
        node_port = next(p.node_port for p in svc.spec.ports if p.port == port)
        assert node_port, f"{service}:{port} has no nodePort"
        for ip in node_ips:
            assert_http_ok(lab, clients[0], f"{app.protocol}://{ip}:{node_port}/")
