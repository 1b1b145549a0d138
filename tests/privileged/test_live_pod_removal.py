"""Removing pods: the node's pod bridge keeps its MAC (so the remaining pods'
gateway entry stays right), and a removed pod's open connections are closed
towards their clients before its veth goes, as when a container exits
before CNI DEL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab
from pyroute2 import IPRoute

from netemu.kernel import netns
from netemu.kernel.probe import HttpSession
from netemu.lab import LiveLab

ROUNDS = 3


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("rm")) as live:
        yield live


def _bridge_mac(lab: LiveLab, node: str) -> str:
    with netns.entered(lab.target(node).netns):
        ipr = IPRoute()
    try:
        link = ipr.link("get", index=ipr.link_lookup(ifname="cni0")[0])[0]
        return str(link.get("IFLA_ADDRESS"))
    finally:
        ipr.close()


def _cluster_ip(lab: LiveLab, name: str) -> str:
    svc = next(s for s in lab.state()["services"] if s["metadata"]["name"] == name)
    return str(svc["spec"]["clusterIP"])


def test_removed_pods_close_their_connections_and_bridges_keep_their_mac(lab: LiveLab) -> None:
    macs = {node: _bridge_mac(lab, node) for node in ("node-1", "node-2")}
    client_ns = lab.target("node-1").netns
    cluster_ip = _cluster_ip(lab, "web")
    for round_ in range(ROUNDS):
        lab.scale("Deployment", "default", "web", 5)
        sessions: dict[str, HttpSession] = {}
        for _ in range(300):
            session = HttpSession(client_ns, cluster_ip, 80, timeout=1.0)
            result = session.get("/")
            pod = result.reply["pod"] if result.reply else None
            if pod is not None and pod not in sessions:
                sessions[pod] = session
            else:
                session.close()
            if len(sessions) == 5:
                break
        assert len(sessions) == 5, f"round {round_}: sessions only on {sorted(sessions)}"

        lab.scale("Deployment", "default", "web", 1)
        survivors = {
            p["metadata"]["name"]
            for p in lab.state()["pods"]
            # Not the cluster DNS addon's pod in kube-system, nor the pods
            # still stopping after the scale-down (graceful deletion).
            if p["metadata"].get("namespace", "default") == "default"
            and not p["metadata"].get("deletionTimestamp")
        }
        assert len(survivors) == 1
        for pod, session in sessions.items():
            result = session.get("/")
            if pod in survivors:
                assert result.outcome == "answered", f"round {round_}: survivor {pod}: {result}"
            else:
                # Closed by the server (the client sees the connection end),
                # not left hanging until the client's own timeout.
                assert result.outcome == "error", f"round {round_}: removed {pod}: {result}"
            session.close()
    assert {node: _bridge_mac(lab, node) for node in macs} == macs
