"""kube-proxy's UDP conntrack cleanup in a live lab: a UDP flow pinned to an
endpoint by its conntrack entry moves to a serving endpoint once the first
one is deleted, instead of sending datagrams into the void. In both of
kube-proxy's modes."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator

import pytest
from live_helpers import CONTROLPLANE, lab_name, mode_copy, running_lab

from netemu.kernel import netns
from netemu.lab import LiveLab

CLIENT_PORT = 40000


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    """The protocols lab with kube-proxy in each mode: both clean up alike."""
    mode = request.param
    path = (
        CONTROLPLANE / "protocols"
        if mode == "iptables"
        else mode_copy("protocols", tmp_path_factory.mktemp("ct"), mode)
    )
    with running_lab([path], lab_name(f"ct-{mode[:3]}")) as live:
        yield live


def _dns_node_port(lab: LiveLab) -> int:
    svc = next(s for s in lab.state()["services"] if s["metadata"]["name"] == "dns")
    return int(next(p["nodePort"] for p in svc["spec"]["ports"] if p.get("protocol") == "UDP"))


def _udp_conntrack(lab: LiveLab, node: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", lab.target(node).netns, "conntrack", "-L", "-p", "udp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_udp_flow_moves_to_a_serving_endpoint_when_its_endpoint_is_deleted(
    lab: LiveLab,
) -> None:
    info = lab.info()
    client = info["clients"]["client"]
    node_ip = info["nodes"]["node-1"]["ip"]
    node_port = _dns_node_port(lab)
    sock = netns.open_socket(lab.target("client").netns, socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((client["ip"], CLIENT_PORT))  # one 5-tuple: one conntrack entry
    sock.settimeout(1.0)

    def ask() -> str:
        sock.sendto(b"which pod?", (node_ip, node_port))
        return str(json.loads(sock.recv(4096))["pod"])

    try:
        first = ask()
        # The entry pins the flow: every datagram of it reaches the same pod.
        assert {ask() for _ in range(5)} == {first}
        first_ip = info["pods"][f"default/{first}"]["ip"]
        assert f"src={first_ip}" in _udp_conntrack(lab, "node-1")

        lab.delete([("Pod", "default", first)])

        # The same 5-tuple is answered at once by a pod that still serves.
        after = {ask() for _ in range(5)}
        assert first not in after and len(after) == 1
        assert f"src={first_ip}" not in _udp_conntrack(lab, "node-1")
    finally:
        sock.close()
