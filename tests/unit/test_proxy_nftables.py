"""kube-proxy in nftables mode (netemu.node.nftproxy) on the fake kernel:
one `nft -f` transaction per sync, a full first sync, partial syncs that
write only what changed and end where a fresh full sync would, stale
chains deleted a sync later, a full sync after a failure and after the
table was deleted, and the node's other iptables rules written once.
The loadbalancer lab, node-1."""

from __future__ import annotations

from typing import cast

import pytest
from lbcluster import NODE, LbCluster
from proxy_doubles import RecordingServers

from netemu.kernel.iptables import FakeIptables
from netemu.kernel.nftables import FakeNftables, NftablesError
from netemu.node.nftproxy import NftProxyAgent
from netemu.node.proxyservers import NodeProxyServers
from netemu.rules.nftables import compile_ruleset
from netemu.rules.nftmodel import parse_nft


class Kernel(FakeNftables):
    """The fake, keeping every script; `fail` makes the next apply fail."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.fail = False

    def apply(self, script: str) -> None:
        self.scripts.append(script)
        if self.fail:
            self.fail = False
            raise NftablesError("nft -f failed: Device or resource busy")
        super().apply(script)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cluster(LbCluster):
    def __init__(self) -> None:
        super().__init__()
        self.nft = Kernel()
        self.iptables = FakeIptables()
        self.servers = RecordingServers()
        self.clock = Clock()
        self.agent = NftProxyAgent(
            client=self.client,
            node=NODE,
            nftables=self.nft,
            iptables=self.iptables,
            lab=self.lab,
            proxy_config=None,
            fresh_node=True,
            servers=cast(NodeProxyServers, self.servers),
            clock=self.clock,
        )

    def table_now(self) -> object:
        return _view(self.nft.list_table("ip", "kube-proxy"))

    def fresh_table(self) -> object:
        """The table a first full sync of the current state writes."""
        return _view(compile_ruleset(self.data()).dump())


def _view(text: str) -> object:
    """The table as data: chains with their rules, sets with their elements
    (in any order: the kernel keeps no element order)."""
    table = parse_nft(text).table("ip", "kube-proxy")
    assert table is not None
    chains = {
        name: (c.type, c.hook, c.priority, tuple(r.text for r in c.rules))
        for name, c in table.chains.items()
    }
    sets = {
        name: (s.kind, s.key_type, frozenset((e.key, e.value) for e in s.elements))
        for name, s in table.sets.items()
    }
    return chains, sets


def _service_chains_written(script: str) -> set[str]:
    return {
        line.split()[4]
        for line in script.splitlines()
        if line.startswith("add chain ip kube-proxy ") and "/" in line.split()[4]
    }


def test_first_sync_is_one_full_transaction_and_writes_the_other_iptables_rules() -> None:
    cluster = Cluster()
    assert cluster.agent.reconcile()
    assert len(cluster.nft.scripts) == 1
    assert cluster.table_now() == cluster.fresh_table()
    assert cluster.servers.value("sync_full_proxy_rules_duration_seconds_count") == 1
    saved = cluster.iptables.save()
    assert "KUBE-IPTABLES-HINT" in saved and "FLANNEL-POSTRTG" in saved
    assert "KUBE-SERVICES" not in saved  # none of kube-proxy's iptables chains


def test_partial_syncs_write_only_what_changed_and_end_as_a_fresh_sync() -> None:
    cluster = Cluster()
    cluster.agent.reconcile()
    changes = cluster.servers.value("sync_proxy_rules_service_changes_total")
    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    cluster.clock.now += 1
    assert cluster.agent.reconcile()
    assert len(cluster.nft.scripts) == 2
    written = _service_chains_written(cluster.nft.scripts[-1])
    assert written and all("default/shop-lb/" in chain for chain in written)
    assert "add chain ip kube-proxy nat-prerouting" not in cluster.nft.scripts[-1]
    assert cluster.table_now() == cluster.fresh_table()
    assert cluster.servers.value("sync_partial_proxy_rules_duration_seconds_count") == 1
    assert cluster.servers.value("sync_proxy_rules_service_changes_total") == changes + 1

    # Nothing changed: no transaction.
    assert not cluster.agent.reconcile()
    assert len(cluster.nft.scripts) == 2


def test_a_deleted_services_chains_are_flushed_then_deleted_a_sync_later() -> None:
    cluster = Cluster()
    cluster.agent.reconcile()
    cluster.delete_service("shop-external")
    cluster.clock.now += 1
    cluster.agent.reconcile()
    listed = cluster.nft.list_table("ip", "kube-proxy")
    stale = {c for c in _service_chains_written(listed) if "/shop-external/" in c}
    assert stale  # flushed, still there (kube-proxy's staleChains delay)
    assert not any(
        line.startswith("add rule") and "/shop-external/" in line.split()[4]
        for line in listed.splitlines()
    )
    # A later sync, more than a second on, deletes them first, in a run of its own.
    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    cluster.clock.now += 5
    cluster.agent.reconcile()
    cleanup = cluster.nft.scripts[-2]
    assert {line.split()[4] for line in cleanup.splitlines()} == stale
    assert all(line.startswith("delete chain") for line in cleanup.splitlines())
    assert cluster.table_now() == cluster.fresh_table()


def test_a_failed_sync_is_followed_by_a_full_one() -> None:
    cluster = Cluster()
    cluster.agent.reconcile()
    cluster.edit_service("shop-local", session_affinity="ClientIP")
    cluster.nft.fail = True
    with pytest.raises(NftablesError):
        cluster.agent.reconcile()
    assert cluster.agent.failed
    assert cluster.servers.value("sync_proxy_rules_nftables_sync_failures_total") == 1
    assert cluster.agent.reconcile()
    assert not cluster.agent.failed
    assert "add chain ip kube-proxy nat-prerouting" in cluster.nft.scripts[-1]
    assert cluster.servers.value("sync_full_proxy_rules_duration_seconds_count") == 2
    assert cluster.table_now() == cluster.fresh_table()


def test_a_deleted_table_stays_gone_until_a_sync_fails_on_it() -> None:
    """No canary in nftables mode: the periodic check does not look for the
    table; the next sync that writes a Service's chains fails on it, and
    the full sync that retries it after syncPeriod writes the table back."""
    cluster = Cluster()
    cluster.agent.reconcile()
    cluster.nft.delete_table("ip", "kube-proxy")
    cluster.clock.now += cluster.agent.sync_period
    assert cluster.agent.tick() is None
    assert not cluster.nft.has_table("ip", "kube-proxy")
    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    with pytest.raises(NftablesError):
        cluster.agent.reconcile()
    assert cluster.agent.failed
    cluster.clock.now += cluster.agent.sync_period
    assert cluster.agent.tick() == "full resync after a failed sync"
    assert not cluster.agent.failed
    assert cluster.table_now() == cluster.fresh_table()


def test_the_hourly_sync_is_partial() -> None:
    """The sync runner's maxInterval (an hour) runs a sync with nothing
    changed; only needFullSync makes an nftables-mode sync full."""
    cluster = Cluster()
    cluster.agent.reconcile()
    cluster.clock.now += 1800
    assert cluster.agent.tick() is None
    count = len(cluster.nft.scripts)
    cluster.clock.now += 1800
    assert cluster.agent.tick() == "hourly sync"
    assert len(cluster.nft.scripts) == count + 1
    assert "add chain ip kube-proxy nat-prerouting" not in cluster.nft.scripts[-1]
    assert cluster.servers.value("sync_partial_proxy_rules_duration_seconds_count") == 1
    assert cluster.table_now() == cluster.fresh_table()


def test_a_refused_stale_chain_cleanup_does_not_fail_the_sync() -> None:
    """proxier.go: "Unable to delete stale chains; will retry later": the
    failure is logged and counted, the sync goes on and flushes those chains
    as stale again, and a later sync deletes them."""
    cluster = Cluster()
    logged: list[str] = []
    cluster.agent.log = logged.append
    cluster.agent.reconcile()
    cluster.delete_service("shop-external")
    cluster.clock.now += 1
    cluster.agent.reconcile()
    stale = {
        c
        for c in _service_chains_written(cluster.nft.list_table("ip", "kube-proxy"))
        if "/shop-external/" in c
    }
    assert stale
    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    cluster.clock.now += 5
    cluster.nft.fail = True  # the cleanup, applied first, is refused
    assert cluster.agent.reconcile()
    assert not cluster.agent.failed
    assert cluster.servers.value("sync_proxy_rules_nftables_cleanup_failures_total") == 1
    assert cluster.servers.value("sync_proxy_rules_nftables_sync_failures_total") == 0
    assert [line.split(":")[0] for line in logged] == [
        "Unable to delete stale chains; will retry later"
    ]
    sync_script = cluster.nft.scripts[-1]
    assert {
        line.split()[4] for line in sync_script.splitlines() if line.startswith("flush chain")
    } >= stale
    assert stale <= _service_chains_written(cluster.nft.list_table("ip", "kube-proxy"))
    # A sync more than a second later deletes them.
    cluster.edit_service("shop-lb", session_affinity="None")
    cluster.clock.now += 5
    assert cluster.agent.reconcile()
    assert cluster.table_now() == cluster.fresh_table()
