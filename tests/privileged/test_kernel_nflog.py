"""Legacy TRACE messages through NFLOG in a fresh namespace: the namespace's
IPv4 logger is nfnetlink_log while the monitor is ready and whatever it
was before afterwards (also after an error, and the host's own never
changes); a packet sent right after wait_ready is in the decoded output;
a second monitor in the same namespace is refused before it touches
anything; stop leaves no tcpdump and no temporary file. For IPv6
(ip6tables' TRACE logs through the AF_INET6 logger) the monitor points
that logger at nfnetlink_log too and restores it; without it, ip6tables'
messages never arrive."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu.kernel import netns, nflog
from netemu.kernel.monitor import MonitorError
from netemu.kernel.nflog import NF_LOG_IPV4, NF_LOG_IPV6, NFNETLINK_LOG, NflogMonitor
from netemu.kernel.processes import command_in
from netemu.trace.legacytrace import parse_legacy_trace

pytestmark = pytest.mark.skipif(
    shutil.which("tcpdump") is None or shutil.which("tshark") is None,
    reason="tcpdump or tshark is missing (./setup.sh installs them)",
)

# Every UDP packet the namespace sends is traced (legacy raw table).
RULES = """*raw
:T - [0:0]
-A T -p udp -j TRACE
-I OUTPUT -j T
COMMIT
"""
RULES6 = RULES  # the same, for ip6tables' raw table
HOST_LOGGER = Path("/proc/sys/net/netfilter/nf_log/2")
HOST_LOGGER6 = Path("/proc/sys/net/netfilter/nf_log/10")


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace with loopback up and RULES loaded; removed afterwards."""
    name = f"netemu_test_{uuid.uuid4().hex[:8]}"
    try:
        netns.create(name)
        subprocess.run(command_in(name, ["ip", "link", "set", "lo", "up"]), check=True)
        subprocess.run(
            command_in(name, ["iptables-legacy-restore"]),
            input=RULES,
            text=True,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            command_in(name, ["ip6tables-legacy-restore"]),
            input=RULES6,
            text=True,
            check=True,
            capture_output=True,
        )
        yield name
    finally:
        for pid in netns.pids(name):  # only our monitors can live there
            os.kill(pid, signal.SIGKILL)
        netns.remove(name)


def logger(name: str) -> str:
    return netns.read_sysctls(name, [NF_LOG_IPV4])[NF_LOG_IPV4]


def logger6(name: str) -> str:
    return netns.read_sysctls(name, [NF_LOG_IPV6])[NF_LOG_IPV6]


def send_udp(name: str, port: int) -> None:
    with netns.open_socket(name, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"netemu-nflog", ("127.0.0.1", port))


def send_udp6(name: str, port: int) -> None:
    with netns.open_socket(name, socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"netemu-nflog", ("::1", port))


def assert_gone(monitor: NflogMonitor, name: str) -> None:
    assert netns.pids(name) == [], "a process is left in the namespace"
    assert monitor.pid is None or not os.path.exists(f"/proc/{monitor.pid}")
    assert monitor.pcap is None or not monitor.pcap.parent.exists(), "temporary files left"


def test_logger_is_set_while_ready_and_restored_after(namespace: str) -> None:
    host = HOST_LOGGER.read_text()
    before = logger(namespace)
    assert before != NFNETLINK_LOG
    monitor = NflogMonitor(namespace)
    try:
        monitor.start()
        monitor.wait_ready()
        assert logger(namespace) == NFNETLINK_LOG
        assert "lo" in monitor.interfaces.values()
        send_udp(namespace, 40101)
        stopping = time.monotonic()
        text = monitor.stop()
        assert time.monotonic() - stopping < 1.5
    finally:
        monitor.stop()
    assert logger(namespace) == before
    assert HOST_LOGGER.read_text() == host
    assert_gone(monitor, namespace)

    header = text.splitlines()[0].split("\t")
    assert tuple(header) == nflog.TSHARK_FIELDS
    # The very packet sent after wait_ready, in the raw table's TRACE chain
    # (the TRACE rule itself is not reported: its end is) and OUTPUT policy.
    assert "TRACE: raw:T:return:2 \t3\t" in text, text
    save = subprocess.run(
        command_in(namespace, ["iptables-legacy-save"]), capture_output=True, text=True, check=True
    ).stdout
    passes = [p for p in parse_legacy_trace(text, save) if p.dport == 40101]
    assert passes and passes[0].proto == "udp" and passes[0].dst == "127.0.0.1"
    assert [(v.chain, v.kind) for v in passes[0].verdicts] == [
        ("T", "return"),
        ("OUTPUT", "policy"),
    ]


def test_whatever_was_found_is_restored(namespace: str) -> None:
    netns.write_sysctls(namespace, {NF_LOG_IPV4: "NONE"})
    with NflogMonitor(namespace) as monitor:
        assert logger(namespace) == NFNETLINK_LOG
    assert logger(namespace) == "NONE"
    assert_gone(monitor, namespace)


def test_restored_after_an_error_in_the_body(namespace: str) -> None:
    before = logger(namespace)
    with pytest.raises(RuntimeError, match="injected"), NflogMonitor(namespace) as monitor:
        assert logger(namespace) == NFNETLINK_LOG
        raise RuntimeError("injected by the test")
    assert logger(namespace) == before
    assert_gone(monitor, namespace)


