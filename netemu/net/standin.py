"""Stand-in containers: which containers of a pod the built-in test server
replaces, and what it must serve so that the cluster sees the app.

A lab has no images. A container runs its own command when that command can
run on this machine; otherwise the built-in test server stands in for it:

- a container without `command` would run its image's entrypoint, which a
  lab never has: a stand-in (unless its pod asks for the built-in DNS
  server, `netemu/builtin-server: dns`, which is netemu's own program);
- a container with `command` runs it when its program, `command[0]`, can be
  executed here: a name with a `/` is taken as a path (relative to
  `workingDir`, else `/`), a name without one is looked up in the
  container's `PATH` (its own `env` entry, else the PATH container runtimes
  give an image without one), as runc resolves it; it must be a regular,
  executable file, and a script's `#!` interpreter must exist too (execve
  would fail otherwise). `sh -c '...'` therefore runs for real, whatever the
  script then does. A program that cannot run gets a stand-in.

A stand-in listens on the container's declared ports (TCP and UDP) and on
the TCP ports its own probes target (httpGet and tcpSocket, named ports
resolved against the container's ports; grpc), unless another container of
the pod declares that port. The port of a grpc probe serves the gRPC health
service (grpc.health.v1.Health/Check: SERVING) instead of HTTP/1. It
speaks TLS (a self-signed certificate) on the ports of HTTPS probes, on
ports named `https` and on 443 and 8443. Every httpGet probe path answers
200, and 500 while the fail switch of a probe that uses it is on (readiness;
liveness for liveness and startup probes); a grpc port answers NOT_SERVING
then.

Pure: the check whether a program can run is handed in (the kubelet passes
netemu.kernel.programs.program_problem).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # type hints only: the CLI's table printer imports this module
    from netemu.api.core import Container, Probe

# The PATH containerd and Docker give a container whose image sets none
# (oci.defaultUnixEnv / the image spec's conventional default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The pod annotation listing the containers a stand-in serves (written by
# the kubelet; `get pods -o wide` shows it as STAND-INS).
STAND_IN_ANNOTATION = "netemu.io/stand-in"
TLS_PORTS = frozenset({443, 8443})
TLS_PORT_NAME = "https"

Check = Literal["readiness", "liveness"]
# (program, PATH, working directory) -> why it cannot run here, or None if it can.
ProgramCheck = Callable[[str, str, str], "str | None"]


@dataclass(frozen=True)
class StandIn:
    """What a stand-in serves in place of one container."""

    reason: str  # why the container's own program does not run
    ports: tuple[tuple[int, str], ...]  # (port, protocol): declared, then probe ports
    tls_ports: tuple[int, ...]
    # (path without its query, the fail switches that fail it)
    probe_paths: tuple[tuple[str, tuple[Check, ...]], ...]
    # (port of grpc probes, the fail switches that make it NOT_SERVING)
    grpc_ports: tuple[tuple[int, tuple[Check, ...]], ...] = ()


def env_path(env: Iterable[tuple[str, str]]) -> str:
    """The PATH a container's program is looked up in."""
    path = None
    for name, value in env:
        if name == "PATH":
            path = value  # the last entry wins, as in the runtime's environment
    return path if path is not None else DEFAULT_PATH


def why_stand_in(
    container: Container,
    env: Sequence[tuple[str, str]],
    check: ProgramCheck | None,
) -> str | None:
    """Why the container cannot run its own program here (it gets a
    stand-in), or None if it runs its command. Without `check` (offline,
    nothing runs) every command is taken to run."""
    if not container.command:
        return "no command: the image's entrypoint is not on this machine"
    if check is None:
        return None
    problem = check(container.command[0], env_path(env), container.working_dir or "/")
    return None if problem is None else f"command {container.command[0]!r}: {problem}"


def _probes(container: Container) -> list[tuple[Check, Probe]]:
    given: list[tuple[Check, Probe | None]] = [
        ("readiness", container.readiness_probe),
        ("liveness", container.liveness_probe),
        ("liveness", container.startup_probe),
    ]
    return [(check, probe) for check, probe in given if probe is not None]


def _resolve(container: Container, port: int | str) -> int | None:
    """A probe's port as a number (a name: the container's port of that name,
    as the kubelet's probe.ResolveContainerPort)."""
    if isinstance(port, int):
        return port
    for p in container.ports:
        if p.name == port:
            return p.container_port
    return None


def stand_in(container: Container, reason: str, taken: Iterable[int]) -> StandIn:
    """What the stand-in for `container` serves; `taken`: TCP ports other
    containers of the pod declare (left to them)."""
    declared = [(p.container_port, p.protocol) for p in container.ports]
    tcp = {port for port, proto in declared if proto == "TCP"}
    others = set(taken) - tcp
    extra: list[int] = []
    tls = {p.container_port for p in container.ports if p.protocol == "TCP"} & TLS_PORTS
    tls |= {
        p.container_port
        for p in container.ports
        if p.protocol == "TCP" and (p.name or "").lower() == TLS_PORT_NAME
    }
    paths: dict[str, set[Check]] = {}
    grpc: dict[int, set[Check]] = {}
    for check, probe in _probes(container):
        port: int | None = None
        if probe.http_get is not None and not probe.http_get.host:
            port = _resolve(container, probe.http_get.port)
            path = (probe.http_get.path or "/").split("?", 1)[0] or "/"
            if not path.startswith("/"):
                path = "/" + path
            # A path two probes share fails with either switch: it is one
            # endpoint of the app.
            paths.setdefault(path, set()).add(check)
            if port is not None and probe.http_get.scheme == "HTTPS":
                tls.add(port)
        elif probe.tcp_socket is not None and not probe.tcp_socket.host:
            port = _resolve(container, probe.tcp_socket.port)
        elif probe.grpc is not None:
            port = probe.grpc.port
            grpc.setdefault(port, set()).add(check)
        if port is not None and port not in tcp and port not in others and port not in extra:
            extra.append(port)
    ports = (*declared, *((port, "TCP") for port in extra))
    served_tcp = {port for port, proto in ports if proto == "TCP"}
    return StandIn(
        reason=reason,
        ports=ports,
        tls_ports=tuple(sorted(tls & served_tcp)),
        probe_paths=tuple((path, tuple(sorted(paths[path]))) for path in sorted(paths)),
        grpc_ports=tuple(
            (port, tuple(sorted(grpc[port]))) for port in sorted(grpc) if port in served_tcp
        ),
    )
