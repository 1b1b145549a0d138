"""The pod phase the kubelet reports once its containers have ended
(getPhase): Succeeded when all exited 0, Failed otherwise, and nothing
while one runs or waits to be restarted."""

from __future__ import annotations

from netemu.node.prober import pod_phase
from netemu.node.probes import ContainerLife


def life(policy: str) -> ContainerLife:
    return ContainerLife("c", {}, 0.0, 1000.0, policy)  # type: ignore[arg-type]


def test_never_all_zero_is_succeeded_any_nonzero_is_failed() -> None:
    a, b = life("Never"), life("Never")
    assert pod_phase([a, b]) is None  # both running
    a.exited(1.0, 1001.0, 0)
    assert pod_phase([a, b]) is None  # b still runs
    b.exited(2.0, 1002.0, 0)
    assert pod_phase([a, b]) == "Succeeded"
    c = life("Never")
    c.exited(1.0, 1001.0, 2)
    assert pod_phase([a, c]) == "Failed"


def test_on_failure_restarts_a_failed_container_so_no_phase_yet() -> None:
    a = life("OnFailure")
    a.exited(1.0, 1001.0, 1)
    assert a.waiting
    assert pod_phase([a]) is None
    ok = life("OnFailure")
    ok.exited(1.0, 1001.0, 0)
    assert pod_phase([ok]) == "Succeeded"


def test_always_never_ends() -> None:
    a = life("Always")
    a.exited(1.0, 1001.0, 0)
    assert pod_phase([a]) is None
