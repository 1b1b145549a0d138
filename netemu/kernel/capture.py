"""Packet capture inside lab namespaces with AF_PACKET sockets, and writing
what was captured to a pcap file.

One packet socket per namespace, bound to no interface, sees every frame
that any interface of that namespace sends or receives, including
interfaces created after the capture started (a pod's veth, a VXLAN device).
The kernel timestamps each frame (SO_TIMESTAMPNS) as it passes, so frames
captured in different namespaces merge into one timeline; `start()` waits
until the kernel really does (see _wait_for_kernel_timestamps).

What the kernel hands a packet socket, and what this module keeps:

- A frame the kernel sends is seen with pkttype PACKET_OUTGOING ("out"),
  before the driver gets it; every other pkttype (HOST, BROADCAST,
  MULTICAST, OTHERHOST) is a received frame ("in"). A bridge port sees a
  frame the bridge forwards to another port as OTHERHOST on ingress and
  OUTGOING on egress; the bridge device itself (cni0) sees only frames
  addressed to it (or flooded to it), with the same timestamp as the port
  that received them.
- Frames are taken before segmentation and checksumming: a TCP frame may be
  a GSO "super frame" far larger than the MTU, and its TCP/UDP checksum may
  still be a partial one (veth never computes it), so Wireshark may flag it.
  The frame is kept whole, byte for byte.
- Only interfaces with Ethernet framing (ARPHRD_ETHER: veth, bridge, VXLAN;
  ARPHRD_LOOPBACK: lo, whose header is an all-zero Ethernet header) are
  kept, because `Frame.data` promises an Ethernet header.
- The interface name is looked up when a frame is read, in the socket's own
  namespace (CPython resolves sll_ifindex with SIOCGIFNAME on the socket).
  A frame of an interface that was deleted or moved to another namespace
  before `drain()` has the name "".

- A GSO frame larger than any pcap record Wireshark reads is written cut
  to PCAP_SNAPLEN, with its real length kept as the wire length.

Writing: `write_pcap` writes one capture point's frames as a nanosecond
pcap; `write_pcapng` writes frames of many capture points into one pcapng
file with an interface per capture point, so a reader tells the hops of one
packet apart.

Owns: the packet sockets it opens, and the anonymous namespace of the
timestamping probe (its own `lo` only; gone when the probe's thread ends).
Must not touch: interfaces, addresses, routes or rules of any lab namespace
(capturing changes nothing), or the host's own namespace (every socket is
opened inside the namespace it names).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from netemu.kernel import netns

# <linux/if_ether.h>, <asm-generic/socket.h> (x86, arm and most other
# architectures), <linux/if_packet.h>, <linux/if_arp.h>. CPython's socket
# module exports none of these.
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: struct timespec of native longs
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SOL_PACKET = 263
PACKET_STATISTICS = 6
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ETHERNET_HATYPES = frozenset({ARPHRD_ETHER, ARPHRD_LOOPBACK})

# pcap linktype of Ethernet (DLT_EN10MB) and the largest record Wireshark
# and libpcap accept for it (WTAP_MAX_PACKET_SIZE_STANDARD); a longer frame
# is written truncated to this, with its real length as the wire length.
LINKTYPE_ETHERNET = 1
PCAP_SNAPLEN = 262144

_TIMESPEC = struct.Struct("@ll")
_TPACKET_STATS = struct.Struct("@II")  # tp_packets, tp_drops
# Larger than any frame a packet socket can be given: a GSO frame is at most
# GSO_MAX_SIZE (512 KiB, with BIG TCP) plus its link-layer header.
_FRAME_BUFFER = 1 << 20
_NS_PER_S = 1_000_000_000
_READ_AHEAD_NS = 10_000_000

# For the timestamping probe (see _wait_for_kernel_timestamps).
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq: name, ifr_flags, padding
_TIMESTAMPS_TIMEOUT = 1.0
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class CaptureError(RuntimeError):
    pass


@dataclass(frozen=True)
class Frame:
    """One link-layer frame seen by a capture socket.

    `timestamp_ns` is the kernel's timestamp exactly, in integer
    nanoseconds. A float of seconds since the epoch resolves only about
    240 ns today, while a frame leaves one veth end and arrives at the other
    0.2 to 0.5 µs later, so ordering and pcap output use `timestamp_ns`
    when it is set (every captured frame has it); a frame built by hand may
    leave it None and is then placed by `timestamp`.
    """

    netns: str
    interface: str
    direction: Literal["in", "out"]
    timestamp: float
    data: bytes
    timestamp_ns: int | None = field(default=None, compare=False)

    @property
    def nanoseconds(self) -> int:
        """The timestamp in integer nanoseconds since the epoch."""
        if self.timestamp_ns is not None:
            return self.timestamp_ns
        return _float_to_ns(self.timestamp)


def _float_to_ns(seconds: float) -> int:
    whole = math.floor(seconds)
    # seconds - whole is exact in binary floating point, so only the final
    # rounding to nanoseconds loses anything.
    return whole * _NS_PER_S + round((seconds - whole) * _NS_PER_S)


class Capture:
    """One AF_PACKET/SOCK_RAW/ETH_P_ALL socket per namespace, not bound to an
    interface, so it sees every interface of that namespace (ones created
    later too).

    Frames queue in each socket's receive buffer (`buffer_bytes`, forced past
    net.core.rmem_max) until `drain()` reads them; a frame that finds the
    buffer full is dropped by the kernel and counted in `dropped`. Not
    thread-safe: start, drain and close from one thread at a time.
    """

    def __init__(self, namespaces: Sequence[str], buffer_bytes: int = 8 << 20) -> None:
        self.namespaces = tuple(namespaces)
        self.buffer_bytes = buffer_bytes
        self._taps: list[_Tap] = []
        self._buffer = bytearray(_FRAME_BUFFER)
        self._dropped = 0

    def start(self) -> None:
        """Open one capture socket in each namespace; frames are queued from
        the moment each socket exists, and stamped by the kernel as they
        pass from the moment start() returns. On failure, close what was
        opened and raise CaptureError naming the namespace."""
        if self._taps:
            return
        for name in self.namespaces:
            try:
                sock = _open_packet_socket(name, self.buffer_bytes)
            except OSError as error:
                self.close()
                raise CaptureError(f"cannot capture in namespace {name!r}: {error}") from error
            self._taps.append(_Tap(name, sock))
        try:
            _wait_for_kernel_timestamps(_TIMESTAMPS_TIMEOUT)
        except CaptureError:
            self.close()
            raise

    def drain(self) -> list[Frame]:
        """Every frame queued on every socket right now, without blocking,
        sorted by kernel timestamp. Frames of one namespace with equal
        timestamps (a bridge port and the bridge see one frame at one
        instant) keep the order the kernel queued them in.

        One call returns exactly the frames stamped up to the moment it
        began; frames read that are stamped later are kept for the next
        call. A frame leaving one namespace is queued on that namespace's
        socket before it reaches the peer, so a frame's arrival is never
        returned before its departure, even under steady traffic.
        """
        until_ns = time.time_ns()
        frames: list[Frame] = []
        for tap in self._taps:
            frames.extend(self._drain_tap(tap, until_ns))
            self._dropped += _drops(tap.sock)
        frames.sort(key=lambda frame: frame.nanoseconds)  # stable
        return frames

    @property
    def dropped(self) -> int:
        """Frames the kernel dropped so far because a socket's buffer was full
        (counted as of the last drain)."""
        return self._dropped

    def close(self) -> None:
        taps, self._taps = self._taps, []
        for tap in taps:
            tap.sock.close()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _drain_tap(self, tap: _Tap, until_ns: int) -> list[Frame]:
        ready = [frame for frame in tap.pending if frame.nanoseconds <= until_ns]
        tap.pending = [frame for frame in tap.pending if frame.nanoseconds > until_ns]
        view = memoryview(self._buffer)
        while True:
            try:
                # MSG_TRUNC makes a packet socket return the frame's real
                # length, so a truncated read would show (it cannot happen
                # with a buffer larger than GSO_MAX_SIZE).
                length, ancdata, _, address = tap.sock.recvmsg_into(
                    [view], socket.CMSG_SPACE(_TIMESPEC.size), socket.MSG_TRUNC
                )
            except (BlockingIOError, InterruptedError):
                return ready
            stamp = _timestamp_ns(ancdata)
            ifname, _, pkttype, hatype = address[:4]
            if hatype in ETHERNET_HATYPES:
                frame = Frame(
                    netns=tap.netns,
                    interface=ifname,
                    direction="out" if pkttype == socket.PACKET_OUTGOING else "in",
                    timestamp=stamp / _NS_PER_S,  # int / int: correctly rounded
                    data=bytes(view[: min(length, _FRAME_BUFFER)]),
                    timestamp_ns=stamp,
                )
                (ready if stamp <= until_ns else tap.pending).append(frame)
            # A socket's queue is only roughly in timestamp order (a received
            # frame is stamped before it is queued), so reading goes on a
            # little past the cut-off, and ends under steady traffic.
            if stamp > until_ns + _READ_AHEAD_NS:
                return ready


@dataclass
class _Tap:
    """A namespace's capture socket and the frames read from it that belong
    to a later drain."""

    netns: str
    sock: socket.socket
    pending: list[Frame] = field(default_factory=list)


def _open_packet_socket(name: str, buffer_bytes: int) -> socket.socket:
    # The protocol is given at creation (ETH_P_ALL, network byte order): a
    # packet socket created with protocol 0 receives nothing, and CPython
    # cannot bind one to "every interface" afterwards (bind needs a name).
    sock = netns.open_socket(name, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        try:
            # FORCE ignores net.core.rmem_max (root only); the plain option
            # is capped by it but still better than the default.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        _drops(sock)  # reset the kernel's counters: count only from now on
    except BaseException:
        sock.close()
        raise
    return sock


def _wait_for_kernel_timestamps(timeout: float) -> None:
    """Return once the kernel timestamps packets as they pass.

    Software receive timestamps are switched on system-wide by the first
    socket that asks (and off after the last one closes) through deferred
    work (net_enable_timestamp in net/core/dev.c). Until that work has run,
    packets carry no timestamp and recvmsg() stamps them when they are
    read: frames sent right after start() would be ordered by when drain()
    read them, not by when they passed. A probe shows when it has run; it
    runs in a throwaway namespace of its own, on a thread of its own that
    ends with it, so neither the lab nor the host sees a packet.
    """
    outcome: list[BaseException | bool] = []
    probe = threading.Thread(
        target=_probe_kernel_timestamps, args=(timeout, outcome), name="netemu-tstamp-probe"
    )
    probe.start()
    probe.join()
    result = outcome[0] if outcome else False
    if isinstance(result, BaseException):
        raise CaptureError(f"cannot check kernel packet timestamps: {result}") from result
    if not result:
        raise CaptureError(f"the kernel did not start timestamping packets within {timeout} s")


def _probe_kernel_timestamps(timeout: float, outcome: list[BaseException | bool]) -> None:
    """(On a thread that ends with it.) A datagram over a private loopback
    carries the kernel's timestamp only if it was stamped on its way, which
    then precedes the moment sendto() returned; a timestamp taken when it
    is read comes later."""
    try:
        # The thread leaves its namespace for good: unshare acts on the
        # calling thread only, and the namespace is freed when the thread
        # and its sockets are gone.
        if _libc.unshare(_CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"unshare: {os.strerror(code)}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
            request = _IFREQ_FLAGS.pack(b"lo", 0)
            (flags,) = struct.unpack_from("H", fcntl.ioctl(control, _SIOCGIFFLAGS, request), 16)
            fcntl.ioctl(control, _SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | _IFF_UP))
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with receiver, sender:
            receiver.bind(("127.0.0.1", 0))
            receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            receiver.settimeout(timeout)
            deadline = time.monotonic() + timeout
            while True:
                sender.sendto(b"", receiver.getsockname())
                sent = time.time_ns()
                _, ancdata, _, _ = receiver.recvmsg(1, socket.CMSG_SPACE(_TIMESPEC.size))
                if _timestamp_ns(ancdata) <= sent:
                    outcome.append(True)
                    return
                if time.monotonic() >= deadline:
                    outcome.append(False)
                    return
                time.sleep(0.001)
    except Exception as error:
        outcome.append(error)


def _timestamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            seconds, nanos = _TIMESPEC.unpack_from(payload)
            return int(seconds) * _NS_PER_S + int(nanos)
    # SO_TIMESTAMPNS is set on every socket, so the kernel always sends one;
    # reading time is the closest stand-in should it ever not.
    return time.time_ns()


def _drops(sock: socket.socket) -> int:
    """Frames dropped since the last call (reading PACKET_STATISTICS resets
    the kernel's counters)."""
    _, dropped = _TPACKET_STATS.unpack(
        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
    )
    return int(dropped)


def write_pcap(out: Path | BinaryIO, frames: Sequence[Frame]) -> None:
    """Write `frames`, in the given order, to a nanosecond pcap file with
    linktype Ethernet: a path, or a file open for writing (closed when
    done; netemu.kernel.owner creates capture files safely). Each frame's
    bytes are written as captured; a frame longer than PCAP_SNAPLEN
    (possible for GSO frames) is cut to it and keeps its real length as the
    record's wire length."""
    # Imported here: scapy takes a while to import and capturing needs none of it.
    from scapy.utils import PcapWriter

    target = str(out) if isinstance(out, Path) else out
    writer = PcapWriter(target, linktype=LINKTYPE_ETHERNET, nano=True, snaplen=PCAP_SNAPLEN)
    try:
        # write_packet, unlike write, leaves the file header to the caller;
        # an empty file still gets one so it is a valid capture.
        writer.write_header(None)
        for frame in frames:
            seconds, nanos = divmod(frame.nanoseconds, _NS_PER_S)
            kept = frame.data[:PCAP_SNAPLEN]
            # With nano=True scapy's `usec` argument is nanoseconds.
            writer.write_packet(
                kept, sec=seconds, usec=nanos, caplen=len(kept), wirelen=len(frame.data)
            )
    finally:
        writer.close()


# pcapng, as draft-ietf-opsawg-pcapng (https://github.com/IETF-OPSAWG-WG/
# draft-ietf-opsawg-pcap) defines it. Scapy's PcapNgWriter (2.8) is not used:
# it stamps packets in microseconds with no if_tsresol option, writes an
# unnamed interface 0 that no packet uses, has no if_description, and opens
# the file by name itself, while the trace hands over files it created
# safely (netemu.kernel.owner) or buffers (the supervisor).
_PCAPNG_SHB = 0x0A0D0D0A  # Section Header Block
_PCAPNG_IDB = 1  # Interface Description Block
_PCAPNG_EPB = 6  # Enhanced Packet Block
_PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_ENDOFOPT = 0
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3
_IF_TSRESOL = 9
_EPB_FLAGS = 2
_EPB_PACKETID = 5
# if_tsresol: a byte with its top bit clear is a negative power of ten;
# 9 makes every timestamp count nanoseconds, the kernel's own resolution.
_TSRESOL_NANOSECONDS = 9
# epb_flags bits 0-1: 01 inbound, 10 outbound.
_EPB_DIRECTION = {"in": 1, "out": 2}
# Native byte order, as the format asks of a writer (the Byte-Order Magic
# tells readers which it is).
_PCAPNG_HEADER = struct.Struct("=II")  # block type, block total length
_PCAPNG_TRAILER = struct.Struct("=I")  # block total length again
_PCAPNG_SHB_BODY = struct.Struct("=IHHq")  # magic, major 1, minor 0, section length
_PCAPNG_IDB_BODY = struct.Struct("=HHI")  # linktype, reserved, snaplen
_PCAPNG_OPTION = struct.Struct("=HH")  # option code, value length (unpadded)
# An Enhanced Packet Block up to its packet data: block type, total length,
# interface id, timestamp high and low 32 bits, captured and original length.
_EPB_HEAD = struct.Struct("=IIIIIII")
# Its options: epb_flags with the direction, epb_packetid (a 64-bit number)
# when given, then opt_endofopt.
_EPB_FLAGS_OPTION = {
    direction: _PCAPNG_OPTION.pack(_EPB_FLAGS, 4) + struct.pack("=I", bits)
    for direction, bits in _EPB_DIRECTION.items()
}
_EPB_PACKETID_OPTION = struct.Struct("=HHQ")
_END_OF_OPTIONS = _PCAPNG_OPTION.pack(_OPT_ENDOFOPT, 0)
_PCAPNG_USERAPPL = "netemu"


def capture_point_name(netns: str, interface: str) -> str:
    """The name a capture point has in a pcapng file: `<namespace>/<interface>`
    (an interface name alone repeats in every namespace: eth0, lo)."""
    return f"{netns}/{interface}"


def write_pcapng(
    out: Path | BinaryIO,
    frames: Sequence[Frame],
    descriptions: Mapping[tuple[str, str], str] | None = None,
    packet_ids: Sequence[int] | None = None,
) -> None:
    """Write `frames`, in the given order, to one pcapng file: a path, or a
    file open for writing (closed when done).

    Each capture point, (namespace, interface), is an interface of the file
    (one Interface Description Block, in the order the frames first show
    it), named by capture_point_name, described by `descriptions` where it
    has an entry, with linktype Ethernet (a Frame always starts with an
    Ethernet header) and nanosecond timestamps. Each frame is an Enhanced
    Packet Block naming its capture point's interface, with the kernel's
    timestamp to the nanosecond and its direction (epb_flags), and, with
    `packet_ids` (one per frame), its packet id (epb_packetid: the format
    asks a writer that can tell one packet seen at several interfaces to
    give its copies one id). Frame bytes, cut to PCAP_SNAPLEN, as
    write_pcap writes them."""
    if packet_ids is not None and len(packet_ids) != len(frames):
        raise ValueError(f"{len(packet_ids)} packet ids for {len(frames)} frames")
    descriptions = descriptions or {}
    interfaces: dict[tuple[str, str], int] = {}
    for frame in frames:
        interfaces.setdefault((frame.netns, frame.interface), len(interfaces))
    blocks = [_pcapng_block(_PCAPNG_SHB, _section_header(), [(_SHB_USERAPPL, _PCAPNG_USERAPPL)])]
    for point in interfaces:
        options: list[tuple[int, str | bytes]] = [(_IF_NAME, capture_point_name(*point))]
        if descriptions.get(point):
            options.append((_IF_DESCRIPTION, descriptions[point]))
        options.append((_IF_TSRESOL, bytes([_TSRESOL_NANOSECONDS])))
        body = _PCAPNG_IDB_BODY.pack(LINKTYPE_ETHERNET, 0, PCAP_SNAPLEN)
        blocks.append(_pcapng_block(_PCAPNG_IDB, body, options))
    ids: Sequence[int | None] = packet_ids if packet_ids is not None else [None] * len(frames)
    blocks += [
        _packet_block(interfaces[(f.netns, f.interface)], f, packet_id)
        for f, packet_id in zip(frames, ids, strict=True)
    ]
    handle: BinaryIO = open(out, "wb") if isinstance(out, Path) else out  # noqa: SIM115
    with handle:
        handle.write(b"".join(blocks))


def _section_header() -> bytes:
    # Section length -1: not given; a reader walks the blocks.
    return _PCAPNG_SHB_BODY.pack(_PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)


def _packet_block(interface_id: int, frame: Frame, packet_id: int | None) -> bytes:
    """An Enhanced Packet Block, laid out by hand rather than through
    _pcapng_block: a trace writes one per frame, and this is its hot path."""
    stamp = frame.nanoseconds
    kept = frame.data[:PCAP_SNAPLEN]
    padding = -len(kept) % 4
    options = _EPB_FLAGS_OPTION[frame.direction]
    if packet_id is not None:
        options += _EPB_PACKETID_OPTION.pack(_EPB_PACKETID, 8, packet_id)
    options += _END_OF_OPTIONS
    total = _EPB_HEAD.size + len(kept) + padding + len(options) + _PCAPNG_TRAILER.size
    head = _EPB_HEAD.pack(
        _PCAPNG_EPB,
        total,
        interface_id,
        stamp >> 32,
        stamp & 0xFFFFFFFF,
        len(kept),
        len(frame.data),
    )
    return b"".join((head, kept, bytes(padding), options, _PCAPNG_TRAILER.pack(total)))


def _pcapng_block(kind: int, body: bytes, options: Sequence[tuple[int, str | bytes]]) -> bytes:
    """One block: type, total length, the body (already padded to 32 bits),
    its options ending with opt_endofopt, and the total length again."""
    parts = [body]
    for code, value in options:
        raw = value.encode() if isinstance(value, str) else value
        parts.append(_PCAPNG_OPTION.pack(code, len(raw)) + _padded(raw))
    parts.append(_PCAPNG_OPTION.pack(_OPT_ENDOFOPT, 0))
    content = b"".join(parts)
    total = _PCAPNG_HEADER.size + len(content) + _PCAPNG_TRAILER.size
    return _PCAPNG_HEADER.pack(kind, total) + content + _PCAPNG_TRAILER.pack(total)


def _padded(raw: bytes) -> bytes:
    """`raw` and zeros up to the next multiple of 4 bytes."""
    return raw + bytes(-len(raw) % 4)
