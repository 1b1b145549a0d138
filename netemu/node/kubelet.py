"""kubelet (with the bridge CNI) for one node of a live lab.

It lists the Pods bound to its node through the control plane's client and
makes the node match: a new pod gets a namespace, a veth into the node's
pod bridge, its address and default route (CNI ADD), kubelet's resolv.conf,
hosts and hostname files, and its containers: a container's command runs
as a process in the pod's namespace, a container without one is served by
the lab's built-in test server (the built-in DNS server in a pod annotated
`netemu/builtin-server: dns`). A pod that is gone is torn down in the
reverse order (CNI DEL last).

A pod's hostPorts go through the portmap plugin's chains
(netemu.rules.portmap), written in one `iptables-restore --noflush`
transaction per change and removed (portmap's DEL) before the pod's veth
goes. On a real node kube-proxy's first restore precedes every pod; in a
pass of netemu's supervisor new pods start first, so the supervisor calls
`sync_host_ports` after kube-proxy's sync, whose first restore into a fresh
node replaces the whole nat table.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from netemu.api.config import Lab
from netemu.api.core import Pod, Service
from netemu.controlplane import Client
from netemu.controlplane.addons import BUILTIN_DNS, BUILTIN_INGRESS
from netemu.kernel import netns, processes
from netemu.kernel.datapath import Datapath
from netemu.kernel.iptables import Iptables
from netemu.kernel.journal import Journal, run_dir
from netemu.kernel.sockets import bind_pod_sockets
from netemu.net.plan import CNI_NETWORK, POD_BRIDGE, ContainerPlan, NodePlan, PodPlan, plan_pod
from netemu.node.dnsserver import DnsFeed
from netemu.node.envvars import container_env, service_env
from netemu.node.probes import EXIT_SIGTERM
from netemu.node.testserver import PodIdentity, TestServers
from netemu.rules.model import parse_restore
from netemu.rules.portmap import PortmapPod, sync_text

# A container the runtime could not start: containerd reports exit code 128
# with reason StartError.
EXIT_START_FAILED = 128

# How long a removed pod's connections may take to close (the built-in
# server closes idle keep-alive connections on the loop's next turns).
CLOSE_DRAIN_TIMEOUT = 0.5


def resolv_conf(namespace: str, cluster_dns: str, domain: str) -> str:
    """kubelet's resolv.conf for dnsPolicy ClusterFirst (pkg/kubelet/network/dns)."""
    search = f"{namespace}.svc.{domain} svc.{domain} {domain}"
    return f"search {search}\nnameserver {cluster_dns}\noptions ndots:5\n"


def hosts_file(ip: str, hostname: str) -> str:
    """kubelet's managed /etc/hosts (pkg/kubelet/kubelet_pods.go, managedHostsFileContent)."""
    return (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        f"{ip}\t{hostname}\n"
    )


