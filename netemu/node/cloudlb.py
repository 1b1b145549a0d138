"""The emulated cloud load balancer of a live lab: it health-checks every
node from its own namespace and spreads new connections to each ingress IP
over the healthy nodes (the decisions are netemu.net.cloudlb's).

Passthrough (ipMode VIP, the default): each ingress IP has a multipath
route in the load balancer's namespace with one nexthop per healthy node,
and the namespace hashes on addresses, ports and protocol
(net.plan.LB_SYSCTLS: fib_multipath_hash_policy 3), so each connection goes to one
node, unchanged: the client's address is kept, kube-proxy's KUBE-EXT/FW
chains match the ingress IP there, and the node answers the client
directly. IPv6 ingress IPs are routed alike, to the nodes' IPv6
addresses. `ip route get IP from CLIENT iif eth0 ipproto tcp sport S dport
D` in the namespace tells which node an IPv4 flow goes to (`route_choice`);
not an IPv6 one (see netemu.trace.live.load_balancer_hop).

Proxy mode (ipMode Proxy): the ingress IP is an address of the load
balancer's own namespace; it accepts each TCP connection on IP:port itself
and opens a new one to the chosen node's nodePort (`pick` among the
healthy nodes), so the node sees the load balancer's address, not the
client's, and kube-proxy has no rules for the IP.

Runs in the supervisor, on a thread of its own; every socket it opens
lives in the load balancer's namespace.

Owns: the health checks and the spread routes of the load balancer's
namespace. Must not touch: any other namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import selectors
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from netemu.api.config import LabHealthCheck
from netemu.controlplane.state import ClusterState
from netemu.kernel import netns
from netemu.kernel.datapath import Datapath
from netemu.net.cloudlb import (
    HEALTHZ_PATH,
    PROXY,
    VIP,
    Frontend,
    NodeHealth,
    ProbeResult,
    Spread,
    advance,
    frontends,
    pick,
    spreads,
)
from netemu.net.plan import LoadBalancerPlan, NodePlan, node_addresses, of_family_of

# Health checks run in parallel, at most this many at once.
PROBE_WORKERS = 8
MAX_BODY = 4096
RELAY_CHUNK = 65536
# How long a proxy-mode connection to a node may take to open.
CONNECT_TIMEOUT = 2.0
# How often a listener looks whether it should stop.
ACCEPT_POLL = 0.2


class _NetnsHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket is made in a given namespace."""

    def __init__(self, netns_name: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns = netns_name

    def connect(self) -> None:
        sock = netns.open_socket(self._netns, _socket_family(self.host), socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _socket_family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


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
        local_endpoints=local_endpoints(body),
    )


def local_endpoints(body: bytes) -> int | None:
    """localEndpoints from a healthCheckNodePort answer's JSON body, if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("localEndpoints") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def node_address(node: NodePlan, ip: str) -> str | None:
    """The node's underlay address of `ip`'s family, if it has one."""
    return of_family_of(ip, node_addresses(node))


@dataclass(frozen=True)
class RouteChoice:
    node: str | None  # None: the load balancer has no route for the address
    gateway: str | None
    command: str  # the `ip route get` asked


def route_choice(
    netns_name: str,
    node_ips: Mapping[str, str],
    dst: str,
    src: str,
    sport: int,
    dport: int,
    proto: str,
) -> RouteChoice:
    """Which node (by `node_ips`, name → underlay IP) the load balancer's
    kernel sends a flow to: its own multipath hash, asked of the kernel as
    for a packet arriving on eth0 (pyroute2 does not encode the
    sport/dport/ipproto attributes of RTM_GETROUTE, so `ip` asks). Exact for
    IPv4, whose RTM_GETROUTE hashes a packet it builds; IPv6's hashes the
    flow, which forwarding does not (net/ipv6/route.c), so its answer may
    name another node."""
    args = ["route", "get", dst, "from", src, "iif", "eth0", "ipproto", proto]
    if proto in ("tcp", "udp"):
        args += ["sport", str(sport), "dport", str(dport)]
    command = "ip " + " ".join(args)
    done = subprocess.run(
        ["ip", "-n", netns_name, "-j", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return RouteChoice(None, None, command)
    answer = json.loads(done.stdout or "[]")
    gateway = answer[0].get("gateway") if answer else None
    node = next((name for name, ip in node_ips.items() if ip == gateway), None)
    return RouteChoice(node, gateway, command)


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until both sides have closed; a half-close is
    passed on (shutdown SHUT_WR), as a TCP proxy does."""
    with selectors.DefaultSelector() as sel:
        peers = {client: upstream, upstream: client}
        for sock in peers:
            sock.setblocking(True)
            sel.register(sock, selectors.EVENT_READ)
        open_reads = 2
        try:
            while open_reads:
                for key, _ in sel.select():
                    src = _as_socket(key.fileobj)
                    try:
                        data = src.recv(RELAY_CHUNK)
                    except OSError:
                        data = b""
                    if data:
                        peers[src].sendall(data)
                        continue
                    sel.unregister(src)
                    open_reads -= 1
                    with contextlib.suppress(OSError):
                        peers[src].shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


def _as_socket(obj: object) -> socket.socket:
    assert isinstance(obj, socket.socket)
    return obj


class _ProxyListener:
    """One proxy-mode ingress IP:port: accepts in the load balancer's
    namespace and connects each client to a node's nodePort."""

    def __init__(
        self, balancer: CloudLoadBalancer, ip: str, port: int, node_port: int | None
    ) -> None:
        self.balancer = balancer
        self.ip, self.port, self.node_port = ip, port, node_port
        self.sock = netns.open_socket(balancer.plan.netns, _socket_family(ip), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(128)
        self.sock.settimeout(ACCEPT_POLL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"lb-{ip}:{port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=ACCEPT_POLL * 5)
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
                client_ip, client_port = peer[0], peer[1]  # IPv6 adds flowinfo and scope
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn, client_ip, client_port), daemon=True
            ).start()

    def _serve(self, conn: socket.socket, client_ip: str, client_port: int) -> None:
        node = self.balancer.proxy_choice(self.ip, client_ip, client_port)
        if node is None or self.node_port is None:
            conn.close()  # nowhere to send it: the client sees the connection closed
            return
        # The node's address of the ingress IP's family, as a cloud proxy
        # keeps a connection in its family.
        node_ip = node_address(node, self.ip)
        if node_ip is None:
            conn.close()
            return
        upstream = netns.open_socket(
            self.balancer.plan.netns, _socket_family(node_ip), socket.SOCK_STREAM
        )
        upstream.settimeout(CONNECT_TIMEOUT)
        try:
            upstream.connect((node_ip, self.node_port))
        except OSError:
            upstream.close()
            conn.close()
            return
        _relay(conn, upstream)


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
        self._proxy_nodes: dict[str, tuple[str, ...]] = {}  # proxy-mode IP → nodes
        self._local_ips: set[str] = set()
        self._listeners: dict[tuple[str, int], _ProxyListener] = {}
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
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()

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
            try:
                self.run_round()
            except Exception:
                # A failed round (a netlink error) must not end the checks:
                # the next one tries again; the log says what happened.
                traceback.print_exc()
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
            names = [n.name for n in self.nodes]
            passthrough = [f for f in self._fronts if f.ip_mode == VIP]
            proxied = [f for f in self._fronts if f.ip_mode == PROXY]
            routed, terminated = (
                spreads(passthrough, health, names),
                spreads(proxied, health, names),
            )
            self._proxy_nodes = {s.ip: s.nodes for s in terminated}
            # Each ingress IP goes to the nodes' addresses of its own family.
            wanted = {
                s.ip: tuple(ip for n in s.nodes if (ip := self._node_ip(n, s.ip)) is not None)
                for s in routed
            }
        if wanted != self._routes:
            self.datapath.set_spread_routes(self.plan.netns, self._routes, wanted)
            self._routes = wanted
        self._serve_proxied(proxied)
        # Published once the routes and listeners are in place: a spread that
        # status() shows (and the tracer reads) is what a new connection meets.
        with self._lock:
            self._spreads = routed + terminated
            self._last_round = time.time()

    def _serve_proxied(self, fronts: list[Frontend]) -> None:
        """Proxy-mode IPs on the namespace's loopback, and a listener on
        each of their TCP ports (only TCP: a cloud proxy LB terminates TCP)."""
        ips = {ip for f in fronts for ip in f.ips}
        if ips != self._local_ips:
            self.datapath.set_local_addresses(self.plan.netns, self._local_ips, ips)
            self._local_ips = ips
        wanted = {
            (ip, port): node_port
            for f in fronts
            for ip in f.ips
            for port, proto, node_port in f.ports
            if proto == "TCP"
        }
        for key in [
            k for k, listener in self._listeners.items() if wanted.get(k, -1) != listener.node_port
        ]:
            self._listeners.pop(key).close()
        for (ip, port), node_port in wanted.items():
            if (ip, port) not in self._listeners:
                try:
                    self._listeners[(ip, port)] = _ProxyListener(self, ip, port, node_port)
                except OSError as exc:
                    print(f"load balancer: cannot listen on {ip}:{port}: {exc}", flush=True)

    def proxy_ips(self) -> list[str]:
        """The ingress IPs it terminates itself (ipMode Proxy)."""
        with self._lock:
            return sorted({ip for f in self._fronts if f.ip_mode == PROXY for ip in f.ips})

    def proxy_choice(self, ip: str, client_ip: str, client_port: int) -> NodePlan | None:
        """The node a proxy-mode connection from client_ip:client_port goes to."""
        with self._lock:
            nodes = self._proxy_nodes.get(ip, ())
        if not nodes:
            return None
        name = pick(nodes, client_ip, client_port)
        return next(n for n in self.nodes if n.name == name)

    def _node_ip(self, name: str, ingress_ip: str) -> str | None:
        return node_address(next(n for n in self.nodes if n.name == name), ingress_ip)

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
                "ip6": self.plan.ip6,
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
