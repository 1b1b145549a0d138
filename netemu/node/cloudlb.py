"""The emulated cloud load balancer of a live lab: it health-checks every
node from its own namespace and spreads new connections to each ingress IP
over the healthy nodes (the decisions are netemu.net.cloudlb's).

Passthrough (ipMode VIP, the default): each ingress IP has a multipath
route in the load balancer's namespace with one nexthop per healthy node,
and the namespace hashes on addresses and ports
(net.ipv4.fib_multipath_hash_policy=1), so each connection goes to one
node, unchanged: the client's address is kept, kube-proxy's KUBE-EXT/FW
chains match the ingress IP there, and the node answers the client
directly. `ip route get IP from CLIENT iif eth0 ipproto tcp sport S dport
D` in the namespace tells which node a flow goes to (`route_choice`).

Runs in the supervisor, on a thread of its own; every socket it opens
lives in the load balancer's namespace.

Owns: the health checks and the spread routes of the load balancer's
namespace. Must not touch: any other namespace.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from netemu.api.config import LabHealthCheck
from netemu.controlplane.state import ClusterState
from netemu.kernel import netns
from netemu.kernel.datapath import Datapath
from netemu.net.cloudlb import (
    HEALTHZ_PATH,
    VIP,
    Frontend,
    NodeHealth,
    ProbeResult,
    Spread,
    advance,
    frontends,
    spreads,
)
from netemu.net.plan import LoadBalancerPlan, NodePlan

# Health checks run in parallel, at most this many at once.
PROBE_WORKERS = 8
MAX_BODY = 4096


class _NetnsHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket is made in a given namespace."""

    def __init__(self, netns_name: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns = netns_name

    def connect(self) -> None:
        sock = netns.open_socket(self._netns, socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def probe(netns_name: str, ip: str, port: int, timeout: float) -> ProbeResult:
    """One HTTP health check of http://ip:port/healthz from `netns_name`.
    Only a 200 passes, as for a cloud HTTP health check."""
    conn = _NetnsHTTPConnection(netns_name, ip, port, timeout)
    try:
        conn.request("GET", HEALTHZ_PATH, headers={"User-Agent": "netemu-cloudlb"})
        response = conn.getresponse()
        body = response.read(MAX_BODY)
    except TimeoutError:
        return ProbeResult(ok=False, reason="timeout")
    except ConnectionRefusedError:
        return ProbeResult(ok=False, reason="connection refused")
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(ok=False, reason=f"error: {exc}")
    finally:
        conn.close()
    return ProbeResult(
        ok=response.status == 200,
        reason=f"HTTP {response.status}",
        local_endpoints=_local_endpoints(body),
    )


def _local_endpoints(body: bytes) -> int | None:
    """localEndpoints from a healthCheckNodePort answer's JSON body, if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("localEndpoints") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class RouteChoice:
    node: str | None  # None: the load balancer has no route for the address
    gateway: str | None
    command: str  # the `ip route get` asked


def route_choice(
    plan: LoadBalancerPlan,
    nodes: Sequence[NodePlan],
    dst: str,
    src: str,
    sport: int,
    dport: int,
    proto: str,
) -> RouteChoice:
    """Which node the load balancer's kernel sends a flow to: its own
    multipath hash, asked of the kernel (pyroute2 does not encode the
    sport/dport/ipproto attributes of RTM_GETROUTE)."""
    args = ["route", "get", dst, "from", src, "iif", "eth0", "ipproto", proto]
    if proto in ("tcp", "udp"):
        args += ["sport", str(sport), "dport", str(dport)]
    command = "ip " + " ".join(args)
    done = subprocess.run(
        ["ip", "-n", plan.netns, "-j", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return RouteChoice(None, None, command)
    answer = json.loads(done.stdout or "[]")
    gateway = answer[0].get("gateway") if answer else None
    node = next((n.name for n in nodes if n.underlay_ip == gateway), None)
    return RouteChoice(node, gateway, command)


class CloudLoadBalancer:
    """The load balancer's health checker and route programmer."""

    def __init__(
        self,
        plan: LoadBalancerPlan,
        nodes: Sequence[NodePlan],
        check: LabHealthCheck,
        datapath: Datapath,
    ) -> None:
        self.plan = plan
        self.nodes = tuple(nodes)
        self.check = check
        self.datapath = datapath
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._fronts: list[Frontend] = []
        self._health: dict[tuple[str, str], NodeHealth] = {}
        self._health_ports: dict[str, int] = {}
        self._spreads: list[Spread] = []
        self._routes: dict[str, tuple[str, ...]] = {}
        self._last_round: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="lb-probe")
        self._thread = threading.Thread(target=self._run, name="cloudlb", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.check.timeout_seconds + 2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def update(self, state: ClusterState) -> None:
        """Take the Services of a new cluster state; a change is checked at once."""
        fronts = frontends(state.services)
        with self._lock:
            changed = fronts != self._fronts
            self._fronts = fronts
        if changed:
            self._wake.set()

    # -- the checking loop --------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.run_round()
            remaining = self.check.interval_seconds - (time.monotonic() - started)
            if remaining > 0:
                self._wake.wait(remaining)
            self._wake.clear()

    def run_round(self) -> None:
        """Check every node once for every Service, then reprogram the routes."""
        with self._lock:
            fronts = list(self._fronts)
        # One check per node and port serves every Service checked there
        # (every ETP Cluster Service shares kube-proxy's 10256).
        targets = sorted(
            {(n.name, n.underlay_ip, f.health_port) for f in fronts for n in self.nodes}
        )
        futures = {
            (name, port): self._pool.submit(
                probe, self.plan.netns, ip, port, self.check.timeout_seconds
            )
            for name, ip, port in targets
        }
        results = {key: future.result() for key, future in futures.items()}
        with self._lock:
            health: dict[tuple[str, str], NodeHealth] = {}
            for front in self._fronts:
                for node in self.nodes:
                    key = (front.service, node.name)
                    before = self._health.get(key, NodeHealth())
                    if self._health_ports.get(front.service) not in (None, front.health_port):
                        before = NodeHealth()  # checked somewhere else now: start over
                    result = results.get((node.name, front.health_port))
                    health[key] = advance(before, result, self.check) if result else before
            self._health = health
            self._health_ports = {f.service: f.health_port for f in self._fronts}
            passthrough = [f for f in self._fronts if f.ip_mode == VIP]
            self._spreads = spreads(passthrough, health, [n.name for n in self.nodes])
            self._last_round = time.time()
            wanted = {s.ip: tuple(self._node_ip(n) for n in s.nodes) for s in self._spreads}
        if wanted != self._routes:
            self.datapath.set_spread_routes(self.plan.netns, self._routes, wanted)
            self._routes = wanted

    def _node_ip(self, name: str) -> str:
        return next(n.underlay_ip for n in self.nodes if n.name == name)

    # -- what the CLI and the tracer show ----------------------------------

    def status(self) -> dict[str, Any]:
        """The load balancer as `netemu describe` and the tracer show it."""
        with self._lock:
            services: dict[str, dict[str, Any]] = {}
            for front in self._fronts:
                entry = services.setdefault(
                    front.service,
                    {
                        "ips": [],
                        "ipMode": {},
                        "healthCheck": f"http://NODE:{front.health_port}{HEALTHZ_PATH}",
                        "nodes": {},
                    },
                )
                entry["ips"].extend(front.ips)
                entry["ipMode"].update({ip: front.ip_mode for ip in front.ips})
                for node in self.nodes:
                    h = self._health.get((front.service, node.name), NodeHealth())
                    entry["nodes"][node.name] = {
                        "healthy": h.healthy,
                        "reason": h.reason,
                        "localEndpoints": h.local_endpoints,
                    }
            return {
                "netns": self.plan.netns,
                "ip": self.plan.ip,
                "healthCheck": {
                    "intervalSeconds": self.check.interval_seconds,
                    "timeoutSeconds": self.check.timeout_seconds,
                    "healthyThreshold": self.check.healthy_threshold,
                    "unhealthyThreshold": self.check.unhealthy_threshold,
                },
                "lastRound": self._last_round,
                "services": services,
                "spread": {
                    s.ip: {"nodes": list(s.nodes), "failOpen": s.fail_open} for s in self._spreads
                },
            }
