"""The compiled rules in a real kernel: iptables-restore accepts them inside a
fresh network namespace, and iptables-save gives back the same rule set, on
both iptables backends. The fake adapter must agree with the kernel."""

from __future__ import annotations

import fcntl
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from netemu.kernel.iptables import Backend, FakeIptables, KernelIptables
from netemu.pipeline import compile_rules, load_cluster, proxy_input
from netemu.rules.iptables import (
    compile_node,
    compile_sync,
)
from netemu.rules.model import parse_restore
from netemu.rules.spec import canonical_ruleset

LABS = sorted(p for p in (Path(__file__).parents[2] / "controlplane").iterdir() if p.is_dir())


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_kernel_saves_what_was_compiled(namespace: str, lab: Path, backend: Backend) -> None:
    state = load_cluster([lab])
    kernel = KernelIptables(namespace, backend)
    for node in state.nodes:
        compiled = compile_node(proxy_input(state, node.metadata.name or ""))
        kernel.restore(compiled.render(), noflush=False)
        saved = parse_restore(kernel.save())
        assert canonical_ruleset(saved) == canonical_ruleset(compiled), node.metadata.name


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_resync_replaces_kube_proxy_chains_and_matches_the_fake(
    namespace: str, backend: Backend
) -> None:
    state = load_cluster([LABS[0].parent / "default"])
    data = proxy_input(state, "node-1")
    kernel, fake = KernelIptables(namespace, backend), FakeIptables()
    for target in (kernel, fake):
        target.restore(compile_node(data).render(), noflush=False)
        # A second and third sync must not duplicate anything (declared chains are flushed).
        target.restore(compile_sync(data).render())
        target.restore(compile_sync(data).render())
    from_kernel = canonical_ruleset(parse_restore(kernel.save()))
    assert from_kernel == canonical_ruleset(compile_node(data))
    assert canonical_ruleset(parse_restore(fake.save())) == from_kernel


def test_foreign_chains_survive_a_sync(namespace: str) -> None:
    kernel = KernelIptables(namespace, "nft")
    kernel.restore(
        "*nat\n:CNI-OWN - [0:0]\n-A POSTROUTING -j CNI-OWN\n-A CNI-OWN -j RETURN\nCOMMIT\n"
    )
    state = load_cluster([LABS[0].parent / "default"])
    kernel.restore(compile_sync(proxy_input(state, "node-1")).render())
    saved = parse_restore(kernel.save())
    nat = saved.tables["nat"]
    assert [r.args for r in nat.chain_rules("CNI-OWN")] == ["-j RETURN"]
    assert [r.args for r in nat.chain_rules("POSTROUTING")] == ["-j CNI-OWN"]


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_ip6tables_save_what_the_ipv6_proxier_compiled(namespace: str, backend: Backend) -> None:
    # kube-proxy's IPv6 proxier's rules of the dual-stack lab, flannel's IPv6
    # rules included, and a REJECT for a Service whose IPv6 slices are gone
    # (ip6tables fills in icmp6-port-unreachable).
    state = load_cluster([LABS[0].parent / "dualstack"])
    no_v6_web = replace(
        state,
        endpoint_slices=tuple(
            s
            for s in state.endpoint_slices
            if s.address_type == "IPv4" or not (s.metadata.name or "").startswith("web-v6")
        ),
    )
    kernel = KernelIptables(namespace, backend, family="IPv6")
    for node in state.nodes:
        compiled = compile_rules(no_v6_web, node.metadata.name or "", family="IPv6")
        assert "-j REJECT" in compiled.render()
        kernel.restore(compiled.render(), noflush=False)
        saved = parse_restore(kernel.save())
        assert "icmp6-port-unreachable" in kernel.save()
        assert canonical_ruleset(saved) == canonical_ruleset(compiled), node.metadata.name
    # The IPv4 tables of the namespace stay empty of kube-proxy's chains.
    assert "KUBE-SERVICES" not in KernelIptables(namespace, backend).save()


def test_a_restore_takes_its_own_lock_file_not_the_hosts(namespace: str, tmp_path: Path) -> None:
    """KernelIptables(lock_file=...) makes iptables-restore take that xtables
    lock: it waits while another process holds that file, and does not wait
    for a holder of another file (another node's lock). Legacy only:
    iptables-nft-restore takes no xtables lock (nf_tables transactions)."""
    backend: Backend = "legacy"
    held, other = tmp_path / "held.lock", tmp_path / "other.lock"
    text = "*filter\n:NETEMU-LOCK-TEST - [0:0]\nCOMMIT\n"
    with open(held, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        KernelIptables(namespace, backend, lock_file=other).restore(text)  # does not wait
        waiting = threading.Thread(
            target=KernelIptables(namespace, backend, lock_file=held).restore, args=(text,)
        )
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()  # still waiting for the lock this test holds
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiting.join(10.0)
    assert not waiting.is_alive()
    assert "NETEMU-LOCK-TEST" in KernelIptables(namespace, backend).save()
