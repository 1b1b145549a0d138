"""The per-lab supervisor: one process that holds a live lab's control plane,
its node agents (kubelet with the bridge CNI, kube-proxy) and the built-in
test servers of every pod, and answers the CLI on a Unix socket at
/run/netemu/<lab>/supervisor.sock.

Protocol: one JSON object per connection, one JSON reply, each a line.
Requests carry `op` (status, state, apply, delete, scale, createjob, logs, shutdown);
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
import base64
import io
import json
import os
import signal
import socketserver
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from netemu import cli_table
from netemu.api.base import K8sModel
from netemu.api.batch import CronJob
from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.core import Pod, Service
from netemu.api.errors import InputError
from netemu.api.generic import GenericObject, generic_kind, resource_kind
from netemu.api.load import KINDS, Loaded, Origin, load_text, resolve_custom_kinds
from netemu.api.validate import (
    is_dns1123_label,
    is_dns1123_subdomain,
    load_and_validate,
    validate,
)
from netemu.controlplane import (
    ControlPlane,
    LocalClient,
    Store,
    apply_objects,
    snapshot,
)
from netemu.controlplane.addons import (
    API_SECURE_PORT,
    KubernetesServiceController,
    api_endpoint_ip,
    api_service_ip,
    ingress_addons,
    live_addons,
    wants_ingress,
)
from netemu.controlplane.cronjob import CronJobController, manual_job
from netemu.controlplane.errors import AlreadyExists, Conflict, NotFound
from netemu.controlplane.job import JobController
from netemu.controlplane.loadbalancer import LoadBalancerController
from netemu.controlplane.objects import LAB_KINDS, SCALABLE, key_of
from netemu.controlplane.state import ClusterState
from netemu.controlplane.store import wall_clock
from netemu.heap import freeze_bring_up
from netemu.kernel import nfacct, processes
from netemu.kernel.conntrack import KernelConntrack
from netemu.kernel.datapath import Datapath
from netemu.kernel.iptables import KernelIptables, node_lock_file
from netemu.kernel.journal import INFO, LOG, SOCKET, Journal, run_dir
from netemu.kernel.nftables import KernelNftables
from netemu.kernel.owner import OutputDirectory
from netemu.kernel.sockets import bind_pod_sockets, bind_tcp_listener
from netemu.lab import LabError, LabUsageError, LiveLab
from netemu.net.plan import LabPlan, Route, client_routes, node_addresses, plan_lab
from netemu.node import apiserver
from netemu.node.cloudlb import CloudLoadBalancer
from netemu.node.dnsrecords import ClusterDns
from netemu.node.dnsserver import DnsFeed
from netemu.node.ingress import IngressController
from netemu.node.kubelet import Kubelet, container_log, pod_etc_dir, write_node_files
from netemu.node.nftproxy import NftProxyAgent
from netemu.node.prober import ProbeLoop, ProbeManager
from netemu.node.proxy import NodeProxy, ProxyAgent, reconcile_nodes
from netemu.node.proxyhealth import health_check_ips, proxy_settings
from netemu.node.proxyservers import ProxyServers
from netemu.node.testserver import TestServers
from netemu.pipeline import proxy_mode
from netemu.rules.input import IPFamily
from netemu.rules.inputcache import ProxyInputCache
from netemu.rules.iptables import NFACCT_INVALID_DROPPED, NFACCT_LOCALHOST_NODEPORTS
from netemu.trace.topology import Topology, client_site, node_site, pod_ips

# Containers' logs, under the lab's run directory.
LOGS = "logs"
# Seconds between heartbeats while a request runs: well inside the client's
# ANSWER_TIMEOUT (netemu.lab), also on a loaded machine.
HEARTBEAT = 0.5
KIND_BY_NAME: dict[str, type[K8sModel]] = {kind: cls for (_, kind), cls in KINDS.items()}
# The largest request line read (an apply of tens of thousands of objects
# fits); a longer one is refused without being read whole.
MAX_REQUEST_BYTES = 64 << 20
MAX_REPLICAS = 1000  # as `netemu scale --replicas` accepts
WAIT_POLL = 0.05  # how often a delete that waits looks whether its pods are gone
WAIT_SLACK = 10.0  # and how long past their grace period it waits at most
# How often Jobs' deadlines and CronJobs' schedules are looked at (cron's
# resolution is a minute; deadlines are in seconds).
TIMER_TICK = 1.0
TABLE_KINDS = sorted(set(cli_table.RESOURCES.values()))
TABLE_OUTPUTS = (None, "wide", "json", "yaml")
TRACE_PROTOCOLS = ("tcp", "udp", "icmp")  # what a live trace sends
R = TypeVar("R")


def _log(line: str) -> None:
    print(line, flush=True)


class RequestError(ValueError):
    """A request the supervisor refuses; its message is the reply's error."""


