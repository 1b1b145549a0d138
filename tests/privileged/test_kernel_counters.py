"""Live rule counters in a real kernel, on both iptables backends: datagrams
sent inside a fresh namespace are counted exactly by the rule they match, and
the `iptables-save -c` text read back parses as a rule set."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import IPRoute

from netemu.kernel import counters, netns
from netemu.kernel.counters import CountersError, RuleCounter, read_counters, rule_counters
from netemu.kernel.iptables import Backend, KernelIptables
from netemu.rules.model import parse_restore

CHAIN = "NETEMU-COUNT"
RULES = (
    "*filter\n"
    f":{CHAIN} - [0:0]\n"
    f"-A OUTPUT -j {CHAIN}\n"
    f"-A {CHAIN} -d 127.0.0.2/32 -j ACCEPT\n"
    "COMMIT\n"
)
TARGET = "127.0.0.2"
PORT = 9999
PAYLOAD = b"x" * 100
# IPv4 header (no options) + UDP header + payload: what the kernel counts.
DATAGRAM_BYTES = 20 + 8 + len(PAYLOAD)
SENT = 7
SIOCGSKNS = 0x894C  # linux/sockios.h: the namespace of a socket


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"netemu_test_counters_{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        with netns.entered(name):
            ipr = IPRoute()
        try:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        finally:
            ipr.close()
        yield name
    finally:
        netns.remove(name)


def send_datagrams(name: str, count: int) -> None:
    """`count` UDP datagrams to TARGET:PORT, each one received (a listener is
    bound, so no ICMP error comes back through the rules)."""
    receiver = netns.open_socket(name, socket.AF_INET, socket.SOCK_DGRAM)
    sender = netns.open_socket(name, socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((TARGET, PORT))
        receiver.settimeout(2)
        for _ in range(count):
            sender.sendto(PAYLOAD, (TARGET, PORT))
        for _ in range(count):
            assert receiver.recv(2048) == PAYLOAD


def counter_of(found: list[RuleCounter], chain: str, fragment: str) -> RuleCounter:
    hits = [c for c in found if c.table == "filter" and c.chain == chain and fragment in c.rule]
    assert len(hits) == 1, found
    return hits[0]


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_rule_counts_exactly_the_datagrams_sent(namespace: str, backend: Backend) -> None:
    KernelIptables(namespace, backend).restore(RULES, noflush=False)
    before = counter_of(rule_counters(namespace, backend), CHAIN, "-d 127.0.0.2/32")
    assert (before.packets, before.bytes, before.index) == (0, 0, 1)

    send_datagrams(namespace, SENT)

    found = rule_counters(namespace, backend)
    rule = counter_of(found, CHAIN, "-d 127.0.0.2/32")
    assert (rule.packets, rule.bytes) == (SENT, SENT * DATAGRAM_BYTES)
    assert rule.rule == f"-A {CHAIN} -d 127.0.0.2/32 -j ACCEPT"
    jump = counter_of(found, "OUTPUT", f"-j {CHAIN}")
    assert (jump.packets, jump.bytes) == (SENT, SENT * DATAGRAM_BYTES)

    text = read_counters(namespace, backend)
    assert f"[{SENT}:{SENT * DATAGRAM_BYTES}] -A {CHAIN} -d 127.0.0.2/32 -j ACCEPT" in text
    saved = parse_restore(text)
    assert [r.args for r in saved.tables["filter"].chain_rules(CHAIN)] == [
        "-d 127.0.0.2/32 -j ACCEPT"
    ]
    if backend == "legacy":
        # The datagrams were delivered locally: they crossed INPUT, which has
        # no rules, so its policy counted them. (nf_tables base chains keep no
        # policy counters; iptables-nft-save prints [0:0] for them.)
        assert f":INPUT ACCEPT [{SENT}:{SENT * DATAGRAM_BYTES}]" in text.splitlines()


def test_legacy_text_is_what_iptables_legacy_save_c_prints(namespace: str) -> None:
    """The merge of save text and libiptc counters reproduces `-c` output
    (comment lines carry timestamps and are left out)."""
    KernelIptables(namespace, "legacy").restore(RULES, noflush=False)
    send_datagrams(namespace, SENT)
    reference = subprocess.run(
        ["ip", "netns", "exec", namespace, "iptables-legacy-save", "-c"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert body(read_counters(namespace, "legacy")) == body(reference)


def sockets_in(name: str) -> int:
    """How many of this process's open sockets live in namespace `name`."""
    wanted = netns.inode(name)
    found = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            fd = int(entry)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            ns_fd = fcntl.ioctl(fd, SIOCGSKNS)  # a new fd for the socket's namespace
        except OSError:
            continue
        try:
            found += os.fstat(ns_fd).st_ino == wanted
        finally:
            os.close(ns_fd)
    return found


def test_legacy_reads_are_fresh_and_leave_no_handles_open(namespace: str) -> None:
    KernelIptables(namespace, "legacy").restore(RULES, noflush=False)
    for sent in (1, 2):
        send_datagrams(namespace, 1)
        rule = counter_of(rule_counters(namespace, "legacy"), CHAIN, "-d 127.0.0.2/32")
        assert rule.packets == sent
    # A libiptc handle left open would keep a socket (and the namespace) alive.
    assert sockets_in(namespace) == 0


def test_legacy_retries_once_then_reports_a_changing_rule_set(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    KernelIptables(namespace, "legacy").restore(RULES, noflush=False)
    real = counters._read_live
    calls: list[int] = []

    def racing(
        iptc: Any, netns_name: str, tables: list[str]
    ) -> dict[str, dict[str, counters._ChainCounters]]:
        """libiptc's snapshot taken after a rule of CHAIN was deleted."""
        live = real(iptc, netns_name, tables)
        calls.append(1)
        if len(calls) <= limit:
            live["filter"][CHAIN].rules.clear()
        return live

    monkeypatch.setattr(counters, "_read_live", racing)

    limit = 1  # one disagreement: the second read agrees
    assert f"[0:0] -A {CHAIN} -d 127.0.0.2/32 -j ACCEPT" in read_counters(namespace, "legacy")
    assert len(calls) == 2

    calls.clear()
    limit = 2
    with pytest.raises(CountersError, match="changed while their counters were read"):
        read_counters(namespace, "legacy")
    assert len(calls) == 2
