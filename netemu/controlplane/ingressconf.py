"""The nginx configuration of the ingress controller, rendered from
Ingresses, Services, EndpointSlices and TLS Secrets, as ingress-nginx
renders its nginx.conf (the shape, not its Lua: Debian's nginx has none).

Pure: objects in, text out. `render` returns the nginx.conf text and the
certificate files it names (paths relative to nginx's prefix directory, set
with `nginx -p`); writing them, `nginx -t` and reloading are the caller's.

What it does, and why that way:

- Upstreams are the endpoints themselves: each Service port an Ingress
  names becomes `upstream <namespace>-<service>-<port>` (ingress-nginx's
  naming) listing the ready addresses of its EndpointSlices with the
  EndpointSlice port of the same name, never the ClusterIP. A backend without
  ready endpoints answers 503, as ingress-nginx does.
- Hosts: one `server` per rule host, the rules of every Ingress of the
  class with that host merged (the oldest Ingress wins a path both define).
  Exact host names are plain `server_name`s; a wildcard `*.example.com`
  covers exactly one label in Kubernetes, while nginx's own `*.example.com`
  covers any number, so it is written as the regex
  `~^[^.]+\\.example\\.com$`. nginx tries exact names before regexes, so
  an exact host wins over a wildcard, as Kubernetes says.
- Paths: Exact `/foo` is `location = /foo`; Prefix `/foo` matches by path
  element (`/foo`, `/foo/bar`, not `/foobar`), written as `location = /foo`
  plus `location ^~ /foo/` (Exact wins a tie, as nginx's `=` does); nginx
  picks the longest prefix, as Kubernetes wants. ImplementationSpecific is
  a plain nginx prefix (`location ^~ /foo`, which matches `/foobar`), as in
  ingress-nginx. With `use-regex` or `rewrite-target` on any Ingress of a
  host, that host's paths are case-insensitive regexes anchored at the
  start, longest first (ingress-nginx enforces regexes for rewrite-target).
- Unknown hosts, and rules without a host, go to the default server: the
  rules without host and the first Ingress `defaultBackend`, else 404 as
  ingress-nginx's default backend answers. A host's unmatched paths go to
  its Ingress's `defaultBackend`, else 404. On 443 the default server
  refuses the handshake (`ssl_reject_handshake`) instead of presenting
  ingress-nginx's self-signed "Fake Certificate", which this pure stage
  cannot make.
- TLS: a host listed in an Ingress's `tls` with a `secretName` whose Secret
  (`kubernetes.io/tls`, given to `render` as certificate and key PEM) is
  known gets `listen 443 ssl` with `certs/<namespace>-<secret>.pem`.
  `ssl-redirect` (default true on such hosts) answers plain HTTP with 308
  to https, as ingress-nginx does.
- `affinity: cookie`: Debian's nginx has no sticky module. The upstream
  hashes (`hash ... consistent`) a key that is the cookie's value when the
  request has the cookie, else the request id; when it had none, the
  response sets the cookie to that request id. The next request carries
  it, hashes to the same key and reaches the same pod (while the endpoints
  do not change; consistent hashing moves few keys when they do).
- `X-Request-ID`: the client's, else nginx's `$request_id`, is passed
  upstream and logged, as ingress-nginx does, which joins the two legs of a
  request in a trace.
- `backend-protocol`: HTTP (default), HTTPS (`proxy_pass https://`), GRPC
  and GRPCS (`grpc_pass`). Port 443 offers HTTP/2 by ALPN (ingress-nginx's
  use-http2 default); port 80 speaks HTTP/1.1 only, so gRPC comes in over TLS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netemu.api.core import SERVICE_NAME_LABEL, EndpointSlice, Secret, Service
from netemu.api.networking import Ingress, IngressBackend, IngressClass

ANNOTATION = "nginx.ingress.kubernetes.io/"
REWRITE_TARGET = ANNOTATION + "rewrite-target"
USE_REGEX = ANNOTATION + "use-regex"
SSL_REDIRECT = ANNOTATION + "ssl-redirect"
AFFINITY = ANNOTATION + "affinity"
COOKIE_NAME = ANNOTATION + "session-cookie-name"
BACKEND_PROTOCOL = ANNOTATION + "backend-protocol"
DEFAULT_COOKIE = "INGRESSCOOKIE"
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS")
# ingress-nginx's controller value and default class name.
CONTROLLER = "k8s.io/ingress-nginx"
CLASS_NAME = "nginx"
TLS_SECRET_TYPE = "kubernetes.io/tls"

# Written where nginx's prefix (-p) is, so nothing lands outside it.
HEADER = """\
# Rendered by netemu from Ingresses, Services, EndpointSlices and Secrets.
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
"""


@dataclass(frozen=True)
class TLSPair:
    """A kubernetes.io/tls Secret's data: tls.crt and tls.key (PEM)."""

    cert: bytes
    key: bytes


