"""rules/<lab>/<node>.iptables (and <node>.ip6tables on a dual-stack or IPv6
lab) are what `netemu compile --write` produces now.

When this fails, the compiler's output changed: review the diff, then run
`netemu compile -f controlplane/<lab> --write` and commit the new goldens.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from netemu.controlplane.state import ClusterState
from netemu.pipeline import RULES_SUFFIX, compile_rules, lab_name, load_cluster, proxy_families
from netemu.rules.input import IPFamily

ROOT = Path(__file__).parents[2]
LABS = sorted(p for p in (ROOT / "controlplane").iterdir() if p.is_dir())


@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_golden_rules_are_current(lab: Path) -> None:
    state = load_cluster([lab])
    name = lab_name(state.lab, [str(lab)])
    assert state.nodes, f"{lab} defines no nodes"
    for node in state.nodes:
        node_name = node.metadata.name or ""
        for family in proxy_families(state, node_name):
            check_golden(lab, state, name, node_name, family)


def check_golden(
    lab: Path, state: ClusterState, name: str, node_name: str, family: IPFamily
) -> None:
    """The golden of one family's rules on one node is what compiles now."""
    golden = ROOT / "rules" / name / f"{node_name}.{RULES_SUFFIX[family]}"
    assert golden.exists(), f"missing {golden}: run netemu compile -f {lab} --write"
    expected = golden.read_text()
    actual = compile_rules(state, node_name, family).render()
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
            f"{name}/{n.metadata.name}.{RULES_SUFFIX[family]}"
            for n in state.nodes
            for family in proxy_families(state, n.metadata.name or "")
        }
    present = {
        str(p.relative_to(ROOT / "rules"))
        for suffix in RULES_SUFFIX.values()
        for p in (ROOT / "rules").rglob(f"*.{suffix}")
    }
    assert present == expected
