"""Validation of container probes (validateProbe and the container checks
around it in pkg/apis/core/validation, plus netemu's named-port check):
each message and the line it points at."""

from __future__ import annotations

import textwrap

from netemu.api.core import Pod
from netemu.api.load import load_text
from netemu.api.validate import validate


def check(text: str) -> list[str]:
    loaded, problems = load_text(textwrap.dedent(text).lstrip("\n"), "x.yaml")
    assert problems == []
    return [str(d) for d in validate(loaded)]


def test_valid_probes_load_with_their_kubernetes_names() -> None:
    text = """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers:
            - name: web
              ports: [{name: http, containerPort: 8080}]
              readinessProbe:
                httpGet:
                  path: /readyz
                  port: http
                  scheme: HTTP
                  httpHeaders: [{name: X-Probe, value: "1"}]
                periodSeconds: 1
                successThreshold: 2
                failureThreshold: 2
              livenessProbe:
                tcpSocket: {port: 8080}
                initialDelaySeconds: 3
                timeoutSeconds: 2
              startupProbe:
                exec: {command: [cat, /tmp/started]}
                failureThreshold: 30
                successThreshold: 0
    """
    assert check(text) == []
    loaded, _ = load_text(textwrap.dedent(text), "x.yaml")
    pod = loaded[0].obj
    assert isinstance(pod, Pod)
    probe = pod.spec.containers[0].readiness_probe
    assert probe is not None and probe.http_get is not None
    assert probe.http_get.port == "http"
    assert probe.handlers() == ["httpGet"]
    assert pod.to_dict()["spec"]["containers"][0]["readinessProbe"]["httpGet"]["httpHeaders"] == [
        {"name": "X-Probe", "value": "1"}
    ]


def test_probe_problems() -> None:
    text = """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers:
            - name: web
              ports: [{name: http, containerPort: 8080}]
              readinessProbe:
                periodSeconds: -1
              livenessProbe:
                exec: {command: []}
                httpGet: {port: 70000}
                successThreshold: 2
              startupProbe:
                tcpSocket: {port: metrics}
                failureThreshold: -3
                terminationGracePeriodSeconds: 0
            - name: side
              readinessProbe:
                httpGet: {port: Http, httpHeaders: [{name: "X Bad", value: v}]}
          initContainers:
            - name: init
              readinessProbe:
                tcpSocket: {port: 1}
    """
    # Sorted by line, as every diagnostic is.
    assert check(text) == [
        "x.yaml:9: Pod/p: spec.containers[0].readinessProbe: must specify a handler type",
        "x.yaml:10: Pod/p: spec.containers[0].readinessProbe.periodSeconds: "
        "must be greater than or equal to 0",
        "x.yaml:12: Pod/p: spec.containers[0].livenessProbe.exec.command: Required value",
        "x.yaml:13: Pod/p: spec.containers[0].livenessProbe.httpGet: "
        "may not specify more than 1 handler type",
        "x.yaml:13: Pod/p: spec.containers[0].livenessProbe.httpGet.port: "
        "must be between 1 and 65535, inclusive",
        "x.yaml:14: Pod/p: spec.containers[0].livenessProbe.successThreshold: must be 1",
        'x.yaml:16: Pod/p: spec.containers[0].startupProbe.tcpSocket.port: no port named "metrics" '
        "in this container (its named ports: http)",
        "x.yaml:17: Pod/p: spec.containers[0].startupProbe.failureThreshold: "
        "must be greater than or equal to 0",
        "x.yaml:18: Pod/p: spec.containers[0].startupProbe.terminationGracePeriodSeconds: "
        "must be greater than 0",
        "x.yaml:21: Pod/p: spec.containers[1].readinessProbe.httpGet.httpHeaders[0].name: invalid "
        'HTTP header name "X Bad": a valid HTTP header must consist of alphanumeric characters or '
        "'-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
        "x.yaml:21: Pod/p: spec.containers[1].readinessProbe.httpGet.port: must contain only "
        "alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        "x.yaml:24: Pod/p: spec.initContainers[0].readinessProbe: may not be set for init "
        "containers without restartPolicy=Always",
    ]


def test_probes_in_a_workload_template_are_checked() -> None:
    text = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
                - name: web
                  livenessProbe: {httpGet: {port: 8080}, successThreshold: 3}
    """
    assert check(text) == [
        "x.yaml:12: Deployment/web: spec.template.spec.containers[0].livenessProbe"
        ".successThreshold: must be 1"
    ]


def test_an_unknown_scheme_is_a_type_error() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
            - name: web
              readinessProbe: {httpGet: {port: 80, scheme: FTP}}
        """
    )
    _, problems = load_text(text, "x.yaml")
    assert [str(p) for p in problems] and "scheme" in str(problems[0])
