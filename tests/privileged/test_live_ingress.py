"""The ingress lab (controlplane/ingress) live: the ingress-nginx addon's
pod runs Debian's nginx, reached from an external client through its
LoadBalancer Service, routing by host and path to pod IPs (read from
nginx's own access log: `$upstream_addr` is the pod that answered), TLS with
the Secret's certificate verified by curl --cacert, rewrite-target, cookie
affinity, X-Request-ID passed to the pod, the Ingress status, and scaling a
backend while requests keep flowing."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, lab_name, netemu_cli, pods_with, running_lab

from netemu.kernel.journal import run_dir
from netemu.lab import LiveLab

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="needs nginx (Debian nginx-light, installed by setup.sh)"
)

LAB = CONTROLPLANE / "ingress"
CA = LAB / "ca.crt"


class Browser:
    def __init__(self, lab: LiveLab, address: str) -> None:
        self.netns = lab.info()["clients"]["browser"]["netns"]
        self.address = address

    def get(self, url: str, *extra: str) -> tuple[int, dict[str, str], str]:
        host = url.split("/")[2]
        port = "443" if url.startswith("https") else "80"
        out = subprocess.run(
            ["ip", "netns", "exec", self.netns, "curl", "-sS", "-D", "-", "--max-time", "10",
             "--resolve", f"{host}:{port}:{self.address}", "--cacert", str(CA), *extra, url],
            capture_output=True, text=True, check=True, timeout=20,
        )  # fmt: skip
        head, _, body = out.stdout.partition("\n\n")
        lines = head.splitlines()
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers.setdefault(key.strip().lower(), value.strip())
        return int(lines[0].split()[1]), headers, body


def _access_log(lab: LiveLab) -> Path:
    logs = list((run_dir(lab.name) / "ingress").glob("ingress-nginx/*/logs/access.log"))
    assert len(logs) == 1, logs
    return logs[0]


def _upstream_of(lab: LiveLab, request_id: str) -> str:
    """The pod IP (without port) nginx sent request `request_id` to, "-" for
    none. nginx logs a request after answering it: wait for its line."""
    deadline = time.monotonic() + 5
    while True:
        for line in _access_log(lab).read_text().splitlines():
            if line.endswith(" " + request_id):
                upstream = line.split('" ')[1].split()[1]
                return upstream.rsplit(":", 1)[0] if upstream != "-" else "-"
        assert time.monotonic() < deadline, f"no access-log line for {request_id}"
        time.sleep(0.05)


def _pod_ips(lab: LiveLab, app: str) -> dict[str, str]:
    return {p["status"]["podIP"]: p["metadata"]["name"] for p in pods_with(lab.state(), app)}


def test_ingress_lab(tmp_path: Path) -> None:
    with running_lab([LAB], lab_name("ing")) as lab:
        state = lab.state()
        svc = next(
            s
            for s in state["services"]
            if s["metadata"]["name"] == "ingress-nginx-controller"
            and s["metadata"]["namespace"] == "ingress-nginx"
        )
        address = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        browser = Browser(lab, address)
        front, cart, api = (_pod_ips(lab, app) for app in ("front", "cart", "api"))

        # status.loadBalancer of every Ingress: the controller Service's LB IP.
        listed: dict[str, Any] = lab.table("ingresses", None, "json")["list"]
        for ing in listed["items"]:
            assert ing["status"]["loadBalancer"]["ingress"] == [{"ip": address}]

        def routed(url: str) -> tuple[int, str]:
            request_id = uuid.uuid4().hex
            status, _, _ = browser.get(url, "-H", f"X-Request-ID: {request_id}")
            return status, _upstream_of(lab, request_id)

        # The trace of one HTTPS request: TLS ended at the controller, which
        # connects to a pod IP directly; both legs carry one X-Request-ID.
        traced = netemu_cli(
            "trace", "--lab", lab.name, "browser", "https://shop.example.com/hostname",
            "--cacert", str(CA), "-o", "json", "--captures", str(tmp_path),
        )  # fmt: skip
        assert traced.returncode == 0, traced.stderr
        report = json.loads(traced.stdout)
        one, two = report["legs"]
        assert one["tls"]["subject"] == "CN=shop.example.com"
        assert one["tls"]["issuer"] == "CN=netemu test CA"
        assert one["tls"]["verified"] is True
        assert (one["request"], one["status"]) == ("GET /hostname HTTP/1.1", 200)
        assert two["to"]["ip"] in front and two["destinationIsPodIP"] is True
        assert two["clusterIPUsed"] is False
        assert two["upstream"] == f"{two['to']['ip']}:8080"
        assert two["from"]["name"].startswith("ingress-nginx/ingress-nginx-controller-")
        captured = Path(report["captures"])
        for leg in (one, two):
            assert (captured / leg["pcap"]).stat().st_size > 24 and leg["frames"] > 0
        assert json.loads((captured / "trace.json").read_text())["requestId"] == report["requestId"]

        # Two hosts, three paths, three Services, straight to pod IPs.
        status, _, body = browser.get("https://shop.example.com/hostname", "-H", "X-Request-ID: a1")
        assert status == 200 and body in front.values()
        assert _upstream_of(lab, "a1") in front
        # (The test servers answer unknown paths with 404: the pod still answered.)
        assert routed("https://shop.example.com/cart/items")[1] in cart
        assert routed("http://api.example.com/v1/users")[1] in api
        # Exact over Prefix; longest prefix; Prefix by path element.
        assert routed("https://shop.example.com/cart/checkout")[1] in api
        assert routed("https://shop.example.com/cart/checkout/x")[1] in cart
        assert routed("https://shop.example.com/cartoon")[1] in front
        # Unknown host: the default server's 404, no upstream.
        assert routed("http://unknown.example.net/") == (404, "-")

        # TLS: curl verified the Secret's certificate with --cacert above;
        # plain HTTP to the TLS host is redirected.
        status, headers, _ = browser.get("http://shop.example.com/cart")
        assert (status, headers["location"]) == (308, "https://shop.example.com/cart")

        # X-Request-ID reaches the pod (agnhost's /header).
        status, _, body = browser.get(
            "https://shop.example.com/header?key=X-Request-ID", "-H", "X-Request-ID: abc123"
        )
        assert (status, body) == (200, "abc123")

        # rewrite-target: /app/hostname reaches an api pod as /hostname.
        status, _, body = browser.get("http://rw.example.com/app/hostname")
        assert status == 200 and body in api.values()

        # Cookie affinity keeps one pod.
        status, headers, first = browser.get("http://sticky.example.com/hostname")
        cookie = headers["set-cookie"].split(";")[0]
        assert cookie.startswith("SHOPID=")
        seen = {
            browser.get("http://sticky.example.com/hostname", "-b", cookie)[2] for _ in range(10)
        }
        assert seen == {first}

        # Scaling cart to 3 while requests flow: every request nginx took is
        # answered by a cart pod (no 502/503: nginx never proxies to a pod
        # that is gone or not ready), and the new pod gets traffic. (A
        # connection that nginx accepted but had read no request on when the
        # reload began is closed unanswered, as nginx's graceful reload does:
        # HTTP/2 GOAWAY, curl's error 16, or an empty reply, curl's 52. Such
        # requests were never in flight; that in-flight ones finish is
        # test_ingress_nginx's reload test.)
        failures: list[str] = []
        unserved: list[str] = []
        answered = 0
        stop = threading.Event()

        def keep_asking() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    status, _, _ = browser.get("https://shop.example.com/cart/x")
                    answered += 1
                    if status != 404:  # 404 is the cart pod's own answer
                        failures.append(str(status))
                except subprocess.CalledProcessError as exc:
                    (unserved if exc.returncode in (16, 52) else failures).append(exc.stderr)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            lab.scale("Deployment", "default", "cart", 3)
            new = _pod_ips(lab, "cart")
            assert len(new) == 3
            upstreams = set()
            for _ in range(40):
                upstreams.add(routed("https://shop.example.com/cart/y")[1])
        finally:
            stop.set()
            asker.join(timeout=30)
        assert failures == []
        assert answered > 5 and len(unserved) <= 2, unserved
        assert upstreams == set(new)

        # No request went to a ClusterIP: every upstream is a pod IP.
        pods = {p["status"]["podIP"] for p in lab.state()["pods"]}
        upstream_ips = {
            line.split('" ')[1].split()[1].rsplit(":", 1)[0]
            for line in _access_log(lab).read_text().splitlines()
        }
        assert upstream_ips - {"-"} <= pods


def test_the_first_ingress_applied_to_a_running_lab_brings_the_controller() -> None:
    with running_lab([LAB / "lab.yaml", LAB / "shop.yaml"], lab_name("ing-late")) as lab:

        def controller_services() -> list[dict[str, Any]]:
            return [
                s for s in lab.state()["services"] if s["metadata"]["namespace"] == "ingress-nginx"
            ]

        assert controller_services() == []  # no Ingress yet: no addon
        applied = netemu_cli(
            "apply", "--lab", lab.name, "-f", str(LAB / "tls.yaml"), "-f", str(LAB / "ingress.yaml")
        )
        assert applied.returncode == 0, applied.stderr
        [svc] = controller_services()
        address = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        api = _pod_ips(lab, "api")
        browser = Browser(lab, address)
        deadline = time.monotonic() + 10
        while True:
            request_id = uuid.uuid4().hex
            try:
                status, _, _ = browser.get(
                    "http://api.example.com/v1/users", "-H", f"X-Request-ID: {request_id}"
                )
            except subprocess.CalledProcessError:
                status = 0  # the controller pod's nginx is still starting
            if status != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 404  # the test server's answer to an unknown path: the pod answered
        assert _upstream_of(lab, request_id) in api
