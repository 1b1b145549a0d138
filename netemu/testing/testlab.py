"""Live labs for tests: `running_lab` brings a lab up under a name no other
test, xdist worker or process uses, and always takes it down again (also
when the body fails or is interrupted with Ctrl-C); `NetemuLab` is the
handle a test gets, whose helpers answer with structured results
(netemu.testing.results) instead of text.

Owns: the labs it brings up (each noted in a LabRegistry while up, so the
pytest plugin can take down whatever a session left behind). Must not
touch: labs it did not start. netemu.lab and everything heavy is imported
here, never by the plugin at start-up.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu.api.base import K8sModel
from netemu.api.core import SERVICE_NAME_LABEL
from netemu.controlplane.objects import SCALABLE
from netemu.controlplane.state import ClusterState
from netemu.kernel import probe
from netemu.lab import (
    READY_TIMEOUT,
    LabError,
    LabUsageError,
    LiveLab,
    down,
    kind_named,
    running_labs,
    up,
)
from netemu.net.plan import PlanError, check_lab_name
from netemu.testing.results import (
    EndpointInfo,
    ExecResult,
    HttpResult,
    ObjectRef,
    PodInfo,
    Scaled,
)
from netemu.trace.flow import Flow, resolve_flow
from netemu.trace.topology import Topology

if TYPE_CHECKING:
    from netemu.api.core import Service
    from netemu.testing.matrix import Matrix
    from netemu.trace.report import TraceReport

# How many requests `http_many` sends by default: with k equally likely
# endpoints, missing one of them by chance has probability k(1-1/k)^60,
# below 1e-5 for every k up to 5.
SPREAD_REQUESTS = 60
MAX_LAB_NAME = 32


Manifest = str | Path | Mapping[str, Any] | K8sModel


# -- names and paths -----------------------------------------------------------

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def slug(text: str) -> str:
    """`text` as lab-name characters: lower case, digits and single '-'."""
    text = re.sub(r"^test_?", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def unique_lab_name(label: str, taken: Iterable[str] | None = None) -> str:
    """`t<pid>-<n>-<label>`, at most 32 characters: the pid keeps processes
    (and so xdist workers) apart, the counter keeps the labs of one process
    apart, the label tells a person whose lab it is. A name already up
    (left by a crashed run whose pid came round again) is skipped."""
    up_now = set(running_labs() if taken is None else taken)
    while True:
        with _counter_lock:
            n = next(_counter)
        prefix = f"t{os.getpid()}-{n}-"
        rest = slug(label)[: MAX_LAB_NAME - len(prefix)].strip("-") or "lab"
        name = (prefix + rest)[:MAX_LAB_NAME].strip("-")
        if name not in up_now:
            return check_lab_name(name)


def resolve_paths(paths: Sequence[str | Path], base: Path) -> list[Path]:
    """Absolute paths; a relative one is taken relative to `base` (the
    pytest rootdir, for the fixtures), and must exist."""
    resolved = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.exists():
            raise FileNotFoundError(
                f"{raw}: no such file or directory (relative paths are taken from {base})"
            )
        resolved.append(path)
    return resolved


# -- bringing labs up and down -----------------------------------------------


class LabRegistry:
    """The labs brought up through it that are not down yet (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._up: list[str] = []

    def add(self, name: str) -> None:
        with self._lock:
            self._up.append(name)

    def discard(self, name: str) -> None:
        with self._lock:
            if name in self._up:
                self._up.remove(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._up)

    def down_all(self) -> list[str]:
        """Take down every lab still noted; returns their names."""
        names = self.names()
        for name in names:
            shielded_down(name)
            self.discard(name)
        return names


def shielded_down(name: str) -> None:
    """`netemu.lab.down(name)`, not to be cut short by another Ctrl-C: a
    half-done cleanup would leave namespaces behind. An interrupt that
    arrives meanwhile is raised once the lab is down."""
    if threading.current_thread() is not threading.main_thread():
        down(name)
        return
    interrupted: list[int] = []

    def note(signum: int, frame: object) -> None:
        interrupted.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        down(name)
    finally:
        # None: a handler not installed from Python, which cannot be put back.
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


@contextmanager
def running_lab(
    paths: Sequence[str | Path],
    name: str,
    *,
    registry: LabRegistry | None = None,
    captures: Callable[[], Path] | None = None,
    base: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> Iterator[NetemuLab]:
    """Lab `name` up from `paths` for the body, down afterwards whatever
    happens: an exception, a failed bring-up, KeyboardInterrupt. Relative
    paths (here and in `NetemuLab.apply`) are taken from `base`, by default
    the current directory."""
    base = base or Path.cwd()
    paths = resolve_paths(paths, base)
    # Refused before anything starts: the teardown below removes whatever
    # goes by `name`, which must be a lab this call brought up.
    try:
        check_lab_name(name)
    except PlanError as exc:
        raise LabUsageError(str(exc)) from exc
    if name in running_labs():
        raise LabError(f"lab {name} is already up (not started by this test); choose another name")
    if registry is not None:
        registry.add(name)
    try:
        # up() takes a lab that fails to come up down itself; the finally
        # below repeats that harmlessly (down is idempotent).
        live = up([str(p) for p in paths], name, timeout=timeout)
        yield NetemuLab(live, tuple(paths), captures=captures, base=base)
    finally:
        try:
            shielded_down(name)
        finally:
            if registry is not None:
                registry.discard(name)


# -- the handle a test gets ------------------------------------------------------


def _reply_text(reply: Mapping[str, Any] | None, key: str) -> str | None:
    value = reply.get(key) if reply else None
    return str(value) if value is not None else None


def send_http(flow: Flow, path: str = "/", timeout: float = 2.0) -> HttpResult:
    """One HTTP GET along `flow` (a kernel socket in the source's namespace)."""
    try:
        # A node has several addresses: the one its route to dst picks.
        source_ip = probe.source_address(flow.source.netns, flow.dst)
    except OSError:
        source_ip = flow.source.ip
    got = probe.http_get(flow.source.netns, flow.dst, flow.dport, path=path, timeout=timeout)
    reply = got.reply
    detail = got.detail
    if got.outcome == "answered" and reply is None:
        detail = detail or "the answer is not the test server's JSON"
    return HttpResult(
        outcome=got.outcome,
        status=got.status,
        body=got.body,
        client_ip=_reply_text(reply, "clientIP"),
        pod=_reply_text(reply, "pod"),
        node=_reply_text(reply, "node"),
        elapsed=got.elapsed,
        source=flow.source.label,
        source_ip=got.local[0] if got.local else source_ip,
        destination=f"{flow.dst}:{flow.dport}",
        target=flow.target,
        pod_ip=_reply_text(reply, "podIP"),
        detail=detail,
    )


class NetemuLab:
    """A live lab in a test. FROM/TO words are those of `netemu trace`:
    FROM a pod (`name`, `ns/name`), node or external client (`pod/`,
    `node/`, `client/` settle a clash); TO a Service (`name`, `ns/name`),
    a pod, `NODE:NODEPORT`, or `IP:PORT`."""

    # Not a test class, whatever pytest's collection thinks of the name.
    __test__ = False

    def __init__(
        self,
        live: LiveLab,
        paths: tuple[Path, ...] = (),
        *,
        captures: Callable[[], Path] | None = None,
        base: Path | None = None,
    ) -> None:
        self.live = live
        self.paths = paths
        self.base = base or Path.cwd()
        self._captures = captures

    @property
    def name(self) -> str:
        return self.live.name

    def __repr__(self) -> str:
        return f"NetemuLab({self.name!r})"

    # -- reading the lab -------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The lab's info file: namespaces and addresses of nodes, clients, pods."""
        return self.live.info()

    def state(self) -> ClusterState:
        """The control plane's state now, as typed objects."""
        return self.live.cluster_state()

    def topology(self) -> Topology:
        return self.live.topology()

    def service(self, name: str, namespace: str = "default") -> Service:
        return self._service(self.state(), name, namespace)

    def _service(self, state: ClusterState, name: str, namespace: str) -> Service:
        for svc in state.services:
            if svc.metadata.name == name and (svc.metadata.namespace or "default") == namespace:
                return svc
        raise LabUsageError(f"no Service {namespace}/{name} in lab {self.name}")

    def pods(
        self,
        selector: Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
        node: str | None = None,
    ) -> tuple[PodInfo, ...]:
        """Running pods (not being deleted), by namespace/name, optionally
        those whose labels include `selector`, in `namespace`, on `node`."""
        return self._pods(self.state(), selector, namespace=namespace, node=node)

    def _pods(
        self,
        state: ClusterState,
        selector: Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
        node: str | None = None,
    ) -> tuple[PodInfo, ...]:
        labels = {
            f"{p.metadata.namespace or 'default'}/{p.metadata.name}": dict(p.metadata.labels)
            for p in state.pods
            if not p.metadata.deletion_timestamp
        }
        found = []
        for key, pod in sorted(self.info()["pods"].items()):
            if key not in labels:
                continue
            pod_ns, pod_name = key.split("/", 1)
            info = PodInfo(
                pod_ns,
                pod_name,
                str(pod["ip"]),
                str(pod["node"]),
                str(pod["netns"]),
                bool(pod["hostNetwork"]),
                labels[key],
            )
            if namespace is not None and pod_ns != namespace:
                continue
            if node is not None and info.node != node:
                continue
            if selector and any(info.labels.get(k) != v for k, v in selector.items()):
                continue
            found.append(info)
        return tuple(found)

    def endpoints(self, service: str, namespace: str = "default") -> tuple[EndpointInfo, ...]:
        """The Service's ready endpoints (those kube-proxy sends to), by IP."""
        state = self.state()
        self._service(state, service, namespace)  # a clear error for a Service that does not exist
        found: dict[str, EndpointInfo] = {}
        for eps in state.endpoint_slices:
            meta = eps.metadata
            if (meta.namespace or "default") != namespace or meta.labels.get(
                SERVICE_NAME_LABEL
            ) != service:
                continue
            for endpoint in eps.endpoints:
                if endpoint.conditions.ready is False:
                    continue
                ref = endpoint.target_ref
                pod = (
                    f"{ref.namespace or namespace}/{ref.name}"
                    if ref is not None and ref.kind == "Pod" and ref.name
                    else None
                )
                for ip in endpoint.addresses:
                    found[ip] = EndpointInfo(ip, pod, endpoint.node_name)
        return tuple(found[ip] for ip in sorted(found, key=_ip_key))

    # -- acting in the lab --------------------------------------------------------

    def exec(self, target: str, cmd: str | Sequence[str], *, timeout: float = 30.0) -> ExecResult:
        """Run `cmd` (an argv, or a string split like a shell would) in a pod
        (`name` or `ns/name`), node or external client. A failing command
        is a result (see ExecResult.check); one still running after
        `timeout` seconds raises subprocess.TimeoutExpired."""
        argv = tuple(shlex.split(cmd) if isinstance(cmd, str) else cmd)
        done = self.live.exec(target, argv, timeout=timeout)
        return ExecResult(target, argv, done.returncode, done.stdout, done.stderr)

    def flow(self, frm: str, to: str, *, port: int | None = None, proto: str = "tcp") -> Flow:
        """FROM/TO resolved against the lab's state and topology now
        (netemu.trace.flow.FlowError if they name no flow)."""
        return resolve_flow(self.state(), self.topology(), frm, to, port, proto)

    def http(
        self,
        frm: str,
        to: str,
        *,
        port: int | None = None,
        path: str = "/",
        timeout: float = 2.0,
    ) -> HttpResult:
        """One HTTP GET from FROM to TO on a new connection; a failure is an
        outcome (refused, timeout, unreachable, error), not an exception."""
        return send_http(self.flow(frm, to, port=port), path, timeout)

    def http_many(
        self,
        frm: str,
        to: str,
        count: int = SPREAD_REQUESTS,
        *,
        port: int | None = None,
        path: str = "/",
        timeout: float = 2.0,
    ) -> tuple[HttpResult, ...]:
        """`count` requests, each on a new connection (so each is balanced
        anew), FROM/TO resolved once."""
        flow = self.flow(frm, to, port=port)
        return tuple(send_http(flow, path, timeout) for _ in range(count))

    def trace(
        self,
        frm: str,
        to: str,
        *,
        port: int | None = None,
        proto: str = "tcp",
        timeout: float = 1.0,
        pcap: bool = False,
        captures: Path | None = None,
    ) -> TraceReport:
        """`netemu trace FROM TO`: the report object (hops, verdict, rules,
        conntrack). With `pcap`, the pcaps go under `captures` (default: a
        temporary directory of the test session)."""
        if pcap and captures is None:
            if self._captures is None:
                raise LabUsageError("trace(pcap=True) needs captures=DIRECTORY here")
            captures = self._captures()
        return self.live.trace(
            frm, to, port=port, proto=proto, pcap=pcap, captures=captures, timeout=timeout
        )

    def scale(self, workload: str, replicas: int, *, namespace: str = "default") -> Scaled:
        """Scale `deployment/NAME` (or `NAME` for a Deployment), a ReplicaSet
        or a StatefulSet; returns once its pods run and every node's rules
        match them."""
        kind_word, sep, name = workload.rpartition("/")
        kind = kind_named(kind_word) if sep else "Deployment"
        if kind not in SCALABLE:
            raise LabUsageError(f"{kind} cannot be scaled; scalable: {', '.join(SCALABLE)}")
        self.live.scale(kind, namespace, name, replicas)
        return Scaled(
            ObjectRef(kind, namespace, name), replicas, self._pods_of(kind, namespace, name)
        )

    def _pods_of(self, kind: str, namespace: str, name: str) -> tuple[PodInfo, ...]:
        state = self.state()
        if kind == "Deployment":
            deployment = next(
                d
                for d in state.deployments
                if d.metadata.name == name and (d.metadata.namespace or "default") == namespace
            )
            selector = deployment.spec.selector
            pods = self._pods(state, namespace=namespace)
            return tuple(p for p in pods if selector.matches(p.labels))
        owned = {
            p.metadata.name
            for p in state.pods
            if any(o.kind == kind and o.name == name for o in p.metadata.owner_references)
        }
        return tuple(p for p in self._pods(state, namespace=namespace) if p.name in owned)

    def apply(self, *manifests: Manifest) -> tuple[ObjectRef, ...]:
        """Create or update objects: manifest files or directories (a
        relative path is taken from `base`: the pytest rootdir for the
        fixtures' labs), manifest dicts, or API objects. Validated like
        `netemu apply`; pods and every node's rules follow before it returns."""
        objects = _load(
            [
                resolve_paths([item], self.base)[0] if isinstance(item, str | Path) else item
                for item in manifests
            ]
        )
        self.live.apply(objects)
        return tuple(_ref(obj) for obj in objects)

    def delete(self, *targets: str | ObjectRef | K8sModel) -> tuple[ObjectRef, ...]:
        """Delete objects named `kind/name` (namespace default), ObjectRefs
        or API objects."""
        refs = [_as_ref(t) for t in targets]
        self.live.delete([(r.kind, r.namespace, r.name) for r in refs])
        return tuple(refs)

    def connectivity_matrix(self, *, timeout: float = 1.0) -> Matrix:
        """Who reaches whom: pod → pod and pod → Service on the same and
        another node, node → Service, every external client → every
        NodePort (Cluster and Local) on every node; see netemu.testing.matrix."""
        from netemu.testing.matrix import connectivity_matrix

        return connectivity_matrix(self, timeout=timeout)


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(part) for part in ip.split(".")) if ip.count(".") == 3 else (1 << 16,)


def _ref(obj: K8sModel) -> ObjectRef:
    from netemu.controlplane.objects import is_namespaced, kind_of

    kind = kind_of(type(obj))
    meta: Any = getattr(obj, "metadata", None)
    name = str(getattr(meta, "name", "") or "")
    namespace = (getattr(meta, "namespace", None) or "default") if is_namespaced(kind) else None
    return ObjectRef(kind, namespace, name)


def _as_ref(target: str | ObjectRef | K8sModel) -> ObjectRef:
    if isinstance(target, ObjectRef):
        return target
    if isinstance(target, K8sModel):
        return _ref(target)
    kind_word, sep, rest = target.partition("/")
    if not sep:
        raise LabUsageError(f"expected KIND/NAME such as service/web, got {target!r}")
    namespace, _, name = rest.rpartition("/")
    return ObjectRef(kind_named(kind_word), namespace or "default", name)


def _load(manifests: Sequence[Manifest]) -> list[K8sModel]:
    """API objects from paths, dicts and objects, validated together as
    `netemu apply -f` would (netemu.api.errors.InputError lists every problem)."""
    import yaml

    from netemu.api.errors import InputError
    from netemu.api.load import Loaded, load_paths, load_text
    from netemu.api.validate import validate

    loaded: list[Loaded] = []
    objects: list[K8sModel] = []  # in the order given: apply order matters
    for item in manifests:
        if isinstance(item, K8sModel):
            objects.append(item)
            continue
        if isinstance(item, str | Path):
            docs = load_paths([item])
        else:
            docs, problems = load_text(yaml.safe_dump(dict(item)), "<manifest dict>")
            if problems:
                raise InputError(problems)
        loaded.extend(docs)
        objects.extend(doc.obj for doc in docs)
    problems = validate(loaded)
    if problems:
        raise InputError(problems)
    return objects
