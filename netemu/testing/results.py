"""The structured answers of the test helpers (netemu.testing.testlab):
what a command in a namespace printed, what an HTTP request got back and
from whom, which pods and endpoints a lab has, what a change did. Tests
assert on fields, never on text.

Pure data: frozen dataclasses, no I/O.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["answered", "refused", "timeout", "unreachable", "error"]


class ExecFailedError(AssertionError):
    """ExecResult.check() on a command that failed (an AssertionError, so
    pytest shows it as a failed check)."""


@dataclass(frozen=True)
class ExecResult:
    """A command run in a pod, node or external client (`lab.exec`)."""

    target: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> ExecResult:
        """This result, or ExecFailedError naming the command and its output."""
        if not self.ok:
            raise ExecFailedError(
                f"{shlex.join(self.argv)} in {self.target} exited {self.returncode}: "
                f"{(self.stderr or self.stdout).strip()}"
            )
        return self


@dataclass(frozen=True)
class HttpResult:
    """One HTTP GET from FROM to TO (`lab.http`), and the built-in test
    server's account of it: which pod answered, on which node, and which
    client address it saw after any NAT."""

    outcome: Outcome
    status: int | None  # the HTTP status when answered
    body: str
    client_ip: str | None  # the address the server saw the request come from
    pod: str | None  # the answering pod's name (test server reply)
    node: str | None  # the node the answering pod runs on
    elapsed: float  # seconds, connect to last byte (or to the failure)
    source: str  # "pod default/web-1", "node node-1", "client client"
    source_ip: str  # the address the request left the source with
    destination: str  # "ip:port" the request was sent to
    target: str  # how TO was understood, e.g. "NodePort 30080 of Service default/web-nodeport"
    pod_ip: str | None = None
    detail: str = ""  # why it failed, or a non-JSON answer's note

    @property
    def ok(self) -> bool:
        """Answered with a 2xx status."""
        return self.outcome == "answered" and self.status is not None and 200 <= self.status < 300

    @property
    def latency_ms(self) -> float:
        return self.elapsed * 1000.0

    @property
    def masqueraded(self) -> bool | None:
        """The server saw another client address than the one the request
        left with (SNAT/MASQUERADE on the way); None when nobody answered."""
        if self.client_ip is None:
            return None
        return self.client_ip != self.source_ip


@dataclass(frozen=True)
class PodInfo:
    """A pod of a live lab, where it runs and how to reach it."""

    namespace: str
    name: str
    ip: str
    node: str
    netns: str
    host_network: bool
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class EndpointInfo:
    """A ready endpoint of a Service (what kube-proxy sends traffic to)."""

    ip: str
    pod: str | None  # namespace/name of the pod behind it, if any
    node: str | None


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str | None  # None for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Scaled:
    """A workload scaled (`lab.scale`): once returned, its pods run and every
    node's rules match them."""

    workload: ObjectRef
    replicas: int
    pods: tuple[PodInfo, ...]  # the workload's pods afterwards, by name