@dataclass(frozen=True)
class Rendered:
    conf: str
    files: dict[str, bytes] = field(default_factory=dict)  # path under the prefix → content
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Target:
    """Where a location sends requests."""

    upstream: str | None  # None: no ready endpoint (503) or no such backend
    status: int  # the answer when upstream is None
    protocol: str = "HTTP"


@dataclass(frozen=True)
class _Path:
    path: str
    path_type: str
    target: _Target
    rewrite: str | None
    ssl_redirect: bool
    cookie: str | None
    source: str  # namespace/name of the Ingress


@dataclass
class _Server:
    host: str
    paths: list[_Path] = field(default_factory=list)
    fallback: _Target = field(default_factory=lambda: _Target(None, 404))
    regex: bool = False
    cert: str | None = None


def tls_pairs(secrets: Iterable[Secret]) -> dict[tuple[str, str], TLSPair]:
    """The kubernetes.io/tls Secrets with both tls.crt and tls.key, by (namespace, name)."""
    pairs: dict[tuple[str, str], TLSPair] = {}
    for secret in secrets:
        if secret.type != TLS_SECRET_TYPE:
            continue
        data = secret.files()
        if "tls.crt" in data and "tls.key" in data:
            key = (secret.metadata.namespace or "default", secret.metadata.name or "")
            pairs[key] = TLSPair(data["tls.crt"], data["tls.key"])
    return pairs


def class_ingresses(
    ingresses: Iterable[Ingress], classes: Iterable[IngressClass], name: str = CLASS_NAME
) -> list[Ingress]:
    """The Ingresses the controller of class `name` serves: those naming it
    (spec.ingressClassName, else the legacy annotation), and those naming no
    class when an IngressClass `name` of ingress-nginx's controller is the
    cluster's default (ingressclass.kubernetes.io/is-default-class)."""
    default = any(
        c.metadata.name == name and c.spec.controller == CONTROLLER and c.is_default()
        for c in classes
    )
    return [i for i in ingresses if i.class_name() == name or (i.class_name() is None and default)]


def _ingress_key(ing: Ingress) -> tuple[str, str, str]:
    created = str(ing.metadata.creation_timestamp or "")
    return created, ing.metadata.namespace or "default", ing.metadata.name or ""


def _annotation_true(ing: Ingress, key: str, default: bool) -> bool:
    value = ing.metadata.annotations.get(key)
    return default if value is None else value.strip().lower() == "true"


