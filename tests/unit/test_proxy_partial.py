"""The kube-proxy agent's partial syncs (netemu.node.proxy): after the first
sync only the chains of Services that changed are written, a failed sync is
followed by a full one, and the metrics count full and partial syncs as
kube-proxy's do. The loadbalancer lab, node-1, on the fake kernel."""

from __future__ import annotations

from typing import cast

from lbcluster import NODE, LbCluster
from proxy_doubles import RecordingServers

from netemu.controlplane import snapshot
from netemu.kernel.iptables import FakeIptables
from netemu.node.proxy import ProxyAgent, reconcile_nodes
from netemu.node.proxyservers import NodeProxyServers
from netemu.pipeline import proxy_input
from netemu.rules import names as n
from netemu.rules.flannel import flannel_config
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import compile_node, compile_sync
from netemu.rules.model import parse_restore
from netemu.rules.spec import canonical_ruleset


class Kernel(FakeIptables):
    """The fake kernel, keeping every restore input; `fail` makes the next restore fail."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[str] = []
        self.fail = False

    def restore(self, text: str, *, noflush: bool = True) -> None:
        self.inputs.append(text)
        if self.fail:
            self.fail = False
            raise RuntimeError("iptables-restore: resource busy")
        super().restore(text, noflush=noflush)


class Cluster(LbCluster):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = Kernel()
        self.servers = RecordingServers()
        self.agent = ProxyAgent(
            client=self.client,
            node=NODE,
            iptables=self.kernel,
            lab=self.lab,
            proxy_config=None,
            servers=cast(NodeProxyServers, self.servers),
        )

    def fresh_node(self) -> object:
        """iptables-save of a node given the current state in one first sync."""
        data = self.data()
        kernel = FakeIptables()
        kernel.restore(
            compile_node(data, flannel_config(self.lab, data.config.node_pod_cidr)).render(),
            noflush=False,
        )
        return canonical_ruleset(parse_restore(kernel.save()))

    def node_now(self) -> object:
        return canonical_ruleset(parse_restore(self.kernel.save()))


def service_chains(data: ProxyInput, service: str) -> set[str]:
    """Every chain name kube-proxy's naming gives one Service's ports and endpoints."""
    out: set[str] = set()
    for sp in data.service_ports:
        if sp.name == service:
            digest = n.port_proto_hash(sp.name_string, sp.protocol)
            out |= {p + digest for p in (n.SVC_PREFIX, n.SVL_PREFIX, n.EXT_PREFIX, n.FW_PREFIX)}
            out |= {
                n.endpoint_chain(sp.name_string, sp.protocol, ep.text)
                for ep in data.endpoints_of(sp)
            }
    return out


def declared_service_chains(restore_text: str) -> set[str]:
    nat = parse_restore(restore_text).tables["nat"]
    return {c for c in nat.chains if n.is_service_chain(c)}


def test_later_syncs_write_only_the_changed_services_chains() -> None:
    cluster = Cluster()
    assert cluster.agent.reconcile()
    assert cluster.servers.value("sync_full_proxy_rules_duration_seconds_count") == 1
    first = declared_service_chains(cluster.kernel.inputs[-1])
    assert first  # the first sync writes every Service's chains

    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    assert cluster.agent.reconcile()
    written = declared_service_chains(cluster.kernel.inputs[-1])
    assert written and written <= service_chains(cluster.data(), "shop-lb")
    assert cluster.node_now() == cluster.fresh_node()
    assert cluster.servers.value("sync_partial_proxy_rules_duration_seconds_count") == 1
    assert cluster.servers.value("sync_full_proxy_rules_duration_seconds_count") == 1

    # Rules kube-proxy owns, and those the partial sync wrote: nat's differ.
    data = cluster.data()
    full = compile_sync(data)
    for table in ("filter", "nat"):
        total = cluster.servers.value("sync_proxy_rules_iptables_total", table=table)
        assert total == len(full.tables[table].rules)
    last = parse_restore(cluster.kernel.inputs[-1])
    assert cluster.servers.value("sync_proxy_rules_iptables_last", table="nat") == len(
        last.tables["nat"].rules
    )
    assert len(last.tables["nat"].rules) < len(full.tables["nat"].rules)

    # A deleted Service: its chains are flushed and deleted, no other written.
    before = cluster.data()
    cluster.delete_service("shop-external")
    assert cluster.agent.reconcile()
    text = cluster.kernel.inputs[-1]
    gone = service_chains(before, "shop-external") & set(
        parse_restore(cluster.kernel.inputs[0]).tables["nat"].chains
    )
    assert gone
    assert declared_service_chains(text) == gone
    assert set(parse_restore(text).tables["nat"].deletions) == gone
    assert cluster.node_now() == cluster.fresh_node()

    # Nothing changed: no sync at all.
    count = len(cluster.kernel.inputs)
    assert not cluster.agent.reconcile()
    assert len(cluster.kernel.inputs) == count


def test_a_failed_partial_sync_is_followed_by_a_full_one() -> None:
    cluster = Cluster()
    cluster.agent.reconcile()
    cluster.edit_service("shop-local", session_affinity="ClientIP")
    cluster.kernel.fail = True
    try:
        cluster.agent.reconcile()
    except RuntimeError:
        pass
    else:
        raise AssertionError("the restore should have failed")
    assert cluster.agent.failed
    assert cluster.servers.value("sync_proxy_rules_iptables_partial_restore_failures_total") == 1
    assert cluster.servers.value("sync_proxy_rules_iptables_restore_failures_total") == 1

    assert cluster.agent.reconcile()  # retried at once, and full
    assert not cluster.agent.failed
    assert cluster.servers.value("sync_full_proxy_rules_duration_seconds_count") == 2
    assert cluster.servers.value("sync_partial_proxy_rules_duration_seconds_count") == 0
    every = set().union(
        *(service_chains(cluster.data(), sp.name) for sp in cluster.data().service_ports)
    )
    assert declared_service_chains(cluster.kernel.inputs[-1]) == every & set(
        compile_sync(cluster.data()).tables["nat"].chains
    )
    assert cluster.node_now() == cluster.fresh_node()


def test_every_node_syncs_at_once_and_one_failure_does_not_stop_the_others() -> None:
    cluster = Cluster()
    other_kernel = Kernel()
    other = ProxyAgent(
        client=cluster.client,
        node="node-2",
        iptables=other_kernel,
        lab=cluster.lab,
        proxy_config=None,
        input_cache=cluster.agent.input_cache,  # shared, as the supervisor's agents
    )

    def node2_fresh() -> object:
        """node-2's rules (its node IPs and pod CIDR) in one first sync."""
        data = proxy_input(snapshot(cluster.client, lab=cluster.lab), "node-2")
        kernel = FakeIptables()
        flannel = flannel_config(cluster.lab, data.config.node_pod_cidr)
        kernel.restore(compile_node(data, flannel).render(), noflush=False)
        return canonical_ruleset(parse_restore(kernel.save()))

    def node2_now() -> object:
        return canonical_ruleset(parse_restore(other_kernel.save()))

    assert reconcile_nodes([cluster.agent, other]) == [True, True]
    assert cluster.node_now() == cluster.fresh_node()
    assert node2_now() == node2_fresh() != cluster.node_now()

    before = node2_now()
    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    cluster.kernel.fail = True
    try:
        reconcile_nodes([cluster.agent, other])
    except RuntimeError:
        pass
    else:
        raise AssertionError("node-1's restore should have failed")
    assert cluster.agent.failed and not other.failed
    assert node2_now() == node2_fresh() != before  # node-2 synced the change all the same
    assert reconcile_nodes([cluster.agent, other]) == [True, False]  # node-1 retries
    assert cluster.node_now() == cluster.fresh_node()


def test_a_failed_sync_can_be_reported_instead_of_raised() -> None:
    """The live lab's way after bring-up: a node's failed sync is handed to
    `on_failure` (logged), the others sync, and the failed node is left to
    retry."""
    cluster = Cluster()
    other = ProxyAgent(
        client=cluster.client,
        node="node-2",
        iptables=Kernel(),
        lab=cluster.lab,
        proxy_config=None,
        input_cache=cluster.agent.input_cache,
    )
    reconcile_nodes([cluster.agent, other])
    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    cluster.kernel.fail = True
    failures: list[tuple[str, str]] = []
    results = reconcile_nodes(
        [cluster.agent, other], on_failure=lambda a, e: failures.append((a.node, str(e)))
    )
    assert results == [False, True]
    assert [node for node, _ in failures] == ["node-1"]
    assert cluster.agent.failed and not other.failed
