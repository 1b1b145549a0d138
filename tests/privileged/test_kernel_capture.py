"""Packet capture with AF_PACKET sockets in lab namespaces: real frames
between two namespaces joined by a veth pair (and across a bridge) are seen
on both ends with the right interface names, directions and kernel
timestamps, and survive a round trip through a nanosecond pcap file."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from netemu.kernel import netns
from netemu.kernel.capture import Capture, CaptureError, Frame, write_pcap
from netemu.kernel.processes import command_in

A_IP = "10.124.0.1"
B_IP = "10.124.0.2"
UDP_PORT = 5300
TCP_PORT = 5301


@dataclass(frozen=True)
class Pair:
    a: str  # namespace with interface `a_if`, address A_IP
    b: str  # namespace with interface `b_if`, address B_IP
    a_if: str
    b_if: str
    suffix: str


def run_in(name: str, *argv: str) -> None:
    subprocess.run(command_in(name, argv), check=True, capture_output=True)


def wait_up(name: str, *ifnames: str) -> None:
    """Until the links are operationally up: a new link drops what it is
    given until the kernel's link watcher activates it, which can lag under
    load (and sets the operational state at the same time)."""
    deadline = time.monotonic() + 5.0
    for ifname in ifnames:
        while True:
            shown = subprocess.run(
                command_in(name, ["ip", "-o", "link", "show", "dev", ifname]),
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            if "state UP" in shown:
                break
            assert time.monotonic() < deadline, shown
            time.sleep(0.01)


def quiet_namespace(name: str) -> None:
    """No IPv6 on new links: router solicitations and DAD probes would
    otherwise appear at random moments and make captures unpredictable."""
    netns.write_sysctls(
        name, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    )


@pytest.fixture
def pair() -> Iterator[Pair]:
    suffix = uuid.uuid4().hex[:8]
    a, b = f"netemu_test_{suffix}", f"netemu_test_{uuid.uuid4().hex[:8]}"
    # Names that exist in no other namespace (checked in the tests), so a
    # right name proves it was resolved in the capturing namespace.
    a_if, b_if = f"nxa{suffix}", f"nxb{suffix}"
    try:
        for name in (a, b):
            netns.create(name)
            quiet_namespace(name)
            run_in(name, "ip", "link", "set", "lo", "up")
        # Created inside `a`, its peer placed straight into `b`: nothing
        # ever exists in the host's namespace.
        run_in(a, "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b)
        for name, ifname, address in ((a, a_if, A_IP), (b, b_if, B_IP)):
            run_in(name, "ip", "addr", "add", f"{address}/24", "dev", ifname)
            run_in(name, "ip", "link", "set", ifname, "up")
        wait_up(a, a_if)
        wait_up(b, b_if)
        yield Pair(a, b, a_if, b_if, suffix)
    finally:
        netns.remove(a)
        netns.remove(b)


@pytest.fixture
def capture(pair: Pair) -> Iterator[Capture]:
    with Capture([pair.a, pair.b]) as started:
        yield started


def only(frames: list[Frame], predicate: Callable[[Ether], bool]) -> list[Frame]:
    return [frame for frame in frames if predicate(Ether(frame.data))]


def where(frame: Frame) -> tuple[str, str, str]:
    return (frame.netns, frame.interface, frame.direction)


def drain_until(capture: Capture, enough: Callable[[list[Frame]], bool]) -> list[Frame]:
    """Frames drained until `enough` holds for all of them (the receiving
    side may still be queueing when the sender returns)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + 2.0
    while not enough(frames) and time.monotonic() < deadline:
        frames.extend(capture.drain())
        time.sleep(0.01)
    return frames


def assert_one_hop(frames: list[Frame], pair: Pair, forward: bool) -> None:
    """`frames` is the one frame leaving one end and arriving at the other,
    the send stamped no later than the arrival and drained in that order."""
    sender = (pair.a, pair.a_if, "out") if forward else (pair.b, pair.b_if, "out")
    receiver = (pair.b, pair.b_if, "in") if forward else (pair.a, pair.a_if, "in")
    assert [where(frame) for frame in frames] == [sender, receiver]
    sent, received = frames
    assert sent.data == received.data
    assert sent.nanoseconds <= received.nanoseconds
    assert sent.timestamp <= received.timestamp
    assert abs(received.timestamp - time.time()) < 10


def test_interface_names_exist_only_in_the_lab(pair: Pair) -> None:
    host = {name for _, name in socket.if_nameindex()}
    assert pair.a_if not in host
    assert pair.b_if not in host


