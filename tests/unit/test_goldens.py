"""rules/<lab>/<node>.iptables are what `netemu compile --write` produces now.

When this fails, the compiler's output changed: review the diff, then run
`netemu compile -f controlplane/<lab> --write` and commit the new goldens.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from netemu.pipeline import compile_rules, lab_name, load_cluster

ROOT = Path(__file__).parents[2]
LABS = sorted(p for p in (ROOT / "controlplane").iterdir() if p.is_dir())


@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_golden_rules_are_current(lab: Path) -> None:
    state = load_cluster([lab])
    name = lab_name(state.lab, [str(lab)])
    assert state.nodes, f"{lab} defines no nodes"
    for node in state.nodes:
        node_name = node.metadata.name or ""
        golden = ROOT / "rules" / name / f"{node_name}.iptables"
        assert golden.exists(), f"missing {golden}: run netemu compile -f {lab} --write"
        expected = golden.read_text()
        actual = compile_rules(state, node_name).render()
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
        expected |= {f"{name}/{n.metadata.name}.iptables" for n in state.nodes}
    present = {str(p.relative_to(ROOT / "rules")) for p in (ROOT / "rules").rglob("*.iptables")}
    assert present == expected
