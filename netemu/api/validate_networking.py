"""Semantic checks of networking.k8s.io/v1 Ingress and IngressClass, as the
API server makes them (pkg/apis/networking/validation/validation.go:
ValidateIngressSpec, validateIngressRules, validateHTTPIngressPath,
validateIngressBackend, validateIngressTLS, ValidateIngressClass).

Called by netemu.api.validate's checker, whose `report` and `check_meta`
it uses; it only adds diagnostics."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from netemu.api.networking import (
    INGRESS_CLASS_ANNOTATION,
    Ingress,
    IngressBackend,
    IngressClass,
)
from netemu.api.validate import (
    _join,
    is_dns1035_label,
    is_dns1123_subdomain,
    is_port_name,
    is_port_number,
    parse_ip,
)

if TYPE_CHECKING:
    from netemu.api.errors import FieldPath
    from netemu.api.load import Loaded
    from netemu.api.validate import _Checker

_WILDCARD_FMT = r"\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_WILDCARD_RE = re.compile(_WILDCARD_FMT)
# What a path of type Exact or Prefix must not hold (invalidPathSequences and
# invalidPathSuffixes upstream): they would be normalised away by proxies.
_BAD_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_BAD_SUFFIXES = ("/..", "/.")
_DOMAIN_PREFIXED_MAX = 250
_SCOPES = ("Cluster", "Namespace")


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _WILDCARD_RE.fullmatch(value):
        errs.append(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS "
            "subdomain, which must consist of lower case alphanumeric characters, '-' or '.' "
            "and end with an alphanumeric character (e.g. '*.example.com', regex used for "
            f"validation is '{_WILDCARD_FMT}')"
        )
    return errs


def host_errors(host: str) -> list[str]:
    """A rule's or a TLS entry's host: a DNS name, one leading `*.` allowed."""
    errs = []
    if parse_ip(host) is not None:
        errs.append("must be a DNS name, not an IP address")
    if "*" in host:
        errs.extend(is_wildcard_dns1123_subdomain(host))
    else:
        errs.extend(is_dns1123_subdomain(host))
    return errs


def check_ingress(checker: _Checker, item: Loaded, ing: Ingress) -> None:
    checker.check_meta(item, ing.metadata, is_dns1123_subdomain)
    spec = ing.spec
    annotated = ing.metadata.annotations.get(INGRESS_CLASS_ANNOTATION)
    if (
        annotated is not None
        and spec.ingress_class_name is not None
        and annotated != spec.ingress_class_name
    ):
        checker.report(
            item,
            ("metadata", "annotations", INGRESS_CLASS_ANNOTATION),
            f'invalid value "{annotated}": must match `ingressClassName` when both are specified',
        )
    if spec.ingress_class_name is not None and (
        errs := is_dns1123_subdomain(spec.ingress_class_name)
    ):
        checker.report(item, ("spec", "ingressClassName"), _join(errs))
    if not spec.rules and spec.default_backend is None:
        checker.report(item, ("spec",), "either `defaultBackend` or `rules` must be specified")
    if spec.default_backend is not None:
        _check_backend(checker, item, ("spec", "defaultBackend"), spec.default_backend)
    for i, rule in enumerate(spec.rules):
        if rule.host and (errs := host_errors(rule.host)):
            checker.report(item, ("spec", "rules", i, "host"), _join(errs))
        if rule.http is None:
            continue
        if not rule.http.paths:
            checker.report(item, ("spec", "rules", i, "http", "paths"), "Required value")
        for j, path in enumerate(rule.http.paths):
            where: FieldPath = ("spec", "rules", i, "http", "paths", j)
            _check_path(checker, item, where, path.path, path.path_type)
            _check_backend(checker, item, (*where, "backend"), path.backend)
    for i, tls in enumerate(spec.tls):
        for j, host in enumerate(tls.hosts):
            if errs := host_errors(host):
                checker.report(item, ("spec", "tls", i, "hosts", j), _join(errs))
        if tls.secret_name and (errs := is_dns1123_subdomain(tls.secret_name)):
            checker.report(item, ("spec", "tls", i, "secretName"), _join(errs))


def _check_path(
    checker: _Checker, item: Loaded, where: FieldPath, path: str | None, path_type: str | None
) -> None:
    if path_type is None:
        checker.report(item, (*where, "pathType"), "pathType must be specified")
        return
    text = path or ""
    if path_type == "ImplementationSpecific":
        if text and not text.startswith("/"):
            checker.report(
                item, (*where, "path"), f'invalid value "{text}": must be an absolute path'
            )
        return
    if not text.startswith("/"):
        checker.report(item, (*where, "path"), f'invalid value "{text}": must be an absolute path')
        return
    for bad in _BAD_SEQUENCES:
        if bad in text:
            checker.report(
                item, (*where, "path"), f"invalid value \"{text}\": must not contain '{bad}'"
            )
    for bad in _BAD_SUFFIXES:
        if text.endswith(bad):
            checker.report(
                item, (*where, "path"), f"invalid value \"{text}\": cannot end with '{bad}'"
            )


def _check_backend(
    checker: _Checker, item: Loaded, where: FieldPath, backend: IngressBackend
) -> None:
    if backend.service is not None and backend.resource is not None:
        checker.report(item, where, "cannot set both resource and service backends")
        return
    if backend.service is None and backend.resource is None:
        checker.report(item, where, "one backend (service or resource) must be specified")
        return
    if backend.resource is not None:
        if not backend.resource.kind:
            checker.report(item, (*where, "resource", "kind"), "Required value")
        if not backend.resource.name:
            checker.report(item, (*where, "resource", "name"), "Required value")
        return
    service = backend.service
    assert service is not None
    if errs := is_dns1035_label(service.name):
        checker.report(item, (*where, "service", "name"), _join(errs))
    port = service.port
    if port is None or (not port.name and not port.number):
        checker.report(item, (*where, "service", "port"), "port name or number is required")
        return
    if port.name and port.number:
        checker.report(item, (*where, "service", "port"), "cannot set both port name & port number")
    elif port.name:
        if errs := is_port_name(port.name):
            checker.report(item, (*where, "service", "port", "name"), _join(errs))
    elif port.number is not None and (errs := is_port_number(port.number)):
        checker.report(item, (*where, "service", "port", "number"), _join(errs))


def check_ingress_class(checker: _Checker, item: Loaded, cls: IngressClass) -> None:
    checker.check_meta(item, cls.metadata, is_dns1123_subdomain)
    controller = cls.spec.controller
    if not controller:
        checker.report(item, ("spec", "controller"), "Required value")
    else:
        errs = []
        if len(controller) > _DOMAIN_PREFIXED_MAX:
            errs.append(f"must be no more than {_DOMAIN_PREFIXED_MAX} characters")
        domain, slash, _ = controller.partition("/")
        if not slash:
            errs.append('must be a domain-prefixed path (such as "acme.io/foo")')
        else:
            errs.extend(is_dns1123_subdomain(domain))
        if errs:
            checker.report(item, ("spec", "controller"), _join(errs))
    params = cls.spec.parameters
    if params is None:
        return
    where: FieldPath = ("spec", "parameters")
    if not params.kind:
        checker.report(item, (*where, "kind"), "Required value")
    if not params.name:
        checker.report(item, (*where, "name"), "Required value")
    scope = params.scope or "Cluster"
    if scope not in _SCOPES:
        checker.report(
            item,
            (*where, "scope"),
            f'Unsupported value: "{scope}": supported values: "Cluster", "Namespace"',
        )
    elif scope == "Namespace" and not params.namespace:
        checker.report(item, (*where, "namespace"), "`parameters.scope` is set to 'Namespace'")
    elif scope == "Cluster" and params.namespace:
        checker.report(item, (*where, "namespace"), "`parameters.scope` is set to 'Cluster'")
