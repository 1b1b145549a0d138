"""The ingress controller's nginx.conf, rendered from objects (pure): the
whole text for one case, then each rule of netemu.controlplane.ingressconf
on its own, and nginx's own check (`nginx -t`) of a render using every
feature."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netemu.api.core import EndpointSlice, Secret, Service
from netemu.api.load import load_text
from netemu.api.networking import Ingress, IngressClass
from netemu.controlplane.ingressconf import (
    Rendered,
    TLSPair,
    class_ingresses,
    render,
    tls_pairs,
)

INPUT = """\
apiVersion: v1
kind: Service
metadata: {name: app, namespace: web}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: web, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
endpoints:
- {addresses: [10.244.2.7], conditions: {ready: true}}
- {addresses: [10.244.1.5]}
- {addresses: [10.244.1.9], conditions: {ready: false}}
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: web}
spec:
  tls: [{hosts: [a.example.com], secretName: web-tls}]
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /docs/, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
      - {path: /docs, pathType: Exact, backend: {service: {name: gone, port: {number: 80}}}}
  - host: "*.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
"""

EXPECTED = r"""# Rendered by netemu from Ingresses, Services, EndpointSlices and Secrets.
worker_processes 1;
pid nginx.pid;
error_log logs/error.log notice;
events {
    worker_connections 1024;
}
http {
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    log_format upstreaminfo '$remote_addr [$time_local] "$request" $status '
                            '$upstream_addr $upstream_status $req_id';
    access_log logs/access.log upstreaminfo;
    server_names_hash_bucket_size 128;
    proxy_max_temp_file_size 0;
    # ingress-nginx's defaults: TLS 1.2 and 1.3 (Debian's nginx 1.22 would
    # also offer 1.0 and 1.1), HTTP/1.1 to the pods, WebSocket upgrades passed on.
    ssl_protocols TLSv1.2 TLSv1.3;
    map $http_x_request_id $req_id {
        default $http_x_request_id;
        "" $request_id;
    }
    map $http_upgrade $connection_upgrade {
        default upgrade;
        "" close;
    }
    upstream web-app-80 {
        server 10.244.1.5:8080;
        server 10.244.2.7:8080;
    }
    upstream web-app-http {
        server 10.244.1.5:8080;
        server 10.244.2.7:8080;
    }
    server {
        listen 80 default_server;
        listen 443 ssl http2 default_server;
        ssl_reject_handshake on;
        server_name _;
        location / {
            return 404;
        }
    }
    server {
        listen 80;
        listen 443 ssl http2;
        ssl_certificate certs/web-web-tls.pem;
        ssl_certificate_key certs/web-web-tls.pem;
        server_name "a.example.com";
        location = /docs {
            # web/web: Exact /docs
            if ($scheme = "http") {
                return 308 https://$host$request_uri;
            }
            return 503;
        }
        location ^~ /docs/ {
            # web/web: Prefix /docs
            if ($scheme = "http") {
                return 308 https://$host$request_uri;
            }
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $req_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://web-app-80;
        }
        location / {
            return 404;
        }
    }
    server {
        listen 80;
        server_name "~^[^.]+\.example\.com$";
        location / {
            # web/web: Prefix /
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $req_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://web-app-http;
        }
    }
}
"""

SECRETS = {("web", "web-tls"): TLSPair(b"CERT\n", b"KEY\n")}


def rendered(text: str, secrets: dict[tuple[str, str], TLSPair] = SECRETS) -> Rendered:
    loaded, problems = load_text(text, "x.yaml")
    assert problems == []
    objs = [item.obj for item in loaded]
    return render(
        [o for o in objs if isinstance(o, Ingress)],
        [o for o in objs if isinstance(o, Service)],
        [o for o in objs if isinstance(o, EndpointSlice)],
        secrets,
    )


def test_whole_configuration() -> None:
    out = rendered(INPUT)
    assert out.conf == EXPECTED
    # The Secret's certificate and key, in one file, as ingress-nginx keeps them.
    assert out.files == {"certs/web-web-tls.pem": b"CERT\nKEY\n"}
    assert out.warnings == ()


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: app, namespace: web}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: web, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5]}]
ports: [{name: http, port: 8080, protocol: TCP}]
---
"""


def ingress(annotations: str, rules: str, tls: str = "") -> str:
    return (
        SERVICE
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
        + f"metadata: {{name: i, namespace: web, annotations: {{{annotations}}}}}\n"
        + f"spec:\n{tls}  rules:\n{rules}"
    )


RULE = """\
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
"""


def test_rewrite_target_makes_the_host_regex_paths_and_rewrites() -> None:
    conf = rendered(ingress("nginx.ingress.kubernetes.io/rewrite-target: /new", RULE)).conf
    assert '        location ~* "^/api" {\n' in conf
    assert '            rewrite "(?i)^/api" /new break;\n' in conf
    assert "^~ /api/" not in conf


