"""The report builder on a recorded trace: the frames, rule trace and
conntrack events the kernel produced when an external client reached the
default lab's `web-nodeport` on node-1 and was sent to the pod on node-2
(DNAT, masquerade, VXLAN). Recorded from a live lab with netemu.trace.live
(`recorded-nodeport-vxlan.json`: lab info and state, every captured frame
with its namespace, interface, direction and kernel timestamp, and the raw
output of xtables-monitor --trace and conntrack -E per node).

No kernel needed: this pins how evidence becomes hops, verdict and summary.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from scapy.utils import RawPcapNgReader

from netemu.api.core import EndpointSlice, Node, Pod, Service
from netemu.controlplane.state import ClusterState
from netemu.kernel.capture import Frame, write_pcapng
from netemu.trace.ctevents import parse_events
from netemu.trace.flow import resolve_flow
from netemu.trace.nftrace import parse_trace
from netemu.trace.report import (
    Answer,
    Evidence,
    TraceReport,
    build_report,
    capture_roles,
    pcap_names,
)
from netemu.trace.topology import Topology

DATA = Path(__file__).parent / "data" / "trace"


@cache
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "recorded-nodeport-vxlan.json").read_text())
    return data


def evidence() -> Evidence:
    data = recorded()
    return Evidence(
        sport=data["sport"],
        frames=[
            Frame(
                netns=f["netns"],
                interface=f["interface"],
                direction=f["direction"],
                timestamp=f["timestamp"],
                data=bytes.fromhex(f["data"]),
            )
            for f in data["frames"]
        ],
        traces={node: parse_trace(text) for node, text in data["traces"].items()},
        conntrack={node: parse_events(text) for node, text in data["conntrack"].items()},
    )


def report() -> TraceReport:
    data = recorded()
    raw = data["state"]
    state = ClusterState(
        nodes=tuple(Node.model_validate(o) for o in raw["nodes"]),
        services=tuple(Service.model_validate(o) for o in raw["services"]),
        pods=tuple(Pod.model_validate(o) for o in raw["pods"]),
        endpoint_slices=tuple(EndpointSlice.model_validate(o) for o in raw["endpointslices"]),
    )
    topology = Topology.from_info(data["info"])
    flow = resolve_flow(state, topology, data["from"], data["to"])
    answer = Answer(outcome=data["answer"]["outcome"], reply=data["answer"]["reply"])
    return build_report("t-1", flow, topology, evidence(), answer)


NODE1, NODE2 = "192.168.56.11", "192.168.56.12"
CLIENT = "192.168.56.20"
ENDPOINT = "10.244.1.2"
NODE1_VTEP = "10.244.0.0"


def test_request_leg_goes_client_node1_vxlan_node2_pod() -> None:
    hops = [h for h in report().hops if h.leg == "request"]
    steps = [(h.site.split(" ")[0], h.node, h.interface, h.direction, h.action) for h in hops]
    assert steps == [
        ("client", None, "eth0", "out", "Forwarded"),
        ("underlay", None, "c0-client", "in", "Forwarded"),
        ("underlay", None, "n0-node-1", "out", "Forwarded"),
        ("node", "node-1", "eth0", "in", "Forwarded"),
        ("node", "node-1", None, None, "DNAT"),
        ("node", "node-1", None, None, "Masquerade"),
        ("node", "node-1", "flannel.1", "out", "Routed"),
        ("node", "node-1", "eth0", "out", "Encapsulated"),
        ("underlay", None, "n0-node-1", "in", "Forwarded"),
        ("underlay", None, "n1-node-2", "out", "Forwarded"),
        ("node", "node-2", "eth0", "in", "Forwarded"),
        ("node", "node-2", "flannel.1", "in", "Decapsulated"),
        ("node", "node-2", "cni0", "out", "Routed"),
        ("node", "node-2", hops[13].interface, "out", "Forwarded"),
        ("pod", "node-2", "eth0", "in", "Delivered"),
    ]
    assert hops[13].interface is not None and hops[13].interface.startswith("veth")


def test_nat_hops_name_the_rules_and_addresses() -> None:
    hops = {h.action: h for h in report().hops if h.leg == "request"}
    dnat, masq = hops["DNAT"], hops["Masquerade"]
    assert dnat.translated == f"{ENDPOINT}:8080"
    assert dnat.rule is not None and dnat.rule.table == "nat"
    assert dnat.rule.chain.startswith("KUBE-SEP-")
    assert dnat.rule.rule.endswith(f"-j DNAT --to-destination {ENDPOINT}:8080")
    # between the two translations: the client's address, the endpoint's
    assert (dnat.packet.src, dnat.packet.dst, dnat.packet.dport) == (CLIENT, ENDPOINT, 8080)
    assert dnat.packet.ttl == 64  # DNAT happens in PREROUTING, before the TTL drops
    assert masq.rule is not None and masq.rule.chain == "KUBE-POSTROUTING"
    assert "-j MASQUERADE --random-fully" in masq.rule.rule
    assert masq.translated is not None and masq.translated.startswith(f"{NODE1_VTEP}:")


def test_vxlan_hop_shows_outer_headers() -> None:
    (encap,) = [h for h in report().hops if h.action == "Encapsulated" and h.leg == "request"]
    assert encap.tunnel is not None
    assert (encap.tunnel["src"], encap.tunnel["dst"]) == (NODE1, NODE2)
    assert (encap.tunnel["dport"], encap.tunnel["vni"]) == (4789, 1)
    assert (encap.packet.src, encap.packet.dst) == (NODE1_VTEP, ENDPOINT)


def test_reply_is_translated_back_by_conntrack() -> None:
    hops = [h for h in report().hops if h.leg == "reply"]
    actions = [h.action for h in hops]
    assert actions[0] == "Forwarded" and hops[0].site.startswith("pod ")
    assert actions[-1] == "Delivered" and hops[-1].site == "client client"
    assert "Encapsulated" in actions and "Decapsulated" in actions
    assert actions.index("Un-SNAT") < actions.index("Un-DNAT")
    un_dnat = hops[actions.index("Un-DNAT")]
    assert un_dnat.node == "node-1" and un_dnat.translated == f"{NODE1}:30080"
    assert (hops[-1].packet.src, hops[-1].packet.sport) == (NODE1, 30080)


def test_verdict_endpoints_and_masquerade_come_from_conntrack() -> None:
    r = report()
    assert (r.outcome, r.verdict, r.endpoints, r.masquerade) == (
        "delivered",
        "DNAT",
        [f"{ENDPOINT}:8080"],
        True,
    )
    assert r.seen_client == NODE1_VTEP
    assert r.delivered_to is not None and r.delivered_to.endswith("on node-2")
    nodes = [c["node"] for c in r.conntrack]
    assert nodes == ["node-1", "node-2"]
    assert r.conntrack[0]["original"]["dst"] == NODE1 and r.conntrack[0]["dnat"]


def test_rules_are_node1s_trace_of_the_first_packet_in_hook_order() -> None:
    r = report()
    chains = [(rule.table, rule.chain) for rule in r.rules]
    assert chains[0] == ("nat", "PREROUTING")
    assert ("nat", "KUBE-NODEPORTS") in chains
    assert chains.index(("nat", "KUBE-NODEPORTS")) < chains.index(("filter", "FORWARD"))
    assert chains[-1] == ("nat", "KUBE-POSTROUTING")
    assert all(rule.table != "raw" for rule in r.rules)  # netemu's own TRACE rules are left out


def test_summary_line() -> None:
    r = report()
    summary = r.summary()
    assert summary.startswith(f"client {CLIENT}:{r.sport} → {NODE1}:30080 ⇒ DNAT {ENDPOINT}:8080 (")
    assert "KUBE-SVC-" in summary and "/KUBE-SEP-" in summary
    assert f"⇒ SNAT {NODE1_VTEP} ⇒ VXLAN {NODE1} → {NODE2} ⇒ delivered to web-" in summary
    assert summary.endswith(f"on node-2 (seen client {NODE1_VTEP})")


def test_json_shares_the_offline_fields() -> None:
    data = report().to_dict()
    for key in ("node", "packet", "localOrigin", "verdict", "endpoints", "masquerade", "rules"):
        assert key in data
    assert data["node"] == "node-1" and data["packet"]["dport"] == 30080
    assert all(set(rule) == {"table", "chain", "rule"} for rule in data["rules"])
    assert json.loads(json.dumps(data)) == data


def test_pcap_points_are_numbered_in_the_order_the_flow_reached_them() -> None:
    frames = report().frames
    names = pcap_names(frames)
    ordered = list(names.values())
    assert ordered[0] == "01-netemu_default_ext_client-eth0.pcap"
    assert ordered[1] == "02-netemu_default_underlay-c0-client.pcap"
    assert len(set(ordered)) == len(ordered)
    # Only the flow's frames: every one of them decodes to one of its tuples.
    assert 0 < len(frames) <= len(evidence().frames)


def test_frames_of_other_traffic_are_left_out() -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import ARP, Ether

    base = evidence()
    first = base.frames[0]
    others = [
        bytes(Ether() / ARP(psrc=CLIENT, pdst=NODE1)),
        bytes(Ether() / IP(src=CLIENT, dst=NODE1) / TCP(sport=40000, dport=30080, flags="S")),
    ]
    noisy = Evidence(
        sport=base.sport,
        frames=[
            *base.frames,
            *(
                Frame(first.netns, first.interface, "out", first.timestamp + 0.001, data)
                for data in others
            ),
        ],
        traces=base.traces,
        conntrack=base.conntrack,
    )
    r = report()
    noisy_report = build_report(
        "t-2", r.flow, Topology.from_info(recorded()["info"]), noisy, r.answer
    )
    assert [f.data for f in noisy_report.frames] == [f.data for f in r.frames]
    assert len(noisy_report.frames) == len(base.frames)


def test_copies_a_bridge_floods_to_other_pods_are_not_hops() -> None:
    """While node-2's bridge has not learnt a MAC it floods the frame out of
    every port: another pod's veth and eth0 see the packet too. Those copies
    stay in the pcaps but are not hops of the packet's path."""
    base = evidence()
    r = report()
    delivered = r.hops[[h.action for h in r.hops].index("Delivered")]
    other = next(
        p for p in Topology.from_info(recorded()["info"]).pods.values() if p.ip != ENDPOINT
    )
    (original,) = [
        f for f in base.frames if f.netns == delivered.netns and f.timestamp == delivered.timestamp
    ]
    assert other.host_veth is not None
    node_netns = recorded()["info"]["nodes"][other.node]["netns"]
    flooded = [
        Frame(node_netns, other.host_veth, "out", original.timestamp - 2e-6, original.data),
        Frame(other.netns, "eth0", "in", original.timestamp - 1e-6, original.data),
    ]
    noisy = Evidence(
        sport=base.sport,
        frames=[*base.frames, *flooded],
        traces=base.traces,
        conntrack=base.conntrack,
    )
    topology = Topology.from_info(recorded()["info"])
    flooded_report = build_report("t-3", r.flow, topology, noisy, r.answer)
    assert [(h.netns, h.interface, h.action) for h in flooded_report.hops] == [
        (h.netns, h.interface, h.action) for h in r.hops
    ]
    assert len(flooded_report.frames) == len(r.frames) + 2  # the pcaps keep them