def test_ping_is_seen_leaving_one_end_and_arriving_at_the_other(
    pair: Pair, capture: Capture
) -> None:
    run_in(pair.a, "ping", "-c", "1", "-W", "1", B_IP)

    def icmp(kind: int) -> Callable[[Ether], bool]:
        return lambda p: ICMP in p and p[ICMP].type == kind

    frames = drain_until(capture, lambda got: len(only(got, icmp(0))) == 2)
    requests, replies = only(frames, icmp(8)), only(frames, icmp(0))
    assert_one_hop(requests, pair, forward=True)
    assert_one_hop(replies, pair, forward=False)
    request = Ether(requests[0].data)
    assert (request[IP].src, request[IP].dst) == (A_IP, B_IP)
    # The request is answered after it arrived, on the merged timeline.
    assert frames.index(requests[1]) < frames.index(replies[0])
    # ARP resolved B's address first: the who-has is a broadcast, still "in".
    arp = only(frames, lambda p: p.type == 0x0806)
    assert [where(frame) for frame in arp[:2]] == [
        (pair.a, pair.a_if, "out"),
        (pair.b, pair.b_if, "in"),
    ]
    assert [f.nanoseconds for f in frames] == sorted(f.nanoseconds for f in frames)
    assert capture.drain() == []
    assert capture.dropped == 0


