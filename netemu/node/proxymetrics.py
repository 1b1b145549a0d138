"""kube-proxy's sync metrics (pkg/proxy/metrics), one Prometheus registry
per node, exposed by the metrics server's `/metrics` in the Prometheus text
format (prometheus_client writes it).

Names, types, label names and histogram buckets are kube-proxy's, so a
dashboard or alert written for real nodes reads these. Values come from
the node's own sync loop (netemu.node.proxy): a sync's duration (full and
partial syncs each in their own histogram too), when it finished, how many
rules kube-proxy owns and how many the sync wrote per table, how many Services and
endpoint sets changed since the previous sync (kube-proxy counts informer
events; netemu counts the Services whose ports or endpoints differ between
two syncs, which is what those events carry), restore failures (and those
of partial syncs), and how many /healthz and /livez answers were 200 or 503.
"""

from __future__ import annotations

from collections.abc import Mapping

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from netemu.rules.input import ProxyInput

# The Go client writes no `_created` series; neither does kube-proxy's /metrics.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# prometheus.ExponentialBuckets(0.001, 2, 15): 1 ms to about 16 s.
SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
NAMESPACE = "kubeproxy"


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, namespace=NAMESPACE, buckets=SYNC_BUCKETS, registry=r)

        self.sync_duration = histogram(
            "sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds"
        )
        self.full_sync_duration = histogram(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
        )
        self.partial_sync_duration = histogram(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        )
        self.last_sync = Gauge(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            namespace=NAMESPACE,
            registry=r,
        )
        self.last_queued = Gauge(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            namespace=NAMESPACE,
            registry=r,
        )
        self.endpoint_changes = Counter(
            "sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            namespace=NAMESPACE,
            registry=r,
        )
        self.endpoint_changes_pending = Gauge(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            namespace=NAMESPACE,
            registry=r,
        )
        self.service_changes = Counter(
            "sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            namespace=NAMESPACE,
            registry=r,
        )
        self.service_changes_pending = Gauge(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            namespace=NAMESPACE,
            registry=r,
        )
        self.rules_total = Gauge(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            ["table"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.rules_last = Gauge(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            ["table"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.restore_failures = Counter(
            "sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            namespace=NAMESPACE,
            registry=r,
        )
        self.partial_restore_failures = Counter(
            "sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
            namespace=NAMESPACE,
            registry=r,
        )
        # nftables mode's own failure counters (pkg/proxy/metrics:
        # NFTablesSyncFailuresTotal, NFTablesCleanupFailuresTotal).
        self.nftables_sync_failures = Counter(
            "sync_proxy_rules_nftables_sync_failures_total",
            "Cumulative proxy nftables sync failures",
            namespace=NAMESPACE,
            registry=r,
        )
        self.nftables_cleanup_failures = Counter(
            "sync_proxy_rules_nftables_cleanup_failures_total",
            "Cumulative proxy nftables cleanup failures",
            namespace=NAMESPACE,
            registry=r,
        )
        self.healthz = Counter(
            "proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
            ["code"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.livez = Counter(
            "proxy_livez_total",
            "Cumulative proxy livez HTTP status",
            ["code"],
            namespace=NAMESPACE,
            registry=r,
        )
        for table in ("filter", "nat"):
            self.rules_total.labels(table=table).set(0)
            self.rules_last.labels(table=table).set(0)

    def queued(self, when: float) -> None:
        self.last_queued.set(when)

    def synced(
        self,
        duration: float,
        full: bool,
        when: float,
        rules_by_table: dict[str, int],
        written_by_table: dict[str, int] | None = None,
    ) -> None:
        """A successful sync. `rules_by_table`: the rules kube-proxy owns
        (sync_proxy_rules_iptables_total); `written_by_table`: those this
        sync wrote (sync_proxy_rules_iptables_last), the same in a full sync.
        In a partial sync kube-proxy counts the rules of the Services it left
        out in the total, and neither counts the `-X` lines."""
        self.sync_duration.observe(duration)
        (self.full_sync_duration if full else self.partial_sync_duration).observe(duration)
        self.last_sync.set(when)
        written = rules_by_table if written_by_table is None else written_by_table
        for table in ("filter", "nat"):
            if table in rules_by_table:
                self.rules_total.labels(table=table).set(rules_by_table[table])
            if table in written:
                self.rules_last.labels(table=table).set(written[table])

    def failed(self, partial: bool) -> None:
        """A sync that did not finish; kube-proxy counts a partial one
        separately, as it falls back to a full sync after it."""
        if partial:
            self.partial_restore_failures.inc()

    def changes(self, services: int, endpoints: int) -> None:
        if services:
            self.service_changes.inc(services)
        if endpoints:
            self.endpoint_changes.inc(endpoints)

    def answered(self, path: str, status: int) -> None:
        counter = self.healthz if path == "healthz" else self.livez
        counter.labels(code=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def rules_by_table(restore_text: str) -> dict[str, int]:
    """Rules (`-A` lines) per table in an iptables-restore input."""
    counts: dict[str, int] = {}
    table = ""
    for line in restore_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            counts.setdefault(table, 0)
        elif line.startswith("-A ") and table:
            counts[table] += 1
    return counts


_MISSING = object()


def updated_services(
    before: ProxyInput | None, after: ProxyInput
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The (namespace, name) of the Services whose ports changed, and of those
    whose endpoints changed, between two syncs' inputs: kube-proxy's
    serviceUpdateResult.UpdatedServices and endpointUpdateResult.UpdatedServices
    (its change trackers drop a change that ends where it began, so a
    Service counts when what kube-proxy sees of it differs)."""

    # Per service port, identity first: an unchanged Service's port and
    # endpoints are the very objects of the last sync's input
    # (netemu.rules.inputcache), so only the changed ones are compared, and
    # nothing is hashed but the keys. A Service counts when one of its
    # ports, or that port's endpoints, appeared, went or differs.
    def diff(
        a: Mapping[tuple[str, str, str, str], object],
        b: Mapping[tuple[str, str, str, str], object],
    ) -> set[tuple[str, str]]:
        changed = {(key[0], key[1]) for key in a.keys() - b.keys()}
        for key, value in b.items():
            old = a.get(key, _MISSING)
            if old is not value and old != value:
                changed.add((key[0], key[1]))
        return changed

    def ports(data: ProxyInput | None) -> dict[tuple[str, str, str, str], object]:
        if data is None:
            return {}
        return {(sp.namespace, sp.name, sp.port_name, sp.protocol): sp for sp in data.service_ports}

    if before is not None and before.service_ports is after.service_ports:
        port_changes: set[tuple[str, str]] = set()
    else:
        port_changes = diff(ports(before), ports(after))
    return port_changes, diff(before.endpoints if before else {}, after.endpoints)
