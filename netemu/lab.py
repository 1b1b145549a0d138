"""The Python facade of live labs, used by the CLI and by tests: bring a lab
up (a supervisor process per lab), talk to it over its Unix socket, resolve
exec targets, and take it down, also after the supervisor has crashed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu.errors import LabError as LabError
from netemu.errors import LabUsageError as LabUsageError
from netemu.errors import needs_root as needs_root
from netemu.kernel import journal
from netemu.kernel.journal import INFO, LOG, SOCKET, Journal, run_dir
from netemu.kernel.processes import command_in, sandboxed_in
from netemu.kernel.sandbox import SandboxSpec
from netemu.launch import call_off, send_orders, start_supervisor

# pydantic's models, the control plane and the lab plan are imported by the
# methods that use them: `netemu get` on a live lab only talks to the
# supervisor, and starts in half the time without them (benchmarks/startup.py).
if TYPE_CHECKING:
    from netemu.api.base import K8sModel
    from netemu.controlplane.state import ClusterState
    from netemu.kernel.iptables import Backend
    from netemu.trace.report import TraceReport
    from netemu.trace.topology import Topology

READY_TIMEOUT = 300.0
# A supervisor writes an empty line every HEARTBEAT s (netemu.supervisor)
# while it works on a request: this long a silence means it stopped
# answering (stopped, wedged), however long the request itself may take.
ANSWER_TIMEOUT = 2.0
# A change returns once every node has its rules: iptables-nft-restore
# --noflush of tens of thousands of rules takes minutes (benchmarks/RESULTS.md).
REQUEST_TIMEOUT = 600.0


class SupervisorNotAnswering(LabError):
    """The lab's supervisor accepted a request but stopped answering it."""


class _Deadline(Exception):
    """The request's own time ran out, while the supervisor was still working."""


def _read_reply(sock: socket.socket, deadline: float) -> bytes:
    """The reply line, after any heartbeats (empty lines) before it; b"" if
    the supervisor hung up first. TimeoutError after ANSWER_TIMEOUT s of
    silence (the socket's timeout); _Deadline at `deadline`."""
    data = bytearray()
    while not data.endswith(b"\n"):
        if time.monotonic() > deadline:
            raise _Deadline
        chunk = sock.recv(65536)
        if not chunk:
            break
        # The reply is one JSON line: newlines before it are heartbeats.
        data += chunk if data else chunk.lstrip(b"\n")
    return bytes(data)


def kind_named(word: str) -> str:
    """The kind kubectl means by `word` (`deploy`, `svc`, `pods`, ...)."""
    from netemu.controlplane.objects import KIND_ALIASES

    kind = KIND_ALIASES.get(word.lower())
    if kind is None:
        from netemu.api.generic import resource_kind

        kind = resource_kind(word)  # a built-in kind netemu stores, not emulates
    if kind is None:
        known = ", ".join(sorted(set(KIND_ALIASES.values())))
        raise LabUsageError(f"unknown kind {word!r}; expected one of: {known}")
    return kind


def running_labs() -> list[str]:
    return journal.labs()


def resolve_lab(name: str | None) -> str:
    """The lab named, or the only lab that is up."""
    labs = running_labs()
    if name is not None:
        if name not in labs:
            raise LabUsageError(f"no lab {name!r} is up; labs up: {', '.join(labs) or 'none'}")
        return name
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabUsageError("no lab is up; start one with: netemu up -f controlplane/default")
    raise LabUsageError(f"several labs are up ({', '.join(labs)}): choose one with --lab")


@dataclass(frozen=True)
class Target:
    kind: str  # "pod", "node" or "client"
    name: str
    netns: str
    hostname: str
    # A hostNetwork pod's own /etc files (netemu.node.kubelet.pod_etc_dir).
    etc: Path | None = None
    # A pod's: the sandbox of its first container (its user, environment,
    # filesystem view), which `netemu exec` runs in, as `kubectl exec` runs in
    # the default container.
    sandbox: SandboxSpec | None = None