def test_pcap_names_fit_one_path_component_however_long_the_namespace() -> None:
    long_netns = "netemu_lab_pod_default_" + "p" * 232  # a namespace name of 255 bytes
    frames = [
        Frame(netns=long_netns, interface="eth0", direction="in", timestamp=1.0, data=b""),
        Frame(netns=long_netns, interface="lo", direction="in", timestamp=2.0, data=b""),
        Frame(netns="short", interface="eth0", direction="in", timestamp=3.0, data=b""),
    ]
    names = list(pcap_names(frames).values())
    assert [len(name.encode()) for name in names[:2]] == [255, 255]
    assert names[0].startswith("01-netemu_lab_pod_default_ppp") and names[0].endswith("-eth0.pcap")
    assert names[1].startswith("02-") and names[1].endswith("-lo.pcap")
    assert names[2] == "03-short-eth0.pcap"


def test_vxlan_is_recognised_on_the_labs_own_port_only() -> None:
    """The recorded lab tunnels on UDP 4789: a lab whose overlay port is
    8472 would see those frames as plain UDP, not as its own tunnel."""
    info = recorded()["info"]
    assert Topology.from_info(info).vxlan_port == 4789
    assert Topology.from_info({**info, "vxlanPort": 8472}).vxlan_port == 8472
    assert Topology.from_info({**info, "overlay": "host-gw"}).vxlan_port is None
    r = report()
    assert any(h.tunnel is not None for h in r.hops)
    other = replace(Topology.from_info(info), tunnel_port=8472)
    elsewhere = build_report("t-3", r.flow, other, evidence(), r.answer)
    assert all(h.tunnel is None for h in elsewhere.hops)
    assert "VXLAN" in r.summary() and "VXLAN" not in elsewhere.summary()


