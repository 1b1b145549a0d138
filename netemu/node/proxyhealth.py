"""What kube-proxy's HTTP servers answer, as pure functions and small state
objects (pkg/proxy/healthcheck, cmd/kube-proxy/app/server.go serveMetrics):

- the service health server: one listener per LoadBalancer Service with
  externalTrafficPolicy Local, on its healthCheckNodePort; every path answers
  with the Service's name, the node's count of local *ready* endpoints and
  200, or 503 when that count is 0 or the proxier is unhealthy;
- the proxier health server (healthzBindAddress, default 0.0.0.0:10256):
  `/healthz` and `/livez`, unhealthy once an update was queued and no sync
  has happened within healthTimeout (2 × syncPeriod);
- the metrics server (metricsBindAddress, default 127.0.0.1:10249):
  `/proxyMode`, `/healthz` and `/metrics` (netemu.node.proxymetrics).

Owns no sockets and no threads: netemu.node.proxyservers serves these answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import netaddr

from netemu.api.config import KubeProxyConfiguration
from netemu.api.duration import parse_duration
from netemu.api.ipfamilies import IPFamily
from netemu.rules.input import ProxyInput

# pkg/cluster/ports: ProxyHealthzPort and ProxyStatusPort.
HEALTHZ_PORT = 10256
METRICS_PORT = 10249
# kube-proxy's v1alpha1 defaults (pkg/proxy/apis/config/v1alpha1/defaults.go):
# healthz on every address, metrics on loopback only. kubeadm leaves
# metricsBindAddress empty in its kube-proxy ConfigMap, so a kubeadm node
# serves metrics on 127.0.0.1:10249 too.
DEFAULT_HEALTHZ_BIND = f"0.0.0.0:{HEALTHZ_PORT}"
DEFAULT_METRICS_BIND = f"127.0.0.1:{METRICS_PORT}"
DEFAULT_SYNC_PERIOD = 30.0  # iptables.syncPeriod
DEFAULT_MIN_SYNC_PERIOD = 1.0  # iptables.minSyncPeriod
# proxyutil.FullSyncPeriod: the longest kube-proxy goes without a full sync.
FULL_SYNC_PERIOD = 3600.0
# Both proxiers' sync runner (async.BoundedFrequencyRunner) runs a sync at
# least this often, changes or not: its maxInterval, time.Hour in
# pkg/proxy/iptables/proxier.go and pkg/proxy/nftables/proxier.go.
MAX_SYNC_INTERVAL = 3600.0
# The taint the cluster autoscaler puts on a node it is about to delete;
# kube-proxy's /healthz then fails so load balancers drain the node.
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProxySettings:
    """The parts of a KubeProxyConfiguration its servers and sync loop use."""

    healthz_bind: tuple[str, int] | None = ("0.0.0.0", HEALTHZ_PORT)
    metrics_bind: tuple[str, int] | None = ("127.0.0.1", METRICS_PORT)
    sync_period: float = DEFAULT_SYNC_PERIOD
    min_sync_period: float = DEFAULT_MIN_SYNC_PERIOD
    mode: str = "iptables"

    @property
    def health_timeout(self) -> float:
        # cmd/kube-proxy/app/server.go: NewProxierHealthServer(addr, 2*SyncPeriod).
        return 2 * self.sync_period


def bind_address(value: object, default: str, port: int) -> tuple[str, int] | None:
    """kube-proxy's defaulting of a bind address: unset or "" takes the
    default, an address without a port gets the component's port. None:
    the server is off ("0" as a port is never listened on)."""
    text = str(value) if value not in (None, "") else default
    if ":" not in text:
        text = f"{text}:{port}"
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not port_text.isdigit() or int(port_text) == 0:
        return None
    return host, int(port_text)


def default_bind_addresses(bind: object) -> tuple[str, str]:
    """The healthz and metrics defaults for `bindAddress` (itself defaulted
    to 0.0.0.0): IPv4's wildcard and loopback, or IPv6's for an IPv6
    bindAddress such as "::" on an IPv6-only node
    (pkg/proxy/apis/config/v1alpha1/defaults.go, getDefaultAddresses)."""
    text = str(bind) if bind not in (None, "") else "0.0.0.0"
    if ":" not in text:
        return DEFAULT_HEALTHZ_BIND, DEFAULT_METRICS_BIND
    return f"[::]:{HEALTHZ_PORT}", f"[::1]:{METRICS_PORT}"


def proxy_settings(cfg: KubeProxyConfiguration | None, mode: str = "iptables") -> ProxySettings:
    """ProxySettings of a validated configuration (netemu.api.validate checks
    the durations and addresses first)."""
    cfg = cfg or KubeProxyConfiguration()
    section = cfg.nftables if mode == "nftables" else cfg.iptables
    sync = section.sync_period
    min_sync = section.min_sync_period
    healthz_default, metrics_default = default_bind_addresses(cfg.bind_address)
    return ProxySettings(
        healthz_bind=bind_address(cfg.healthz_bind_address, healthz_default, HEALTHZ_PORT),
        metrics_bind=bind_address(cfg.metrics_bind_address, metrics_default, METRICS_PORT),
        sync_period=DEFAULT_SYNC_PERIOD if sync in (None, "") else parse_duration(sync),
        min_sync_period=(
            DEFAULT_MIN_SYNC_PERIOD if min_sync in (None, "") else parse_duration(min_sync)
        ),
        mode=mode,
    )


# -- service health -------------------------------------------------------


def health_check_ports(data: ProxyInput) -> dict[tuple[str, str], int]:
    """(namespace, name) → healthCheckNodePort of every Service this node's
    kube-proxy opens a health check for (LoadBalancer with ETP Local; the
    compiler's input only has a port for those)."""
    return {
        (sp.namespace, sp.name): sp.health_check_node_port
        for sp in data.service_ports
        if sp.health_check_node_port
    }


def local_ready_endpoints(data: ProxyInput) -> dict[tuple[str, str], int]:
    """(namespace, name) → distinct IPs of the Service's ready endpoints on
    this node: EndpointsMap.LocalReadyEndpoints (pkg/proxy/endpointschangetracker.go)
    counts only ready endpoints, "Terminating endpoints may still serve
    traffic but the health check signal should fail if there are only
    terminating endpoints on a node", and counts an IP once across the
    Service's ports."""
    node = data.config.node_name
    ips: dict[tuple[str, str], set[str]] = {}
    for sp in data.service_ports:
        for ep in data.endpoints_of(sp):
            if ep.ready and ep.node_name == node:
                ips.setdefault((sp.namespace, sp.name), set()).add(ep.ip)
    return {key: len(found) for key, found in ips.items()}


def service_health_answer(namespace: str, name: str, count: int, proxy_healthy: bool) -> Answer:
    """service_health.go hcHandler: the body is the dedented JSON it prints."""
    body = (
        "{\n"
        '\t"service": {\n'
        f'\t\t"namespace": {json.dumps(namespace)},\n'
        f'\t\t"name": {json.dumps(name)}\n'
        "\t},\n"
        f'\t"localEndpoints": {count},\n'
        f'\t"serviceProxyHealthy": {"true" if proxy_healthy else "false"}\n'
        "}"
    )
    return Answer(
        status=200 if count and proxy_healthy else 503,
        content_type=JSON,
        body=body,
        headers=(
            ("X-Content-Type-Options", "nosniff"),
            # For load balancers that weigh nodes by their endpoints (GCE's
            # WEIGHTED_MAGLEV reads this header).
            ("X-Load-Balancing-Endpoint-Weight", str(count)),
        ),
    )


# -- proxier health -------------------------------------------------------


def go_time(wall_ns: int | None, monotonic: float | None = None) -> str:
    """A time as Go's time.Time.String() prints it in UTC ("2006-01-02
    15:04:05.999999999 +0000 UTC m=+1.000000001"); None is Go's zero time."""
    if wall_ns is None:
        return "0001-01-01 00:00:00 +0000 UTC"
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    text += " +0000 UTC"
    if monotonic is not None:
        text += f" m={monotonic:+.9f}"
    return text


@dataclass(frozen=True)
class Instant:
    wall_ns: int
    monotonic: float  # seconds since the proxy started, as Go's m=+…


@dataclass
class ProxierHealth:
    """ProxyHealthServer's state, one per node and shared by its proxiers (a
    dual-stack node's IPv4 and IPv6 ones, as kube-proxy's MetaProxier shares
    it): each family's last update and oldest queued one. Healthy unless a
    family that has synced once has an update queued for longer than
    health_timeout (pkg/proxy/healthcheck/proxy_health.go, isHealthy)."""

    health_timeout: float
    clock: Callable[[], Instant]
    last_updated: dict[IPFamily, Instant] = field(default_factory=dict)
    oldest_pending: dict[IPFamily, Instant] = field(default_factory=dict)
    node_eligible: bool = True
    answered: dict[tuple[str, int], int] = field(default_factory=dict)

    def queued_update(self, family: IPFamily = "IPv4") -> None:
        self.oldest_pending.setdefault(family, self.clock())

    def updated(self, family: IPFamily = "IPv4") -> None:
        self.oldest_pending.pop(family, None)
        self.last_updated[family] = self.clock()

    def is_healthy(self, now: Instant | None = None) -> bool:
        return self._health(now or self.clock())[0]

    def _health(self, now: Instant) -> tuple[bool, Instant | None]:
        """(healthy, lastUpdated): a family never synced yet counts as
        starting up, so healthy; the first late family makes it unhealthy,
        and its own last update is reported."""
        latest: Instant | None = None
        for family, last in self.last_updated.items():
            if latest is None or last.monotonic > latest.monotonic:
                latest = last
            pending = self.oldest_pending.get(family)
            if pending is not None and now.monotonic - pending.monotonic >= self.health_timeout:
                return False, last
        return True, latest

    def healthz(self) -> Answer:
        now = self.clock()
        healthy, last = self._health(now)
        healthy = healthy and self.node_eligible
        last = now if healthy else last
        body = (
            f'{{"lastUpdated": {_quoted(last)},"currentTime": {_quoted(now)}, '
            f'"nodeEligible": {"true" if self.node_eligible else "false"}}}'
        )
        return self._answer("healthz", healthy, body)

    def livez(self) -> Answer:
        """As /healthz without the node's eligibility (livezHandler)."""
        now = self.clock()
        healthy, last = self._health(now)
        last = now if healthy else last
        body = f'{{"lastUpdated": {_quoted(last)},"currentTime": {_quoted(now)}}}'
        return self._answer("livez", healthy, body)

    def _answer(self, path: str, healthy: bool, body: str) -> Answer:
        status = 200 if healthy else 503
        self.answered[(path, status)] = self.answered.get((path, status), 0) + 1
        return Answer(status, JSON, body, (("X-Content-Type-Options", "nosniff"),))


def _quoted(instant: Instant | None) -> str:
    if instant is None:
        return json.dumps(go_time(None))
    return json.dumps(go_time(instant.wall_ns, instant.monotonic))


def node_eligible(deleting: bool, taint_keys: list[str]) -> bool:
    """proxierHealthServer.SyncNode: a node being deleted or tainted
    ToBeDeletedByClusterAutoscaler is not eligible for load-balancer traffic."""
    return not deleting and TO_BE_DELETED_TAINT not in taint_keys


def proxy_mode_answer(mode: str) -> Answer:
    return Answer(200, TEXT, mode, (("X-Content-Type-Options", "nosniff"),))


def system_clock(started: float | None = None) -> Callable[[], Instant]:
    """Instants of the real clock, monotonic seconds counted from `started`."""
    origin = time.monotonic() if started is None else started
    return lambda: Instant(time.time_ns(), time.monotonic() - origin)


def health_check_ips(
    node_port_addresses: tuple[str, ...] | list[str],
    primary_ips: list[str],
    node_ips: list[str],
    wildcard: str = "0.0.0.0",
) -> tuple[str, ...]:
    """Where the service health server listens (newServiceHealthServer):
    every address of its proxier's family (`wildcard`: "::" for an IPv6-only
    node's), unless nodePortAddresses narrows it to the node's addresses
    inside those CIDRs ("primary": its InternalIPs)."""
    if not node_port_addresses:
        return (wildcard,)
    if list(node_port_addresses) == ["primary"]:
        return tuple(primary_ips) or (wildcard,)
    nets = [netaddr.IPNetwork(c) for c in node_port_addresses if c != "primary"]
    found = tuple(ip for ip in node_ips if any(netaddr.IPAddress(ip) in net for net in nets))
    # kube-proxy falls back to every address when none matches.
    return found or (wildcard,)
