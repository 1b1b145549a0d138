"""Pod-to-pod traffic in a live lab, with each overlay: pods on one node talk
over the node's cni0 bridge, pods on different nodes over the overlay. With
vxlan the cross-node packet crosses the underlay inside UDP 8472 (the Lab's vxlanPort) between the
two nodes' addresses; with host-gw it crosses unencapsulated.

Both overlays run controlplane/default (host-gw on a copy whose lab.yaml
says `overlay: host-gw`), each as its own lab for the module.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from live_helpers import (
    CONTROLPLANE,
    Answer,
    answer_of,
    host_gw_copy,
    lab_name,
    running_lab,
)
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netemu.kernel import netns
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab
from netemu.net.plan import VXLAN_PORT, VXLAN_VNI

WEB_PORT = 8080
ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class Pod:
    key: str
    name: str
    ip: str
    node: str
    netns: str


@dataclass(frozen=True)
class OverlayLab:
    overlay: str
    lab: LiveLab


@pytest.fixture(scope="module", params=["vxlan", "host-gw"])
def overlay_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OverlayLab]:
    overlay: str = request.param
    if overlay == "vxlan":
        paths, name = [CONTROLPLANE / "default"], lab_name("pods-vxlan")
    else:
        paths, name = [host_gw_copy(tmp_path_factory.mktemp("host-gw"))], lab_name("pods-hostgw")
    with running_lab(paths, name) as lab:
        yield OverlayLab(overlay, lab)


def web_pods(lab: LiveLab) -> list[Pod]:
    pods = [
        Pod(key, key.split("/", 1)[1], p["ip"], p["node"], p["netns"])
        for key, p in lab.info()["pods"].items()
        if key.startswith("default/web-")
    ]
    assert len(pods) == 3, f"controlplane/default runs 3 web pods; the lab runs {pods}"
    return sorted(pods, key=lambda p: p.name)


def on_node(pods: list[Pod], node: str) -> list[Pod]:
    return [p for p in pods if p.node == node]


def direct_request(source: Pod, target: Pod) -> Answer:
    result = http_get(source.netns, target.ip, WEB_PORT)
    return answer_of(
        result, f"{source.name} ({source.ip}) -> {target.name} ({target.ip}):{WEB_PORT}"
    )


def test_lab_runs_the_overlay_asked_for(overlay_lab: OverlayLab) -> None:
    lab = overlay_lab.lab
    info = lab.info()
    assert info["overlay"] == overlay_lab.overlay
    links = lab.exec("node-1", ["ip", "-o", "link", "show"]).stdout
    assert ("flannel.1" in links) == (overlay_lab.overlay == "vxlan"), f"node-1 links: {links}"
    # node-1's route to node-2's pod CIDR: through the VXLAN device to
    # node-2's VTEP address, or straight to node-2's underlay address.
    (node_2,) = [n for n in lab.state()["nodes"] if n["metadata"]["name"] == "node-2"]
    cidr = node_2["spec"]["podCIDR"]
    routes = lab.exec("node-1", ["ip", "route", "show", cidr]).stdout.split()
    if overlay_lab.overlay == "vxlan":
        vtep = cidr.split("/")[0]  # flannel: the pod CIDR's network address
        assert routes[:5] == [cidr, "via", vtep, "dev", "flannel.1"], routes
    else:
        assert routes[:5] == [cidr, "via", info["nodes"]["node-2"]["ip"], "dev", "eth0"], routes


def test_pod_to_pod_on_the_same_node(overlay_lab: OverlayLab) -> None:
    pods = on_node(web_pods(overlay_lab.lab), "node-1")
    assert len(pods) == 2, f"expected two web pods on node-1, got {pods}"
    a, b = pods
    for source, target in ((a, b), (b, a)):
        answer = direct_request(source, target)
        assert answer.pod == target.name
        assert answer.pod_ip == target.ip
        # Pod-to-pod traffic is never NATed: the server sees the pod itself.
        assert answer.client_ip == source.ip
        assert answer.local[0] == source.ip


def test_pod_to_pod_across_nodes(overlay_lab: OverlayLab) -> None:
    pods = web_pods(overlay_lab.lab)
    (remote,) = on_node(pods, "node-2")
    for local in on_node(pods, "node-1"):
        for source, target in ((local, remote), (remote, local)):
            answer = direct_request(source, target)
            assert answer.pod == target.name
            assert answer.pod_ip == target.ip
            assert answer.client_ip == source.ip


class Capture:
    """Every frame that crosses one interface of a namespace (both
    directions), from a raw AF_PACKET socket opened inside the namespace:
    the kernel queues frames from `bind` on, so a request made between
    `start` and `frames` is captured whole."""

    def __init__(self, netns_name: str, ifname: str) -> None:
        with netns.entered(netns_name):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self._drain()  # frames queued between socket() and bind() may come from any link

    def _drain(self) -> list[bytes]:
        frames = []
        while True:
            try:
                frames.append(self.sock.recv(65535))
            except BlockingIOError:
                return frames

    def frames(self, quiet: float = 0.2, limit: float = 2.0) -> list[Any]:
        """Frames captured so far, waiting until none came for `quiet` s."""
        captured: list[bytes] = []
        deadline = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            more = self._drain()
            if more:
                captured.extend(more)
                last = time.monotonic()
            time.sleep(0.01)
        return [Ether(frame) for frame in captured]

    def close(self) -> None:
        self.sock.close()


def _tcp_flow(packet: Any) -> tuple[str, int, str, int] | None:
    if IP not in packet or TCP not in packet:
        return None
    return (packet[IP].src, packet[TCP].sport, packet[IP].dst, packet[TCP].dport)


def test_cross_node_pod_traffic_on_the_underlay(overlay_lab: OverlayLab) -> None:
    lab = overlay_lab.lab
    info = lab.info()
    pods = web_pods(lab)
    source = on_node(pods, "node-1")[0]
    (target,) = on_node(pods, "node-2")
    node_1_ip, node_2_ip = info["nodes"]["node-1"]["ip"], info["nodes"]["node-2"]["ip"]
    # node-1's pod CIDR, from its Node object (spec.podCIDR).
    node_1_cidr = next(
        ipaddress.ip_network(n["spec"]["podCIDR"])
        for n in lab.state()["nodes"]
        if n["metadata"]["name"] == "node-1"
    )

    capture = Capture(info["nodes"]["node-1"]["netns"], "eth0")
    try:
        answer = direct_request(source, target)
        frames = capture.frames()
    finally:
        capture.close()
    assert answer.pod == target.name
    client_port = answer.local[1]
    request_flow = (source.ip, client_port, target.ip, WEB_PORT)
    reply_flow = (target.ip, WEB_PORT, source.ip, client_port)

    encapsulated = [f for f in frames if VXLAN in f]
    if overlay_lab.overlay == "vxlan":
        inner_flows: set[tuple[str, int, str, int]] = set()
        for frame in encapsulated:
            outer, vxlan = frame[IP], frame[VXLAN]
            assert frame[UDP].dport == VXLAN_PORT
            assert {outer.src, outer.dst} == {node_1_ip, node_2_ip}, frame.summary()
            assert vxlan.vni == VXLAN_VNI
            inner = _tcp_flow(vxlan.payload)
            if inner is not None:
                # The inner packet is the pods' own, addressed pod to pod, and
                # leaves the node its source pod is on (any pod's: a frame of an
                # earlier connection may still be on the wire).
                direction = (
                    (node_1_ip, node_2_ip)
                    if ipaddress.ip_address(inner[0]) in node_1_cidr
                    else (node_2_ip, node_1_ip)
                )
                assert (outer.src, outer.dst) == direction, frame.summary()
                inner_flows.add(inner)
        assert request_flow in inner_flows, (
            f"no VXLAN (UDP {VXLAN_PORT}) frame {node_1_ip} -> {node_2_ip} carrying "
            f"{source.ip}:{client_port} -> {target.ip}:{WEB_PORT}; captured: "
            + "; ".join(f.summary() for f in frames)
        )
        assert reply_flow in inner_flows, (
            f"no VXLAN frame {node_2_ip} -> {node_1_ip} carrying the reply "
            f"{target.ip}:{WEB_PORT} -> {source.ip}:{client_port}"
        )
        # Nothing of this connection crosses the underlay unencapsulated.
        bare = {_tcp_flow(f) for f in frames if VXLAN not in f}
        assert request_flow not in bare and reply_flow not in bare
    else:
        assert not encapsulated, "host-gw must not encapsulate: " + "; ".join(
            f.summary() for f in encapsulated
        )
        bare_flows = {_tcp_flow(f) for f in frames}
        assert request_flow in bare_flows, (
            f"host-gw: no frame {source.ip}:{client_port} -> {target.ip}:{WEB_PORT} "
            "on node-1's eth0; captured: " + "; ".join(f.summary() for f in frames)
        )
        assert reply_flow in bare_flows
