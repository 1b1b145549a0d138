"""The per-lab supervisor: one process that holds a live lab's control plane,
its node agents (kubelet with the bridge CNI, kube-proxy) and the built-in
test servers of every pod, and answers the CLI on a Unix socket at
/run/netemu/<lab>/supervisor.sock.

Protocol: one JSON object per connection, one JSON reply, each a line.
Requests carry `op` (status, state, apply, delete, scale, logs, shutdown);
replies carry `ok` and either the result or `error`. Every change runs the
controllers to a fixed point and then every node's agents, before the reply,
so a reply means the change has reached every node's pods and rules. Until
its reply the supervisor writes an empty line every HEARTBEAT s: a client
gives up on a supervisor that stays silent for 2 s (stopped, stuck), yet
waits out a change that takes minutes.

The lab also gets the cluster DNS addon (netemu.controlplane.addons) once
the user's objects are placed; its pod's DNS server answers from records
rebuilt after every reconcile (`_refresh_dns`) on the test servers' loop.

The kubelets' prober (netemu.node.prober, a thread of its own) runs the
pods' probes, restarts containers that fail their liveness or startup
probes, writes pod statuses and, when a pod's readiness changes, reconciles
under the same lock, so endpoints and rules follow readiness at once.

Run as `python -m netemu.supervisor --lab NAME PATH...`, or without
arguments to get the lab on stdin (netemu.launch; `netemu up` does).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.api.base import K8sModel
from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.core import Pod, Service
from netemu.api.load import KINDS
from netemu.api.validate import load_and_validate
from netemu.controlplane import (
    ControlPlane,
    LocalClient,
    Store,
    apply_objects,
    snapshot,
)
from netemu.controlplane.addons import live_addons
from netemu.controlplane.errors import NotFound
from netemu.controlplane.objects import key_of
from netemu.controlplane.state import ClusterState
from netemu.kernel import nfacct
from netemu.kernel.conntrack import KernelConntrack
from netemu.kernel.datapath import Datapath
from netemu.kernel.iptables import KernelIptables
from netemu.kernel.journal import INFO, LOG, SOCKET, Journal, run_dir
from netemu.net.plan import LabPlan, Route, client_routes, plan_lab
from netemu.node.dnsrecords import ClusterDns
from netemu.node.dnsserver import DnsFeed
from netemu.node.kubelet import Kubelet, container_log
from netemu.node.prober import ProbeLoop, ProbeManager
from netemu.node.proxy import ProxyAgent
from netemu.node.testserver import TestServers
from netemu.rules.iptables import NFACCT_INVALID_DROPPED, NFACCT_LOCALHOST_NODEPORTS

# Containers' logs, under the lab's run directory.
LOGS = "logs"
# Seconds between heartbeats while a request runs: well inside the client's
# ANSWER_TIMEOUT (netemu.lab), also on a loaded machine.
HEARTBEAT = 0.5
KIND_BY_NAME: dict[str, type[K8sModel]] = {kind: cls for (_, kind), cls in KINDS.items()}


@dataclass
class Progress:
    stage: str = "starting"
    done: int = 0
    total: int = 0
    ready: bool = False
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "ready": self.ready,
            "error": self.error,
            "elapsed": round(time.monotonic() - self.started, 3),
        }


class Supervisor:
    def __init__(self, lab_name: str, objects: list[K8sModel]) -> None:
        self.name = lab_name
        self.journal = Journal(lab_name)
        self.progress = Progress()
        self.lock = threading.RLock()
        self.client = LocalClient(Store())
        # The kubelets run the pods' probes and report readiness themselves.
        self.plane = ControlPlane(self.client, kubelet_probes=True)
        self.objects = objects
        labs = [o for o in objects if isinstance(o, Lab)]
        configs = [o for o in objects if isinstance(o, KubeProxyConfiguration)]
        if not labs:
            raise ValueError("a live lab needs a Lab object (kind: Lab)")
        self.lab: Lab = labs[0]
        self.proxy_config = configs[0] if configs else None
        self.datapath = Datapath(self.journal)
        self.servers = TestServers()
        # The cluster DNS server's records, refreshed after every reconcile.
        self.dns = DnsFeed()
        self.kubelets: list[Kubelet] = []
        self.proxies: list[ProxyAgent] = []
        self.probes: ProbeLoop | None = None
        self.plan: LabPlan | None = None
        self.client_routes: dict[str, tuple[Route, ...]] = {}

    # -- bring-up -----------------------------------------------------------

    def build(self) -> None:
        p = self.progress
        p.stage = "control plane"
        apply_objects(self.client, self.objects)
        self.plane.run_to_fixed_point()
        self._add_addons()
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        plan = plan_lab(state, self.name)
        self.plan = plan

        p.stage, p.total = "underlay", 1 + len(plan.nodes) + len(plan.clients)
        self.datapath.build_underlay(plan.underlay)
        p.done = 1
        p.stage = "nodes"
        backend = self.lab.spec.iptables_backend
        for node in plan.nodes:
            self.datapath.build_node(node, plan.underlay)
            nfacct.ensure(node.netns, (NFACCT_LOCALHOST_NODEPORTS, NFACCT_INVALID_DROPPED))
            p.done += 1
        p.stage = "external clients"
        for client in plan.clients:
            self.datapath.build_client(client, plan.underlay)
            self.client_routes[client.netns] = client.routes
            p.done += 1

        self.servers.start()
        log_dir = run_dir(self.name) / LOGS
        for node in plan.nodes:
            self.kubelets.append(
                Kubelet(
                    client=self.client,
                    lab_name=self.name,
                    lab=self.lab,
                    node=node,
                    datapath=self.datapath,
                    servers=self.servers,
                    journal=self.journal,
                    log_dir=log_dir,
                    dns=self.dns,
                )
            )
            self.proxies.append(
                ProxyAgent(
                    client=self.client,
                    node=node.name,
                    iptables=KernelIptables(node.netns, backend),
                    conntrack=KernelConntrack(node.netns),
                    fresh_node=True,
                    lab=self.lab,
                    proxy_config=self.proxy_config,
                )
            )
        p.stage = "pods and rules"
        p.done, p.total = 0, len(self.kubelets) + len(self.proxies)
        self.reconcile(progress=True)
        self.probes = ProbeLoop(
            [ProbeManager(kubelet) for kubelet in self.kubelets], self.lock, self.reconcile
        )
        self.probes.start()
        p.stage, p.ready = "ready", True

    def reconcile(self, progress: bool = False) -> None:
        """Controllers to a fixed point, then every node's agents: new pods
        start before the rules send them traffic, and pods that are gone stop
        only after every node's rules have stopped sending them traffic."""
        with self.lock:
            self.plane.run_to_fixed_point()
            # Under the lock nothing writes to the store from here on: one
            # read of each kubelet's pods and one snapshot serve the pass.
            desired = [kubelet.desired() for kubelet in self.kubelets]
            for kubelet, plans in zip(self.kubelets, desired, strict=True):
                kubelet.start_new(plans)
                if progress:
                    self.progress.done += 1
            for proxy in self.proxies:
                proxy.reconcile()
                if progress:
                    self.progress.done += 1
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            self._refresh_dns(state)
            for kubelet, plans in zip(self.kubelets, desired, strict=True):
                kubelet.stop_gone(plans)
            self._reconcile_client_routes(state)
            self._write_info()
            if self.probes is not None:
                self.probes.wake()  # new pods get their probers now

    def _add_addons(self) -> None:
        """The cluster DNS addon (netemu.controlplane.addons), unless the Lab
        turns it off or the user's objects have it already. Added once the
        user's objects are placed, so their pods get the same nodes and IPs
        as offline (`netemu get -f`, the rules goldens); its Service asks for
        the clusterDNS IP, which the allocator keeps free for it. A user's
        Service that asks for that IP itself (their own DNS) replaces it."""
        dns_ip = self.lab.spec.cluster_dns
        for svc in self.client.list(Service).items:
            if dns_ip in (svc.spec.cluster_ip, *svc.spec.cluster_ips):
                where = f"{svc.metadata.namespace}/{svc.metadata.name}"
                print(f"Service {where} has the clusterDNS IP {dns_ip}: no DNS addon", flush=True)
                return
        addons = []
        for obj in live_addons(self.lab):
            _, namespace, name = key_of(obj)
            try:
                self.client.get(type(obj), namespace, name)
            except NotFound:
                addons.append(obj)
        if addons:
            apply_objects(self.client, addons)
            self.plane.run_to_fixed_point()

    def _refresh_dns(self, state: ClusterState) -> None:
        """New records for the DNS server, built here (not on the servers'
        loop) and swapped in whole. After the rules, before gone pods stop:
        as kube-proxy's, DNS answers follow a change before a removed pod
        stops answering."""
        self.dns.update(ClusterDns.from_state(state))

    def _reconcile_client_routes(self, state: ClusterState) -> None:
        if self.plan is None or not self.plan.nodes:
            return
        wanted = client_routes(state, self.plan.nodes[0].underlay_ip)
        for client in self.plan.clients:
            current = self.client_routes.get(client.netns, ())
            if current != wanted:
                self.datapath.set_host_routes(client.netns, current, wanted)
                self.client_routes[client.netns] = wanted

    def _write_info(self) -> None:
        """lab.json: what `netemu exec` and `netemu rules` need without a round trip."""
        plan = self.plan
        if plan is None:
            return
        pods = {}
        for kubelet in self.kubelets:
            for key, running in kubelet.running.items():
                pods[key] = {
                    "netns": running.plan.netns,
                    "node": running.plan.node,
                    "ip": running.plan.ip,
                    "hostNetwork": running.plan.host_network,
                }
        info = {
            "name": self.name,
            "pid": os.getpid(),
            "backend": self.lab.spec.iptables_backend,
            "overlay": self.lab.spec.overlay,
            "underlay": plan.underlay.netns,
            "nodes": {
                n.name: {
                    "netns": n.netns,
                    "ip": n.underlay_ip,
                    "addresses": [
                        n.underlay_ip,
                        n.bridge_ip,
                        *([n.vtep_ip] if n.overlay == "vxlan" else []),
                    ],
                }
                for n in plan.nodes
            },
            "clients": {c.name: {"netns": c.netns, "ip": c.ip} for c in plan.clients},
            "pods": dict(sorted(pods.items())),
        }
        directory = run_dir(self.name)
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as out:
            json.dump(info, out, indent=2)
        os.replace(out.name, directory / INFO)

    # -- requests -----------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "progress": self.progress.as_dict()}
        if not self.progress.ready:
            return {"ok": False, "error": f"lab {self.name} is not ready ({self.progress.stage})"}
        with self.lock:
            if op == "state":
                return {"ok": True, "state": self._state()}
            if op == "apply":
                return {"ok": True, "applied": self._apply(request["objects"])}
            if op == "delete":
                return {"ok": True, "deleted": self._delete(request["refs"])}
            if op == "scale":
                return {"ok": True, "scaled": self._scale(request)}
            if op == "logs":
                return {"ok": True, "log": self._logs(request)}
            if op == "shutdown":
                self.shutdown()
                return {"ok": True}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def _state(self) -> dict[str, list[dict[str, Any]]]:
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        return {
            "nodes": [o.to_dict() for o in state.nodes],
            "services": [o.to_dict() for o in state.services],
            "pods": [o.to_dict() for o in state.pods],
            "endpointslices": [o.to_dict() for o in state.endpoint_slices],
            "deployments": [o.to_dict() for o in state.deployments],
        }

    def _parse(self, raw: dict[str, Any]) -> K8sModel:
        cls = KIND_BY_NAME.get(str(raw.get("kind")))
        if cls is None:
            raise ValueError(f"unknown kind {raw.get('kind')!r}")
        return cls.model_validate(raw)

    def _apply(self, raws: list[dict[str, Any]]) -> list[str]:
        objects = [self._parse(raw) for raw in raws]
        for obj in objects:
            if isinstance(obj, Lab | KubeProxyConfiguration):
                raise ValueError(f"{obj.kind} cannot change in a running lab; netemu down and up")
        keys = list(apply_objects(self.client, objects))
        self.reconcile()
        return [f"{kind}/{name}" for kind, _, name in keys]

    def _delete(self, refs: list[dict[str, str]]) -> list[str]:
        deleted = []
        for ref in refs:
            cls = KIND_BY_NAME.get(ref["kind"])
            if cls is None:
                raise ValueError(f"unknown kind {ref['kind']!r}")
            try:
                self.client.delete(cls, ref.get("namespace"), ref["name"])
            except NotFound as exc:
                raise ValueError(str(exc)) from exc
            deleted.append(f"{ref['kind']}/{ref['name']}")
        self.reconcile()
        return deleted

    def _scale(self, request: dict[str, Any]) -> str:
        cls = KIND_BY_NAME[request["kind"]]
        namespace, name, replicas = request["namespace"], request["name"], int(request["replicas"])
        try:
            current: Any = self.client.get(cls, namespace, name)
        except NotFound as exc:
            raise ValueError(str(exc)) from exc
        spec = current.spec.model_copy(update={"replicas": replicas})
        self.client.update(current.model_copy(update={"spec": spec}))
        self.reconcile()
        kind, _, obj_name = key_of(current)
        return f"{kind.lower()}/{obj_name} scaled to {replicas}"

    def _logs(self, request: dict[str, Any]) -> str:
        """A container's log (`netemu logs`): its output, or the built-in
        server's access log; `previous`: the instance before a restart."""
        namespace, name = request["namespace"], request["pod"]
        try:
            pod = self.client.get(Pod, namespace, name)
        except NotFound as exc:
            raise ValueError(f'pods "{name}" not found in namespace {namespace}') from exc
        names = [c.name for c in pod.spec.containers]
        container = request.get("container") or names[0]
        if container not in names:
            raise ValueError(
                f"container {container} is not valid for pod {name}; "
                f"choose one of: [{' '.join(names)}]"
            )
        previous = bool(request.get("previous"))
        path = container_log(run_dir(self.name) / LOGS, namespace, name, container, previous)
        if previous and not path.exists():
            raise ValueError(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        text = path.read_text(errors="replace") if path.exists() else ""
        tail = request.get("tail")
        if tail is not None and int(tail) >= 0:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - int(tail) :]) if int(tail) else ""
        return text

    def shutdown(self) -> None:
        """Stop serving and stop container processes; the namespaces are
        removed by `netemu down` from the journal."""
        if self.probes is not None:
            self.probes.close()
        for kubelet in self.kubelets:
            for running in kubelet.running.values():
                for proc in running.procs:
                    proc.kill()
        self.servers.close()
        self.datapath.close()


