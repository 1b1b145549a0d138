"""The rendered ingress configuration served by real nginx (Debian's), in a
network namespace of its own: host and path routing, precedence, default
backend, TLS with a Secret's certificate checked by curl --cacert,
rewrite-target, cookie affinity, X-Request-ID, and a reload on scaling that
lets in-flight requests finish.

Backends are small HTTP servers on pod-like addresses (10.244.x.y on the
namespace's loopback) that answer with their name, the path and the
headers they received. Nothing leaves the namespace, which the test
removes (with nginx) whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from netemu.api.core import EndpointSlice, Secret, Service
from netemu.api.load import load_text
from netemu.api.networking import Ingress
from netemu.controlplane.ingressconf import TLSPair, render, tls_pairs
from netemu.kernel import netns
from netemu.kernel.nginx import Nginx, NginxConfigError

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="needs nginx (Debian package nginx-light, installed by setup.sh) and openssl",
)

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.21
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop}
spec:
  clusterIP: 10.96.0.22
  selector: {app: front}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.0.23
  selector: {app: api}
  ports: [{name: web, port: 8000, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: shop
spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: front, port: {number: 80}}}
  tls:
  - {hosts: [shop.example.com], secretName: shop-tls}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {name: http}}}}
      - path: /cart/checkout
        pathType: Exact
        backend: {service: {name: api, port: {number: 8000}}}
  - host: api.example.com
    http:
      paths:
      - {path: /v1, pathType: Prefix, backend: {service: {name: api, port: {name: web}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /$2}
spec:
  rules:
  - host: rw.example.com
    http:
      paths:
      - path: /app(/|$)(.*)
        pathType: ImplementationSpecific
        backend: {service: {name: api, port: {number: 8000}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sticky
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/affinity: cookie
    nginx.ingress.kubernetes.io/session-cookie-name: SHOPID
spec:
  rules:
  - host: sticky.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: cart, port: {number: 80}}}}
"""

# Backends: name → address; the Services' pods.
PODS = {
    "front-0": "10.244.1.10",
    "cart-0": "10.244.1.20",
    "cart-1": "10.244.2.21",
    "cart-2": "10.244.2.22",
    "api-0": "10.244.1.30",
}
PORT = 8080


def _slices(cart: list[str]) -> list[EndpointSlice]:
    def es(service: str, pods: list[str], port_name: str) -> EndpointSlice:
        return EndpointSlice.model_validate(
            {
                "metadata": {
                    "name": f"{service}-x",
                    "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [PODS[p]], "conditions": {"ready": True}} for p in pods
                ],
                "ports": [{"name": port_name, "port": PORT, "protocol": "TCP"}],
            }
        )

    return [es("front", ["front-0"], "http"), es("cart", cart, "http"), es("api", ["api-0"], "web")]


