"""rules/<lab>/<node>.<suffix> are what `netemu compile --write` produces now,
for every lab in both kube-proxy modes, whatever mode the lab itself runs in,
one file per IP family of the lab: `.iptables` / `.ip6tables` (iptables
mode), `.nft` / `.ip6.nft` (nftables mode: the `ip kube-proxy` and
`ip6 kube-proxy` tables).

When this fails, the compiler's output changed: review the diff, then run
`netemu compile -f controlplane/<lab> --write --mode iptables` (and
`--mode nftables`) and commit the new goldens.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from netemu.controlplane.state import ClusterState
from netemu.pipeline import (
    RULES_SUFFIXES,
    ProxyMode,
    compile_nftables,
    compile_rules,
    lab_name,
    load_cluster,
    proxy_families,
    rules_suffix,
)
from netemu.rules.input import IPFamily

ROOT = Path(__file__).parents[2]
LABS = sorted(p for p in (ROOT / "controlplane").iterdir() if p.is_dir())
MODES: tuple[ProxyMode, ...] = ("iptables", "nftables")


def compiled(state: ClusterState, node_name: str, mode: ProxyMode, family: IPFamily) -> str:
    if mode == "nftables":
        return compile_nftables(state, node_name, family=family).dump()
    return compile_rules(state, node_name, family=family, mode="iptables").render()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_golden_rules_are_current(lab: Path, mode: ProxyMode) -> None:
    state = load_cluster([lab])
    name = lab_name(state.lab, [str(lab)])
    assert state.nodes, f"{lab} defines no nodes"
    for node in state.nodes:
        node_name = node.metadata.name or ""
        for family in proxy_families(state, node_name):
            golden = ROOT / "rules" / name / f"{node_name}.{rules_suffix(mode, family)}"
            assert golden.exists(), (
                f"missing {golden}: run netemu compile -f {lab} --write --mode {mode}"
            )
            expected = golden.read_text()
            actual = compiled(state, node_name, mode, family)
            if actual != expected:
                diff = "".join(
                    difflib.unified_diff(
                        expected.splitlines(keepends=True),
                        actual.splitlines(keepends=True),
                        fromfile=str(golden.relative_to(ROOT)),
                        tofile="compiled now",
                    )
                )
                pytest.fail(f"{golden.relative_to(ROOT)} drifted:\n{diff}")


def test_every_golden_belongs_to_a_lab_node() -> None:
    expected = set()
    for lab in LABS:
        state = load_cluster([lab])
        name = lab_name(state.lab, [str(lab)])
        expected |= {
            f"{name}/{n.metadata.name}.{rules_suffix(mode, family)}"
            for n in state.nodes
            for mode in MODES
            for family in proxy_families(state, n.metadata.name or "")
        }
    present = {
        str(p.relative_to(ROOT / "rules"))
        for p in (ROOT / "rules").rglob("*")
        if p.is_file() and any(p.name.endswith(f".{s}") for s in RULES_SUFFIXES.values())
    }
    assert present == expected
