"""The merged capture's pcapng writer (netemu.kernel.capture.write_pcapng),
read back with Scapy's pcapng reader (an implementation of its own) and,
where installed, with tshark: one named interface per capture point, each
packet on its capture point's interface, in the given order, with its
kernel timestamp to the nanosecond, its direction and its packet id."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scapy.utils import RawPcapNgReader

from netemu.kernel.capture import PCAP_SNAPLEN, Frame, capture_point_name, write_pcapng

TSHARK_MISSING = "tshark is missing (./setup.sh installs it)"
BASE_NS = 1_790_000_000 * 10**9 + 123_456_789


def frame(netns: str, interface: str, direction: str, step: int, data: bytes) -> Frame:
    stamp = BASE_NS + step
    return Frame(netns, interface, direction, stamp / 10**9, data, timestamp_ns=stamp)  # type: ignore[arg-type]


def ethernet(payload: bytes) -> bytes:
    # An Ethernet header (IPv4 ethertype) and an odd-length payload, so the
    # writer has to pad the packet data to 32 bits.
    return bytes.fromhex("020000000001 020000000002 0800") + payload


# The same packet crossing three capture points, two of them called eth0 in
# different namespaces, then its answer back; 1 ns apart where the kernel
# stamps a veth pair's two ends almost at once.
FRAMES = [
    frame("netemu_lab_ext_client", "eth0", "out", 0, ethernet(b"request")),
    frame("netemu_lab_node_node-1", "eth0", "in", 1, ethernet(b"request")),
    frame("netemu_lab_node_node-1", "veth1234", "out", 250, ethernet(b"request")),
    frame("netemu_lab_node_node-1", "veth1234", "in", 999, ethernet(b"answer!")),
    frame("netemu_lab_node_node-1", "eth0", "out", 1_000, ethernet(b"answer!")),
    frame("netemu_lab_ext_client", "eth0", "in", 1_001, ethernet(b"answer!")),
]
POINTS = [
    ("netemu_lab_ext_client", "eth0"),
    ("netemu_lab_node_node-1", "eth0"),
    ("netemu_lab_node_node-1", "veth1234"),
]
NAMES = [f"{netns}/{interface}" for netns, interface in POINTS]
EXPECTED_IDS = [0, 1, 2, 2, 1, 0]
PACKET_IDS = [1, 1, 1, 2, 2, 2]  # the request at three points, then the answer
# The veth has no role given: its interface has no description.
ROLES = {POINTS[0]: "client client", POINTS[1]: "node node-1 uplink"}


def read_back(path: Path) -> tuple[list[dict[str, Any]], list[tuple[bytes, Any]]]:
    """The file's interfaces (Scapy's options dict, with linktype and
    snaplen) and its packets as (bytes, metadata)."""
    packets = []
    # Scapy's reader class is typed as its pcap parent (a metaclass picks it).
    opened: Any = RawPcapNgReader(str(path))
    with opened as reader:
        while True:
            try:
                # Scapy's iterator cuts packets to its MTU (64 KiB); its
                # read_packet refuses raw readers and points here instead.
                packets.append(reader._read_packet(size=PCAP_SNAPLEN))
            except EOFError:
                break
        interfaces = [
            {"linktype": linktype, "snaplen": snaplen, **options}
            for linktype, snaplen, options in reader.interfaces
        ]
    return interfaces, packets


def test_one_named_interface_per_capture_point_in_the_order_first_seen(tmp_path: Path) -> None:
    path = tmp_path / "merged.pcapng"
    write_pcapng(path, FRAMES, ROLES)
    interfaces, _ = read_back(path)
    assert [i["name"] for i in interfaces] == [n.encode() for n in NAMES]
    # Ethernet, the snap length the pcaps use, and nanosecond timestamps.
    assert {(i["linktype"], i["snaplen"], i["tsresol"]) for i in interfaces} == {
        (1, PCAP_SNAPLEN, 10**9)
    }
    assert capture_point_name("netemu_lab_ext_client", "eth0") == NAMES[0]


def test_each_packet_names_its_capture_point_with_exact_timestamp_and_direction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "merged.pcapng"
    write_pcapng(path, FRAMES, ROLES, PACKET_IDS)
    interfaces, packets = read_back(path)
    # Scapy resolves each packet's interface id to that interface's name.
    assert [meta.ifname for _, meta in packets] == [interfaces[i]["name"] for i in EXPECTED_IDS]
    assert [data for data, _ in packets] == [f.data for f in FRAMES]
    assert [(meta.tshigh << 32) | meta.tslow for _, meta in packets] == [
        f.nanoseconds for f in FRAMES
    ]
    assert [meta.direction for _, meta in packets] == [2, 1, 2, 1, 2, 1]  # epb_flags: out=2, in=1
    assert [meta.wirelen for _, meta in packets] == [len(f.data) for f in FRAMES]


def tshark_rows(path: Path, *fields: str) -> list[list[str]]:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip(TSHARK_MISSING)
    argv = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    done = subprocess.run(
        [*argv, *(arg for f in fields for arg in ("-e", f))],
        check=True,
        capture_output=True,
        text=True,
    )
    return [line.split("|") for line in done.stdout.splitlines()]


def test_tshark_reads_interface_ids_names_roles_and_nanoseconds(tmp_path: Path) -> None:
    path = tmp_path / "merged.pcapng"
    write_pcapng(path, FRAMES, ROLES, PACKET_IDS)
    rows = tshark_rows(
        path,
        "frame.interface_id",
        "frame.interface_name",
        "frame.interface_description",
        "frame.time_epoch",
        "frame.packet_flags_direction",
        "frame.packet_id",
    )
    assert [int(row[0]) for row in rows] == EXPECTED_IDS
    assert [row[1] for row in rows] == [NAMES[i] for i in EXPECTED_IDS]
    assert [row[2] for row in rows] == [ROLES.get(POINTS[i], "") for i in EXPECTED_IDS]
    # frame.time_epoch to the nanosecond: "seconds.nnnnnnnnn".
    assert [row[3] for row in rows] == [
        f"{f.nanoseconds // 10**9}.{f.nanoseconds % 10**9:09d}" for f in FRAMES
    ]
    assert [int(row[4], 16) for row in rows] == [2, 1, 2, 1, 2, 1]
    assert [int(row[5]) for row in rows] == PACKET_IDS


def test_without_packet_ids_no_packet_has_one(tmp_path: Path) -> None:
    path = tmp_path / "merged.pcapng"
    write_pcapng(path, FRAMES, ROLES)
    rows = tshark_rows(path, "frame.interface_id", "frame.packet_id")
    assert [row for row in rows if row[1]] == []
    assert len(rows) == len(FRAMES)


def test_packet_ids_must_match_the_frames_one_to_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="5 packet ids for 6 frames"):
        write_pcapng(tmp_path / "merged.pcapng", FRAMES, ROLES, PACKET_IDS[:5])


def test_a_frame_longer_than_the_snap_length_is_cut_and_keeps_its_length(tmp_path: Path) -> None:
    # A GSO frame can be far larger than anything Wireshark reads whole.
    big = frame("ns", "eth0", "out", 0, ethernet(bytes(PCAP_SNAPLEN + 1001)))
    path = tmp_path / "big.pcapng"
    write_pcapng(path, [big])
    _, [(data, meta)] = read_back(path)
    assert data == big.data[:PCAP_SNAPLEN]
    assert meta.wirelen == len(big.data)


def test_a_frame_with_only_a_float_timestamp_is_placed_by_it(tmp_path: Path) -> None:
    by_hand = Frame("ns", "eth0", "out", 1_700_000_000.25, ethernet(b"x"))
    path = tmp_path / "hand.pcapng"
    write_pcapng(path, [by_hand])
    _, [(_, meta)] = read_back(path)
    assert (meta.tshigh << 32) | meta.tslow == 1_700_000_000_250_000_000


def test_no_frames_is_a_valid_capture_with_no_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcapng"
    write_pcapng(path, [])
    interfaces, packets = read_back(path)
    assert (interfaces, packets) == ([], [])


def test_writes_to_an_open_file_and_closes_it() -> None:
    class Kept(io.BytesIO):
        value = b""

        def close(self) -> None:
            self.value = self.getvalue()
            super().close()

    out = Kept()
    write_pcapng(out, FRAMES, ROLES)
    assert out.closed
    # A pcapng file starts with a Section Header Block, whatever the byte order.
    assert out.value[:4] == bytes.fromhex("0a0d0d0a")
    assert out.value[8:12] in (bytes.fromhex("1a2b3c4d"), bytes.fromhex("4d3c2b1a"))
    assert len(out.value) % 4 == 0