def test_restored_when_decoding_fails(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(pcap: Path) -> str:
        raise MonitorError("tshark failed (injected by the test)")

    monkeypatch.setattr(nflog, "decode", failing)
    before = logger(namespace)
    monitor = NflogMonitor(namespace)
    monitor.start()
    monitor.wait_ready()
    with pytest.raises(MonitorError, match="injected"):
        monitor.stop()
    assert logger(namespace) == before
    assert_gone(monitor, namespace)
    assert monitor.stop() == ""  # idempotent, also after the error


def test_a_tcpdump_that_exits_is_reported_and_changes_nothing(namespace: str) -> None:
    before = logger(namespace)
    monitor = NflogMonitor(namespace)
    monitor.argv = ("tcpdump", "-i", "nflog:no-such-group")
    monitor.start()
    with pytest.raises(MonitorError, match="exited"):
        monitor.wait_ready()
    assert monitor.stop() == ""
    assert logger(namespace) == before
    assert_gone(monitor, namespace)


def test_a_second_monitor_in_the_namespace_is_refused(namespace: str) -> None:
    before = logger(namespace)
    with NflogMonitor(namespace) as first:
        second = NflogMonitor(namespace)
        with pytest.raises(MonitorError, match="already has a listener"):
            second.start()
        assert second.pid is None and second.pcap is None
        assert second.stop() == ""
        assert logger(namespace) == NFNETLINK_LOG  # the first one's, untouched
        send_udp(namespace, 40102)
    assert "\t40102" in first.output()
    assert logger(namespace) == before
    assert_gone(first, namespace)


def test_monitors_in_several_namespaces_run_in_parallel(namespace: str) -> None:
    other = f"netemu_test_{uuid.uuid4().hex[:8]}"
    netns.create(other)
    try:
        monitors = [NflogMonitor(namespace), NflogMonitor(other)]
        for monitor in monitors:
            monitor.start()
        started = time.monotonic()
        for monitor in monitors:
            monitor.wait_ready()
        assert time.monotonic() - started < 1.0
        assert logger(namespace) == logger(other) == NFNETLINK_LOG
        for monitor in monitors:
            monitor.stop()
        assert logger(namespace) != NFNETLINK_LOG and logger(other) != NFNETLINK_LOG
        for monitor, name in zip(monitors, [namespace, other], strict=True):
            assert_gone(monitor, name)
    finally:
        for pid in netns.pids(other):
            os.kill(pid, signal.SIGKILL)
        netns.remove(other)


def test_ipv6_logger_is_set_while_ready_and_restored_after(namespace: str) -> None:
    hosts = HOST_LOGGER.read_text(), HOST_LOGGER6.read_text()
    before = logger(namespace), logger6(namespace)
    assert NFNETLINK_LOG not in before
    monitor = NflogMonitor(namespace, ipv6=True)
    try:
        monitor.start()
        monitor.wait_ready()
        assert (logger(namespace), logger6(namespace)) == (NFNETLINK_LOG, NFNETLINK_LOG)
        send_udp6(namespace, 40103)
        send_udp(namespace, 40104)
        text = monitor.stop()
    finally:
        monitor.stop()
    assert (logger(namespace), logger6(namespace)) == before
    assert (HOST_LOGGER.read_text(), HOST_LOGGER6.read_text()) == hosts
    assert_gone(monitor, namespace)

    save = subprocess.run(
        command_in(namespace, ["ip6tables-legacy-save"]), capture_output=True, text=True, check=True
    ).stdout
    passes = [p for p in parse_legacy_trace(text, save) if p.dport == 40103]
    assert passes and passes[0].proto == "udp" and passes[0].dst == "::1", text
    # ip6tables' raw table, as for IPv4: the TRACE chain's end, OUTPUT's policy.
    assert [(v.chain, v.kind) for v in passes[0].verdicts] == [
        ("T", "return"),
        ("OUTPUT", "policy"),
    ]
    assert passes[0].length == 8 + len(b"netemu-nflog")  # the payload length: UDP header + data
    # Both families' messages come through the one group.
    assert any(p.dport == 40104 and p.dst == "127.0.0.1" for p in parse_legacy_trace(text, save))


def test_an_ipv4_monitor_leaves_the_ipv6_logger_alone(namespace: str) -> None:
    """ip6tables' TRACE logs through the AF_INET6 logger only: a monitor for
    IPv4 neither changes it nor receives IPv6 messages."""
    before6 = logger6(namespace)
    with NflogMonitor(namespace) as monitor:
        assert logger6(namespace) == before6 != NFNETLINK_LOG
        send_udp6(namespace, 40105)
        send_udp(namespace, 40106)
    text = monitor.output()
    assert "\t40106" in text, text
    assert "\t40105" not in text and "::1" not in text, text
    assert logger6(namespace) == before6


def test_whatever_ipv6_logger_was_found_is_restored(namespace: str) -> None:
    netns.write_sysctls(namespace, {NF_LOG_IPV6: "NONE"})
    with NflogMonitor(namespace, ipv6=True) as monitor:
        assert logger6(namespace) == NFNETLINK_LOG
    assert logger6(namespace) == "NONE"
    assert_gone(monitor, namespace)
