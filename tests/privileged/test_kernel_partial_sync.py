"""kube-proxy's partial syncs in a real kernel, on both iptables backends:
the proxy agent of node-1 of the loadbalancer lab syncs a namespace through
a sequence of changes; each partial sync's restore input names only the
chains of the Services that changed, and at the end the namespace's
iptables-save is, canonically, what a fresh full sync of the final state
gives. A partial sync the kernel refuses (a stray jump keeps a chain it
deletes in use) is followed by a full sync that succeeds."""

from __future__ import annotations

import pytest
from lbcluster import NODE, LbCluster

from netemu.kernel.iptables import Backend, IptablesError, KernelIptables
from netemu.node.proxy import ProxyAgent
from netemu.rules import names as n
from netemu.rules.flannel import flannel_config
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import compile_node
from netemu.rules.model import parse_restore
from netemu.rules.spec import canonical_ruleset


class RecordingKernel(KernelIptables):
    """The real kernel, keeping every restore input."""

    inputs: list[str]

    def restore(self, text: str, *, noflush: bool = True) -> None:
        self.inputs.append(text)
        super().restore(text, noflush=noflush)


class Cluster(LbCluster):
    def __init__(self, netns: str, backend: Backend) -> None:
        super().__init__()
        self.kernel = RecordingKernel(netns, backend)
        self.kernel.inputs = []
        self.agent = ProxyAgent(
            client=self.client, node=NODE, iptables=self.kernel, lab=self.lab, proxy_config=None
        )

    def fresh_full_sync(self) -> object:
        data = self.data()
        flannel = flannel_config(self.lab, data.config.node_pod_cidr)
        return canonical_ruleset(compile_node(data, flannel))

    def saved(self) -> object:
        return canonical_ruleset(parse_restore(self.kernel.save()))


def chains_of(data: ProxyInput, *services: str) -> set[str]:
    """Every chain name kube-proxy's naming gives these Services' ports and endpoints."""
    out: set[str] = set()
    for sp in data.service_ports:
        if sp.name in services:
            digest = n.port_proto_hash(sp.name_string, sp.protocol)
            out |= {p + digest for p in (n.SVC_PREFIX, n.SVL_PREFIX, n.EXT_PREFIX, n.FW_PREFIX)}
            out |= {
                n.endpoint_chain(sp.name_string, sp.protocol, ep.text)
                for ep in data.endpoints_of(sp)
            }
    return out


def written_service_chains(restore_text: str) -> set[str]:
    return {c for c in parse_restore(restore_text).tables["nat"].chains if n.is_service_chain(c)}


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_partial_syncs_end_where_a_full_sync_would(namespace: str, backend: Backend) -> None:
    cluster = Cluster(namespace, backend)
    assert cluster.agent.reconcile()
    everything = written_service_chains(cluster.kernel.inputs[-1])
    first_full_sync = cluster.agent.last_full_sync

    for change, services in cluster.changes():
        before = cluster.data()
        change()
        assert cluster.agent.reconcile()
        assert not cluster.agent.failed
        text = cluster.kernel.inputs[-1]
        written = written_service_chains(text)
        allowed = chains_of(before, *services) | chains_of(cluster.data(), *services)
        assert written <= allowed, services
        assert written < everything | allowed  # never every Service's chains
        deleted = set(parse_restore(text).tables["nat"].deletions)
        assert deleted <= chains_of(before, *services), services

    assert cluster.agent.last_full_sync == first_full_sync  # every later sync was partial
    assert cluster.saved() == cluster.fresh_full_sync()


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_refused_partial_sync_is_followed_by_a_full_one(namespace: str, backend: Backend) -> None:
    """kube-proxy's own absurd case (TestSyncProxyRulesRepeated): a rule
    nobody should have written jumps from shop-lb's service chain to an
    endpoint chain of shop-external; deleting shop-external in a partial
    sync (which leaves shop-lb's chains alone) is refused by the kernel."""
    cluster = Cluster(namespace, backend)
    cluster.agent.reconcile()
    data = cluster.data()
    lb = next(sp for sp in data.service_ports if sp.name == "shop-lb")
    external = next(sp for sp in data.service_ports if sp.name == "shop-external")
    lb_chain = n.SVC_PREFIX + n.port_proto_hash(lb.name_string, lb.protocol)
    endpoint = data.endpoints_of(external)[0]
    stray = n.endpoint_chain(external.name_string, external.protocol, endpoint.text)
    cluster.kernel.restore(f"*nat\n-A {lb_chain} -j {stray}\nCOMMIT\n")

    cluster.delete_service("shop-external")
    with pytest.raises(IptablesError):
        cluster.agent.reconcile()
    assert cluster.agent.failed
    assert stray in parse_restore(cluster.kernel.save()).tables["nat"].chains

    assert cluster.agent.reconcile()  # a full sync: shop-lb's chain is rewritten too
    assert not cluster.agent.failed
    assert lb_chain in written_service_chains(cluster.kernel.inputs[-1])
    assert cluster.saved() == cluster.fresh_full_sync()
