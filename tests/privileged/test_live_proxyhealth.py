"""kube-proxy's servers, canary and label selector in a live lab, with real
connections from inside the lab's namespaces:

- healthCheckNodePort answers 200 with the node's count of local *ready*
  endpoints, 503 where there are none (terminating ones do not count), and
  its listener goes away with the Service;
- 10256 /healthz and /livez, 10249 /proxyMode and /metrics answer;
- all KUBE-* chains deleted behind kube-proxy's back come back within
  syncPeriod (2s here) through the KUBE-PROXY-CANARY check;
- a Service labelled service.kubernetes.io/service-proxy-name gets no rules
  and its ClusterIP does not answer.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.api.load import load_text
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab
from netemu.rules.model import parse_restore
from netemu.rules.spec import canonical_ruleset

pytestmark = pytest.mark.privileged

SYNC_PERIOD = 2.0
HC_PORT = 32100

EXTRA = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
iptables:
  syncPeriod: 2s
---
apiVersion: v1
kind: Service
metadata:
  name: manual-local
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  ports:
    - name: http
      port: 80
      targetPort: 8080
      nodePort: 31090
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-local-1
  labels:
    kubernetes.io/service-name: manual-local
addressType: IPv4
ports:
  - name: http
    port: 8080
    protocol: TCP
endpoints:
  - addresses: [10.244.1.200]
    nodeName: node-1
    conditions: {ready: true, serving: true, terminating: false}
  - addresses: [10.244.1.201]
    nodeName: node-1
    conditions: {ready: false, serving: true, terminating: true}
  - addresses: [10.244.2.200]
    nodeName: node-2
    conditions: {ready: false, serving: true, terminating: true}
---
apiVersion: v1
kind: Service
metadata:
  name: other-proxy
  labels:
    service.kubernetes.io/service-proxy-name: some-other-proxy
spec:
  clusterIP: 10.96.200.10
  selector:
    app: shop
  ports:
    - port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: shop-control
spec:
  clusterIP: 10.96.200.11
  selector:
    app: shop
  ports:
    - port: 80
      targetPort: 8080
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    directory = tmp_path_factory.mktemp("proxyhealth") / "lab"
    shutil.copytree(CONTROLPLANE / "loadbalancer", directory)
    (directory / "proxyhealth.yaml").write_text(EXTRA)
    with running_lab([directory], lab_name("proxyhealth")) as running:
        yield running


def _node(lab: LiveLab, node: str) -> tuple[str, str]:
    info = lab.info()["nodes"][node]
    return str(info["netns"]), str(info["ip"])


def _client(lab: LiveLab) -> str:
    return str(lab.info()["clients"]["allowed"]["netns"])


def _health_check_port(lab: LiveLab, name: str) -> int:
    svc = next(s for s in lab.state()["services"] if s["metadata"]["name"] == name)
    return int(svc["spec"]["healthCheckNodePort"])


def test_health_check_counts_only_local_ready_endpoints(lab: LiveLab) -> None:
    client = _client(lab)
    expected = {"node-1": (200, 1), "node-2": (503, 0)}
    for node, (status, count) in expected.items():
        _, ip = _node(lab, node)
        result = http_get(client, ip, HC_PORT, "/healthz")
        assert result.status == status, (node, result)
        assert result.reply == {
            "service": {"namespace": "default", "name": "manual-local"},
            "localEndpoints": count,
            "serviceProxyHealthy": True,
        }


def test_health_check_of_real_pods_on_each_node(lab: LiveLab) -> None:
    """shop-local's two pods run on node-1 (its nodeSelector)."""
    port = _health_check_port(lab, "shop-local")
    client = _client(lab)
    counts = {}
    for node in ("node-1", "node-2"):
        _, ip = _node(lab, node)
        result = http_get(client, ip, port, "/")
        counts[node] = (result.status, result.reply["localEndpoints"] if result.reply else None)
    assert counts == {"node-1": (200, 2), "node-2": (503, 0)}


def test_health_check_listener_follows_the_service(lab: LiveLab) -> None:
    client = _client(lab)
    _, ip = _node(lab, "node-1")
    objects, problems = load_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: late-local\nspec:\n"
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32101\n"
        "  selector:\n    app: shop\n  ports:\n    - port: 81\n      targetPort: 8080\n",
        "late.yaml",
    )
    assert not problems
    lab.apply([item.obj for item in objects])
    try:
        result = http_get(client, ip, 32101, "/healthz")
        assert (result.status, result.reply and result.reply["localEndpoints"]) == (200, 2)
    finally:
        lab.delete([("Service", "default", "late-local")])
    gone = http_get(client, ip, 32101, "/healthz", timeout=1.0)
    assert gone.status is None
    assert gone.outcome != "answered"


