"""Pure parts of the ingress trace and controller: curl's verbose output,
the Ingress status's addresses, when the addon is added."""

from __future__ import annotations

from netemu.api.core import Node, Pod, Service
from netemu.api.networking import Ingress, IngressClass
from netemu.controlplane.addons import wants_ingress
from netemu.controlplane.ingress import published_addresses
from netemu.kernel.httpclient import parse_verbose

# What curl 7.88 -v --http1.1 prints for an https request (abridged).
STDERR = """\
* Added shop.example.com:443:192.168.56.200 to DNS cache
*   Trying 192.168.56.200:443...
* ALPN: offers http/1.1
* SSL connection using TLSv1.3 / TLS_AES_256_GCM_SHA384
* ALPN: server accepted http/1.1
* Server certificate:
*  subject: CN=shop.example.com
*  start date: Dec  6 21:00:00 2026 GMT
*  issuer: CN=netemu test CA
*  SSL certificate verify ok.
> GET /cart HTTP/1.1
> Host: shop.example.com
> X-Request-ID: abc
< HTTP/1.1 200 OK
"""


def test_curl_verbose_output_gives_tls_and_the_request_line() -> None:
    got = parse_verbose("cart-0\n200", STDERR, checked=True)
    assert (got.status, got.body, got.request_line) == (200, "cart-0", "GET /cart HTTP/1.1")
    assert (got.tls_protocol, got.alpn) == ("TLSv1.3", "http/1.1")
    assert (got.subject, got.issuer, got.verified) == (
        "CN=shop.example.com",
        "CN=netemu test CA",
        True,
    )
    # Without --cacert (curl -k) nothing was checked.
    assert parse_verbose("x\n200", STDERR, checked=False).verified is None


def test_curl_failure_has_no_status_and_keeps_the_error() -> None:
    got = parse_verbose("\n000", "curl: (7) Failed to connect to x port 80\n", checked=False)
    assert got.status is None and got.error == "curl: (7) Failed to connect to x port 80"


def _svc(status: dict[str, object]) -> Service:
    return Service.model_validate(
        {
            "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
            "spec": {"selector": {"app": "c"}, "ports": [{"port": 80}]},
            "status": status,
        }
    )


def test_status_addresses_are_the_lb_ips_else_the_controller_pods_nodes() -> None:
    pod = Pod.model_validate(
        {
            "metadata": {"name": "c-1", "labels": {"app": "c"}},
            "spec": {"nodeName": "node-2", "containers": [{"name": "c"}]},
        }
    )
    nodes = [
        Node.model_validate(
            {
                "metadata": {"name": f"node-{i}"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.56.1{i}"}]},
            }
        )
        for i in (1, 2)
    ]
    with_lb = _svc({"loadBalancer": {"ingress": [{"ip": "192.168.56.200"}]}})
    assert published_addresses(with_lb, [pod], nodes) == ["192.168.56.200"]
    assert published_addresses(_svc({}), [pod], nodes) == ["192.168.56.12"]
    assert published_addresses(None, [pod], nodes) == []


def test_the_addon_comes_with_an_ingress_or_an_ingress_nginx_class() -> None:
    ing = Ingress.model_validate({"metadata": {"name": "i"}})
    mine = IngressClass.model_validate(
        {"metadata": {"name": "n"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    )
    other = IngressClass.model_validate(
        {"metadata": {"name": "t"}, "spec": {"controller": "traefik.io/ingress-controller"}}
    )
    assert wants_ingress([ing]) and wants_ingress([mine])
    assert not wants_ingress([other]) and not wants_ingress([])