def render(
    ingresses: Sequence[Ingress],
    services: Sequence[Service],
    slices: Sequence[EndpointSlice],
    secrets: Mapping[tuple[str, str], TLSPair],
) -> Rendered:
    """nginx.conf for `ingresses` (already those of this controller's class)."""
    warnings: list[str] = []
    upstreams: dict[str, list[str]] = {}
    sticky: dict[str, str] = {}  # upstream name → cookie name
    files: dict[str, bytes] = {}
    servers: dict[str, _Server] = {}
    default = _Server("_")
    default_set = False
    ordered = sorted(ingresses, key=_ingress_key)

    def target(ing: Ingress, backend: IngressBackend, cookie: str | None) -> _Target:
        namespace = ing.metadata.namespace or "default"
        protocol = ing.metadata.annotations.get(BACKEND_PROTOCOL, "HTTP").upper()
        if protocol not in PROTOCOLS:
            warnings.append(
                f"Ingress {namespace}/{ing.metadata.name}: {BACKEND_PROTOCOL} {protocol!r} "
                f"is not one of {', '.join(PROTOCOLS)}; using HTTP"
            )
            protocol = "HTTP"
        if backend.service is None or backend.service.port is None:
            return _Target(None, 503, protocol)
        svc = backend.service
        port = svc.port
        assert port is not None
        found = _upstream_servers(namespace, svc.name, port.number, port.name, services, slices)
        label = str(port.number) if port.number else str(port.name)
        name = f"{namespace}-{svc.name}-{label}"
        if cookie is not None:
            name = f"sticky-{cookie}-{name}"
            sticky[name] = cookie
        if not found:
            return _Target(None, 503, protocol)
        upstreams[name] = found
        return _Target(name, 0, protocol)

    for ing in ordered:
        namespace = ing.metadata.namespace or "default"
        source = f"{namespace}/{ing.metadata.name}"
        annotations = ing.metadata.annotations
        cookie = None
        if annotations.get(AFFINITY) == "cookie":
            cookie = annotations.get(COOKIE_NAME) or DEFAULT_COOKIE
            if not re.fullmatch(r"[A-Za-z0-9_]+", cookie):
                warnings.append(
                    f"Ingress {source}: {COOKIE_NAME} {cookie!r}: netemu takes letters, digits "
                    f"and _ only; using {DEFAULT_COOKIE}"
                )
                cookie = DEFAULT_COOKIE
        rewrite = annotations.get(REWRITE_TARGET)
        regex = rewrite is not None or _annotation_true(ing, USE_REGEX, False)
        tls_hosts = {h: t.secret_name for t in ing.spec.tls for h in t.hosts if t.secret_name}
        if ing.spec.default_backend is not None and not default_set:
            default.fallback = target(ing, ing.spec.default_backend, cookie)
            default_set = True
        for rule in ing.spec.rules:
            host = rule.host or "_"
            server = servers.setdefault(host, _Server(host)) if rule.host else default
            cert = None
            if rule.host and rule.host in tls_hosts:
                secret = tls_hosts[rule.host] or ""
                pair = secrets.get((namespace, secret))
                if pair is None:
                    warnings.append(
                        f"Ingress {source}: TLS Secret {namespace}/{secret} for host "
                        f"{rule.host} not found (or not kubernetes.io/tls): host served "
                        "on HTTP only"
                    )
                else:
                    cert = f"certs/{namespace}-{secret}.pem"
                    files[cert] = pair.cert.rstrip(b"\n") + b"\n" + pair.key
                    if server.cert is None:
                        server.cert = cert
            if rule.host and ing.spec.default_backend is not None and server.fallback.status:
                server.fallback = target(ing, ing.spec.default_backend, cookie)
            server.regex = server.regex or regex
            redirect = _annotation_true(ing, SSL_REDIRECT, True) and cert is not None
            for p in rule.http.paths if rule.http else []:
                path_type = p.path_type or "ImplementationSpecific"
                text = p.path or "/"
                if path_type == "Prefix" and text != "/":
                    text = text.rstrip("/") or "/"
                if any(q.path == text and q.path_type == path_type for q in server.paths):
                    warnings.append(
                        f"Ingress {source}: path {text} ({path_type}) of host {host} is "
                        "already defined by an older Ingress; ignored"
                    )
                    continue
                tgt = target(ing, p.backend, cookie)
                server.paths.append(_Path(text, path_type, tgt, rewrite, redirect, cookie, source))
    out = [HEADER]
    for cookie in sorted(set(sticky.values())):
        out.append(_cookie_maps(cookie))
    for name in sorted(upstreams):
        out.append(_upstream(name, upstreams[name], sticky.get(name)))
    out.append(_default_server(default))
    for host in sorted(servers, key=_host_order):
        out.append(_server(servers[host]))
    out.append("}\n")
    return Rendered("".join(out), files, tuple(warnings))


def _host_order(host: str) -> tuple[int, int, str]:
    """Exact hosts first; wildcards longest first (their regexes are tried in order)."""
    return (1 if host.startswith("*.") else 0, -len(host), host)


def _upstream_servers(
    namespace: str,
    service: str,
    number: int | None,
    port_name: str | None,
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
) -> list[str]:
    """`ip:port` of the ready endpoints behind a Service port, sorted."""
    svc = next(
        (
            s
            for s in services
            if (s.metadata.namespace or "default") == namespace and s.metadata.name == service
        ),
        None,
    )
    if svc is None:
        return []
    port = next(
        (
            p
            for p in svc.spec.ports
            if (number and p.port == number) or (port_name and p.name == port_name)
        ),
        None,
    )
    if port is None:
        return []
    found: set[str] = set()
    for es in slices:
        if (es.metadata.namespace or "default") != namespace:
            continue
        if es.metadata.labels.get(SERVICE_NAME_LABEL) != service or es.address_type == "FQDN":
            continue
        target = next((q.port for q in es.ports if (q.name or "") == (port.name or "")), None)
        if target is None:
            continue
        for endpoint in es.endpoints:
            # A missing `ready` means ready (discovery/v1 EndpointConditions).
            if endpoint.conditions.ready is False:
                continue
            for address in endpoint.addresses:
                shown = f"[{address}]" if ":" in address else address
                found.add(f"{shown}:{target}")
    return sorted(found)