def test_cookie_affinity_hashes_the_cookie_or_the_request_id_and_sets_the_cookie() -> None:
    conf = rendered(
        ingress(
            "nginx.ingress.kubernetes.io/affinity: cookie, "
            "nginx.ingress.kubernetes.io/session-cookie-name: SID",
            RULE,
        )
    ).conf
    assert "    map $cookie_SID $affinity_key_sid {\n" in conf
    assert '        "" "SID=$req_id; Path=/; HttpOnly";\n' in conf
    assert (
        "    upstream sticky-SID-web-app-80 {\n"
        "        hash $affinity_key_sid consistent;\n"
        "        server 10.244.1.5:8080;\n"
    ) in conf
    assert "            add_header Set-Cookie $affinity_set_sid;\n" in conf


def test_default_cookie_name_is_ingresscookie() -> None:
    conf = rendered(ingress("nginx.ingress.kubernetes.io/affinity: cookie", RULE)).conf
    assert "hash $affinity_key_ingresscookie consistent;" in conf


@pytest.mark.parametrize(
    ("protocol", "line"),
    [
        ("HTTPS", "proxy_pass https://web-app-80;"),
        ("GRPC", "grpc_pass grpc://web-app-80;"),
        ("GRPCS", "grpc_pass grpcs://web-app-80;"),
    ],
)
def test_backend_protocol(protocol: str, line: str) -> None:
    conf = rendered(ingress(f"nginx.ingress.kubernetes.io/backend-protocol: {protocol}", RULE)).conf
    assert line in conf


TLS = "  tls: [{hosts: [a.example.com], secretName: web-tls}]\n"


def test_ssl_redirect_can_be_turned_off() -> None:
    on = rendered(ingress("", RULE, TLS)).conf
    off = rendered(ingress('nginx.ingress.kubernetes.io/ssl-redirect: "false"', RULE, TLS)).conf
    assert "return 308 https://$host$request_uri;" in on
    assert "return 308" not in off and "listen 443 ssl http2;" in off


def test_a_missing_secret_leaves_the_host_on_http_and_says_so() -> None:
    out = rendered(ingress("", RULE, TLS), secrets={})
    assert "ssl_certificate " not in out.conf and "return 308" not in out.conf
    assert out.warnings == (
        "Ingress web/i: TLS Secret web/web-tls for host a.example.com not found "
        "(or not kubernetes.io/tls): host served on HTTP only",
    )


def test_the_oldest_ingress_wins_a_path_both_define() -> None:
    two = INPUT.replace(
        "name: web, namespace: web}",
        "name: web, namespace: web, creationTimestamp: '2024-01-02T00:00:00Z'}",
    ) + (
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n"
        "metadata: {name: old, namespace: web, creationTimestamp: '2024-01-01T00:00:00Z'}\n"
        "spec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n"
        "      - path: /docs\n        pathType: Exact\n"
        "        backend: {service: {name: app, port: {number: 80}}}\n"
    )
    out = rendered(two)
    assert "            # web/old: Exact /docs\n" in out.conf
    assert "# web/web: Exact /docs" not in out.conf
    assert out.warnings == (
        "Ingress web/web: path /docs (Exact) of host a.example.com is already defined by an "
        "older Ingress; ignored",
    )


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (Debian nginx-light)")
def test_nginx_accepts_a_render_with_every_feature(tmp_path: Path) -> None:
    annotations = (
        "nginx.ingress.kubernetes.io/affinity: cookie, "
        "nginx.ingress.kubernetes.io/rewrite-target: /$1"
    )
    out = rendered(ingress(annotations, RULE, TLS) + "\n" + "---\n" + INPUT.split("---\n")[-1])
    cert = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "-",
         "-subj", "/CN=a.example.com", "-days", "1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    for sub in ("logs", "tmp", "certs"):
        (tmp_path / sub).mkdir()
    (tmp_path / "certs" / "web-web-tls.pem").write_bytes(cert)
    (tmp_path / "nginx.conf").write_text(out.conf)
    checked = subprocess.run(
        ["nginx", "-t", "-p", f"{tmp_path}/", "-c", "nginx.conf", "-e", "logs/error.log"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_tls_secrets_and_the_ingresses_of_the_class() -> None:
    loaded, problems = load_text(
        """\
apiVersion: v1
kind: Secret
metadata: {name: web-tls, namespace: web}
type: kubernetes.io/tls
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: v1
kind: Secret
metadata: {name: other, namespace: web}
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: k8s.io/ingress-nginx}
""",
        "x.yaml",
    )
    assert problems == []
    secrets = [i.obj for i in loaded if isinstance(i.obj, Secret)]
    assert tls_pairs(secrets) == {("web", "web-tls"): TLSPair(b"CERT", b"KEY")}
    default = [i.obj for i in loaded if isinstance(i.obj, IngressClass)]

    def ing(name: str, cls: str | None) -> Ingress:
        spec: dict[str, object] = {
            "defaultBackend": {"service": {"name": "a", "port": {"number": 1}}}
        }
        if cls is not None:
            spec["ingressClassName"] = cls
        return Ingress.model_validate({"metadata": {"name": name}, "spec": spec})

    mine, unnamed, theirs = ing("mine", "nginx"), ing("unnamed", None), ing("theirs", "traefik")
    assert class_ingresses([mine, unnamed, theirs], default) == [mine, unnamed]
    assert class_ingresses([mine, unnamed, theirs], []) == [mine]
