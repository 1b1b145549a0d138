"""A re-sync on a node that already holds rules: kube-proxy flushes and deletes
the service and endpoint chains it no longer uses (nat table, isServiceChainName
prefixes) and leaves every other chain alone.

States A and B are the `default` lab and edited copies of its manifests (one
Service deleted, or the Deployment scaled down), run through the control plane
as the CLI does; node-1 is the node under test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netemu.kernel.iptables import FakeIptables
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules import names as n
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import compile_node, compile_resync, compile_sync
from netemu.rules.model import RuleSet, parse_restore
from netemu.rules.spec import canonical_ruleset

DEFAULT_LAB = Path(__file__).parents[2] / "controlplane" / "default"
NODE = "node-1"


@pytest.fixture
def state_a() -> ProxyInput:
    return proxy_input(load_cluster([DEFAULT_LAB]), NODE)


def kernel_after(data: ProxyInput) -> RuleSet:
    """What iptables-save of a node freshly given compile_node(data) parses to."""
    return parse_restore(compile_node(data).render())


def service_chains(data: ProxyInput, service: str) -> set[str]:
    """The SVC/SVL/EXT/FW and SEP chain names of one service, from kube-proxy's
    naming scheme (not from compiled rules)."""
    out: set[str] = set()
    for sp in data.service_ports:
        if sp.name != service:
            continue
        digest = n.port_proto_hash(sp.name_string, sp.protocol)
        out |= {p + digest for p in (n.SVC_PREFIX, n.SVL_PREFIX, n.EXT_PREFIX, n.FW_PREFIX)}
        out |= {
            n.endpoint_chain(sp.name_string, sp.protocol, ep.text) for ep in data.endpoints_of(sp)
        }
    return out


def test_removed_service_chains_are_flushed_then_deleted(
    default_lab_variant: Callable[..., ProxyInput], state_a: ProxyInput
) -> None:
    existing = kernel_after(state_a)
    state_b = default_lab_variant(drop_service="web-local")
    resync = compile_resync(state_b, existing)
    nat = resync.tables["nat"]

    # web-local (NodePort, externalTrafficPolicy Local, no LB source ranges)
    # had SVC, SVL, EXT and one SEP per endpoint on node-1; no FW chain.
    expected = service_chains(state_a, "web-local") & set(existing.tables["nat"].chains)
    assert {c[:9] for c in expected} == {"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-SEP-"}
    assert len(expected) == 3 + 3
    assert nat.deletions == sorted(expected)

    sync_chains = compile_sync(state_b).tables["nat"].chains
    # Declared (flushed) after the chains of this sync, in the same sorted order.
    assert nat.chains == [*sync_chains, *sorted(expected)]
    assert not any(rule.chain in expected for rule in nat.rules)
    # The other services' chains are all still wanted.
    for other in ("web", "web-nodeport"):
        assert service_chains(state_b, other) & set(existing.tables["nat"].chains) <= set(
            sync_chains
        )

    # In the rendered input every flush comes before the first deletion.
    lines = resync.render().splitlines()
    nat_lines = lines[lines.index("*nat") :]
    for chain in expected:
        assert nat_lines.index(f":{chain} - [0:0]") < nat_lines.index(f"-X {chain}")
    first_delete = min(i for i, line in enumerate(nat_lines) if line.startswith("-X "))
    assert all(not line.startswith("-A ") for line in nat_lines[first_delete:])
    # The filter table is never scanned for stale chains.
    assert resync.tables["filter"].deletions == []


def test_removed_endpoint_loses_only_its_endpoint_chains(
    default_lab_variant: Callable[..., ProxyInput], state_a: ProxyInput
) -> None:
    state_b = default_lab_variant(replicas=2)
    gone = {
        n.endpoint_chain(sp.name_string, sp.protocol, ep.text)
        for sp in state_a.service_ports
        for ep in state_a.endpoints_of(sp)
        if ep.text not in {e.text for e in state_b.endpoints_of(sp)}
    }
    # One pod gone, and it backed all three services with endpoints.
    assert len(gone) == 3
    nat = compile_resync(state_b, kernel_after(state_a)).tables["nat"]
    assert nat.deletions == sorted(gone)
    assert not any(c.startswith("KUBE-SVC-") for c in nat.deletions)


def test_chains_kube_proxy_does_not_own_are_never_deleted(state_a: ProxyInput) -> None:
    existing = kernel_after(state_a)
    foreign = [
        "FOO",
        "KUBE-FIREWALL",
        "KUBE-MARK-MASQ",
        "KUBE-MARK-DROP",
        "KUBE-NODEPORTS",
        "KUBE-SEPARATE",  # not the KUBE-SEP- prefix
        "KUBE-XLB-ABCDEFGHIJKLMNOP",  # dropped from isServiceChainName after 1.26
        "CNI-KUBE-SVC-ABCDEFGHIJKLMNOP",
    ]
    for chain in foreign:
        existing.table("nat").declare(chain)
        existing.table("filter").declare(chain)
    # kube-proxy saves only the nat table: a KUBE-SVC- chain in filter stays.
    existing.table("filter").declare("KUBE-SVC-ABCDEFGHIJKLMNOP")
    existing.table("mangle").declare("KUBE-SEP-ABCDEFGHIJKLMNOP")

    resync = compile_resync(state_a, existing)
    assert all(table.deletions == [] for table in resync.tables.values())
    assert resync.render() == compile_sync(state_a).render()


def test_stale_prefixed_nat_chain_is_deleted_whoever_made_it(state_a: ProxyInput) -> None:
    existing = kernel_after(state_a)
    stale = [p + "ABCDEFGHIJKLMNOP" for p in (n.SVC_PREFIX, n.SVL_PREFIX, n.EXT_PREFIX)]
    stale += [n.FW_PREFIX + "ZZ", n.SEP_PREFIX + "X"]
    for chain in stale:
        existing.table("nat").declare(chain)
    assert compile_resync(state_a, existing).tables["nat"].deletions == sorted(stale)


def test_resync_on_an_empty_or_current_kernel_is_a_plain_sync(state_a: ProxyInput) -> None:
    plain = compile_sync(state_a).render()
    assert compile_resync(state_a, RuleSet()).render() == plain
    assert compile_resync(state_a, kernel_after(state_a)).render() == plain


@pytest.mark.parametrize(
    "edit",
    [{"drop_service": "web-local"}, {"drop_service": "web"}, {"replicas": 1}, {"replicas": 0}],
    ids=["drop-web-local", "drop-web", "scale-to-1", "scale-to-0"],
)
def test_fake_kernel_ends_with_exactly_the_new_state(
    default_lab_variant: Callable[..., ProxyInput], state_a: ProxyInput, edit: dict[str, Any]
) -> None:
    state_b = default_lab_variant(**edit)
    node = FakeIptables()
    node.restore(compile_node(state_a).render(), noflush=False)
    node.restore(compile_resync(state_b, parse_restore(node.save())).render())

    fresh = FakeIptables()
    fresh.restore(compile_node(state_b).render(), noflush=False)
    assert canonical_ruleset(parse_restore(node.save())) == canonical_ruleset(
        parse_restore(fresh.save())
    )

    # Without the deletions the stale chains would have stayed behind (empty).
    plain = FakeIptables()
    plain.restore(compile_node(state_a).render(), noflush=False)
    plain.restore(compile_sync(state_b).render())
    assert canonical_ruleset(parse_restore(plain.save())) != canonical_ruleset(
        parse_restore(fresh.save())
    )
