"""Parsing conntrack events as `conntrack -E -o timestamp,id` prints them.

One line per event:

    [1795712441.592744]	    [NEW] tcp      6 120 SYN_SENT src=A dst=B sport=.. dport=..
        [UNREPLIED] src=C dst=D sport=.. dport=.. id=N

(one line, wrapped here).

The first address/port set is the original direction (as the first packet
arrived), the second the reply direction the kernel expects; NAT shows as a
reply tuple that is not the original one reversed (DNAT: the reply comes
from elsewhere; SNAT: it goes to elsewhere). ICMP tuples carry
`type= code= id=` instead of ports, and the event's own `id=` follows the
reply tuple's.

Owns: parse_events and the FlowTuple / ConntrackEvent records. Pure: takes
text and returns data; running conntrack is netemu.kernel's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Protocols whose tuples have an ICMP id instead of ports.
_ICMP_PROTOS = ("icmp", "icmpv6")
_TUPLE_KEYS = ("src", "dst", "sport", "dport", "type", "code", "id")

_LINE = re.compile(
    r"^\s*(?:\[(?P<ts>\d+(?:\.\d+)?)\]\s+)?\[(?P<kind>NEW|UPDATE|DESTROY)\]\s+(?P<rest>.*)$"
)


@dataclass(frozen=True)
class FlowTuple:
    """One direction of a connection. For ICMP, sport is the echo id and
    dport is 0, so a tuple still identifies the flow."""

    proto: str
    src: str
    dst: str
    sport: int
    dport: int

    def reversed(self) -> FlowTuple:
        """The tuple of a packet going the other way without NAT. An ICMP
        echo reply carries the request's id, so ICMP keeps sport=id,
        dport=0 and only swaps addresses."""
        if self.proto in _ICMP_PROTOS:
            return FlowTuple(self.proto, self.dst, self.src, self.sport, self.dport)
        return FlowTuple(self.proto, self.dst, self.src, self.dport, self.sport)

    def __str__(self) -> str:
        if self.proto in _ICMP_PROTOS:
            return f"{self.src} → {self.dst} {self.proto} id={self.sport}"
        return f"{self.src}:{self.sport} → {self.dst}:{self.dport} {self.proto}"


@dataclass(frozen=True)
class ConntrackEvent:
    timestamp: float  # seconds since the epoch; 0.0 when printed without -o timestamp
    kind: str  # "NEW" | "UPDATE" | "DESTROY"
    proto: str  # "tcp", "udp", "icmp", "sctp", ...
    state: str | None  # TCP/SCTP/DCCP state such as "SYN_SENT"; None for UDP and ICMP
    original: FlowTuple
    reply: FlowTuple
    flags: tuple[str, ...]  # "UNREPLIED", "ASSURED", "OFFLOAD", ... without brackets
    id: int | None  # the conntrack entry's id (stable across its events)

    @property
    def dnat(self) -> bool:
        """The destination was translated: replies come from elsewhere."""
        back = self.reply.reversed()
        return back.dst != self.original.dst or back.dport != self.original.dport

    @property
    def snat(self) -> bool:
        """The source was translated (masquerade): replies go elsewhere."""
        back = self.reply.reversed()
        return back.src != self.original.src or back.sport != self.original.sport

    @property
    def dnat_to(self) -> tuple[str, int] | None:
        """(address, port) the destination was translated to; port is the
        ICMP id for ICMP. None without DNAT."""
        back = self.reply.reversed()
        return (back.dst, back.dport) if self.dnat else None

    @property
    def snat_to(self) -> tuple[str, int] | None:
        """(address, port) the source was translated to. None without SNAT."""
        back = self.reply.reversed()
        return (back.src, back.sport) if self.snat else None


def parse_events(text: str) -> list[ConntrackEvent]:
    """Events in printed order. Blank lines, conntrack's closing summary
    ("N flow events have been shown.") and other unrecognised lines are
    skipped."""
    events = []
    for line in text.splitlines():
        event = _parse_line(line)
        if event is not None:
            events.append(event)
    return events


def _parse_line(line: str) -> ConntrackEvent | None:
    match = _LINE.match(line)
    if not match:
        return None
    words = match["rest"].split()
    # With -o extended the line starts with the layer 3 protocol ("ipv4 2").
    if len(words) >= 2 and words[0] in ("ipv4", "ipv6") and words[1].isdigit():
        words = words[2:]
    if len(words) < 2 or not words[1].isdigit():
        return None
    proto = words[0]
    if proto == "unknown":
        proto = words[1]
    position = 2
    # Timeout (absent in some DESTROY events), then the state for stateful protocols.
    if position < len(words) and words[position].isdigit():
        position += 1
    state = None
    if position < len(words) and "=" not in words[position] and not words[position].startswith("["):
        state = words[position]
        position += 1

    icmp = proto in _ICMP_PROTOS
    tuples: list[dict[str, str]] = [{}]
    flags: list[str] = []
    entry_id: int | None = None
    for word in words[position:]:
        if word.startswith("[") and word.endswith("]"):
            flags.append(word[1:-1])
            continue
        key, sep, value = word.partition("=")
        if not sep:
            continue
        if key == "id" and not (icmp and len(tuples) <= 2 and "id" not in tuples[-1]):
            # An ICMP tuple's id comes first; any further id is the entry's.
            entry_id = _int(value)
            continue
        if key not in _TUPLE_KEYS:
            continue  # mark=, zone=, use=, packets=, bytes=, delta-time=, ...
        if key == "src" and "src" in tuples[-1]:
            if len(tuples) == 2:
                continue  # a third tuple (expectations) is not an event's
            tuples.append({})
        tuples[-1][key] = value
    if len(tuples) != 2 or not all("src" in t and "dst" in t for t in tuples):
        return None
    original, reply = (_tuple(proto, t, icmp) for t in tuples)
    return ConntrackEvent(
        timestamp=float(match["ts"]) if match["ts"] else 0.0,
        kind=match["kind"],
        proto=proto,
        state=state,
        original=original,
        reply=reply,
        flags=tuple(flags),
        id=entry_id,
    )


def _tuple(proto: str, values: dict[str, str], icmp: bool) -> FlowTuple:
    if icmp:
        sport, dport = _int(values.get("id")) or 0, 0
    else:
        sport, dport = _int(values.get("sport")) or 0, _int(values.get("dport")) or 0
    return FlowTuple(proto, values["src"], values["dst"], sport, dport)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
