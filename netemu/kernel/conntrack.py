"""A node's conntrack table: listing UDP entries and deleting those a filter
names, with conntrack-tools inside the node's namespace (one list and at
most one delete per filter, per sync; never per packet or per pod). One
family's entries per instance (`conntrack -f ipv6` for the IPv6 proxier's,
as kube-proxy's conntrack cleanup runs per proxier, each on its own family:
pkg/proxy/conntrack/cleanup.go filters by the proxier's IP family).

Owns nothing; deletes only the entries it is asked to.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Protocol

from netemu.api.ipfamilies import IPFamily
from netemu.rules.conntrack import FlowEntry, FlowFilter


class Conntrack(Protocol):
    def list_udp(self) -> list[FlowEntry]: ...

    def delete(self, flow: FlowFilter) -> None: ...


def parse_entries(text: str) -> list[FlowEntry]:
    """`conntrack -L` lines: the first src/dst/sport/dport are the original
    direction, the second set the reply direction."""
    entries = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] not in ("udp", "tcp", "sctp", "icmp"):
            continue
        fields: dict[str, list[str]] = {}
        for word in words:
            key, sep, value = word.partition("=")
            if sep:
                fields.setdefault(key, []).append(value)
        if len(fields.get("src", [])) < 2 or not fields.get("dport"):
            continue
        entries.append(
            FlowEntry(
                protocol=words[0],
                orig_dst=fields["dst"][0],
                orig_dport=int(fields["dport"][0]),
                reply_src=fields["src"][1],
            )
        )
    return entries


@dataclass
class KernelConntrack:
    netns: str
    family: IPFamily = "IPv4"

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        # conntrack-tools lists and deletes IPv4 entries unless told -f ipv6.
        selector = ["-f", "ipv6"] if self.family == "IPv6" else ["-f", "ipv4"]
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, "conntrack", *args, *selector],
            capture_output=True,
            text=True,
            check=False,
        )

    def list_udp(self) -> list[FlowEntry]:
        done = self._run(["-L", "-p", "udp"])
        return parse_entries(done.stdout)

    def delete(self, flow: FlowFilter) -> None:
        args = [
            "-D",
            "-p",
            "udp",
            "--reply-src",
            flow.reply_src,
            "--orig-port-dst",
            str(flow.orig_dport),
        ]
        if flow.orig_dst is not None:
            args += ["--orig-dst", flow.orig_dst]
        # Exit 1 with "0 flow entries have been deleted" when another sync got there first.
        self._run(args)


@dataclass
class FakeConntrack:
    entries: list[FlowEntry] = field(default_factory=list)
    deleted: list[FlowFilter] = field(default_factory=list)

    def list_udp(self) -> list[FlowEntry]:
        return [e for e in self.entries if e.protocol == "udp"]

    def delete(self, flow: FlowFilter) -> None:
        self.deleted.append(flow)
        self.entries = [
            e
            for e in self.entries
            if not (
                e.protocol == "udp"
                and e.reply_src == flow.reply_src
                and e.orig_dport == flow.orig_dport
                and (flow.orig_dst is None or e.orig_dst == flow.orig_dst)
            )
        ]