def test_udp_datagram_is_captured_on_both_ends(pair: Pair, capture: Capture) -> None:
    receiver = netns.open_socket(pair.b, socket.AF_INET, socket.SOCK_DGRAM)
    sender = netns.open_socket(pair.a, socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((B_IP, UDP_PORT))
        receiver.settimeout(2)
        sender.sendto(b"netemu-capture", (B_IP, UDP_PORT))
        assert receiver.recvfrom(100)[0] == b"netemu-capture"
        source_port = sender.getsockname()[1]

    def ours(p: Ether) -> bool:
        return UDP in p and p[UDP].dport == UDP_PORT

    frames = only(drain_until(capture, lambda got: len(only(got, ours)) == 2), ours)
    assert_one_hop(frames, pair, forward=True)
    datagram = Ether(frames[0].data)
    assert (datagram[IP].src, datagram[IP].dst) == (A_IP, B_IP)
    assert datagram[UDP].sport == source_port
    assert bytes(datagram[UDP].payload) == b"netemu-capture"
    assert capture.drain() == []


def test_tcp_connection_and_large_frames_are_captured_whole(pair: Pair, capture: Capture) -> None:
    payload = bytes(range(256)) * 400  # 100 KiB: GSO frames larger than the MTU
    with netns.open_socket(pair.b, socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((B_IP, TCP_PORT))
        server.listen()
        with netns.open_socket(pair.a, socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect((B_IP, TCP_PORT))
            connection, _ = server.accept()
            with connection:
                client.sendall(payload)
                received = b""
                connection.settimeout(2)
                while len(received) < len(payload):
                    received += connection.recv(65536)

    def to_server(p: Ether) -> bool:
        return TCP in p and p[TCP].dport == TCP_PORT

    def arrived(frame: Frame) -> bool:
        return frame.direction == "in" and to_server(Ether(frame.data))

    def all_data_in(got: list[Frame]) -> bool:
        return sum(len(Ether(f.data)[TCP].payload) for f in got if arrived(f)) >= len(payload)

    frames = drain_until(capture, all_data_in)
    assert all_data_in(frames)
    syn = only(frames, lambda p: to_server(p) and p[TCP].flags == "S")
    syn_ack = only(frames, lambda p: TCP in p and p[TCP].sport == TCP_PORT and p[TCP].flags == "SA")
    assert_one_hop(syn, pair, forward=True)
    assert_one_hop(syn_ack, pair, forward=False)
    assert frames.index(syn[1]) < frames.index(syn_ack[0])

    inbound = [f for f in frames if arrived(f)]
    assert b"".join(bytes(Ether(f.data)[TCP].payload) for f in inbound)[: len(payload)] == payload
    # Whole frames, not cut at the MTU or a buffer size: the IP length
    # covers everything after the Ethernet header.
    assert max(len(f.data) for f in inbound) > 1514
    assert all(Ether(f.data)[IP].len == len(f.data) - 14 for f in inbound)
    for sent in (f for f in frames if f.direction == "out" and to_server(Ether(f.data))):
        twin = next(f for f in inbound if f.data == sent.data)
        assert sent.nanoseconds <= twin.nanoseconds


def test_interfaces_created_after_start_are_captured(pair: Pair, capture: Capture) -> None:
    late_a, late_b = f"nxc{pair.suffix}", f"nxd{pair.suffix}"
    run_in(pair.a, "ip", "link", "add", late_a, "type", "veth", "peer", "name", late_b)
    run_in(pair.a, "ip", "link", "set", late_b, "netns", pair.b)
    run_in(pair.a, "ip", "addr", "add", "10.125.0.1/24", "dev", late_a)
    run_in(pair.b, "ip", "addr", "add", "10.125.0.2/24", "dev", late_b)
    run_in(pair.a, "ip", "link", "set", late_a, "up")
    run_in(pair.b, "ip", "link", "set", late_b, "up")
    wait_up(pair.a, late_a)
    wait_up(pair.b, late_b)
    run_in(pair.a, "ping", "-c", "1", "-W", "1", "10.125.0.2")

    def request(p: Ether) -> bool:
        return ICMP in p and p[ICMP].type == 8

    frames = only(drain_until(capture, lambda got: len(only(got, request)) == 2), request)
    assert [where(frame) for frame in frames] == [
        (pair.a, late_a, "out"),
        (pair.b, late_b, "in"),
    ]


def test_loopback_frames_are_seen_twice_with_ethernet_headers(pair: Pair, capture: Capture) -> None:
    with netns.open_socket(pair.a, socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"local", ("127.0.0.1", 9))

    def ours(p: Ether) -> bool:
        return UDP in p and p[UDP].dport == 9

    frames = only(drain_until(capture, lambda got: len(only(got, ours)) == 2), ours)
    assert [where(frame) for frame in frames] == [(pair.a, "lo", "out"), (pair.a, "lo", "in")]
    assert Ether(frames[0].data).dst == "00:00:00:00:00:00"


def test_bridge_ports_and_the_bridge_itself(pair: Pair) -> None:
    """A node namespace with a bridge and two pods: a frame between pods is
    seen on the pods and the bridge ports (OTHERHOST counts as "in"), never
    on the bridge device; a frame for the node is seen on the port and on
    the bridge with one timestamp, the port first."""
    node, pod1, pod2 = pair.a, pair.b, f"netemu_test_{uuid.uuid4().hex[:8]}"
    bridge, port1, port2 = f"nxbr{pair.suffix}", f"nxp{pair.suffix}", f"nxq{pair.suffix}"
    try:
        netns.create(pod2)
        quiet_namespace(pod2)
        run_in(node, "ip", "link", "add", bridge, "type", "bridge")
        run_in(node, "ip", "addr", "add", "10.126.0.1/24", "dev", bridge)
        run_in(node, "ip", "link", "set", bridge, "up")
        for port, pod, address in ((port1, pod1, "10.126.0.2"), (port2, pod2, "10.126.0.3")):
            run_in(node, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0")
            run_in(node, "ip", "link", "set", "eth0", "netns", pod)
            run_in(node, "ip", "link", "set", port, "master", bridge, "up")
            run_in(pod, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            run_in(pod, "ip", "link", "set", "eth0", "up")
            wait_up(node, port)
            wait_up(pod, "eth0")
        wait_up(node, bridge)
        # Warm the neighbour caches so only the probes below are captured.
        run_in(pod1, "ping", "-c", "1", "-W", "1", "10.126.0.3")
        run_in(pod1, "ping", "-c", "1", "-W", "1", "10.126.0.1")

        with Capture([node, pod1, pod2]) as capture:
            run_in(pod1, "ping", "-c", "1", "-W", "1", "10.126.0.3")

            def request_to(address: str) -> Callable[[Ether], bool]:
                return lambda p: ICMP in p and p[ICMP].type == 8 and p[IP].dst == address

            to_pod = only(
                drain_until(capture, lambda got: len(only(got, request_to("10.126.0.3"))) == 4),
                request_to("10.126.0.3"),
            )
            assert [where(frame) for frame in to_pod] == [
                (pod1, "eth0", "out"),
                (node, port1, "in"),
                (node, port2, "out"),
                (pod2, "eth0", "in"),
            ]

            run_in(pod1, "ping", "-c", "1", "-W", "1", "10.126.0.1")
            to_node = only(
                drain_until(capture, lambda got: len(only(got, request_to("10.126.0.1"))) == 3),
                request_to("10.126.0.1"),
            )
            assert [where(frame) for frame in to_node] == [
                (pod1, "eth0", "out"),
                (node, port1, "in"),
                (node, bridge, "in"),
            ]
            assert to_node[1].nanoseconds == to_node[2].nanoseconds
    finally:
        netns.remove(pod2)


def test_start_failure_names_the_namespace_and_closes_what_it_opened(pair: Pair) -> None:
    missing = f"netemu_test_{uuid.uuid4().hex[:8]}"
    before = len(list(Path("/proc/self/fd").iterdir()))
    capture = Capture([pair.a, missing])
    with pytest.raises(CaptureError, match=missing):
        capture.start()
    assert len(list(Path("/proc/self/fd").iterdir())) == before
    assert capture.drain() == []
    capture.close()
    capture.close()  # idempotent


def test_write_pcap_round_trips_through_scapy_and_tshark(
    pair: Pair, capture: Capture, tmp_path: Path
) -> None:
    run_in(pair.a, "ping", "-c", "2", "-i", "0.2", "-W", "1", B_IP)
    frames = drain_until(
        capture, lambda got: len(only(got, lambda p: ICMP in p and p[ICMP].type == 0)) == 4
    )
    # A frame built by hand, with only a float timestamp, is written too.
    by_hand = Frame(pair.a, pair.a_if, "out", 1_700_000_000.25, frames[0].data)
    frames.append(by_hand)
    path = tmp_path / "hop.pcap"
    write_pcap(path, frames)

    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [f.data for f in frames]
    expected = [Decimal(f.nanoseconds) / 10**9 for f in frames]
    assert [Decimal(p.time) for p in packets] == expected
    assert packets[-1].time == Decimal("1700000000.25")
    assert all(isinstance(p, Ether) for p in packets)

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    listed = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.dst"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [Decimal(line.split("\t")[0]) for line in listed] == expected
    assert {line.split("\t")[1] for line in listed} >= {A_IP, B_IP}


def test_write_pcap_keeps_sub_microsecond_order(tmp_path: Path) -> None:
    base = 1_790_000_000 * 10**9 + 123_456_000
    data = bytes(14) + b"x" * 46
    frames = [
        Frame("ns", "eth0", "out", (base + step) / 10**9, data, timestamp_ns=base + step)
        for step in (0, 1, 250, 999)
    ]
    path = tmp_path / "close.pcap"
    write_pcap(path, frames)
    times = [Decimal(p.time) for p in rdpcap(str(path))]
    assert times == [Decimal(base + step) / 10**9 for step in (0, 1, 250, 999)]


def test_write_pcap_of_no_frames_is_a_valid_empty_capture(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    write_pcap(path, [])
    assert len(rdpcap(str(path))) == 0


def test_frames_that_find_the_buffer_full_are_counted_as_dropped(pair: Pair) -> None:
    with Capture([pair.a], buffer_bytes=4096) as capture:
        with netns.open_socket(pair.a, socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(200):
                sender.sendto(b"x" * 1000, ("127.0.0.1", 9))
        frames = capture.drain()
        # Each datagram passes lo twice (out, then in): 400 frames sent.
        assert capture.dropped > 0
        assert len(frames) + capture.dropped >= 400
        assert capture.drain() == []


def test_drains_under_steady_traffic_never_return_an_arrival_before_its_departure(
    pair: Pair, capture: Capture
) -> None:
    stop = threading.Event()

    def send() -> None:
        # At most 2000 frames per socket: they fit its buffer even if the
        # drains fall behind (a dropped departure would spoil the check).
        with netns.open_socket(pair.a, socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for number in range(2000):
                if stop.is_set():
                    return
                sender.sendto(number.to_bytes(4, "big"), (B_IP, UDP_PORT))
                time.sleep(0.0001)

    sender = threading.Thread(target=send)
    sender.start()
    departed: set[bytes] = set()
    arrivals = 0
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            frames = capture.drain()
            assert [f.nanoseconds for f in frames] == sorted(f.nanoseconds for f in frames)
            for frame in frames:
                packet = Ether(frame.data)
                if UDP not in packet or packet[UDP].dport != UDP_PORT:
                    continue
                payload = bytes(packet[UDP].payload)
                if frame.direction == "out":
                    departed.add(payload)
                else:
                    assert payload in departed, "arrival drained before its departure"
                    arrivals += 1
    finally:
        stop.set()
        sender.join()
    assert arrivals > 100
    assert capture.dropped == 0


def test_frames_sent_right_after_start_carry_the_time_they_passed(pair: Pair) -> None:
    """The kernel switches packet timestamping on for the first socket that
    asks through deferred work, which may wait behind the work new
    namespaces and links caused; a frame sent before it ran would be
    stamped when drain() read it (this broke the TCP test above about one
    run in four). start() returns only once frames are stamped as they pass."""
    run_in(pair.a, "ping", "-c", "1", "-W", "1", B_IP)  # no ARP wait below
    with Capture([pair.a, pair.b]) as capture:
        with netns.open_socket(pair.a, socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"first", (B_IP, UDP_PORT))
            # A veth hands the frame to its peer within sendto().
            returned = time.time_ns()

        def ours(p: Ether) -> bool:
            return UDP in p and p[UDP].dport == UDP_PORT

        frames = only(drain_until(capture, lambda got: len(only(got, ours)) == 2), ours)
    assert [where(frame) for frame in frames] == [
        (pair.a, pair.a_if, "out"),
        (pair.b, pair.b_if, "in"),
    ]
    assert all(frame.nanoseconds <= returned for frame in frames)