class _Backend(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.endswith("/slow"):
            time.sleep(1.5)
        body = json.dumps(
            {
                "pod": self.server.pod_name,  # type: ignore[attr-defined]
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(ns: str, name: str, address: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, PORT), _Backend, bind_and_activate=False)
    server.socket.close()
    server.socket = netns.open_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.server_bind()
    server.server_activate()
    server.pod_name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _certificate(tmp: Path) -> tuple[Path, TLSPair]:
    """A test CA and a leaf for shop.example.com signed by it (openssl)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=netemu test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
        "-subj", "/CN=shop.example.com")  # fmt: skip
    (tmp / "ext").write_text("subjectAltName=DNS:shop.example.com\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext")  # fmt: skip
    return tmp / "ca.crt", TLSPair((tmp / "tls.crt").read_bytes(), (tmp / "tls.key").read_bytes())


class Env:
    def __init__(self, ns: str, nginx: Nginx, ca: Path, tls: TLSPair) -> None:
        self.ns, self.nginx, self.ca, self.tls = ns, nginx, ca, tls
        loaded, problems = load_text(MANIFESTS, "ingress.yaml")
        assert problems == []
        self.ingresses = [i.obj for i in loaded if isinstance(i.obj, Ingress)]
        self.services = [i.obj for i in loaded if isinstance(i.obj, Service)]

    def apply(self, cart: list[str]) -> str:
        # The certificate as a kubernetes.io/tls Secret, base64 in `data`.
        secret = Secret.model_validate(
            {
                "metadata": {"name": "shop-tls", "namespace": "shop"},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(self.tls.cert).decode(),
                    "tls.key": base64.b64encode(self.tls.key).decode(),
                },
            }
        )
        rendered = render(self.ingresses, self.services, _slices(cart), tls_pairs([secret]))
        assert rendered.warnings == ()
        self.nginx.apply(rendered.conf, rendered.files)
        return rendered.conf

    def curl(self, url: str, *extra: str) -> tuple[int, dict[str, str], str]:
        """status, response headers, body of one request from inside the namespace."""
        host = url.split("/")[2]
        port = "443" if url.startswith("https") else "80"
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns, "curl", "-sS", "-D", "-", "--max-time", "10",
             "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", str(self.ca), *extra, url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        # text mode reads the header lines' CRLF as LF
        head, _, body = out.stdout.partition("\n\n")
        lines = head.split("\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers.setdefault(key.strip().lower(), value.strip())
        return status, headers, body

    def pod(self, url: str, *extra: str) -> dict[str, Any]:
        status, headers, body = self.curl(url, *extra)
        assert status == 200 and body, (url, status, body, headers)
        answer: dict[str, Any] = json.loads(body)
        return answer


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    ns = f"ting{os.getpid() % 100000}"
    netns.create(ns)
    servers: list[ThreadingHTTPServer] = []
    nginx = Nginx(tmp_path / "nginx", ns)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for address in PODS.values():
            subprocess.run(
                ["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "lo"], check=True
            )
        servers = [_serve(ns, name, address) for name, address in PODS.items()]
        certs = tmp_path / "certs"
        certs.mkdir()
        ca, tls = _certificate(certs)
        yield Env(ns, nginx, ca, tls)
    finally:
        nginx.stop()
        for server in servers:
            server.shutdown()
            server.server_close()
        netns.remove(ns)


def test_routing_tls_rewrite_affinity_and_a_graceful_reload(env: Env) -> None:
    conf = env.apply(["cart-0", "cart-1"])
    # Upstreams are pod IPs, never the ClusterIPs.
    assert "10.244.1.20:8080" in conf and "10.96.0.2" not in conf

    # Two hosts, three paths, three Services; Exact over Prefix, longest prefix.
    assert env.pod("http://api.example.com/v1/users")["pod"] == "api-0"
    assert env.pod("https://shop.example.com/")["pod"] == "front-0"
    assert env.pod("https://shop.example.com/cart/items")["pod"].startswith("cart-")
    assert env.pod("https://shop.example.com/cart/checkout")["pod"] == "api-0"
    assert env.pod("https://shop.example.com/cart/checkout/x")["pod"].startswith("cart-")
    # Prefix matches by path element: /cartoon is not under /cart.
    assert env.pod("https://shop.example.com/cartoon")["pod"] == "front-0"
    # Unknown host: the default server, whose backend is the Ingress's defaultBackend.
    assert env.pod("http://unknown.example.net/x")["pod"] == "front-0"
    # A host's path no rule covers: its Ingress's defaultBackend (as ingress-nginx
    # makes it the root location of the Ingress's hosts), else 404.
    assert env.pod("http://api.example.com/v2")["pod"] == "front-0"
    assert env.curl("http://rw.example.com/other")[0] == 404

    # TLS: curl verified the Secret's certificate against the CA (--cacert);
    # plain HTTP to a TLS host is redirected (ssl-redirect defaults to true).
    status, headers, _ = env.curl("http://shop.example.com/cart")
    assert status == 308 and headers["location"] == "https://shop.example.com/cart"

    # X-Request-ID: the client's is passed on; without one, nginx makes one.
    seen = env.pod("https://shop.example.com/", "-H", "X-Request-ID: abc123")
    assert seen["headers"]["x-request-id"] == "abc123"
    made = env.pod("https://shop.example.com/")["headers"]["x-request-id"]
    assert len(made) == 32 and made != "abc123"

    # rewrite-target /$2 with the path's captures.
    rewritten = env.pod("http://rw.example.com/app/orders/7")
    assert (rewritten["pod"], rewritten["path"]) == ("api-0", "/orders/7")

    # Cookie affinity: the first answer sets SHOPID; with it, one pod only.
    _, headers, body = env.curl("http://sticky.example.com/")
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith("SHOPID=")
    first = json.loads(body)["pod"]
    pods = {env.pod("http://sticky.example.com/", "-b", cookie)["pod"] for _ in range(12)}
    assert pods == {first}
    # Without the cookie, requests spread over both pods.
    spread = {env.pod("http://sticky.example.com/")["pod"] for _ in range(40)}
    assert spread == {"cart-0", "cart-1"}

    # Scaling cart to three pods: a reload while a request is in flight.
    results: list[dict[str, Any]] = []
    slow = threading.Thread(
        target=lambda: results.append(env.pod("https://shop.example.com/cart/slow"))
    )
    slow.start()
    time.sleep(0.4)
    env.apply(["cart-0", "cart-1", "cart-2"])
    assert env.nginx.reloads == 1
    slow.join(timeout=15)
    assert results and results[0]["path"] == "/cart/slow"
    spread = {env.pod("https://shop.example.com/cart/x")["pod"] for _ in range(60)}
    assert spread == {"cart-0", "cart-1", "cart-2"}


def test_a_config_nginx_refuses_is_reported_and_not_applied(env: Env) -> None:
    env.apply(["cart-0"])
    live = (env.nginx.prefix / "nginx.conf").read_text()
    with pytest.raises(NginxConfigError, match="unknown directive"):
        env.nginx.apply(live.replace("worker_processes 1;", "worker_processes 1;\nbogus on;"), {})
    assert (env.nginx.prefix / "nginx.conf").read_text() == live
    assert env.nginx.reloads == 0
    assert env.pod("https://shop.example.com/cart")["pod"] == "cart-0"