# Each op's fields: (accepted types, required). Optional fields may be null.
_REQUEST_FIELDS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "status": {},
    "state": {},
    # `netemu get` on a live lab: the Table it prints (netemu.cli_table), or
    # with output json|yaml the objects as a List.
    "table": {"kind": (str, True), "namespace": (str, False), "output": (str, False)},
    "shutdown": {},
    # The emulated cloud load balancer: its Services, each node's health
    # and reason, and where each ingress IP's connections go.
    "loadbalancer": {},
    # `netemu trace` on this lab: the trace runs here, where the lab's state,
    # the models and Scapy are already imported; the reply carries the
    # report and the pcaps' bytes, which the CLI writes under `captures`
    # as the invoking user (netemu.cli_trace). `captures` only names them.
    "trace": {
        "from": (str, True),
        "to": (str, True),
        "port": (int, False),
        "proto": (str, True),
        "pcap": (bool, True),
        "captures": (str, True),
        "wait": ((int, float), True),  # seconds the sender waits for an answer
    },
    "apply": {"objects": (list, True)},
    # gracePeriod: the pods' grace period (None: each pod's own; 0 removes
    # them at once); wait: reply once the pods the deletion set terminating
    # (its own, and its objects' dependents) are gone (kubectl delete's --wait).
    "delete": {"refs": (list, True), "gracePeriod": (int, False), "wait": (bool, False)},
    "scale": {
        "kind": (str, True),
        "namespace": (str, True),
        "name": (str, True),
        "replicas": (int, True),
    },
    # `netemu create job NAME --from=cronjob/CJ` (kubectl's manual trigger).
    "createjob": {"namespace": (str, True), "name": (str, True), "cronjob": (str, True)},
    "logs": {
        "namespace": (str, True),
        "pod": (str, True),
        "container": (str, False),
        "previous": (bool, False),
        "tail": (int, False),
    },
}


def _checked_request(request: object) -> tuple[str, dict[str, Any]]:
    """(op, fields) of a well-formed request, else RequestError."""
    if not isinstance(request, dict):
        raise RequestError(f"a request is a JSON object with an 'op', not {type(request).__name__}")
    op = request.get("op")
    if not isinstance(op, str) or op not in _REQUEST_FIELDS:
        raise RequestError(f"unknown request {op!r}; expected one of: {', '.join(_REQUEST_FIELDS)}")
    spec = _REQUEST_FIELDS[op]
    problems = [f"unknown field {name!r}" for name in request if name != "op" and name not in spec]
    fields: dict[str, Any] = {}
    for name, (types, required) in spec.items():
        value = request.get(name)
        if value is None:
            if required:
                problems.append(f"missing field {name!r}")
            fields[name] = None
            continue
        # JSON true/false are Python bools, which are ints too: not a count.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _types(types)):
            expected = " or ".join(t.__name__ for t in _types(types))
            problems.append(f"field {name!r}: expected {expected}, got {type(value).__name__}")
            continue
        fields[name] = value
    if not problems:
        problems = _field_problems(op, fields)
    if problems:
        raise RequestError(f"bad {op} request: {'; '.join(problems)}")
    return op, fields