def test_proxier_health_and_metrics_servers(lab: LiveLab) -> None:
    client = _client(lab)
    for node in ("node-1", "node-2"):
        netns, ip = _node(lab, node)
        for path in ("/healthz", "/livez"):
            result = http_get(client, ip, 10256, path)
            assert result.status == 200, (node, path, result)
            assert result.reply is not None
            assert set(result.reply) >= {"lastUpdated", "currentTime"}
        # metricsBindAddress defaults to 127.0.0.1:10249: only the node itself.
        mode = http_get(netns, "127.0.0.1", 10249, "/proxyMode")
        assert (mode.status, mode.body) == (200, "iptables")
        assert http_get(client, ip, 10249, "/proxyMode", timeout=1.0).status is None
        metrics = http_get(netns, "127.0.0.1", 10249, "/metrics")
        assert metrics.status == 200
        lines = metrics.body.splitlines()
        last = next(
            float(line.split()[1])
            for line in lines
            if line.startswith("kubeproxy_sync_proxy_rules_last_timestamp_seconds ")
        )
        assert time.time() - 3600 < last <= time.time()
        nat = next(
            float(line.split()[1])
            for line in lines
            if line.startswith('kubeproxy_sync_proxy_rules_iptables_total{table="nat"}')
        )
        assert nat > 10


def _iptables(netns: str, *argv: str, data: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        input=data,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_deleted_kube_chains_come_back_within_sync_period(lab: LiveLab) -> None:
    netns, _ = _node(lab, "node-2")
    backend = lab.info()["backend"]
    save, restore = (
        ("iptables-nft-save", "iptables-nft-restore")
        if backend == "nft"
        else ("iptables-legacy-save", "iptables-legacy-restore")
    )
    before = _iptables(netns, save)
    # Every KUBE-* chain and every rule that jumps to one, in every table,
    # restored whole (not --noflush): what is not kube's stays.
    kept = [
        line
        for line in before.splitlines()
        if not line.startswith(":KUBE-")
        and "KUBE-" not in line.split(" -j ")[-1]
        and not line.startswith("-A KUBE-")
    ]
    _iptables(netns, restore, data="\n".join(kept) + "\n")
    assert "KUBE-" not in _iptables(netns, save)
    deleted = time.monotonic()
    while "KUBE-PROXY-CANARY" not in _iptables(netns, save):
        assert time.monotonic() - deleted < SYNC_PERIOD + 2.0, "not repaired within syncPeriod"
        time.sleep(0.1)
    after = _iptables(netns, save)
    assert canonical_ruleset(parse_restore(after)) == canonical_ruleset(parse_restore(before))


def test_service_with_service_proxy_name_gets_no_rules(lab: LiveLab) -> None:
    netns, _ = _node(lab, "node-1")
    rules = _iptables(netns, "iptables-save")
    assert "default/other-proxy" not in rules
    assert "default/shop-control" in rules
    control = http_get(netns, "10.96.200.11", 80, "/")
    assert control.status == 200
    other = http_get(netns, "10.96.200.10", 80, "/", timeout=1.0)
    assert other.outcome != "answered"


def test_load_balancer_gets_an_address_from_the_pool_that_answers(lab: LiveLab) -> None:
    objects, problems = load_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: assigned\nspec:\n"
        "  type: LoadBalancer\n  selector:\n    app: shop\n"
        "  ports:\n    - port: 8081\n      targetPort: 8080\n",
        "assigned.yaml",
    )
    assert not problems
    lab.apply([item.obj for item in objects])
    try:
        services = {s["metadata"]["name"]: s for s in lab.state()["services"]}
        # The loadbalancer lab sets no pool: the default, .200-.239 of its /24,
        # lowest free first; manual-local (no status in its manifest) has .200.
        ingress = services["assigned"]["status"]["loadBalancer"]["ingress"]
        assert ingress == [{"ip": "192.168.56.201", "ipMode": "VIP"}]
        assert services["manual-local"]["status"]["loadBalancer"]["ingress"] == [
            {"ip": "192.168.56.200", "ipMode": "VIP"}
        ]
        result = http_get(_client(lab), "192.168.56.201", 8081, "/")
        assert result.status == 200
        assert result.reply is not None and result.reply["pod"].startswith("shop-")
    finally:
        lab.delete([("Service", "default", "assigned")])
