"""Netlink monitor tools in lab namespaces: once wait_ready() returns, the
very next packet's rule trace and conntrack event are in the output (and
arrive while the tool still runs, so nothing waits in a stdio buffer); a
tool that exits or never subscribes is reported; stop leaves no process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from netemu.kernel import netns
from netemu.kernel.monitor import (
    MonitorError,
    NetlinkMonitor,
    conntrack_monitor,
    trace_monitor,
)
from netemu.kernel.processes import command_in

# Every UDP packet is traced (raw table, as kube-proxy users do it with
# iptables-nft), and a conntrack match makes the namespace track
# connections at all: conntrack hooks are registered per namespace only
# once some rule needs them.
RULES = """*raw
:T - [0:0]
-A T -p udp -j TRACE
-I OUTPUT -j T
COMMIT
*filter
-A OUTPUT -m conntrack --ctstate NEW -j ACCEPT
COMMIT
"""


@pytest.fixture
def traced() -> Iterator[list[str]]:
    """Two namespaces with loopback up and RULES loaded; removed afterwards."""
    names = [f"netemu_test_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for name in names:
            netns.create(name)
            subprocess.run(command_in(name, ["ip", "link", "set", "lo", "up"]), check=True)
            subprocess.run(
                command_in(name, ["iptables-nft-restore", "--noflush"]),
                input=RULES,
                text=True,
                check=True,
                capture_output=True,
            )
        yield names
    finally:
        for name in names:
            for pid in netns.pids(name):  # only our monitors can live there
                os.kill(pid, signal.SIGKILL)
            netns.remove(name)


def send_udp(name: str, port: int) -> None:
    with netns.open_socket(name, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"netemu-monitor", ("127.0.0.1", port))


def wait_for_output(monitor: NetlinkMonitor, text: str, timeout: float = 2.0) -> str:
    """The output so far, once it contains `text` (the tool still runs)."""
    deadline = time.monotonic() + timeout
    while text not in (output := monitor.output()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return output


def process_gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def test_trace_of_a_packet_sent_right_after_ready(traced: list[str]) -> None:
    name = traced[0]
    monitor = trace_monitor(name)
    try:
        monitor.start()
        monitor.wait_ready()
        send_udp(name, 40001)
        # Seen while xtables-monitor still runs: it flushes per event.
        assert "DPORT=40001" in wait_for_output(monitor, "DPORT=40001")
    finally:
        text = monitor.stop()
    packet_lines = [line for line in text.splitlines() if line.startswith("PACKET:")]
    trace_lines = [line for line in text.splitlines() if line.strip().startswith("TRACE:")]
    assert any("DPORT=40001" in line and "OUT=lo" in line for line in packet_lines), text
    assert any("raw:T:rule" in line for line in trace_lines), text
    assert any("filter:OUTPUT" in line for line in trace_lines), text


def test_conntrack_new_event_of_a_packet_sent_right_after_ready(traced: list[str]) -> None:
    name = traced[0]
    with conntrack_monitor(name) as monitor:
        send_udp(name, 40002)
        assert "dport=40002" in wait_for_output(monitor, "dport=40002")
    text = monitor.stop()
    new = [line for line in text.splitlines() if "[NEW]" in line and "dport=40002" in line]
    assert len(new) == 1, text
    assert new[0].startswith("[")  # the timestamp
    assert " id=" in new[0]
    assert process_gone(monitor.pid or 0)


def test_monitors_in_several_namespaces_start_in_parallel(traced: list[str]) -> None:
    monitors = [m(name) for name in traced for m in (trace_monitor, conntrack_monitor)]
    try:
        started = time.monotonic()
        for monitor in monitors:
            monitor.start()
        for monitor in monitors:
            monitor.wait_ready()
        assert time.monotonic() - started < 3.0
        for index, name in enumerate(traced):
            send_udp(name, 40010 + index)
    finally:
        texts = [monitor.stop() for monitor in monitors]
    for index, (trace, track) in enumerate(zip(texts[0::2], texts[1::2], strict=True)):
        mine, other = 40010 + index, 40011 - index
        assert f"DPORT={mine}" in trace and f"DPORT={other}" not in trace
        assert f"dport={mine}" in track and f"dport={other}" not in track
    assert all(process_gone(monitor.pid or 0) for monitor in monitors)


def test_a_tool_that_exits_at_once_is_reported_with_its_stderr(traced: list[str]) -> None:
    monitor = NetlinkMonitor(traced[0], ["false"], groups=1)
    monitor.start()
    with pytest.raises(MonitorError, match="exit code 1"):
        monitor.wait_ready()
    assert monitor.stop() == ""

    noisy = NetlinkMonitor(traced[0], ["sh", "-c", "echo no such table >&2; exit 3"], groups=1)
    noisy.start()
    with pytest.raises(MonitorError, match=r"exit code 3.*no such table"):
        noisy.wait_ready()
    noisy.stop()

    missing = NetlinkMonitor(traced[0], ["netemu-no-such-tool"], groups=1)
    with pytest.raises(MonitorError, match="netemu-no-such-tool"), missing:
        pass
    assert process_gone(missing.pid or 0)


def test_a_tool_that_never_subscribes_times_out(traced: list[str]) -> None:
    monitor = NetlinkMonitor(traced[0], ["sleep", "5"], groups=1)
    monitor.start()
    started = time.monotonic()
    with pytest.raises(MonitorError, match="did not join"):
        monitor.wait_ready(timeout=0.3)
    assert time.monotonic() - started < 1.0
    stopping = time.monotonic()
    assert monitor.stop() == ""
    assert time.monotonic() - stopping < 0.5
    assert process_gone(monitor.pid or 0)
    assert netns.pids(traced[0]) == []


def test_subscription_to_other_groups_is_not_ready(traced: list[str]) -> None:
    # conntrack -E joins groups 1-3 only; asking for the trace group too
    # must not count it as ready.
    monitor = NetlinkMonitor(traced[0], ["conntrack", "-E"], groups=0b111 | 1 << 8, protocol=12)
    monitor.start()
    try:
        with pytest.raises(MonitorError, match="did not join"):
            monitor.wait_ready(timeout=0.3)
    finally:
        monitor.stop()


def test_sockets_of_a_child_process_count(traced: list[str]) -> None:
    # A shell that forks the tool (no exec): the subscribed socket belongs
    # to the child, not to the pid Popen knows.
    monitor = NetlinkMonitor(traced[0], ["sh", "-c", "conntrack -E; true"], groups=0b111)
    try:
        monitor.start()
        monitor.wait_ready()
        send_udp(traced[0], 40003)
        assert "dport=40003" in wait_for_output(monitor, "dport=40003")
    finally:
        monitor.stop()
    assert netns.pids(traced[0]) == []


def test_stop_is_prompt_idempotent_and_kills_a_tool_ignoring_sigterm(
    traced: list[str],
) -> None:
    with trace_monitor(traced[0]) as monitor:
        pass
    assert process_gone(monitor.pid or 0)
    started = time.monotonic()
    assert monitor.stop() == monitor.stop()
    assert time.monotonic() - started < 0.1

    stubborn = NetlinkMonitor(
        traced[0], ["sh", "-c", "trap '' TERM; echo started; sleep 30 & wait"], groups=1
    )
    stubborn.start()
    assert "started" in wait_for_output(stubborn, "started")
    stopping = time.monotonic()
    assert stubborn.stop(quiet=0.05, limit=0.2) == "started\n"
    assert 1.5 < time.monotonic() - stopping < 3.5
    assert process_gone(stubborn.pid or 0)
    assert netns.pids(traced[0]) == []
