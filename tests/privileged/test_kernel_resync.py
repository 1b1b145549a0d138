"""Stale chain deletion in a real kernel: a node given state A's rules, then a
re-sync to state B computed from its own iptables-save, holds exactly what a
fresh node given state B holds, on both iptables backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netemu.kernel.iptables import Backend, KernelIptables
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules.flannel import flannel_config
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import (
    compile_node,
    compile_resync,
    compile_sync,
)
from netemu.rules.model import parse_restore
from netemu.rules.spec import canonical_ruleset

DEFAULT_LAB = Path(__file__).parents[2] / "controlplane" / "default"
NODE = "node-1"


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize(
    "edit",
    [{"drop_service": "web-local"}, {"replicas": 1}, {"replicas": 0}],
    ids=["drop-web-local", "scale-to-1", "scale-to-0"],
)
def test_resync_leaves_exactly_the_new_state(
    namespace: str,
    default_lab_variant: Callable[..., ProxyInput],
    backend: Backend,
    edit: dict[str, Any],
) -> None:
    state_a = proxy_input(load_cluster([DEFAULT_LAB]), NODE)
    state_b = default_lab_variant(**edit)
    kernel = KernelIptables(namespace, backend)
    kernel.restore(compile_node(state_a).render(), noflush=True)

    resync = compile_resync(state_b, parse_restore(kernel.save()))
    stale = resync.tables["nat"].deletions
    assert stale, "state B should leave some of state A's chains unused"
    kernel.restore(resync.render())

    saved = parse_restore(kernel.save())
    assert canonical_ruleset(saved) == canonical_ruleset(compile_node(state_b))
    assert not set(stale) & set(saved.tables["nat"].chains)


def test_plain_sync_leaves_stale_chains_behind(
    namespace: str, default_lab_variant: Callable[..., ProxyInput]
) -> None:
    """The control: without the deletions the kernel keeps A's unused chains."""
    state_a = proxy_input(load_cluster([DEFAULT_LAB]), NODE)
    state_b = default_lab_variant(drop_service="web-local")
    kernel = KernelIptables(namespace, "nft")
    kernel.restore(compile_node(state_a).render(), noflush=True)
    stale = compile_resync(state_b, parse_restore(kernel.save())).tables["nat"].deletions
    kernel.restore(compile_sync(state_b).render())
    saved = parse_restore(kernel.save())
    assert set(stale) <= set(saved.tables["nat"].chains)
    assert canonical_ruleset(saved) != canonical_ruleset(compile_node(state_b))


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_resync_keeps_flannels_chains(
    namespace: str, default_lab_variant: Callable[..., ProxyInput], backend: Backend
) -> None:
    """flanneld's FLANNEL-POSTRTG and FLANNEL-FWD, written with the node's
    first restore, stay exactly as they were through kube-proxy's resyncs."""
    cluster = load_cluster([DEFAULT_LAB])
    state_a = proxy_input(cluster, NODE)
    flannel = flannel_config(cluster.lab, state_a.config.node_pod_cidr)
    assert flannel is not None
    kernel = KernelIptables(namespace, backend)
    kernel.restore(compile_node(state_a, flannel).render(), noflush=False)
    first = parse_restore(kernel.save())
    assert first.tables["nat"].chain_rules("FLANNEL-POSTRTG")
    assert first.tables["filter"].chain_rules("FLANNEL-FWD")

    state_b = default_lab_variant(drop_service="web-local")
    kernel.restore(compile_resync(state_b, parse_restore(kernel.save())).render())
    saved = parse_restore(kernel.save())
    assert canonical_ruleset(saved) == canonical_ruleset(compile_node(state_b, flannel))
    for table, chain in (("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD")):
        assert saved.tables[table].chain_rules(chain) == first.tables[table].chain_rules(chain)