def test_capture_roles_name_each_capture_point_by_its_place_in_the_flow() -> None:
    r = report()
    roles = capture_roles(r.hops)
    node1 = next(h.netns for h in r.hops if h.node == "node-1")
    pod = next(h for h in r.hops if h.site.startswith("pod "))
    assert roles[(node1, "eth0")] == "node node-1 uplink"
    assert roles[(node1, "flannel.1")] == "node node-1 vxlan"
    assert roles[(pod.netns, "eth0")] == pod.site  # "pod default/...": nothing to add
    underlay = [role for (netns, _), role in roles.items() if "underlay" in netns]
    assert underlay and set(underlay) == {"underlay switch"}
    # Every capture point a hop names, and nothing else (netfilter's own
    # decisions have no interface).
    assert set(roles) == {(h.netns, h.interface) for h in r.hops if h.interface}


def test_merged_pcapng_of_a_trace_has_one_interface_per_pcap(tmp_path: Path) -> None:
    """The merged file holds what the per-point pcaps hold: as many
    interfaces as pcaps, named after their capture points, each frame on
    its own point's interface, in time order."""
    r = report()
    path = tmp_path / "merged.pcapng"
    write_pcapng(path, r.frames, capture_roles(r.hops))
    opened: Any = RawPcapNgReader(str(path))  # typed as its pcap parent by Scapy
    with opened as reader:
        packets = list(reader)
        names = [options["name"].decode() for _, _, options in reader.interfaces]
    assert names == [f"{netns}/{interface}" for netns, interface in pcap_names(r.frames)]
    assert [meta.ifname.decode() for _, meta in packets] == [
        f"{f.netns}/{f.interface}" for f in r.frames
    ]
    stamps = [(meta.tshigh << 32) | meta.tslow for _, meta in packets]
    assert stamps == [f.nanoseconds for f in r.frames] == sorted(stamps)


def test_the_copies_of_one_packet_share_a_packet_id() -> None:
    """Every packet of this flow crossed the client's eth0 once (the
    requests out, the answers in), whatever NAT and VXLAN made of it
    elsewhere: there are as many packet ids as frames there, numbered from
    1 in the order first seen."""
    r = report()
    assert len(r.packet_ids) == len(r.frames)
    at_client = [i for f, i in zip(r.frames, r.packet_ids, strict=True) if "ext_client" in f.netns]
    assert sorted(at_client) == list(range(1, len(at_client) + 1))
    assert set(r.packet_ids) == set(at_client)
    first_seen = list(dict.fromkeys(r.packet_ids))
    assert first_seen == sorted(first_seen)
    # The SYN the client sent is the first packet; every capture point the
    # request leg names saw it (node-1 and node-2, inside VXLAN in between).
    syn_points = {
        (f.netns, f.interface) for f, i in zip(r.frames, r.packet_ids, strict=True) if i == 1
    }
    request = {(h.netns, h.interface) for h in r.hops if h.leg == "request" and h.interface}
    assert request <= syn_points