@dataclass
class RunningPod:
    plan: PodPlan
    served: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Built-in server containers that could not start (their ports taken):
    # name -> exit code. The prober restarts them with back-off.
    failed: dict[str, int] = field(default_factory=dict)


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
    # The node's iptables, for hostPorts (None: hostPorts are not programmed).
    iptables: Iptables | None = None
    running: dict[str, RunningPod] = field(default_factory=dict, init=False)
    # The pods whose portmap chains are in the kernel, in ADD order.
    host_ports_applied: list[str] = field(default_factory=list, init=False)

    def desired(self) -> dict[str, PodPlan]:
        plans = {}
        for pod in self.client.list(Pod).items:
            # A pod with a deletionTimestamp is terminating, and keeps running
            # (its endpoints serve as terminating ones) until it is removed.
            if pod.spec.node_name != self.node.name:
                continue
            if not pod.spec.host_network and not pod.status.pod_ip:
                continue  # not yet addressed by the pod IPAM
            plan = plan_pod(self.lab_name, self.node, pod)
            plans[plan.key] = plan
        return plans

    def start_new(self, desired: dict[str, PodPlan]) -> bool:
        """Start the pods bound here (`desired`) that are not running; True if any."""
        new = [key for key in sorted(desired) if key not in self.running]
        for key in new:
            self.running[key] = self._start(desired[key])
        return bool(new)

    def stop_gone(self, desired: dict[str, PodPlan]) -> bool:
        """Stop the running pods that are gone from `desired` (or changed); True if any."""
        gone = [
            key
            for key in sorted(self.running)
            if key not in desired or desired[key] != self.running[key].plan
        ]
        stopping = [self.running.pop(key) for key in gone]
        # portmap's DEL runs before the bridge plugin's (a chain's DEL goes
        # in reverse order): no hostPort leads to a pod that is going.
        self.sync_host_ports()
        for running in stopping:
            self._stop(running)
        return bool(gone)

    def sync_host_ports(self) -> bool:
        """Make the node's portmap chains match the running pods with
        hostPorts (ADD for new ones, in start order; DEL for those gone), in
        one iptables-restore transaction; True if it wrote any."""
        keys = [key for key, running in self.running.items() if running.plan.host_ports]
        if self.iptables is None or keys == self.host_ports_applied:
            return False
        pods = [
            PortmapPod(plan.sandbox_id, plan.ip, plan.prefixlen, plan.host_ports)
            for plan in (self.running[key].plan for key in keys)
        ]
        text = sync_text(CNI_NETWORK, pods, parse_restore(self.iptables.save()))
        if text:
            self.iptables.restore(text, noflush=True)
        if keys and not self.host_ports_applied:
            # portmap's ADD lets 127.0.0.0/8 sources be routed out of the
            # interface that leads to the pod, so a localhost hostPort
            # connection can be DNATed to it (enableLocalnetRouting).
            localnet = {f"net.ipv4.conf.{POD_BRIDGE}.route_localnet": "1"}
            netns.write_sysctls(self.node.netns, localnet)
        self.host_ports_applied = keys
        return bool(text)

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
        if not plan.host_network:
            etc = processes.etc_dir(plan.netns)
            if not etc.parent.exists():
                self.journal.shared_dir(etc.parent)
            self.journal.path(etc)
            spec = self.lab.spec
            processes.write_etc(
                plan.netns,
                {
                    "resolv.conf": resolv_conf(
                        plan.namespace, spec.cluster_dns, spec.cluster_domain
                    ),
                    "hosts": hosts_file(plan.ip, plan.hostname),
                    "hostname": plan.hostname + "\n",
                },
            )
        for container in plan.containers:
            if container.argv:
                proc = processes.start(
                    plan.netns,
                    container.argv,
                    hostname=plan.hostname,
                    env=self._environment(plan, container),
                    log=self._log_path(plan, container.name),
                )
                self.journal.process(proc.pid)
                running.procs.append(proc)
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

    def _start_failed(self, plan: PodPlan, container: ContainerPlan, exc: OSError) -> int:
        """Note a built-in server container that could not bind its ports in
        its log (as the server would print it) and return its exit code."""
        log = self._log_path(plan, container.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(f"netemu: cannot listen on the container's ports: {exc.strerror or exc}\n")
        return EXIT_START_FAILED

    def _stop(self, running: RunningPod, drain: bool = True) -> None:
        for key in running.served:
            self.servers.stop_serving(key)
        for proc in running.procs:
            processes.stop(proc)
        plan = running.plan
        if drain and not plan.host_network and netns.exists(plan.netns):
            # As when a container exits before CNI DEL: its connections'
            # FINs reach the peers before the veth (and anything still
            # queued on it) is deleted.
            netns.wait_tcp_closed(plan.netns, timeout=CLOSE_DRAIN_TIMEOUT)
        self.datapath.remove_pod(plan, self.node)
        if not plan.host_network:
            etc = processes.etc_dir(plan.netns)
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
        if index is None:
            return None
        code = running.procs[index].poll()
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
            processes.stop(process)
            code = exit_code(process.returncode if process.returncode is not None else -9)
        log = self._log_path(running.plan, name)
        if log.exists():
            log.replace(self._log_path(running.plan, name, previous=True))
        return code

    def _environment(self, plan: PodPlan, container: ContainerPlan) -> dict[str, str]:
        """The container's environment for this start: its own `env` and the
        Services that exist now (kubelet_pods.go makeEnvironmentVariables):
        a Service created later reaches it only at its next start."""
        services = service_env(
            self.client.list(Service).items, plan.namespace, plan.enable_service_links
        )
        return dict(container_env(container.env, services))

    def start_container(self, key: str, name: str) -> None:
        """Start a container that `kill_container` stopped (or that exited)
        again: a command with the same argv, hostname, environment and log
        file as its first start; a built-in server on fresh sockets, with its
        in-memory state (fail-readiness/fail-liveness switches) reset."""
        running, container, index = self._container(key, name)
        plan = running.plan
        if index is not None:
            # Each start computes the environment afresh, as kubelet does:
            # a Service created since the last start is in it now.
            env = self._environment(plan, container)
            process = processes.start_again(running.procs[index], env)
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

    def _serve_builtin(self, plan: PodPlan, container: ContainerPlan) -> str:
        """Serve a container without a command on fresh sockets bound to its
        ports: the DNS server for the DNS addon's pod, else the test server.
        Returns the key it is served under."""
        key = f"{plan.key}/{container.name}"
        tcp, udp = bind_pod_sockets(plan.netns, "0.0.0.0", container.ports)
        if self.dns is not None and container.builtin == BUILTIN_DNS:
            self.servers.serve_dns(key, self.dns, tcp, udp)
            return key
        identity = PodIdentity(
            pod=plan.name, namespace=plan.namespace, pod_ip=plan.ip, node=plan.node
        )
        self.servers.serve(key, identity, tcp, udp, **self._builtin_files(plan, container.name))
        return key


def container_log(
    log_dir: Path, namespace: str, pod: str, container: str, previous: bool = False
) -> Path:
    """A container's log (stdout and stderr, or the built-in server's access
    log); `previous`: the instance before its last restart."""
    return log_dir / namespace / pod / f"{container}{'.previous' if previous else ''}.log"


def health_dir(lab_name: str, namespace: str, pod: str) -> Path:
    """A pod's flag directory: a `fail-readiness` or `fail-liveness` file in
    it fails the built-in test server's /readyz or /healthz."""
    return run_dir(lab_name) / "health" / namespace / pod


def exit_code(returncode: int) -> int:
    """A Popen return code as a container runtime reports it (a signal N as 128+N)."""
    return 128 - returncode if returncode < 0 else returncode