def _types(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _field_problems(op: str, fields: dict[str, Any]) -> list[str]:
    """What is wrong with the values of a request whose fields have the right types."""
    problems = []
    for name in ("namespace", "name", "pod", "container", "cronjob"):
        value = fields.get(name)
        # `get -n` filters by any namespace, as kubectl lists one that does not exist.
        if op == "table" and name == "namespace":
            continue
        if isinstance(value, str) and (check := is_dns1123_subdomain(value)):
            problems.append(f"field {name!r}: {'; '.join(check)}")
    if op == "table":
        if fields["kind"] not in TABLE_KINDS and resource_kind(fields["kind"]) is None:
            problems.append(
                f"field 'kind': the server doesn't have a resource type \"{fields['kind']}\"; "
                f"expected one of {', '.join(TABLE_KINDS)} or a kind stored in the lab"
            )
        if fields["output"] not in TABLE_OUTPUTS:
            problems.append("field 'output': expected wide, json or yaml")
    if op == "scale":
        if fields["kind"] not in SCALABLE:
            problems.append(f"field 'kind': expected one of {', '.join(SCALABLE)}")
        if not 0 <= fields["replicas"] <= MAX_REPLICAS:
            problems.append(f"field 'replicas': expected 0 to {MAX_REPLICAS}")
    if op == "trace":
        if fields["proto"] not in TRACE_PROTOCOLS:
            problems.append(f"field 'proto': expected one of {', '.join(TRACE_PROTOCOLS)}")
        if fields["port"] is not None and not 1 <= fields["port"] <= 65535:
            problems.append("field 'port': expected 1 to 65535")
        # As `netemu trace --timeout` accepts (netemu.cli_trace).
        if isinstance(fields["wait"], bool) or not 0.1 <= fields["wait"] <= 60:
            problems.append("field 'wait': expected 0.1 to 60 seconds")
    if op == "logs" and fields["tail"] is not None and fields["tail"] < 0:
        problems.append("field 'tail': expected 0 or more")
    if op == "apply" and not fields["objects"]:
        problems.append("field 'objects': no objects to apply")
    if op == "delete":
        if fields["gracePeriod"] is not None and fields["gracePeriod"] < 0:
            problems.append("field 'gracePeriod': expected 0 or more")
        if not fields["refs"]:
            problems.append("field 'refs': nothing to delete")
        for index, ref in enumerate(fields["refs"]):
            problems.extend(f"refs[{index}]: {p}" for p in _ref_problems(ref))
    return problems


def _ref_problems(ref: object) -> list[str]:
    if not isinstance(ref, dict):
        return [f"expected an object with kind, namespace and name, got {type(ref).__name__}"]
    problems = [f"unknown field {k!r}" for k in ref if k not in ("kind", "namespace", "name")]
    kind, namespace, name = ref.get("kind"), ref.get("namespace"), ref.get("name")
    if not isinstance(kind, str) or (kind not in KIND_BY_NAME and _generic_class(kind) is None):
        problems.append(f"unknown kind {kind!r}")
    if not isinstance(name, str) or is_dns1123_subdomain(name):
        problems.append(f"name {name!r}: expected a Kubernetes object name")
    if namespace is not None and (not isinstance(namespace, str) or is_dns1123_label(namespace)):
        problems.append(f"namespace {namespace!r}: expected a Kubernetes namespace name")
    return problems


def _generic_class(kind: str) -> type[GenericObject] | None:
    """The class of a kind stored but not emulated, by its exact kind name."""
    cls = generic_kind(kind)
    return cls if cls is not None and cls.model_fields["kind"].default == kind else None


def _objects(raws: list[Any], lab: Lab, in_place: Sequence[Loaded] = ()) -> list[K8sModel]:
    """The request's objects, loaded and validated as manifests are (each a
    document of a `request` file, so a diagnostic names `request:<line>`),
    against the running lab: its own Lab (ranges and nodes), its Namespaces,
    and its Services' cluster IPs and nodePorts."""
    for index, raw in enumerate(raws):
        if not isinstance(raw, dict):
            raise RequestError(f"objects[{index}]: expected an object, got {type(raw).__name__}")
    text = "".join(f"---\n{json.dumps(raw, indent=1)}\n" for raw in raws)
    loaded, problems = load_text(text, "request")
    problems += resolve_custom_kinds(loaded)
    if not problems:
        # The client checked namespaces (and created them if asked): an
        # object's namespace is created with it here, as apply_objects does.
        problems = validate(
            loaded, context=[Loaded(lab, Origin("<lab>", 0)), *in_place], create_namespaces=True
        )
    if problems:
        raise InputError(problems)
    return [item.obj for item in loaded]


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
        # Pods are deleted gracefully: the kubelets finish their deletion.
        self.store = Store(graceful_pods=True)
        self.client = LocalClient(self.store)
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
        self.proxies: list[ProxyAgent | NftProxyAgent] = []
        # Every node's agent converts the same Services and EndpointSlices:
        # one cache converts each changed object once for all of them.
        # One input cache per IP family, shared by that family's agents.
        self.proxy_input_caches: dict[IPFamily, ProxyInputCache] = {
            "IPv4": ProxyInputCache("IPv4"),
            "IPv6": ProxyInputCache("IPv6"),
        }
        # kube-proxy's health, health check and metrics servers of every node.
        self.proxy_servers = ProxyServers(bind_tcp_listener)
        # The pipeline's one rule (netemu.pipeline.proxy_mode) on the lab's objects.
        self.proxy_mode = proxy_mode(
            ClusterState(lab=self.lab, proxy_config=self.proxy_config or KubeProxyConfiguration())
        )
        self.proxy_settings = proxy_settings(self.proxy_config, self.proxy_mode)
        self._stop_ticks = threading.Event()
        self._events_logged = 0
        self.probes: ProbeLoop | None = None
        self.plan: LabPlan | None = None
        self.client_routes: dict[str, tuple[Route, ...]] = {}
        self.cloudlb: CloudLoadBalancer | None = None
        self.ingress = IngressController(lab_name, self.journal, log=lambda s: print(s, flush=True))

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

        p.stage, p.total = "underlay", 2 + len(plan.nodes) + len(plan.clients)
        self.datapath.build_underlay(plan.underlay)
        self.datapath.build_load_balancer(plan.load_balancer, plan.underlay)
        p.done = 2
        p.stage = "nodes"
        backend = self.lab.spec.iptables_backend
        for node in plan.nodes:
            self.datapath.build_node(node, plan.underlay)
            write_node_files(self.journal, node)
            nfacct.ensure(node.netns, (NFACCT_LOCALHOST_NODEPORTS, NFACCT_INVALID_DROPPED))
            p.done += 1
        p.stage = "external clients"
        for client in plan.clients:
            self.datapath.build_client(client, plan.underlay)
            self.client_routes[client.netns] = client.routes
            p.done += 1

        self.servers.start()
        self._serve_api_stand_in(plan)
        log_dir = run_dir(self.name) / LOGS
        settings = self.proxy_settings
        npa = tuple(self.proxy_config.node_port_addresses) if self.proxy_config else ()
        for node in plan.nodes:
            addresses = [node.underlay_ip, node.bridge_ip]
            if node.overlay == "vxlan":
                addresses.append(node.vtep_ip)
            node_servers = self.proxy_servers.add_node(
                node.name,
                node.netns,
                settings,
                listen_ips=health_check_ips(
                    npa, [node.underlay_ip], addresses, "::" if node.ipv6_only else "0.0.0.0"
                ),
                log=lambda line: print(line, flush=True),
            )
            # kube-proxy runs one proxier per IP family; on a dual-stack node
            # the IPv6 one has its own sync (ip6tables, or `ip6 kube-proxy`),
            # and both report to the node's one health server and metrics
            # (the MetaProxier's), the IPv4 one serving Services' health checks.
            # An IPv6-only node runs the IPv6 proxier alone, with them.
            families: list[IPFamily] = (
                ["IPv6"] if node.ipv6_only else ["IPv4"] if node.ipv6 is None else ["IPv4", "IPv6"]
            )
            # portmap writes the chains of each family the node's pods have.
            host_port_tables = {
                family: KernelIptables(
                    node.netns,
                    backend,
                    family=family,
                    lock_file=node_lock_file(self.name, node.netns),
                )
                for family in families
            }
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
                    iptables=host_port_tables.get("IPv4"),
                    ip6tables=host_port_tables.get("IPv6"),
                    locked=self._locked,
                    log=_log,
                )
            )
            for family in families:
                iptables = KernelIptables(
                    node.netns,
                    backend,
                    family=family,
                    lock_file=node_lock_file(self.name, node.netns),
                )
                # What both modes' agents take; nftables mode adds its table.
                settings_of_agent: dict[str, Any] = {
                    "client": self.client,
                    "node": node.name,
                    "iptables": iptables,
                    "conntrack": KernelConntrack(node.netns, family),
                    "fresh_node": True,
                    "lab": self.lab,
                    "proxy_config": self.proxy_config,
                    "servers": node_servers,
                    "serves_health_checks": family == families[0],
                    "sync_period": settings.sync_period,
                    "family": family,
                    "input_cache": self.proxy_input_caches[family],
                    "log": lambda line, node=node.name: print(
                        f"kube-proxy on {node}: {line}", flush=True
                    ),
                }
                agent: ProxyAgent | NftProxyAgent = (
                    NftProxyAgent(nftables=KernelNftables(node.netns), **settings_of_agent)
                    if self.proxy_mode == "nftables"
                    else ProxyAgent(**settings_of_agent)
                )
                self.proxies.append(agent)
        self.cloudlb = CloudLoadBalancer(
            plan.load_balancer, plan.nodes, self.lab.spec.load_balancer.health_check, self.datapath
        )
        p.stage = "pods and rules"
        p.done, p.total = 0, len(self.kubelets) + len(self.proxies)
        self.reconcile(bringing_up=True)
        # What the bring-up made lives as long as the lab: out of the cyclic
        # collector's sight, or its first full collection walks it all
        # during the first change (netemu.heap).
        freeze_bring_up()
        self.probes = ProbeLoop(
            [ProbeManager(kubelet) for kubelet in self.kubelets], self.lock, self.reconcile
        )
        self.probes.start()
        threading.Thread(target=self._proxy_ticks, name="kube-proxy-sync", daemon=True).start()
        threading.Thread(target=self._timer_ticks, name="job-timers", daemon=True).start()
        self.cloudlb.start()
        p.stage, p.ready = "ready", True
        # What a trace request imports (Scapy's layers, the tracer: about
        # 0.2 s), now that bring-up is done, so a trace does not wait for it.
        threading.Thread(target=_preload_tracer, name="preload", daemon=True).start()

    def reconcile(self, bringing_up: bool = False, again: bool = True) -> None:
        """Controllers to a fixed point, then every node's agents: new pods
        start before the rules send them traffic, and pods that are gone stop
        only after every node's rules have stopped sending them traffic.

        A kube-proxy sync that fails fails the lab's bring-up; later, it is
        kube-proxy's own business, as on a real node: logged, and retried in
        full after syncPeriod (KubeProxyLoop.tick), while the change that
        caused it stays applied (the API server accepted it)."""
        progress = bringing_up
        with self.lock:
            self.plane.run_to_fixed_point()
            self._log_events()
            # Under the lock nothing writes to the store from here on: one
            # read of each kubelet's pods and one snapshot serve the pass.
            desired = [kubelet.desired() for kubelet in self.kubelets]
            for kubelet, plans in zip(self.kubelets, desired, strict=True):
                kubelet.start_new(plans)
                if progress:
                    self.progress.done += 1
            reconcile_nodes(self.proxies, on_failure=None if bringing_up else _proxy_sync_failed)
            if progress:
                self.progress.done += len(self.proxies)
            for kubelet in self.kubelets:
                kubelet.sync_host_ports()  # after kube-proxy's (see netemu.node.kubelet)
                # Deleted pods stop once the rules treat them as terminating.
                kubelet.begin_terminations(self._terminated, _log)
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            self._refresh_dns(state)
            # Before gone pods stop: their nginx stops while their namespace exists.
            self.ingress.sync(
                state,
                [
                    plan
                    for kubelet, plans in zip(self.kubelets, desired, strict=True)
                    for key, plan in plans.items()
                    if key in kubelet.running
                ],
            )
            for kubelet, plans in zip(self.kubelets, desired, strict=True):
                kubelet.stop_gone(plans)
            self._reconcile_client_routes(state)
            if self.cloudlb is not None:
                self.cloudlb.update(state)
            self._write_info()
            if self.probes is not None:
                self.probes.wake()  # new pods get their probers now
            # A pod whose name a new pod took over while it was stopping (a
            # StatefulSet's pod created again once the old one is gone) could
            # not start above, its name being still in use; it starts in a
            # pass of its own now that the old one has stopped (one pass: a
            # plan that changed again by then waits for the next change).
            if again and any(
                key not in kubelet.running
                for kubelet, plans in zip(self.kubelets, desired, strict=True)
                for key in plans
            ):
                self.reconcile(bringing_up, again=False)

    def _locked(self, change: Callable[[], bool]) -> None:
        """A change from a kubelet's own thread (an init container's
        progress): under the lock, then a reconcile if it says so."""
        with self.lock:
            if self._stop_ticks.is_set():
                return  # shutting down
            try:
                if change():
                    self.reconcile()
            except Exception:
                traceback.print_exc()

    def _terminated(self, key: str, uid: str) -> None:
        """A deleted pod's containers have stopped (on its termination
        thread): the kubelet deletes the object for good (grace 0, as its
        status manager does) and every node follows."""
        namespace, _, name = key.partition("/")
        with self.lock:
            if self._stop_ticks.is_set():
                return  # shutting down
            try:
                self.client.delete(Pod, namespace, name, uid=uid, grace_period_seconds=0)
            except (NotFound, Conflict):
                return  # deleted already, or another pod by that name now
            try:
                self.reconcile()
            except Exception:
                traceback.print_exc()

    def _log_events(self) -> None:
        """The load-balancer controller's new events (a pending Service's
        reason) as lines of the supervisor's log, as `kubectl get events`."""
        for controller in self.plane.controllers:
            if isinstance(controller, LoadBalancerController):
                for event in controller.events[self._events_logged :]:
                    print(event, flush=True)
                self._events_logged = len(controller.events)

    def _proxy_ticks(self) -> None:
        """kube-proxy's periodic work on every node (KubeProxyLoop.tick: the
        canary check every syncPeriod, retries, the hourly sync)."""
        interval = min(1.0, self.proxy_settings.sync_period / 4)
        while not self._stop_ticks.wait(interval):
            with self.lock:
                for proxy in self.proxies:
                    try:
                        if done := proxy.tick():
                            print(
                                f"kube-proxy on {proxy.node} ({proxy.family}): {done}", flush=True
                            )
                    except Exception:
                        traceback.print_exc()

    def _timer_ticks(self) -> None:
        """A round of the controllers when a Job's deadline or TTL, or a
        CronJob's scheduled time, has come: what their controllers' delayed
        work queues do in kube-controller-manager."""
        while not self._stop_ticks.wait(TIMER_TICK):
            with self.lock:
                now = wall_clock()
                due = [
                    when
                    for c in self.plane.controllers
                    if isinstance(c, JobController | CronJobController)
                    and (when := c.next_event()) is not None
                ]
                if due and min(due) <= now:
                    try:
                        self.reconcile()
                    except Exception:
                        traceback.print_exc()

    def _add_addons(self) -> None:
        """The cluster DNS addon (netemu.controlplane.addons), unless the Lab
        turns it off or the user's objects have it already. Added once the
        user's objects are placed, so their pods get the same nodes and IPs
        as offline (`netemu get -f`, the rules goldens); its Service asks for
        the clusterDNS IP, which the allocator keeps free for it. A user's
        Service that asks for that IP itself (their own DNS) replaces it."""
        # The API server's own Service, kept from now on like the API server
        # keeps it; after the user's objects, which it never displaces.
        self.plane.controllers.append(KubernetesServiceController(self.client, self.lab))
        self.plane.run_to_fixed_point()
        dns_ip = self.lab.spec.cluster_dns
        wanted = live_addons(self.lab)
        for svc in self.client.list(Service).items:
            if dns_ip in (svc.spec.cluster_ip, *svc.spec.cluster_ips):
                where = f"{svc.metadata.namespace}/{svc.metadata.name}"
                print(f"Service {where} has the clusterDNS IP {dns_ip}: no DNS addon", flush=True)
                wanted = []
        # The ingress-nginx addon when the input has an Ingress (netemu.controlplane.addons).
        if wants_ingress(self.objects):
            wanted += ingress_addons()
        if addons := self._missing(wanted):
            apply_objects(self.client, addons)
            self.plane.run_to_fixed_point()

    def _missing(self, objects: list[K8sModel]) -> list[K8sModel]:
        """The objects the store does not hold yet (by kind, namespace, name)."""
        missing = []
        for obj in objects:
            _, namespace, name = key_of(obj)
            try:
                self.client.get(type(obj), namespace, name)
            except NotFound:
                missing.append(obj)
        return missing

    def _serve_api_stand_in(self, plan: LabPlan) -> None:
        """TLS on the control-plane (first) node's address, port 6443: the
        endpoint of `default/kubernetes` (netemu.node.apiserver)."""
        node = plan.nodes[0]
        # The endpoint is the node's primary-family address (IPv6 on an
        # IPv6-primary lab), which the plan's base address need not be.
        endpoint = api_endpoint_ip(self.lab)
        context = apiserver.tls_context(
            run_dir(self.name) / "pki",
            apiserver.certificate_names(self.lab.spec.cluster_domain, node.name),
            sorted({api_service_ip(self.lab), node.underlay_ip, endpoint}),
        )
        tcp, _ = bind_pod_sockets(node.netns, endpoint, [(API_SECURE_PORT, "TCP")])
        self.servers.serve_app("kube-apiserver", apiserver.app(), tcp, context)

    def _refresh_dns(self, state: ClusterState) -> None:
        """New records for the DNS server, built here (not on the servers'
        loop) and swapped in whole. After the rules, before gone pods stop:
        as kube-proxy's, DNS answers follow a change before a removed pod
        stops answering."""
        self.dns.update(ClusterDns.from_state(state))

    def _reconcile_client_routes(self, state: ClusterState) -> None:
        if self.plan is None or not self.plan.nodes:
            return
        wanted = client_routes(
            state, node_addresses(self.plan.nodes[0]), self.plan.load_balancer.addresses
        )
        for client in self.plan.clients:
            current = self.client_routes.get(client.netns, ())
            if current != wanted:
                self.datapath.set_host_routes(client.netns, current, wanted)
                self.client_routes[client.netns] = wanted

    def _write_info(self) -> None:
        """lab.json: what `netemu exec` and `netemu rules` need without a round trip."""
        if self.plan is None:
            return
        info = self._info()
        directory = run_dir(self.name)
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as out:
            json.dump(info, out, indent=2)
        os.replace(out.name, directory / INFO)

    def _info(self) -> dict[str, Any]:
        """What lab.json holds: where the lab's nodes, clients and pods live."""
        plan = self.plan
        assert plan is not None, "the lab is planned before it has an info file"
        nodes = {n.name: (n, node_site(n, self.lab)) for n in plan.nodes}
        pods = {}
        for kubelet in self.kubelets:
            for key, running in kubelet.running.items():
                pods[key] = {
                    "netns": running.plan.netns,
                    "node": running.plan.node,
                    # The datapath's base address (IPv4 unless IPv6-only).
                    "ip": running.plan.ip,
                    "ips": list(pod_ips(running.plan, nodes[running.plan.node][1])),
                    "hostNetwork": running.plan.host_network,
                    "hostname": running.plan.hostname,
                    # A hostNetwork pod's own /etc files, which `netemu exec`
                    # mounts as its containers have them.
                    **(
                        {"etc": str(pod_etc_dir(self.name, running.plan))}
                        if running.plan.host_network
                        else {}
                    ),
                    # Deleted, and stopping (graceful deletion).
                    "terminating": key in kubelet.terminating,
                    # `netemu exec` runs in a container's sandbox (its
                    # environment included: the file is root's alone, 0600).
                    "containers": {
                        name: sandbox.to_json() for name, sandbox in running.sandboxes.items()
                    },
                }
        return {
            "name": self.name,
            "pid": os.getpid(),
            "backend": self.lab.spec.iptables_backend,
            "proxyMode": self.proxy_mode,
            # The Lab as the lab runs it: `netemu apply` checks objects against
            # its ranges and nodes before sending them.
            "lab": self.lab.to_dict(),
            "overlay": self.lab.spec.overlay,
            "vxlanPort": self.lab.spec.vxlan_port,
            "underlay": plan.underlay.netns,
            # Each site's "ip" is the datapath's base address (IPv4 unless
            # IPv6-only), "ips" its addresses primary family first
            # (netemu.trace.topology).
            "nodes": {
                name: {
                    "netns": n.netns,
                    "ip": n.underlay_ip,
                    "addresses": list(site.addresses),
                    "ips": [ip for ip in (site.ip, site.other_ip) if ip],
                }
                for name, (n, site) in nodes.items()
            },
            "clients": {
                c.name: {
                    "netns": c.netns,
                    "ip": c.ip,
                    "ips": [ip for ip in (site.ip, site.other_ip) if ip],
                }
                for c in plan.clients
                for site in (client_site(c, self.lab),)
            },
            "loadBalancer": {
                "netns": plan.load_balancer.netns,
                "ip": plan.load_balancer.ip,
                "ip6": plan.load_balancer.ip6,
                "proxyIPs": self.cloudlb.proxy_ips() if self.cloudlb is not None else [],
            },
            "pods": dict(sorted(pods.items())),
        }

    # -- requests -----------------------------------------------------------

    def handle(self, request: object) -> dict[str, Any]:
        """One request's reply. A request is checked as the CLI checks its
        input (its shape, and objects as netemu.api validates manifests):
        whatever a client sends gets an error reply, never a crash."""
        try:
            op, fields = _checked_request(request)
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        if op == "status":
            return {"ok": True, "progress": self.progress.as_dict()}
        if not self.progress.ready:
            return {"ok": False, "error": f"lab {self.name} is not ready ({self.progress.stage})"}
        if op == "trace":
            # Not under the lock: a trace only reads the lab (as a CLI
            # tracing it from outside would), and takes up to its timeout.
            try:
                return {"ok": True, **self._trace(fields)}
            except LabUsageError as exc:  # bad FROM/TO: the CLI exits 2
                return {"ok": False, "error": str(exc), "usage": True}
            except LabError as exc:
                return {"ok": False, "error": str(exc)}
        with self.lock:
            try:
                reply = self._handle(op, fields)
            except (RequestError, InputError) as exc:
                return {"ok": False, "error": str(exc)}
        if op == "delete" and fields["wait"] is not False:
            # Not under the lock: the pods' kubelets need it to finish.
            self._wait_gone(reply.pop("pods"))
        else:
            reply.pop("pods", None)
        return reply

    def _handle(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        if op == "state":
            return {"ok": True, "state": self._state()}
        if op == "table":
            return {"ok": True, **self._table(fields)}
        if op == "apply":
            objects = _objects(fields["objects"], self.lab, self._in_place())
            return {"ok": True, "applied": self._change(lambda: self._apply(objects))}
        if op == "delete":
            refs, grace = fields["refs"], fields["gracePeriod"]
            before = self._terminating_pods()
            deleted = self._change(lambda: self._delete(refs, grace))
            # The pods this deletion set terminating, its own and those of
            # the objects it deleted (their garbage collection).
            pods = [p for p in self._terminating_pods() if p not in before]
            return {"ok": True, "deleted": deleted, "pods": pods}
        if op == "scale":
            return {"ok": True, "scaled": self._change(lambda: self._scale(fields))}
        if op == "createjob":
            return {"ok": True, "created": self._change(lambda: self._create_job(fields))}
        if op == "logs":
            return {"ok": True, "log": self._logs(fields)}
        if op == "loadbalancer":
            assert self.cloudlb is not None, "a ready lab has its load balancer"
            return {"ok": True, "loadBalancer": self.cloudlb.status()}
        assert op == "shutdown", op
        self.shutdown()
        return {"ok": True}

    def _change(self, change: Callable[[], R]) -> R:
        """Make a change to the control plane and reconcile every node, all
        or nothing: if any of it fails (a bad object, a kernel error while a
        pod starts), the store gets back every object as it was and the
        nodes reconcile to that, so the lab is as before and later changes
        work. The error is raised afterwards."""
        saved = self.store.checkpoint()
        try:
            result = change()
            self.reconcile()
        except Exception as exc:
            self.store.restore(saved)
            try:
                self.reconcile()
            except Exception as again:
                traceback.print_exc()
                raise RuntimeError(
                    f"{type(exc).__name__}: {exc}; and undoing the change failed too "
                    f"({type(again).__name__}: {again})"
                ) from exc
            traceback.print_exc()
            raise
        return result

    def _in_place(self) -> list[Loaded]:
        """The lab's Lab, Namespaces and Services, as what is applied is checked against."""
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        where = Origin(f"lab {self.name}", 0)
        return [Loaded(o, where) for o in (*state.namespaces, *state.services)]

    def _state(self) -> dict[str, list[dict[str, Any]]]:
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        return {
            "namespaces": [o.to_dict() for o in state.namespaces],
            "nodes": [o.to_dict() for o in state.nodes],
            "services": [o.to_dict() for o in state.services],
            "pods": [o.to_dict() for o in state.pods],
            "endpointslices": [o.to_dict() for o in state.endpoint_slices],
            "deployments": [o.to_dict() for o in state.deployments],
        }

    def _table(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"table": Table} or, for -o json|yaml, {"list": List}: what
        `netemu get` prints, built here where the objects are so that the
        CLI need not import the models (netemu.cli_table)."""
        state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
        if request["namespace"] is not None:
            state = cli_table.in_namespace(state, request["namespace"])
        kind, output = request["kind"], request["output"]
        if kind not in TABLE_KINDS:
            kind = resource_kind(kind)
        if output in ("json", "yaml"):
            return {"list": cli_table.listing(cli_table.items(kind, state))}
        shown = cli_table.table(
            kind, state, wide=output == "wide", with_namespace=request["namespace"] is None
        )
        if kind == "services" and output == "wide" and self.cloudlb is not None:
            shown = cli_table.with_lb_health(shown, self.cloudlb.status(), request["namespace"])
        return {"table": shown}

    def _trace(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"report": the trace report as trace.json holds it, "files":
        {pcap name: base64 of its bytes}} (no files without pcap)."""
        # Imported on first use (preloaded once the lab is ready): bring-up
        # does not need Scapy.
        from netemu.trace.live import TraceOptions, trace, write_captures

        with self.lock:
            state = snapshot(self.client, lab=self.lab, proxy_config=self.proxy_config)
            topology = Topology.from_info(self._info())
        options = TraceOptions(
            port=request["port"],
            proto=request["proto"],
            pcap=False,  # the CLI writes the files, as the invoking user
            timeout=float(request["wait"]),
        )
        # With the view given, trace() reads nothing through the lab's socket.
        balancer = self.cloudlb.status() if self.cloudlb is not None else None
        report = trace(
            LiveLab(self.name),
            request["from"],
            request["to"],
            options,
            (topology, state),
            balancer,
        )
        files: dict[str, bytes] = {}
        if request["pcap"]:
            where = Path(request["captures"]) / self.name / report.id
            # write_captures names the pcaps and sets the report's pcap
            # fields exactly as for files on disk; only the bytes stay here.
            write_captures(report, cast("OutputDirectory", _Pcaps(where, files)))
        return {
            "report": report.to_dict(),
            "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
        }

    def _apply(self, objects: list[K8sModel]) -> list[str]:
        for obj in objects:
            if isinstance(obj, Lab | KubeProxyConfiguration):
                raise RequestError(f"{obj.kind} cannot change in a running lab; netemu down and up")
        keys = list(apply_objects(self.client, objects))
        # The first Ingress applied to a lab started without one brings the
        # ingress-nginx addon, as one in the input does at start.
        if wants_ingress(objects) and (addons := self._missing(ingress_addons())):
            apply_objects(self.client, addons)
        return [f"{kind}/{name}" for kind, _, name in keys]

    def _delete(self, refs: list[dict[str, Any]], grace: int | None) -> list[str]:
        deleted = []
        for ref in refs:
            kind = ref["kind"]
            if kind in LAB_KINDS:
                # `netemu delete -f DIR` leaves these out; a raw request may not.
                raise RequestError(
                    f"{kind}/{ref['name']} is not deleted in a running lab: "
                    f"netemu down {self.name} takes the lab down"
                )
            try:
                cls = KIND_BY_NAME.get(kind) or _generic_class(kind)
                assert cls is not None, kind  # checked with the request
                self.client.delete(
                    cls, ref.get("namespace"), ref["name"], grace_period_seconds=grace
                )
            except NotFound as exc:
                raise RequestError(str(exc)) from exc
            deleted.append(f"{kind}/{ref['name']}")
        return deleted

    def _terminating_pods(self) -> list[tuple[str | None, str, str]]:
        """(namespace, name, uid) of the pods being deleted gracefully."""
        return [
            (p.metadata.namespace, p.metadata.name or "", p.metadata.uid or "")
            for p in self.client.list(Pod).items
            if p.metadata.deletion_timestamp is not None
        ]

    def _wait_gone(self, pods: list[tuple[str | None, str, str]]) -> None:
        """Until these pods (by uid) are gone, as `kubectl delete` waits:
        at most their grace period and a little more, since the kubelet
        kills what is left when the period is over."""
        for namespace, name, uid in pods:
            deadline = None
            while True:
                try:
                    pod = self.client.get(Pod, namespace, name)
                except NotFound:
                    break
                if pod.metadata.uid != uid:
                    break
                if deadline is None:
                    grace = pod.metadata.deletion_grace_period_seconds or 0
                    deadline = time.monotonic() + grace + WAIT_SLACK
                if time.monotonic() > deadline:
                    break  # e.g. bound to a node this lab does not have
                time.sleep(WAIT_POLL)
        with self.lock:
            pass  # the reconcile that follows their removal is over

    def _scale(self, request: dict[str, Any]) -> str:
        cls = KIND_BY_NAME[request["kind"]]
        namespace, name, replicas = request["namespace"], request["name"], request["replicas"]
        try:
            current: Any = self.client.get(cls, namespace, name)
        except NotFound as exc:
            raise RequestError(str(exc)) from exc
        spec = current.spec.model_copy(update={"replicas": replicas})
        self.client.update(current.model_copy(update={"spec": spec}))
        kind, _, obj_name = key_of(current)
        return f"{kind.lower()}/{obj_name} scaled to {replicas}"

    def _create_job(self, request: dict[str, Any]) -> str:
        namespace, name, source = request["namespace"], request["name"], request["cronjob"]
        try:
            cronjob = self.client.get(CronJob, namespace, source)
        except NotFound as exc:
            raise RequestError(f'cronjobs.batch "{source}" not found') from exc
        try:
            self.client.create(manual_job(cronjob, name))
        except AlreadyExists as exc:
            raise RequestError(f'jobs.batch "{name}" already exists') from exc
        return f"job.batch/{name} created"

    def _logs(self, request: dict[str, Any]) -> str:
        """A container's log (`netemu logs`): its output, or the built-in
        server's access log; `previous`: the instance before a restart."""
        namespace, name = request["namespace"], request["pod"]
        try:
            pod = self.client.get(Pod, namespace, name)
        except NotFound as exc:
            raise RequestError(f'pods "{name}" not found in namespace {namespace}') from exc
        names = [c.name for c in pod.spec.containers]
        container = request.get("container") or names[0]
        if container not in names:
            raise RequestError(
                f"container {container} is not valid for pod {name}; "
                f"choose one of: [{' '.join(names)}]"
            )
        previous = bool(request.get("previous"))
        path = container_log(run_dir(self.name) / LOGS, namespace, name, container, previous)
        if previous and not path.exists():
            raise RequestError(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        text = path.read_text(errors="replace") if path.exists() else ""
        tail = request.get("tail")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - tail :]) if tail else ""
        return text

    def shutdown(self) -> None:
        """Stop serving and stop container processes; the namespaces are
        removed by `netemu down` from the journal."""
        self._stop_ticks.set()
        if self.probes is not None:
            self.probes.close()
        if self.cloudlb is not None:
            self.cloudlb.stop()
        self.proxy_servers.close()
        self.ingress.close()
        for kubelet in self.kubelets:
            for running in kubelet.running.values():
                for proc in running.procs:
                    if proc is not None:
                        processes.kill(proc)
        self.servers.close()
        self.datapath.close()


