"""kubelet (with the bridge CNI) for one node of a live lab.

It lists the Pods bound to its node through the control plane's client and
makes the node match: a new pod gets a namespace, a veth into the node's
pod bridge, its address and default route (CNI ADD), kubelet's resolv.conf,
hosts and hostname files (netemu.node.podfiles; a hostNetwork pod's are
mounted over the node's for its processes only), and its containers: a container's command runs
as a process in the pod's namespace, a container without one is served by
the lab's built-in test server (the built-in DNS server in a pod annotated
`netemu/builtin-server: dns`). A pod that is gone is torn down in the
reverse order (CNI DEL last). A pod being deleted gracefully
(deletionTimestamp set) is stopped container by container first
(`begin_terminations`, netemu.node.termination), and removed once it has.

A pod's hostPorts go through the portmap plugin's chains
(netemu.rules.portmap), written in one `iptables-restore --noflush`
transaction per change and family (ip6tables for the pods' IPv6 addresses
on a node with IPv6) and removed (portmap's DEL) before the pod's veth
goes. On a real node kube-proxy's first restore precedes every pod; in a
pass of netemu's supervisor new pods start first, so the supervisor calls
`sync_host_ports` after kube-proxy's sync, whose first restore into a fresh
node replaces the whole nat table.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from netemu.api.config import Lab
from netemu.api.core import ConfigMap, Container, Pod, PodStatus, Secret, Service
from netemu.api.ipfamilies import IPFamily
from netemu.controlplane import Client
from netemu.controlplane.addons import BUILTIN_DNS, BUILTIN_INGRESS
from netemu.controlplane.errors import Conflict, NotFound
from netemu.kernel import kubeprobe, netns, processes
from netemu.kernel.datapath import Datapath
from netemu.kernel.iptables import Iptables
from netemu.kernel.journal import Journal, run_dir
from netemu.kernel.programs import program_problem
from netemu.kernel.sandbox import (
    DEFAULT_GID,
    DEFAULT_UID,
    Mount,
    SandboxSpec,
    prepare_mount_points,
    prepare_private,
    write_volume,
)
from netemu.kernel.sockets import bind_pod_sockets
from netemu.net.plan import (
    CNI_NETWORK,
    POD_BRIDGE,
    ContainerPlan,
    NodePlan,
    PlanError,
    PodPlan,
    hostname,
    node_upstream,
    plan_pod,
    pod_netns,
)
from netemu.net.standin import STAND_IN_ANNOTATION
from netemu.node.dnsserver import DnsFeed
from netemu.node.envvars import ConfigError, EnvSources, expand_argv, make_env, service_env
from netemu.node.initcontainers import initialized_status, run_init
from netemu.node.initcontainers import pod_status as init_pod_status
from netemu.node.podfiles import node_hosts, node_resolver
from netemu.node.probes import EXIT_SIGTERM, ContainerLife, ExecHandler, HttpHandler, RestartPolicy
from netemu.node.termination import Stoppable, pre_stop_of, terminate
from netemu.node.testserver import PodIdentity, TestServers
from netemu.node.volumes import container_mounts, volume_files
from netemu.rules.model import parse_restore
from netemu.rules.portmap import PortmapPod, portmap_pod, sync_text

# A container the runtime could not start: containerd reports exit code 128
# with reason StartError.
EXIT_START_FAILED = 128

POD_SYSCTLS = {
    "net.ipv4.ip_unprivileged_port_start": "0",
    "net.ipv4.ping_group_range": "0 2147483647",
}
# containerd's PATH for an image that sets none (oci.defaultUnixEnv).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# How long a removed pod's connections may take to close (the built-in
# server closes idle keep-alive connections on the loop's next turns).
CLOSE_DRAIN_TIMEOUT = 0.5


@dataclass
class RunningPod:
    plan: PodPlan
    served: list[str] = field(default_factory=list)
    # A command container's process, in the order of the pod's command
    # containers; None for one that could not start (config_errors).
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    # Built-in server containers that could not start (their ports taken):
    # name -> exit code. The prober restarts them with back-off.
    failed: dict[str, int] = field(default_factory=dict)
    # Each container's sandbox as last started (exec probes and `netemu
    # exec` run in it), a built-in server container's too.
    sandboxes: dict[str, SandboxSpec] = field(default_factory=dict)
    # Containers that cannot be made (env references or volumes that do not
    # resolve): their waiting reason and kubelet's message.
    config_errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Its init containers run (netemu.node.initcontainers); the app
    # containers have not started, and the prober leaves the pod alone.
    initializing: bool = False
    init_procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Set when the pod stops: its init sequence ends.
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Kubelet:
    client: Client
    lab_name: str
    lab: Lab
    node: NodePlan
    datapath: Datapath
    servers: TestServers
    journal: Journal
    log_dir: Path
    # The cluster DNS records, for containers whose built-in server is DNS.
    dns: DnsFeed | None = None
    # The node's iptables and ip6tables, for hostPorts of pods' IPv4 and
    # IPv6 addresses (None: that family's are not programmed).
    iptables: Iptables | None = None
    ip6tables: Iptables | None = None
    running: dict[str, RunningPod] = field(default_factory=dict, init=False)
    # Where containers' private directories go (None: the lab's run
    # directory's `containers`).
    private_dir: Path | None = None
    # (pod, volume) of volumes not emulated, each noticed once.
    noticed: set[tuple[str, str]] = field(default_factory=set, init=False)
    # The pods whose portmap chains are in the kernel, in ADD order.
    host_ports_applied: list[str] = field(default_factory=list, init=False)
    # Pods whose sandbox kubelet cannot create (already reported).
    refused: set[str] = field(default_factory=set, init=False)
    # How a change from one of the kubelet's own threads (init containers)
    # is made: under the supervisor's lock, then a reconcile if the change
    # returns True. None: run directly.
    locked: Callable[[Callable[[], bool]], None] | None = None
    log: Callable[[str], None] = print
    # Pods being stopped after their deletion: key -> uid.
    terminating: dict[str, str] = field(default_factory=dict, init=False)

    def _private_base(self) -> Path:
        return self.private_dir or run_dir(self.lab_name) / "containers"

    def desired(self) -> dict[str, PodPlan]:
        plans = {}
        for pod in self.client.list(Pod).items:
            # A pod with a deletionTimestamp is terminating, and keeps running
            # (its endpoints serve as terminating ones) until it is removed.
            if pod.spec.node_name != self.node.name:
                continue
            if not pod.spec.host_network and not pod.status.pod_ip:
                continue  # not yet addressed by the pod IPAM
            try:
                plan = plan_pod(
                    self.lab_name,
                    self.node,
                    pod,
                    cluster_dns=(self.lab.spec.cluster_dns,),
                    domain=self.lab.spec.cluster_domain,
                    check_program=program_problem,
                )
            except PlanError as exc:
                # kubelet cannot create its sandbox (an FQDN too long for
                # the kernel): the pod stays without containers, as it
                # stays ContainerCreating with a FailedCreatePodSandBox event.
                key = f"{pod.metadata.namespace}/{pod.metadata.name}"
                if key not in self.refused:
                    print(f"kubelet {self.node.name}: {exc}", flush=True)
                    self.refused.add(key)
                continue
            plans[plan.key] = plan
        return plans

    def start_new(self, desired: dict[str, PodPlan]) -> bool:
        """Start the pods bound here (`desired`) that are not running; True if any."""
        new = [key for key in sorted(desired) if key not in self.running]
        for key in new:
            self.running[key] = self._start(desired[key])
            annotate_stand_ins(self.client, desired[key])
        return bool(new)

    def stop_gone(self, desired: dict[str, PodPlan]) -> bool:
        """Stop the running pods that are gone from `desired` (or changed); True if any."""
        gone = [
            key
            for key in sorted(self.running)
            if key not in desired or desired[key] != self.running[key].plan
        ]
        stopping = [self.running.pop(key) for key in gone]
        for key in gone:
            self.terminating.pop(key, None)
        # portmap's DEL runs before the bridge plugin's (a chain's DEL goes
        # in reverse order): no hostPort leads to a pod that is going.
        self.sync_host_ports()
        for running in stopping:
            self._stop(running)
        return bool(gone)

    def begin_terminations(
        self, finish: Callable[[str, str], None], log: Callable[[str], None] = print
    ) -> bool:
        """Start stopping the running pods that are being deleted (each on a
        thread: netemu.node.termination); `finish(key, uid)` is called once
        a pod's containers have stopped. True if any began."""
        began = False
        for pod in self.client.list(Pod).items:
            meta = pod.metadata
            if pod.spec.node_name != self.node.name or meta.deletion_timestamp is None:
                continue
            key = f"{meta.namespace or 'default'}/{meta.name}"
            running = self.running.get(key)
            if key in self.terminating:
                continue
            uid = meta.uid or ""
            self.terminating[key] = uid
            if running is None:
                # Bound here but not started (no address yet): nothing to
                # stop. Finished on a thread, as the caller holds the lock.
                threading.Thread(target=finish, args=(key, uid), daemon=True).start()
                began = True
                continue
            containers = [self._stoppable(key, running, c) for c in pod.spec.containers]
            if running.initializing or running.init_procs:
                # Its init sequence ends; an init container still running
                # (or a sidecar) is stopped with the others.
                running.cancel.set()
                containers.extend(
                    Stoppable(name, None, None, _stopper(proc))
                    for name, proc in running.init_procs.items()
                )
            grace = float(meta.deletion_grace_period_seconds or 0)
            log(f"{key}: deleted, stopping its containers within {grace:.0f}s")
            threading.Thread(
                target=terminate,
                args=(key, containers, grace, lambda k=key, u=uid: finish(k, u), log),
                name=f"terminate {key}",
                daemon=True,
            ).start()
            began = True
        return began

    def _stoppable(self, key: str, running: RunningPod, container: Container) -> Stoppable:
        """A container of a pod being deleted: its preStop hook and how it stops."""
        plan = running.plan
        hook = pre_stop_of(container)
        action: kubeprobe.Action | str | None = None
        if isinstance(hook, ExecHandler):
            # In the container's sandbox, as its exec probes run.
            sandbox = running.sandboxes.get(container.name)
            action = (
                kubeprobe.Exec(plan.netns, hook.command, sandbox)
                if sandbox is not None
                else f"container {container.name} has not started"
            )
        elif isinstance(hook, HttpHandler):
            port = hook.port
            if isinstance(port, str):
                found = [p.container_port for p in container.ports if p.name == port]
                port = found[0] if found else port
            if isinstance(port, str):
                action = f"couldn't find port: {port} in container {container.name}"
            else:
                action = kubeprobe.HttpGet(
                    self.node.netns,
                    hook.host or plan.status_ip,
                    port,
                    hook.path,
                    hook.scheme,
                    hook.headers,
                )
        name = container.name
        commands = [c.name for c in plan.containers if c.argv]

        def stop(seconds: float) -> None:
            if name in commands:
                index = commands.index(name)
                process = running.procs[index] if index < len(running.procs) else None
                if process is not None:  # not while init containers run, nor one held
                    # The process now (a restart replaces it).
                    processes.stop(process, timeout=seconds)
            else:
                # A built-in server's SIGTERM: it stops accepting and drops
                # its connections (unknown keys are ignored).
                self.servers.stop_serving(f"{key}/{name}")

        return Stoppable(name, hook, action, stop)

    def sync_host_ports(self) -> bool:
        """Make the node's portmap chains match the running pods with
        hostPorts (ADD for new ones, in start order; DEL for those gone), in
        one iptables-restore transaction per family, IPv4 first as ADD
        forwards them; True if it wrote any."""
        keys = [key for key, running in self.running.items() if running.plan.host_ports]
        by_family: tuple[tuple[IPFamily, Iptables | None], ...] = (
            ("IPv4", self.iptables),
            ("IPv6", self.ip6tables),
        )
        tables = [(family, ipt) for family, ipt in by_family if ipt is not None]
        if not tables or keys == self.host_ports_applied:
            return False
        plans = [self.running[key].plan for key in keys]
        wrote = False
        for family, iptables in tables:
            pods = [pod for plan in plans if (pod := portmap_pod_of(plan, family)) is not None]
            text = sync_text(CNI_NETWORK, pods, parse_restore(iptables.save()))
            if text:
                iptables.restore(text, noflush=True)
                wrote = True
            if family == "IPv4" and pods and not self.host_ports_applied:
                # portmap's ADD for an IPv4 address lets 127.0.0.0/8 sources
                # be routed out of the interface that leads to the pod, so a
                # localhost hostPort connection can be DNATed to it
                # (enableLocalnetRouting; IPv6 has no counterpart).
                localnet = {f"net.ipv4.conf.{POD_BRIDGE}.route_localnet": "1"}
                netns.write_sysctls(self.node.netns, localnet)
        self.host_ports_applied = keys
        return wrote

    def _start(self, plan: PodPlan) -> RunningPod:
        """Start a pod; if the node cannot (a kernel error), undo whatever
        was done and raise: a pod that failed to start leaves nothing behind,
        so the next attempt (or the change's rollback) starts from scratch."""
        running = RunningPod(plan)
        # add_pod undoes its own work when it fails: nothing to stop yet.
        self.datapath.add_pod(plan, self.node)
        try:
            self._start_into(running)
        except BaseException:
            self._stop(running, drain=False)
            raise
        return running

    def _start_into(self, running: RunningPod) -> None:
        plan = running.plan
        etc = pod_etc_dir(self.lab_name, plan)
        if not etc.parent.exists():
            self.journal.shared_dir(etc.parent)
        self.journal.path(etc)
        # A pod's namespace has its own files (`ip netns exec` mounts them);
        # a hostNetwork pod shares the node's namespace, so its files are
        # kept apart and mounted for its processes (processes.command_in).
        processes.write_etc_dir(
            etc,
            {
                "resolv.conf": plan.resolv_conf,
                "hosts": plan.hosts,
                "hostname": plan.hostname + "\n",
            },
        )
        if not plan.host_network:
            # containerd's CRI gives a pod's network namespace these two
            # (enable_unprivileged_ports / enable_unprivileged_icmp, on by
            # default since containerd 2.0): a non-root container may bind
            # ports below 1024 and ping, without any capability.
            netns.write_sysctls(plan.netns, POD_SYSCTLS)
        if plan.init_containers:
            self._begin_init(running)
            return
        self._start_containers(running)

    def _start_containers(self, running: RunningPod) -> None:
        """Start the pod's app containers (its init containers are done)."""
        plan = running.plan
        for container in plan.containers:
            try:
                sandbox = self._sandbox(plan, container)
            except ConfigError as exc:
                # kubelet's CreateContainerConfigError: the container does not
                # start; the prober tries again until the reference resolves.
                running.config_errors[container.name] = (exc.reason, str(exc))
                if container.argv:
                    running.procs.append(None)
                continue
            running.sandboxes[container.name] = sandbox
            if container.argv:
                running.procs.append(self._launch(plan, container, sandbox))
            elif container.ports and container.builtin != BUILTIN_INGRESS:
                # (The ingress controller's nginx is run by netemu.node.ingress.)
                try:
                    running.served.append(self._serve_builtin(plan, container))
                except OSError as exc:
                    # The pod's own business, not the node's: two containers
                    # of a pod share its network namespace, so a second one
                    # on the same port fails to bind at run time (the API
                    # accepts such a pod; pkg/api/pod/warnings.go only warns
                    # of the duplicate port). The container fails, the pod
                    # runs, and the prober restarts the container with
                    # back-off (CrashLoopBackOff), as the kubelet does.
                    running.failed[container.name] = self._start_failed(plan, container, exc)

    def _launch(
        self, plan: PodPlan, container: ContainerPlan, sandbox: SandboxSpec
    ) -> subprocess.Popen[bytes]:
        """Start a command container's process, `$(VAR)` in its command and
        args expanded against its environment."""
        proc = processes.start(
            plan.netns,
            expand_argv(container.argv, list(sandbox.env)),
            sandbox=sandbox,
            log=self._log_path(plan, container.name),
        )
        self.journal.process(proc.pid)
        return proc

    def _begin_init(self, running: RunningPod) -> None:
        """Run the pod's init containers on a thread of its own
        (netemu.node.initcontainers); its app containers start after them."""
        plan = running.plan
        running.initializing = True
        pod = self.client.get(Pod, plan.namespace, plan.name)
        policy = pod.spec.restart_policy
        restart: RestartPolicy = policy if policy in ("OnFailure", "Never") else "Always"
        uid = pod.metadata.uid

        def start(container: ContainerPlan) -> subprocess.Popen[bytes] | None:
            if not container.argv:
                return None
            while True:
                # An init container's references must resolve too: it waits
                # (CreateContainerConfigError) and is tried every second.
                try:
                    sandbox = self._sandbox(plan, container)
                    break
                except ConfigError as exc:
                    if running.cancel.wait(1.0):
                        return None
                    self.log(f"{plan.key}/{container.name}: {exc.reason}: {exc}")
            running.sandboxes[container.name] = sandbox
            proc = self._launch(plan, container, sandbox)
            running.init_procs[container.name] = proc
            return proc

        def write(status: Callable[[Pod], PodStatus], reconcile: bool) -> bool:
            try:
                now = self.client.get(Pod, plan.namespace, plan.name)
                if now.metadata.uid != uid or running.cancel.is_set():
                    return False
                self.client.update(now.model_copy(update={"status": status(now)}))
            except (NotFound, Conflict):
                return False
            return reconcile

        def publish(lives: Sequence[ContainerLife | None], failed: bool) -> None:
            self._locked(
                lambda: write(
                    lambda p: init_pod_status(p, plan.init_containers, lives, failed), failed
                )
            )

        def done(lives: Sequence[ContainerLife | None]) -> None:
            def finish() -> bool:
                if running.cancel.is_set():
                    return False
                running.initializing = False
                self._start_containers(running)
                return write(
                    lambda p: initialized_status(
                        p, plan.init_containers, lives, time.time(), has_gates(p)
                    ),
                    True,
                )

            self._locked(finish)

        threading.Thread(
            target=run_init,
            args=(
                plan.key,
                plan.init_containers,
                restart,
                start,
                exit_code,
                publish,
                done,
                running.cancel,
                self.log,
            ),
            name=f"init {plan.key}",
            daemon=True,
        ).start()

    def _locked(self, change: Callable[[], bool]) -> None:
        """Run `change` as the supervisor runs changes (under its lock, then
        a reconcile if it returns True); directly without a supervisor."""
        if self.locked is not None:
            self.locked(change)
        else:
            change()

    def _start_failed(self, plan: PodPlan, container: ContainerPlan, exc: OSError) -> int:
        """Note a built-in server container that could not bind its ports in
        its log (as the server would print it) and return its exit code."""
        log = self._log_path(plan, container.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(f"netemu: cannot listen on the container's ports: {exc.strerror or exc}\n")
        return EXIT_START_FAILED

    def _stop(self, running: RunningPod, drain: bool = True) -> None:
        running.cancel.set()  # its init sequence, if one runs, ends
        for init_proc in running.init_procs.values():
            processes.stop(init_proc)
        for key in running.served:
            self.servers.stop_serving(key)
        for proc in running.procs:
            if proc is not None:
                processes.stop(proc)
        plan = running.plan
        if drain and not plan.host_network and netns.exists(plan.netns):
            # As when a container exits before CNI DEL: its connections'
            # FINs reach the peers before the veth (and anything still
            # queued on it) is deleted.
            netns.wait_tcp_closed(plan.netns, timeout=CLOSE_DRAIN_TIMEOUT)
        self.datapath.remove_pod(plan, self.node)
        shutil.rmtree(pod_dir(self._private_base(), plan.namespace, plan.name), ignore_errors=True)
        etc = pod_etc_dir(self.lab_name, plan)
        for child in etc.glob("*"):
            child.unlink()
        if etc.exists():
            etc.rmdir()

    # -- one container: the prober's restarts (netemu.node.prober) -------------

    def _log_path(self, plan: PodPlan, container: str, previous: bool = False) -> Path:
        return container_log(self.log_dir, plan.namespace, plan.name, container, previous)

    def _builtin_files(self, plan: PodPlan, container: str) -> dict[str, Path]:
        """The built-in test server's access log and the pod's flag directory."""
        flags = health_dir(self.lab_name, plan.namespace, plan.name)
        flags.mkdir(parents=True, exist_ok=True)
        return {"log": self._log_path(plan, container), "flags": flags}

    def _container(self, key: str, name: str) -> tuple[RunningPod, ContainerPlan, int | None]:
        """A running pod's container, and the index of its process in
        `procs` (None for a built-in server container)."""
        running = self.running[key]
        commands = [c.name for c in running.plan.containers if c.argv]
        for container in running.plan.containers:
            if container.name == name:
                index = commands.index(name) if container.argv else None
                return running, container, index
        raise KeyError(f"pod {key} has no container {name!r}")

    def container_exit(self, key: str, name: str) -> int | None:
        """The exit code of a command container whose process has ended
        (128+N for signal N), or None while it runs or for a built-in one."""
        running, _, index = self._container(key, name)
        process = None if index is None else running.procs[index]
        if process is None:
            return None
        code = process.poll()
        return None if code is None else exit_code(code)

    def kill_container(self, key: str, name: str) -> int:
        """Stop one container of a running pod, as the kubelet kills one that
        failed its liveness or startup probe: a command's process group gets
        SIGTERM (SIGKILL after processes.stop's grace), a built-in server stops
        serving (its connections dropped). Its log becomes
        `<container>.previous.log`. Returns the exit code (a built-in server
        reports SIGTERM's, 143)."""
        running, _, index = self._container(key, name)
        if index is None:
            self.servers.stop_serving(f"{key}/{name}")  # unknown keys are ignored
            code = EXIT_SIGTERM
        else:
            process = running.procs[index]
            if process is None:
                raise KeyError(f"container {name} of pod {key} has not started")
            processes.stop(process)
            code = exit_code(process.returncode if process.returncode is not None else -9)
        log = self._log_path(running.plan, name)
        if log.exists():
            log.replace(self._log_path(running.plan, name, previous=True))
        return code

    def _environment(self, plan: PodPlan, container: ContainerPlan) -> dict[str, str]:
        """The container's environment for this start: what the runtime sets
        (PATH, HOSTNAME, HOME, as containerd does for an image without its
        own), then its own `env` and the Services that exist now
        (kubelet_pods.go makeEnvironmentVariables): a Service created later
        reaches it only at its next start."""
        services = service_env(
            self.client.list(Service).items, plan.namespace, plan.enable_service_links
        )
        pod, sources = self._pod_and_sources(plan)
        spec = next(
            c for c in (*pod.spec.init_containers, *pod.spec.containers) if c.name == container.name
        )
        declared, events = make_env(spec, pod, sources, services)
        for event in events:
            print(f"{plan.key}/{container.name}: Warning {event}", flush=True)
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": plan.hostname, "HOME": "/"}
        env.update(declared)
        return env

    def _pod_and_sources(self, plan: PodPlan) -> tuple[Pod, EnvSources]:
        """The pod as stored now, and its namespace's ConfigMaps and Secrets."""
        pod = self.client.get(Pod, plan.namespace, plan.name)
        config_maps = self.client.list(ConfigMap, plan.namespace).items
        secrets = self.client.list(Secret, plan.namespace).items
        return pod, EnvSources(
            config_maps={cm.metadata.name or "": cm for cm in config_maps},
            secrets={secret.metadata.name or "": secret for secret in secrets},
        )

    def _volume_mounts(self, plan: PodPlan, container: ContainerPlan) -> tuple[Mount, ...]:
        """Fill the pod's volumes (the API's files afresh at each container
        start; an emptyDir kept for the pod's life) and return the
        container's mounts of them. ConfigError if a source is missing."""
        pod, sources = self._pod_and_sources(plan)
        volumes = {volume.name: volume for volume in volume_files(pod, sources)}
        base = pod_dir(self._private_base(), plan.namespace, plan.name) / ".volumes"
        directories = {}
        for volume in volumes.values():
            directory = base / volume.name
            write_volume(directory, dict(volume.files) if volume.from_api else None)
            directories[volume.name] = str(directory)
            if not volume.emulated and (plan.key, volume.name) not in self.noticed:
                self.noticed.add((plan.key, volume.name))
                print(
                    f"{plan.key}: volume {volume.name!r} ({volume.kind}) is not emulated: "
                    "an empty directory",
                    flush=True,
                )
        spec = next(
            c for c in (*pod.spec.init_containers, *pod.spec.containers) if c.name == container.name
        )
        return container_mounts(spec, volumes, directories)

    def _sandbox(self, plan: PodPlan, container: ContainerPlan) -> SandboxSpec:
        """The sandbox a container's processes run in: its user (runAsUser /
        runAsGroup, default nobody; a runAsUser without runAsGroup has group
        0, as containerd gives a uid the image does not list), its working
        directory and environment."""
        uid = DEFAULT_UID if container.run_as_user is None else container.run_as_user
        gid = container.run_as_group
        if gid is None:
            gid = DEFAULT_GID if container.run_as_user is None else 0
        private = container_dir(self._private_base(), plan.namespace, plan.name, container.name)
        prepare_private(private)
        # A hostNetwork pod's own resolv.conf, hosts and hostname over the node's.
        etc = self.host_network_etc(plan)
        mounts = (
            tuple(
                Mount(str(etc / name), f"/etc/{name}")
                for name in ("resolv.conf", "hosts", "hostname")
            )
            if etc is not None
            else ()
        )
        mounts += self._volume_mounts(plan, container)
        prepare_mount_points(private, mounts)
        return SandboxSpec(
            hostname=plan.hostname,
            env=tuple(self._environment(plan, container).items()),
            uid=uid,
            gid=gid,
            workdir=container.working_dir or "/",
            private_root=str(private),
            mounts=mounts,
        )

    def start_container(self, key: str, name: str) -> None:
        """Start a container that `kill_container` stopped (or that exited)
        again: a command with the same argv, hostname, environment and log
        file as its first start; a built-in server on fresh sockets, with its
        in-memory state (fail-readiness/fail-liveness switches) reset."""
        running, container, index = self._container(key, name)
        plan = running.plan
        if name in running.config_errors:
            # Its references may resolve now (ConfigError again if not).
            try:
                sandbox = self._sandbox(plan, container)
            except ConfigError as exc:
                running.config_errors[name] = (exc.reason, str(exc))
                raise
            del running.config_errors[name]
            running.sandboxes[name] = sandbox
            if index is not None:
                running.procs[index] = self._launch(plan, container, sandbox)
            elif container.ports:
                running.served.append(self._serve_builtin(plan, container))
            return
        if index is not None:
            # Each start computes the environment afresh, as kubelet does:
            # a Service created since the last start is in it now.
            previous = running.procs[index]
            assert previous is not None, "a container that has run has a process"
            try:
                env = self._environment(plan, container)
            except ConfigError as exc:
                running.config_errors[name] = (exc.reason, str(exc))
                raise
            process = processes.start_again(previous, env)
            running.sandboxes[name] = replace(running.sandboxes[name], env=tuple(env.items()))
            self.journal.process(process.pid)
            running.procs[index] = process
            return
        served = f"{key}/{name}"
        if name in running.failed:
            try:
                running.served.append(self._serve_builtin(plan, container))
            except OSError as exc:  # its ports are still taken
                self._start_failed(plan, container, exc)
                raise
            del running.failed[name]
            return
        if served not in running.served:
            return  # nothing is served for a container without ports
        self._serve_builtin(plan, container)

    def host_network_etc(self, plan: PodPlan) -> Path | None:
        """A hostNetwork pod's own /etc files, which its processes mount
        over the node's (None for other pods: `ip netns exec` mounts theirs)."""
        return pod_etc_dir(self.lab_name, plan) if plan.host_network else None

    def _serve_builtin(self, plan: PodPlan, container: ContainerPlan) -> str:
        """Serve a container without a command on fresh sockets bound to its
        ports: the DNS server for the DNS addon's pod, else the test server.
        Returns the key it is served under."""
        key = f"{plan.key}/{container.name}"
        # The wildcard of its base family: "::" on an IPv6-only pod.
        wildcard = "::" if ":" in plan.ip else "0.0.0.0"
        tcp, udp = bind_pod_sockets(plan.netns, wildcard, container.ports)
        if plan.ip6:
            # A dual-stack pod serves its ports on its IPv6 address too.
            try:
                tcp6, udp6 = bind_pod_sockets(plan.netns, "::", container.ports)
            except BaseException:
                for sock in (*tcp, *udp):
                    sock.close()
                raise
            tcp, udp = tcp + tcp6, udp + udp6
        if self.dns is not None and container.builtin == BUILTIN_DNS:
            self.servers.serve_dns(key, self.dns, tcp, udp)
            return key
        identity = PodIdentity(
            pod=plan.name,
            namespace=plan.namespace,
            pod_ip=plan.status_ip,
            node=plan.node,
            hostname=plan.hostname,
        )
        files = self._builtin_files(plan, container.name)
        self.servers.serve(
            key,
            identity,
            tcp,
            udp,
            log=files["log"],
            flags=files["flags"],
            tls_ports=container.tls_ports,
            probe_paths=container.probe_paths,
            grpc_ports=container.grpc_ports,
        )
        return key


def pod_etc_dir(lab_name: str, plan: PodPlan) -> Path:
    """Where a pod's kubelet files live: /etc/netns/<its namespace>/, which
    `ip netns exec` mounts over /etc; for a hostNetwork pod the directory of
    the namespace it would have had, which no namespace uses."""
    netns_name = pod_netns(lab_name, plan.namespace, plan.name) if plan.host_network else plan.netns
    return processes.etc_dir(netns_name)


def write_node_files(journal: Journal, node: NodePlan) -> None:
    """A node's own /etc/resolv.conf, hosts and hostname, as a kubeadm node
    has them: its network's resolver, not the cluster DNS, so cluster names
    do not resolve on nodes (nor in hostNetwork pods, except with
    dnsPolicy ClusterFirstWithHostNet)."""
    etc = processes.etc_dir(node.netns)
    if not etc.parent.exists():
        journal.shared_dir(etc.parent)
    journal.path(etc)
    name = hostname(node.name)
    processes.write_etc_dir(
        etc,
        {
            "resolv.conf": node_resolver(node_upstream(node)).text(),
            "hosts": node_hosts(node.underlay_ip, name),
            "hostname": name + "\n",
        },
    )


def portmap_pod_of(plan: PodPlan, family: IPFamily) -> PortmapPod | None:
    """The portmap ADD of `family` for a pod's sandbox: its eth0 address of
    that family (IPv4 `ip`, IPv6 `ip6`; `ip` is IPv6 on an IPv6-only node)."""
    addresses = [(plan.ip, plan.prefixlen), (plan.ip6, plan.prefixlen6)]
    return portmap_pod(plan.sandbox_id, addresses, plan.host_ports, family)


def annotate_stand_ins(client: Client, plan: PodPlan) -> None:
    """Record on the Pod which of its containers a stand-in serves
    (netemu.io/stand-in: a comma-separated list of container names), so
    `get pods -o wide` and `-o json` show it. A pod that went meanwhile
    (or was just changed by another writer) is left alone: its next start
    writes it again."""
    names = ",".join(c.name for c in plan.containers if c.stand_in)
    try:
        pod = client.get(Pod, plan.namespace, plan.name)
    except NotFound:
        return
    annotations = dict(pod.metadata.annotations)
    if annotations.get(STAND_IN_ANNOTATION, "") == names:
        return
    if names:
        annotations[STAND_IN_ANNOTATION] = names
    else:
        annotations.pop(STAND_IN_ANNOTATION, None)
    meta = pod.metadata.model_copy(update={"annotations": annotations})
    with contextlib.suppress(NotFound, Conflict):
        client.update(pod.model_copy(update={"metadata": meta}))


def _stopper(process: subprocess.Popen[bytes]) -> Callable[[float], None]:
    """SIGTERM `process`, SIGKILL after the seconds given."""

    def stop(seconds: float) -> None:
        processes.stop(process, timeout=seconds)

    return stop


def has_gates(pod: Pod) -> bool:
    """Whether a readiness or startup probe must pass before the pod is Ready."""
    return any(c.readiness_probe or c.startup_probe for c in pod.spec.containers)


def container_log(
    log_dir: Path, namespace: str, pod: str, container: str, previous: bool = False
) -> Path:
    """A container's log (stdout and stderr, or the built-in server's access
    log); `previous`: the instance before its last restart. The names are
    validated DNS names; one that could lead out of `log_dir` is refused
    all the same, since the log is written as root."""
    for part in (namespace, pod, container):
        if not part or "/" in part or part in (".", "..") or "\0" in part:
            raise ValueError(f"not a name for a log path: {part!r}")
    return log_dir / namespace / pod / f"{container}{'.previous' if previous else ''}.log"


def pod_dir(base: Path, namespace: str, pod: str) -> Path:
    """A pod's containers' private directories (their /tmp, /var, /run and
    working directory: netemu.kernel.sandbox) under `base`."""
    for part in (namespace, pod):
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"not a name for a pod directory: {part!r}")
    return base / namespace / pod


def container_dir(base: Path, namespace: str, pod: str, container: str) -> Path:
    if not container or "/" in container or container in (".", ".."):
        raise ValueError(f"not a name for a container directory: {container!r}")
    return pod_dir(base, namespace, pod) / container


def health_dir(lab_name: str, namespace: str, pod: str) -> Path:
    """A pod's flag directory: a `fail-readiness` or `fail-liveness` file in
    it fails the built-in test server's /readyz or /healthz."""
    return run_dir(lab_name) / "health" / namespace / pod


def exit_code(returncode: int) -> int:
    """A Popen return code as a container runtime reports it (a signal N as 128+N)."""
    return 128 - returncode if returncode < 0 else returncode
