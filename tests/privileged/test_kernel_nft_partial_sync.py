"""kube-proxy's nftables-mode syncs in a real kernel: the nftables agent of
node-1 of the loadbalancer lab syncs a namespace through a sequence of
changes, one `nft -f` transaction each; every partial sync writes only the
chains of the Services that changed, and at the end the namespace's
`ip kube-proxy` table is what a fresh full sync of the final state writes
into another fresh namespace (both read back with `nft list table`). A
partial sync the kernel refuses is followed by a full one that succeeds; a
stale-chain cleanup the kernel refuses is retried later without failing a sync.
(The nftables counterpart of test_kernel_partial_sync.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from lbcluster import NODE, LbCluster

from netemu.kernel import netns
from netemu.kernel.iptables import KernelIptables
from netemu.kernel.nftables import KernelNftables, NftablesError
from netemu.node.nftproxy import NftProxyAgent
from netemu.rules.nftables import compile_ruleset
from netemu.rules.nftmodel import parse_nft

pytestmark = pytest.mark.privileged


class RecordingKernel(KernelNftables):
    """The real kernel, keeping every script applied."""

    scripts: list[str]

    def apply(self, script: str) -> None:
        self.scripts.append(script)
        super().apply(script)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def other_namespace() -> Iterator[str]:
    name = f"netemu_test_{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


class Cluster(LbCluster):
    def __init__(self, namespace: str) -> None:
        super().__init__()
        self.kernel = RecordingKernel(namespace)
        self.kernel.scripts = []
        self.clock = Clock()
        self.agent = NftProxyAgent(
            client=self.client,
            node=NODE,
            nftables=self.kernel,
            iptables=KernelIptables(namespace, "nft"),
            lab=self.lab,
            proxy_config=None,
            fresh_node=True,
            clock=self.clock,
        )

    def reconcile(self) -> bool:
        self.clock.now += 2  # past kube-proxy's one-second stale-chain delay
        return self.agent.reconcile()


def table_in(nft: KernelNftables) -> dict[str, object]:
    """The kernel's kube-proxy table as data: chains (hook and rules as the
    kernel prints them), sets and maps with their elements in any order."""
    table = parse_nft(nft.list_table("ip", "kube-proxy")).table("ip", "kube-proxy")
    assert table is not None
    return {
        "chains": {
            name: (c.type, c.hook, c.priority, tuple(r.text for r in c.rules))
            for name, c in table.chains.items()
        },
        "sets": {
            name: (s.kind, s.key_type, frozenset((e.key, e.value, e.comment) for e in s.elements))
            for name, s in table.sets.items()
        },
    }


def fresh_full_sync(cluster: Cluster, namespace: str) -> dict[str, object]:
    fresh = KernelNftables(namespace)
    fresh.apply(compile_ruleset(cluster.data()).dump())
    return table_in(fresh)


def service_chains_written(script: str) -> set[str]:
    return {
        line.split()[4]
        for line in script.splitlines()
        if line.startswith("add chain ") and "/" in line.split()[4]
    }


def of_services(chains: set[str], *services: str) -> bool:
    return all(any(f"default/{s}/" in chain for s in services) for chain in chains)


def test_partial_syncs_end_where_a_full_sync_would(namespace: str, other_namespace: str) -> None:
    cluster = Cluster(namespace)
    assert cluster.reconcile()
    first_full_sync = cluster.agent.last_full_sync
    for change, services in cluster.changes():
        count = len(cluster.kernel.scripts)
        change()
        assert cluster.reconcile()
        assert not cluster.agent.failed
        new = cluster.kernel.scripts[count:]
        assert 1 <= len(new) <= 2  # the sync, after a stale-chain cleanup if one was due
        sync_script = new[-1]
        assert "add chain ip kube-proxy nat-prerouting" not in sync_script  # partial
        assert of_services(service_chains_written(sync_script), *services), services
    assert cluster.agent.last_full_sync == first_full_sync
    # A last sync deletes the chains the previous ones left stale.
    cluster.edit_service("shop-lb", session_affinity="None")
    assert cluster.reconcile()
    assert table_in(cluster.kernel) == fresh_full_sync(cluster, other_namespace)


def test_a_refused_stale_chain_cleanup_is_retried_later(
    namespace: str, other_namespace: str
) -> None:
    """A stray rule nobody should have written jumps from shop-lb's service
    chain to an endpoint chain of shop-external; when shop-external goes, the
    kernel refuses the later deletion of its stale chains (one is still
    referenced). As kube-proxy ("Unable to delete stale chains; will retry
    later"), that is logged and the sync goes on; once shop-lb's chain is
    rewritten the stray rule is gone, and a later sync deletes them."""
    cluster = Cluster(namespace)
    logged: list[str] = []
    cluster.agent.log = logged.append
    cluster.reconcile()
    listed = cluster.kernel.list_table("ip", "kube-proxy")
    chains = [line.split()[1] for line in listed.splitlines() if line.strip().startswith("chain ")]
    lb_chain = next(c for c in chains if c.startswith("service-") and "/shop-lb/" in c)
    stray = next(c for c in chains if c.startswith("endpoint-") and "/shop-external/" in c)
    cluster.kernel.apply(f"add rule ip kube-proxy {lb_chain} jump {stray}\n")

    cluster.delete_service("shop-external")
    assert cluster.reconcile()  # flushed, deletion due a sync later
    cluster.edit_service("shop-local", session_affinity="ClientIP")
    assert cluster.reconcile()  # the deletion is refused; the sync is not
    assert not cluster.agent.failed
    assert len(logged) == 1 and logged[0].startswith("Unable to delete stale chains")
    assert stray in cluster.kernel.list_table("ip", "kube-proxy")

    cluster.edit_service("shop-lb", session_affinity="ClientIP")
    assert cluster.reconcile()  # refused once more, then shop-lb's chain rewritten
    assert len(logged) == 2 and not cluster.agent.failed
    cluster.edit_service("shop-local", session_affinity="None")
    assert cluster.reconcile()  # nothing refers to them now: deleted
    assert len(logged) == 2
    assert stray not in cluster.kernel.list_table("ip", "kube-proxy")
    assert table_in(cluster.kernel) == fresh_full_sync(cluster, other_namespace)


def test_refused_partial_sync_is_followed_by_a_full_one(
    namespace: str, other_namespace: str
) -> None:
    """The kernel refuses a partial sync (kube-proxy's table was deleted
    behind its back, so the Service chain it adds has no table); the agent
    reports the failure and the next sync, full, writes the table back."""
    cluster = Cluster(namespace)
    cluster.reconcile()
    cluster.kernel.delete_table("ip", "kube-proxy")
    cluster.edit_service("shop-local", session_affinity="ClientIP")
    with pytest.raises(NftablesError):
        cluster.reconcile()
    assert cluster.agent.failed
    assert cluster.reconcile()  # full
    assert not cluster.agent.failed
    assert "add chain ip kube-proxy nat-prerouting" in cluster.kernel.scripts[-1]
    assert table_in(cluster.kernel) == fresh_full_sync(cluster, other_namespace)