def _proxy_sync_failed(proxy: NodeProxy, error: Exception) -> None:
    """kube-proxy's log line for a failed sync (proxier.go: "Sync failed",
    retryingTime syncPeriod)."""
    print(
        f"kube-proxy on {proxy.node} ({proxy.family}): Sync failed, retrying in "
        f"{proxy.sync_period:g}s: {type(error).__name__}: {error}",
        flush=True,
    )


def _preload_tracer() -> None:
    import netemu.trace.live  # noqa: F401


class _Pcaps:
    """Stands in for the trace's capture directory (netemu.kernel.owner's
    OutputDirectory) where write_captures needs one: each file it creates is
    kept in `files` as bytes, for the CLI to write as the invoking user."""

    def __init__(self, path: Path, files: dict[str, bytes]) -> None:
        self.path = path
        self.files = files

    def create(self, name: str) -> BinaryIO:
        files = self.files

        class Kept(io.BytesIO):
            def close(self) -> None:
                if not self.closed:
                    files[name] = self.getvalue()
                super().close()

        return Kept()


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
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
                if len(line) > MAX_REQUEST_BYTES:
                    raise RequestError(f"request longer than {MAX_REQUEST_BYTES} bytes")
                request = json.loads(line)
                reply = self.server.supervisor.handle(request)
                answer.append(json.dumps(reply).encode() + b"\n")
                op = request.get("op") if isinstance(request, dict) else None
                if op == "shutdown" and reply.get("ok"):
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
    parser.add_argument("--create-namespaces", action="store_true")
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
        args.create_namespaces = bool(given.get("createNamespaces", False))
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

    objects = [
        item.obj
        for item in load_and_validate(
            args.paths, create_namespaces=args.create_namespaces, default_lab=True
        )
    ]
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
