"""networking.k8s.io/v1 Ingress and IngressClass: loading, and the API
server's validation with file:line, object and field."""

from __future__ import annotations

import textwrap

from netemu.api.load import load_text
from netemu.api.networking import Ingress, IngressClass
from netemu.api.validate import validate


def check(text: str) -> list[str]:
    loaded, problems = load_text(textwrap.dedent(text).lstrip("\n"), "x.yaml")
    assert problems == []
    return [str(d) for d in validate(loaded)]


GOOD = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec:
  ingressClassName: nginx
  defaultBackend:
    service: {name: fallback, port: {number: 80}}
  tls:
  - hosts: [shop.example.com, "*.example.org"]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {name: http}}}}
      - {path: /, pathType: Exact, backend: {service: {name: front, port: {number: 8080}}}}
  - host: "*.example.org"
    http:
      paths:
      - {pathType: ImplementationSpecific, backend: {service: {name: front, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec:
  controller: k8s.io/ingress-nginx
"""


def test_a_valid_ingress_and_class_load_typed() -> None:
    loaded, problems = load_text(textwrap.dedent(GOOD).lstrip("\n"), "x.yaml")
    assert problems == []
    ing, cls = (item.obj for item in loaded)
    assert isinstance(ing, Ingress) and isinstance(cls, IngressClass)
    assert ing.class_name() == "nginx"
    assert cls.is_default()
    port = ing.spec.rules[0].http.paths[0].backend.service.port  # type: ignore[union-attr]
    assert port is not None and port.name == "http"
    # (Namespace "shop" is not in the input: as `kubectl apply` to a cluster that has it.)
    assert validate(loaded, create_namespaces=True) == []


def test_either_default_backend_or_rules() -> None:
    assert check("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: empty}
        spec: {}
    """) == ["x.yaml:4: Ingress/empty: spec: either `defaultBackend` or `rules` must be specified"]


def test_paths_need_a_type_and_an_absolute_clean_path() -> None:
    out = check("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: p}
        spec:
          rules:
          - http:
              paths:
              - path: /a
                backend: {service: {name: a, port: {number: 80}}}
              - path: b
                pathType: Prefix
                backend: {service: {name: a, port: {number: 80}}}
              - path: /a//b
                pathType: Exact
                backend: {service: {name: a, port: {number: 80}}}
              - path: /a/..
                pathType: Prefix
                backend: {service: {name: a, port: {number: 80}}}
              - path: rel
                pathType: ImplementationSpecific
                backend: {service: {name: a, port: {number: 80}}}
    """)
    assert out == [
        "x.yaml:8: Ingress/p: spec.rules[0].http.paths[0].pathType: pathType must be specified",
        'x.yaml:10: Ingress/p: spec.rules[0].http.paths[1].path: invalid value "b": '
        "must be an absolute path",
        'x.yaml:13: Ingress/p: spec.rules[0].http.paths[2].path: invalid value "/a//b": '
        "must not contain '//'",
        'x.yaml:16: Ingress/p: spec.rules[0].http.paths[3].path: invalid value "/a/..": '
        "cannot end with '/..'",
        'x.yaml:19: Ingress/p: spec.rules[0].http.paths[4].path: invalid value "rel": '
        "must be an absolute path",
    ]


def test_hosts_are_dns_names_with_one_leading_wildcard() -> None:
    out = check("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: h}
        spec:
          defaultBackend: {service: {name: a, port: {number: 80}}}
          rules:
          - host: 10.0.0.1
          - host: a.*.example.com
          tls:
          - hosts: [Bad_Host]
            secretName: Not_A_Name
    """)
    assert len(out) == 4
    assert out[0].startswith(
        "x.yaml:7: Ingress/h: spec.rules[0].host: must be a DNS name, not an IP"
    )
    assert out[1].startswith(
        "x.yaml:8: Ingress/h: spec.rules[1].host: "
        "a wildcard DNS-1123 subdomain must start with '*.'"
    )
    assert out[2].startswith("x.yaml:10: Ingress/h: spec.tls[0].hosts[0]: a lowercase RFC 1123")
    assert out[3].startswith("x.yaml:11: Ingress/h: spec.tls[0].secretName: a lowercase RFC 1123")


def test_backends_name_a_service_and_one_port() -> None:
    out = check("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: b}
        spec:
          rules:
          - http:
              paths:
              - {path: /1, pathType: Prefix, backend: {}}
              - {path: /2, pathType: Prefix, backend: {service: {name: a}}}
              - path: /3
                pathType: Prefix
                backend: {service: {name: a, port: {name: http, number: 80}}}
              - {path: /4, pathType: Prefix, backend: {service: {name: a, port: {number: 70000}}}}
              - {path: /5, pathType: Prefix, backend: {service: {name: 1a, port: {name: Http}}}}
    """)
    assert out[:4] == [
        "x.yaml:8: Ingress/b: spec.rules[0].http.paths[0].backend: "
        "one backend (service or resource) must be specified",
        "x.yaml:9: Ingress/b: spec.rules[0].http.paths[1].backend.service.port: "
        "port name or number is required",
        "x.yaml:12: Ingress/b: spec.rules[0].http.paths[2].backend.service.port: "
        "cannot set both port name & port number",
        "x.yaml:13: Ingress/b: spec.rules[0].http.paths[3].backend.service.port.number: "
        "must be between 1 and 65535, inclusive",
    ]
    assert out[4].startswith(
        "x.yaml:14: Ingress/b: spec.rules[0].http.paths[4].backend.service.name: a DNS-1035 label"
    )
    assert out[5].startswith(
        "x.yaml:14: Ingress/b: spec.rules[0].http.paths[4].backend.service.port.name: "
        "must contain only alpha-numeric"
    )


def test_class_annotation_must_match_the_field() -> None:
    assert check("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: c
          annotations: {kubernetes.io/ingress.class: traefik}
        spec:
          ingressClassName: nginx
          defaultBackend: {service: {name: a, port: {number: 80}}}
    """) == [
        "x.yaml:5: Ingress/c: metadata.annotations.kubernetes.io/ingress.class: "
        'invalid value "traefik": must match `ingressClassName` when both are specified'
    ]


def test_ingress_class_needs_a_domain_prefixed_controller() -> None:
    assert check("""
        apiVersion: networking.k8s.io/v1
        kind: IngressClass
        metadata: {name: x}
        spec: {controller: nginx}
    """) == [
        "x.yaml:4: IngressClass/x: spec.controller: must be a domain-prefixed path "
        '(such as "acme.io/foo")'
    ]
