"""rules/<lab>/<node>.iptables (iptables mode) and rules/<lab>/<node>.nft
(nftables mode: the `ip kube-proxy` table) are what `netemu compile --write`
produces now, for every lab, whatever mode the lab itself runs in.

When this fails, the compiler's output changed: review the diff, then run
`netemu compile -f controlplane/<lab> --write --mode iptables` (and
`--mode nftables`) and commit the new goldens.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from netemu.controlplane.state import ClusterState
from netemu.pipeline import compile_nftables, compile_rules, lab_name, load_cluster

ROOT = Path(__file__).parents[2]
LABS = sorted(p for p in (ROOT / "controlplane").iterdir() if p.is_dir())
SUFFIXES = ("iptables", "nft")


def compiled(state: ClusterState, node_name: str, suffix: str) -> str:
    if suffix == "nft":
        return compile_nftables(state, node_name).dump()
    return compile_rules(state, node_name, "iptables").render()


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_golden_rules_are_current(lab: Path, suffix: str) -> None:
    state = load_cluster([lab])
    name = lab_name(state.lab, [str(lab)])
    assert state.nodes, f"{lab} defines no nodes"
    for node in state.nodes:
        node_name = node.metadata.name or ""
        golden = ROOT / "rules" / name / f"{node_name}.{suffix}"
        mode = "nftables" if suffix == "nft" else "iptables"
        assert golden.exists(), (
            f"missing {golden}: run netemu compile -f {lab} --write --mode {mode}"
        )
        expected = golden.read_text()
        actual = compiled(state, node_name, suffix)
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


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_golden_belongs_to_a_lab_node(suffix: str) -> None:
    expected = set()
    for lab in LABS:
        state = load_cluster([lab])
        name = lab_name(state.lab, [str(lab)])
        expected |= {f"{name}/{n.metadata.name}.{suffix}" for n in state.nodes}
    present = {str(p.relative_to(ROOT / "rules")) for p in (ROOT / "rules").rglob(f"*.{suffix}")}
    assert present == expected