def _cookie_maps(cookie: str) -> str:
    var = cookie.lower()
    return (
        f"    map $cookie_{cookie} $affinity_key_{var} {{\n"
        f'        "" $req_id;\n'
        f"        default $cookie_{cookie};\n"
        f"    }}\n"
        f"    map $cookie_{cookie} $affinity_set_{var} {{\n"
        f'        "" "{cookie}=$req_id; Path=/; HttpOnly";\n'
        f'        default "";\n'
        f"    }}\n"
    )


def _upstream(name: str, servers: list[str], cookie: str | None) -> str:
    lines = [f"    upstream {name} {{\n"]
    if cookie is not None:
        lines.append(f"        hash $affinity_key_{cookie.lower()} consistent;\n")
    lines.extend(f"        server {server};\n" for server in servers)
    lines.append("    }\n")
    return "".join(lines)


def _default_server(server: _Server) -> str:
    lines = [
        "    server {\n",
        "        listen 80 default_server;\n",
        "        listen 443 ssl http2 default_server;\n",
        "        ssl_reject_handshake on;\n",
        "        server_name _;\n",
    ]
    lines.extend(_locations(server))
    lines.append("    }\n")
    return "".join(lines)


def _server_name(host: str) -> str:
    if host.startswith("*."):
        return "~^[^.]+" + re.escape(host[1:]).replace("\\-", "-") + "$"
    return host


def _server(server: _Server) -> str:
    lines = ["    server {\n", "        listen 80;\n"]
    if server.cert is not None:
        lines += [
            "        listen 443 ssl http2;\n",
            f"        ssl_certificate {server.cert};\n",
            f"        ssl_certificate_key {server.cert};\n",
        ]
    lines.append(f'        server_name "{_server_name(server.host)}";\n')
    lines.extend(_locations(server))
    lines.append("    }\n")
    return "".join(lines)


def _locations(server: _Server) -> list[str]:
    blocks: list[tuple[str, _Path | None]] = []
    has_root = False
    paths = sorted(server.paths, key=lambda p: (-len(p.path), p.path, p.path_type))
    exact = {p.path for p in paths if p.path_type == "Exact"}
    for p in paths:
        if p.path_type == "Exact":
            blocks.append((f"= {p.path}", p))
            continue
        if server.regex:
            # As ingress-nginx: in regex mode a path is a regex, matched from the start.
            blocks.append((f'~* "^{p.path}"', p))
            has_root = has_root or p.path == "/"
            continue
        if p.path == "/":
            blocks.append(("/", p))
            has_root = True
        elif p.path_type == "Prefix":
            if p.path not in exact:
                blocks.append((f"= {p.path}", p))
            blocks.append((f"^~ {p.path}/", p))
        else:
            blocks.append((f"^~ {p.path}", p))
    if not has_root:
        blocks.append(("/", None))
    lines: list[str] = []
    for spec, shown in blocks:
        lines.append(f"        location {spec} {{\n")
        lines.extend(_location_body(server, shown))
        lines.append("        }\n")
    return lines


def _location_body(server: _Server, p: _Path | None) -> list[str]:
    target = p.target if p is not None else server.fallback
    lines: list[str] = []
    if p is not None:
        lines.append(f"            # {p.source}: {p.path_type} {p.path}\n")
        if p.ssl_redirect:
            lines += [
                '            if ($scheme = "http") {\n',
                "                return 308 https://$host$request_uri;\n",
                "            }\n",
            ]
    if target.upstream is None:
        lines.append(f"            return {target.status};\n")
        return lines
    if p is not None and p.rewrite is not None:
        pattern = p.path if p.path_type != "Exact" else p.path + "$"
        lines.append(f'            rewrite "(?i)^{pattern}" {p.rewrite} break;\n')
    if p is not None and p.cookie is not None:
        lines.append(f"            add_header Set-Cookie $affinity_set_{p.cookie.lower()};\n")
    lines += [
        "            proxy_http_version 1.1;\n",
        "            proxy_set_header Upgrade $http_upgrade;\n",
        "            proxy_set_header Connection $connection_upgrade;\n",
        "            proxy_set_header Host $host;\n",
        "            proxy_set_header X-Request-ID $req_id;\n",
        "            proxy_set_header X-Real-IP $remote_addr;\n",
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
        "            proxy_set_header X-Forwarded-Proto $scheme;\n",
    ]
    if target.protocol.startswith("GRPC"):
        scheme = "grpcs" if target.protocol == "GRPCS" else "grpc"
        lines.append("            grpc_set_header X-Request-ID $req_id;\n")
        lines.append(f"            grpc_pass {scheme}://{target.upstream};\n")
    else:
        scheme = "https" if target.protocol == "HTTPS" else "http"
        lines.append(f"            proxy_pass {scheme}://{target.upstream};\n")
    return lines
