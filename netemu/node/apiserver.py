"""The lab's stand-in API server address: what answers on the endpoint of
the `default/kubernetes` Service (netemu.controlplane.addons), so
`kubernetes.default.svc` resolves and connects from pods as in a cluster.

A lab has no kube-apiserver (its control plane is in-process), but clients
in pods expect one behind 10.96.0.1:443: TLS on the control-plane node's
address, port 6443. The stand-in completes TLS with a self-signed
certificate for the names and addresses kubeadm puts in the API server's
certificate (kubernetes, kubernetes.default, kubernetes.default.svc,
kubernetes.default.svc.<domain>, the node's name, the Service IP and the
node IP), and answers what an API server answers an anonymous client:
`/healthz`, `/livez` and `/readyz` "ok" and `/version` (the
system:public-info-viewer paths), and for anything else 403 with the
Status a real one sends for user system:anonymous. That is enough for a
connectivity check, `curl -k https://kubernetes.default.svc/version`,
and a client's health probe, without pretending to serve the API.

The certificate and key are written under the lab's run directory
(`pki/apiserver.crt`, `pki/apiserver.key`); the certificate is its own CA.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

from aiohttp import web

from netemu.controlplane.nodeinfo import KUBERNETES_VERSION
from netemu.node import tls

# What /version reports: the Kubernetes release netemu's behaviour follows.
_MAJOR, _MINOR, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
VERSION = {
    "major": _MAJOR,
    "minor": _MINOR,
    "gitVersion": KUBERNETES_VERSION,
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "",
    "goVersion": "",
    "compiler": "gc",
    "platform": "linux/amd64",
}
# Paths an anonymous client may GET (the system:public-info-viewer ClusterRole).
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz")


def certificate_names(domain: str, node: str) -> list[str]:
    """The DNS names kubeadm's apiserver certificate carries."""
    return [
        node,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
    ]


def self_signed(names: list[str], ips: list[str]) -> tuple[bytes, bytes]:
    """(certificate, key) in PEM: a self-signed serving certificate
    (CN kube-apiserver, as kubeadm's) for `names` and `ips`, its own CA."""
    return tls.self_signed("kube-apiserver", names, ips, ca=True)


def tls_context(directory: Path, names: list[str], ips: list[str]) -> ssl.SSLContext:
    """A server TLS context with a fresh certificate, written to `directory`
    (clients in the lab may trust it as a CA)."""
    cert, key = self_signed(names, ips)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "apiserver.crt").write_bytes(cert)
    key_file = directory / "apiserver.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key)
    return tls.server_context(cert, key)


def forbidden_status(path: str) -> dict[str, object]:
    """The Status an API server answers an anonymous GET of a non-public path."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'forbidden: User "system:anonymous" cannot get path "{path}"',
        "reason": "Forbidden",
        "details": {},
        "code": 403,
    }


def app() -> web.Application:
    async def public(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def version(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(VERSION, indent=2), content_type="application/json")

    async def other(request: web.Request) -> web.Response:
        return web.json_response(forbidden_status(request.path), status=403)

    application = web.Application()
    for path in PUBLIC_PATHS:
        application.router.add_get(path, public)
    application.router.add_get("/version", version)
    application.router.add_route("*", "/{tail:.*}", other)
    return application