class LiveLab:
    """A lab that is up, addressed by name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.directory = run_dir(name)

    # -- talking to the supervisor -------------------------------------------

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one request and return the supervisor's reply. `timeout`
        bounds the whole request; a supervisor that stops answering (no
        heartbeat for ANSWER_TIMEOUT s) fails it sooner, with
        SupervisorNotAnswering."""
        path = self.directory / SOCKET
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                # Connecting can block too: a stopped supervisor's listen
                # backlog fills up and connect() then waits for room.
                sock.settimeout(min(ANSWER_TIMEOUT, timeout))
                sock.connect(str(path))
                sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
                data = _read_reply(sock, deadline)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise LabError(
                f"lab {self.name}: its supervisor is not running "
                f"(see {self.directory / LOG}); netemu down {self.name} cleans up"
            ) from exc
        except TimeoutError as exc:
            raise SupervisorNotAnswering(self._not_answering(timeout)) from exc
        except _Deadline as exc:
            raise LabError(
                f"lab {self.name}: its supervisor is still working on {op!r} "
                f"after {timeout:g} s; giving up waiting (see {self.directory / LOG})"
            ) from exc
        except OSError as exc:
            raise LabError(f"lab {self.name}: no answer from its supervisor ({exc})") from exc
        try:
            reply: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise LabError(
                f"lab {self.name}: the supervisor hung up without an answer "
                f"(see {self.directory / LOG})"
            ) from exc
        if not reply.get("ok"):
            if reply.get("usage"):  # the request named something the lab does not have
                raise LabUsageError(str(reply.get("error")))
            raise LabError(f"lab {self.name}: {reply.get('error')}")
        return reply

    def _not_answering(self, timeout: float) -> str:
        pid = self._supervisor_pid()
        which = f"its supervisor (pid {pid})" if pid is not None else "its supervisor"
        silence = min(ANSWER_TIMEOUT, timeout)
        return (
            f"lab {self.name}: {which} is not answering (nothing for {silence:g} s: "
            f"stopped or stuck; see {self.directory / LOG}); "
            f"netemu down {self.name} takes the lab down"
        )

    def _supervisor_pid(self) -> int | None:
        """The supervisor's pid, from the info file or else the journal (whose
        first process is the supervisor); None if neither names it."""
        with contextlib.suppress(OSError, ValueError, LabError, KeyError, TypeError):
            return int(self.info()["pid"])
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            for entry in journal.read_entries(self.name):
                if "pid" in entry:
                    return int(entry["pid"])
        return None

    def status(self) -> dict[str, Any]:
        progress: dict[str, Any] = self.request("status", timeout=5)["progress"]
        return progress

    def state(self) -> dict[str, list[dict[str, Any]]]:
        state: dict[str, list[dict[str, Any]]] = self.request("state")["state"]
        return state

    def topology(self) -> Topology:
        """Where the lab's nodes, clients and pods live (from its info file)."""
        from netemu.trace.topology import Topology

        return Topology.from_info(self.info())

    def cluster_state(self) -> ClusterState:
        """The lab's control-plane state as typed objects."""
        from netemu.api.apps import Deployment
        from netemu.api.core import EndpointSlice, Node, Pod, Service
        from netemu.controlplane.state import ClusterState

        raw = self.state()
        return ClusterState(
            nodes=tuple(Node.model_validate(o) for o in raw["nodes"]),
            services=tuple(Service.model_validate(o) for o in raw["services"]),
            pods=tuple(Pod.model_validate(o) for o in raw["pods"]),
            endpoint_slices=tuple(EndpointSlice.model_validate(o) for o in raw["endpointslices"]),
            deployments=tuple(Deployment.model_validate(o) for o in raw["deployments"]),
        )

    def table(self, kind: str, namespace: str | None, output: str | None) -> dict[str, Any]:
        """What `netemu get` prints, built by the supervisor: {"table": a
        meta.k8s.io/v1 Table} or, for output json|yaml, {"list": a v1 List}
        (netemu.cli_table). `kind`: a value of netemu.cli_table.RESOURCES.
        `namespace` given: only that namespace, without a NAMESPACE column."""
        reply = self.request("table", kind=kind, namespace=namespace, output=output)
        return {key: reply[key] for key in ("table", "list") if key in reply}

    def apply(self, objects: Sequence[K8sModel]) -> list[str]:
        raws = [obj.to_dict() for obj in objects]
        applied: list[str] = self.request("apply", objects=raws)["applied"]
        return applied

    def delete(
        self,
        refs: Sequence[tuple[str, str | None, str]],
        *,
        grace_period: int | None = None,
        wait: bool = True,
    ) -> list[str]:
        """Delete objects; pods gracefully (`grace_period`: None for each
        pod's own, 0 removes them at once). With `wait`, returns once the
        deleted pods are gone."""
        payload = [{"kind": k, "namespace": ns, "name": n} for k, ns, n in refs]
        deleted: list[str] = self.request(
            "delete", refs=payload, gracePeriod=grace_period, wait=wait
        )["deleted"]
        return deleted

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> str:
        scaled: str = self.request(
            "scale", kind=kind, namespace=namespace, name=name, replicas=replicas
        )["scaled"]
        return scaled

    def create_job(self, namespace: str, name: str, cronjob: str) -> str:
        """`kubectl create job NAME --from=cronjob/CRONJOB`."""
        created: str = self.request("createjob", namespace=namespace, name=name, cronjob=cronjob)[
            "created"
        ]
        return created

    def logs(
        self,
        pod: str,
        container: str | None = None,
        *,
        namespace: str = "default",
        previous: bool = False,
        tail: int | None = None,
    ) -> str:
        """A container's log, as `kubectl logs` shows it: what a command
        container printed (stdout and stderr), or the built-in server's access
        log. `pod` is a name or namespace/name; `container` defaults to the
        pod's first; `previous` is the instance before the last restart;
        `tail` keeps the last lines."""
        if "/" in pod:
            namespace, pod = pod.split("/", 1)
        log: str = self.request(
            "logs",
            namespace=namespace,
            pod=pod,
            container=container,
            previous=previous,
            tail=tail,
        )["log"]
        return log

    # -- reading the lab's info file -----------------------------------------

    def info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads((self.directory / INFO).read_text())
        except FileNotFoundError as exc:
            raise LabError(f"lab {self.name} is not ready") from exc
        return info

    def target(self, name: str) -> Target:
        """A pod (`name` or `namespace/name`), a node or an external client."""
        from netemu.net.plan import hostname as kernel_hostname

        info = self.info()
        found: list[Target] = []
        if name in info["nodes"]:
            found.append(Target("node", name, info["nodes"][name]["netns"], kernel_hostname(name)))
        if name in info["clients"]:
            found.append(
                Target("client", name, info["clients"][name]["netns"], kernel_hostname(name))
            )
        pod_key = name if "/" in name else f"default/{name}"
        if pod_key in info["pods"]:
            pod = info["pods"][pod_key]
            # The hostname its containers have (long names are cut, netemu.net.plan).
            hostname = pod.get("hostname") or kernel_hostname(
                pod["node"] if pod["hostNetwork"] else pod_key.split("/", 1)[1]
            )
            etc = Path(pod["etc"]) if pod.get("etc") else None
            sandboxes = pod.get("containers") or {}
            first = next(iter(sandboxes.values()), None)
            sandbox = SandboxSpec.from_json(first) if isinstance(first, dict) else None
            found.append(Target("pod", pod_key, pod["netns"], hostname, etc, sandbox))
        if not found:
            known = sorted([*info["nodes"], *info["clients"], *info["pods"]])
            raise LabUsageError(
                f"no pod, node or client {name!r} in lab {self.name}; known: {', '.join(known)}"
            )
        if len(found) > 1:
            kinds = ", ".join(t.kind for t in found)
            raise LabUsageError(
                f"{name!r} names several targets ({kinds}); for a pod use namespace/name"
            )
        return found[0]

    def trace(
        self,
        frm: str,
        to: str,
        *,
        port: int | None = None,
        proto: str = "tcp",
        pcap: bool = True,
        captures: Path | None = None,
        timeout: float = 1.0,
    ) -> TraceReport:
        """Send one flow from `frm` to `to` and follow it hop by hop
        (netemu.trace.live); pcaps go under `captures`/<lab>/<trace-id>/."""
        from netemu.trace.live import CAPTURES, TraceOptions, trace

        options = TraceOptions(
            port=port, proto=proto, pcap=pcap, captures=captures or CAPTURES, timeout=timeout
        )
        return trace(self, frm, to, options)

    def exec_argv(self, target: str, argv: Sequence[str]) -> list[str]:
        found = self.target(target)
        if found.sandbox is not None:
            # A new session: the command cannot push input into the caller's terminal.
            return sandboxed_in(
                found.netns, argv, replace(found.sandbox, new_session=True, die_with_parent=True)
            )
        return command_in(found.netns, argv, found.hostname, found.etc)

    def exec(
        self, target: str, argv: Sequence[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.exec_argv(target, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def node_netns(self, node: str) -> tuple[str, Backend]:
        """(namespace, iptables backend) of a node."""
        info = self.info()
        if node not in info["nodes"]:
            raise LabUsageError(
                f"no node {node!r} in lab {self.name}; nodes: {', '.join(info['nodes'])}"
            )
        backend: Backend = "legacy" if info["backend"] == "legacy" else "nft"
        return info["nodes"][node]["netns"], backend


def up(
    paths: Sequence[str],
    name: str,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = READY_TIMEOUT,
    supervisor: subprocess.Popen[bytes] | None = None,
    create_namespaces: bool = False,
) -> LiveLab:
    """Start the lab's supervisor and wait until every pod's servers listen and
    every node's rules are applied. On failure the lab is taken down again.
    `supervisor`: one started ahead with netemu.launch.start_supervisor (the
    CLI does, to import while it validates); by default one is started here."""
    try:
        _check_can_start(name)
    except BaseException:
        if supervisor is not None:
            call_off(supervisor)
        raise
    proc = supervisor if supervisor is not None else start_supervisor()
    try:
        lab_journal = Journal(name)
        lab_journal.open()
        lab_journal.process(proc.pid)
    except BaseException:
        call_off(proc)
        raise
    log = run_dir(name) / LOG
    lab = LiveLab(name)
    deadline = time.monotonic() + timeout
    try:
        with contextlib.suppress(BrokenPipeError):  # it exited: reported below
            send_orders(proc, name, [str(path) for path in paths], create_namespaces)
        while True:
            if proc.poll() is not None:
                raise LabError(f"lab {name}: the supervisor exited ({_log_tail(log)})")
            try:
                progress = lab.status()
            except SupervisorNotAnswering:
                raise  # it was listening, so it is not still starting: it is stuck
            except (LabError, OSError, ValueError):
                progress = None  # not listening yet
            if progress is not None:
                if on_progress is not None:
                    on_progress(progress)
                if progress["error"]:
                    raise LabError(f"lab {name} failed to come up: {progress['error']}")
                if progress["ready"]:
                    return lab
            if time.monotonic() > deadline:
                raise LabError(f"lab {name} was not ready after {timeout:.0f} s ({_log_tail(log)})")
            time.sleep(0.02)
    except BaseException:
        down(name)
        raise


def _check_can_start(name: str) -> None:
    from netemu.net.plan import PlanError, check_lab_name

    try:
        check_lab_name(name)
    except PlanError as exc:
        raise LabUsageError(str(exc)) from exc
    if name in running_labs():
        raise LabError(f"lab {name} is already up; take it down first with: netemu down {name}")


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        tail = log.read_text().strip().splitlines()[-lines:]
    except OSError:
        return f"no log at {log}"
    return " | ".join(tail) if tail else f"see {log}"


def down(name: str, note: Callable[[str], None] | None = None) -> list[str]:
    """Take lab `name` down: ask its supervisor to stop, then remove everything
    its journal names (which also works when the supervisor is gone).
    Returns what was removed; each journal line it skipped goes to `note`
    (default: stderr). Raises LabError, after removing all it could, if
    something was left behind."""
    lab = LiveLab(name)
    if (lab.directory / SOCKET).exists():
        # A crashed or stuck supervisor: the journal cleanup below handles it.
        with contextlib.suppress(LabError, OSError, ValueError):
            lab.request("shutdown", timeout=5)
    result = journal.cleanup(name)
    for line in result.skipped:
        if note is None:
            print(f"warning: {line}", file=sys.stderr)
        else:
            note(line)
    if result.left:
        left = "\n".join(result.left)
        raise LabError(
            f"lab {name}: removed {len(result.removed)} objects but could not remove:\n{left}\n"
            f"(its journal is kept: netemu down {name} tries again)"
        )
    return result.removed


def down_all(note: Callable[[str], None] | None = None) -> dict[str, list[str]]:
    return {name: down(name, note) for name in running_labs()}
