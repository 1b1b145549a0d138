"""What a kube-proxy agent reports to (netemu.node.proxyservers.NodeProxyServers),
without its HTTP servers: the real metrics registry, and no-ops for health.
Shared by the iptables-mode and nftables-mode agents' unit tests."""

from __future__ import annotations

from netemu.api.core import Node
from netemu.node.proxymetrics import ProxyMetrics


class RecordingServers:
    def __init__(self) -> None:
        self.metrics = ProxyMetrics()

    def queued(self, when: float, family: str = "IPv4") -> None: ...

    def synced(self, family: str = "IPv4") -> None: ...

    def set_node_eligible(self, eligible: bool) -> None: ...

    def follow_node(self, node: Node) -> None: ...

    def sync_services(
        self, ports: dict[tuple[str, str], int], endpoints: dict[tuple[str, str], int]
    ) -> None: ...

    def value(self, name: str, **labels: str) -> float:
        """A kube-proxy metric's current value (`kubeproxy_<name>`)."""
        found = self.metrics.registry.get_sample_value(f"kubeproxy_{name}", labels)
        assert found is not None, name
        return found