class _Handler(socketserver.StreamRequestHandler):
    """One request: it runs on a thread of its own while this one writes a
    heartbeat (an empty line) every HEARTBEAT s until the reply, so the
    client can tell a supervisor that is working on a long change from one
    that stopped answering (netemu.lab.ANSWER_TIMEOUT)."""

    server: _Server

    def handle(self) -> None:
        answer: list[bytes] = []
        shutting_down = threading.Event()
        done = threading.Event()

        def work() -> None:
            try:
                request = json.loads(self.rfile.readline())
                reply = self.server.supervisor.handle(request)
                answer.append(json.dumps(reply).encode() + b"\n")
                if request.get("op") == "shutdown" and reply.get("ok"):
                    shutting_down.set()
            except Exception as exc:  # a bad request must not bring the lab down
                error = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                answer.append(json.dumps(error).encode() + b"\n")
            finally:
                done.set()

        threading.Thread(target=work, name="request", daemon=True).start()
        try:
            while not done.wait(HEARTBEAT):
                self.wfile.write(b"\n")
            if answer:
                self.wfile.write(answer[0])
        except OSError:
            pass  # the client went away; the request still completes
        if shutting_down.is_set():
            self.server.stopping.set()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.stopping = threading.Event()
        super().__init__(path, _Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netemu-supervisor")
    parser.add_argument("--lab", help="the lab (default: read orders from stdin)")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    if args.lab is None:
        # Started ahead of its lab (netemu.launch): the imports above ran
        # while `netemu up` validated; now it names the lab, or calls it off.
        orders = sys.stdin.readline()
        if not orders:
            return 0
        given = json.loads(orders)
        args.lab, args.paths = given["lab"], given["paths"]
    if not args.paths:
        parser.error("no manifest paths")

    journal = Journal(args.lab)
    journal.open()
    journal.process(os.getpid())
    log = open(run_dir(args.lab) / LOG, "a", buffering=1)  # noqa: SIM115 - for the process's life
    sys.stdout = sys.stderr = log
    # The descriptors too: what the processes it starts print goes to the log,
    # never to the terminal of the command that started it.
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    with open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), 0)

    objects = [item.obj for item in load_and_validate(args.paths)]
    supervisor = Supervisor(args.lab, objects)
    sock = run_dir(args.lab) / SOCKET
    sock.unlink(missing_ok=True)
    server = _Server(str(sock), supervisor)
    os.chmod(sock, 0o600)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: server.stopping.set())

    try:
        supervisor.build()
        print(f"lab {args.lab} ready in {supervisor.progress.as_dict()['elapsed']} s", flush=True)
    except Exception as exc:
        traceback.print_exc()
        supervisor.progress.error = f"{type(exc).__name__}: {exc}"
    server.stopping.wait()
    time.sleep(0.05)  # let the shutdown reply reach the client
    server.shutdown()
    Path(sock).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
