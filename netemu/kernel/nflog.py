"""Rule traces of the legacy iptables backend (x_tables), read through NFLOG
inside one network namespace.

The legacy TRACE target marks a packet; x_tables then logs every rule the
packet matches with nf_log_trace(), through the namespace's logger for the
packet's family: AF_INET (`net.netfilter.nf_log.2`) for iptables' tables,
AF_INET6 (`net.netfilter.nf_log.10`) for ip6tables' (net/ipv6/netfilter/
ip6_tables.c, trace_packet: nf_log_trace(net, AF_INET6, ...)). In a
namespace other than the host's those loggers are nf_log_ipv4 and
nf_log_ipv6, whose output the kernel suppresses, so nothing is seen.
Pointed at `nfnetlink_log`, the same messages go to NFLOG group 0
(nfnetlink_log's default for log types other than ULOG, queue threshold 1:
each message is sent at once), one per matched rule, each with the packet
and the prefix `TRACE: <table>:<chain>:<rule|return|policy>:<number> `.

`NflogMonitor` has the shape of `NetlinkMonitor` (start / wait_ready /
stop). `start` remembers the namespace's loggers and refuses a namespace
whose group 0 already has a listener (another trace: a group has one
listener, and two traces would restore each other's loggers), then runs
`tcpdump -i nflog:0` there, writing a pcap to a temporary file.
`wait_ready` returns once tcpdump's netlink socket is bound to the group
(the namespace's /proc/net/netfilter/nfnetlink_log lists the group with
that socket's port id) and the loggers of the traced families are
nfnetlink_log, as read back. libpcap's NFLOG support binds nfnetlink_log
to AF_INET only (pcap-netfilter-linux.c, netfilter_activate: PF_UNBIND then
PF_BIND for AF_INET, before binding the groups with AF_UNSPEC) and leaves
it bound when it exits; the AF_INET6 logger is the monitor's to set, for
an IPv6 trace (`ipv6=True`). The monitor sets the IPv4 logger anyway, and
restores whatever it found of both either way. `stop` waits until nothing
is pending (the kernel's queue for the group and tcpdump's socket are
empty and the file stopped growing), restores the loggers it found
(always, also on error; again after tcpdump exited), stops tcpdump and
returns the messages as tshark decodes them: tab-separated columns
`TSHARK_FIELDS` under a header line (netemu.trace.legacytrace reads
them). An NFLOG message carries its family (nflog.protocol 0x0800 /
0x86dd), and tshark fills the ip.* or the ipv6.* columns accordingly.

Owns: the tcpdump process it starts (in its own process group), its
temporary directory, and the namespace's loggers (`net.netfilter.nf_log.2`
and `.10`) between start and stop. Must not touch: any rule (the TRACE
rules are the caller's), other sysctls, other namespaces (the host's own
loggers above all), other processes. A process killed between start and
stop leaves the namespace's loggers at nfnetlink_log: harmless (TRACE
messages then go to an NFLOG group nobody reads instead of being
suppressed).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from netemu.kernel import netns
from netemu.kernel.monitor import (
    NETLINK_NETFILTER,
    MonitorError,
    NetlinkMonitor,
    _process_tree,
    _socket_inodes,
    netlink_sockets,
)

NF_LOG_IPV4 = "net.netfilter.nf_log.2"  # NFPROTO_IPV4
NF_LOG_IPV6 = "net.netfilter.nf_log.10"  # NFPROTO_IPV6: set for an IPv6 trace
NFNETLINK_LOG = "nfnetlink_log"
GROUP = 0  # nfnetlink_log's default group, which nf_log_trace's messages use
PCAP = "nflog.pcap"

# What tshark prints per message (`-E occurrence=f`: the outer header's
# value when a packet holds several, as an ICMP error or a VXLAN frame does).
TSHARK_FIELDS = (
    "frame.time_epoch",
    "nflog.prefix",
    "nflog.hook",
    "nflog.ifindex_indev",
    "nflog.ifindex_outdev",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.id",
    "ip.len",
    "ip.ttl",
    "ip.flags.df",
    "ip.flags.mf",
    # An IPv6 packet's (ip6tables' TRACE): its first next header, payload
    # length, hop limit and flow label (its stand-in for the IP id).
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.plen",
    "ipv6.hlim",
    "ipv6.flow",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    # Absolute sequence numbers (tshark's tcp.seq is relative to the first
    # it saw): with the flow label they tell one IPv6 packet from another.
    "tcp.seq_raw",
    "tcp.ack_raw",
    "udp.srcport",
    "udp.dstport",
)

_POLL = 0.005
_DECODE_TIMEOUT = 30.0


class NflogMonitor(NetlinkMonitor):
    """Legacy TRACE messages of namespace `netns` (see the module docstring).

    `ipv6`: the traced rules are ip6tables' too, so the namespace's
    AF_INET6 logger is pointed at nfnetlink_log as well. `interfaces` maps
    the namespace's interface indexes to names (read by start, for the
    messages' in/out interface indexes)."""

    def __init__(self, netns_name: str, ipv6: bool = False) -> None:
        super().__init__(netns_name, ["tcpdump", "-i", f"nflog:{GROUP}"], groups=0)
        # The loggers wait_ready points at nfnetlink_log: the IPv4 one
        # always (libpcap binds it anyway), the IPv6 one for an IPv6 trace.
        self.routed = (NF_LOG_IPV4, NF_LOG_IPV6) if ipv6 else (NF_LOG_IPV4,)
        self.interfaces: dict[int, str] = {}
        self._directory: Path | None = None
        self._loggers: dict[str, str] | None = None  # as found by start
        self._done = False

    @property
    def pcap(self) -> Path | None:
        return None if self._directory is None else self._directory / PCAP

    def start(self) -> None:
        """Remember the loggers and start tcpdump; does not wait for it to
        bind. MonitorError if the group already has a listener."""
        if self._loggers is not None or self._done:
            return
        try:
            with netns.entered(self.netns):
                listeners = [p for g, p, _ in _instances("thread-self") if g == GROUP]
                self.interfaces = dict(socket.if_nameindex())
            loggers = netns.read_sysctls(self.netns, [NF_LOG_IPV4, NF_LOG_IPV6])
        except OSError as error:
            raise MonitorError(f"cannot read namespace {self.netns!r}: {error}") from error
        if listeners:
            raise MonitorError(
                f"NFLOG group {GROUP} in namespace {self.netns!r} already has a listener "
                f"(netlink port {listeners[0]}): is another trace running?"
            )
        self._loggers = loggers
        self._directory = Path(tempfile.mkdtemp(prefix="netemu-nflog-"))
        # -U: each message is written as it arrives; -Z root: tcpdump keeps
        # root instead of switching to its own user, so it can write here.
        self.argv = (*self.argv, "-U", "-Z", "root", "-w", str(self.pcap))
        try:
            super().start()
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise

    def wait_ready(self, timeout: float = 3.0) -> None:
        """Return once tcpdump is bound to the group and the namespace's
        loggers in `routed` are nfnetlink_log (read back); raise
        MonitorError otherwise."""
        super().wait_ready(timeout)
        wanted = dict.fromkeys(self.routed, NFNETLINK_LOG)
        try:
            # Set only in this monitor's namespace (netns.write_sysctls enters it).
            netns.write_sysctls(self.netns, wanted)
            now = netns.read_sysctls(self.netns, list(wanted))
        except OSError as error:
            raise MonitorError(
                f"cannot route log messages to {NFNETLINK_LOG} in namespace {self.netns!r}: {error}"
            ) from error
        wrong = {key: value for key, value in now.items() if value != NFNETLINK_LOG}
        if wrong:
            raise MonitorError(
                f"namespace {self.netns!r}: loggers not {NFNETLINK_LOG} after setting them: {wrong}"
            )

    def stop(self, quiet: float = 0.05, limit: float = 1.0) -> str:
        """Wait until no message is pending for `quiet` seconds (at most
        `limit`), restore the namespace's loggers, stop tcpdump and return
        the messages decoded by tshark (TSHARK_FIELDS, tab-separated, with
        a header line; "" if tcpdump never ran). Idempotent."""
        if self._done:
            return self._final or ""
        self._done = True
        text = ""
        try:
            try:
                if self.pid is not None and not self._reaped:
                    self._await_drained(quiet, limit)
            finally:
                # Restored while tcpdump still holds the group (no other
                # monitor can start in between), and again once it exited.
                try:
                    self._restore_loggers()
                finally:
                    try:
                        super().stop(quiet=0, limit=0)
                    finally:
                        self._restore_loggers()
            pcap = self.pcap
            if pcap is not None and pcap.exists():
                text = decode(pcap)
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
        self._final = text
        return text

    def _restore_loggers(self) -> None:
        if self._loggers is None:
            return
        now = netns.read_sysctls(self.netns, list(self._loggers))
        changed = {key: old for key, old in self._loggers.items() if now[key] != old}
        if changed:
            netns.write_sysctls(self.netns, changed)

    def _awaited(self) -> str:
        return f"bind NFLOG group {GROUP}"

    def _subscribed(self, pid: int) -> bool:
        """Whether a netfilter netlink socket of `pid` (or a child) is the
        group's listener, as the kernel's own list of bound groups says."""
        ports = {port for port, _ in self._sockets(pid)}
        return any(g == GROUP and port in ports for g, port, _ in _instances(str(pid)))

    def _sockets(self, pid: int) -> list[tuple[int, int]]:
        """(port id, bytes queued for reading) of the tool's netfilter sockets."""
        found: list[tuple[int, int]] = []
        for member in _process_tree(pid):
            inodes = _socket_inodes(member)
            if inodes:
                found += [
                    (sock.port, sock.rmem)
                    for sock in netlink_sockets(member)
                    if sock.protocol == NETLINK_NETFILTER and sock.inode in inodes
                ]
        return found

    def _pending(self, pid: int) -> bool:
        """Messages the kernel holds for the group or tcpdump has not read."""
        ports = self._sockets(pid)
        if any(rmem for _, rmem in ports):
            return True
        bound = {port for port, _ in ports}
        return any(g == GROUP and port in bound and q for g, port, q in _instances(str(pid)))

    def _await_drained(self, quiet: float, limit: float) -> None:
        pid, pcap = self.pid, self.pcap
        if pid is None or pcap is None:
            return
        start = last_change = time.monotonic()
        size = _size(pcap)
        while True:
            now = time.monotonic()
            if now - start >= limit or self._exit_status() is not None:
                return
            current = _size(pcap)
            if current != size or self._pending(pid):
                size, last_change = current, now
            elif now - last_change >= quiet:
                return
            time.sleep(min(_POLL, quiet) if quiet > 0 else _POLL)


def decode(pcap: Path) -> str:
    """The NFLOG messages of a pcap as tshark prints TSHARK_FIELDS."""
    argv = ["tshark", "-r", str(pcap), "-n", "-T", "fields", "-E", "header=y"]
    argv += ["-E", "separator=/t", "-E", "occurrence=f"]
    for name in TSHARK_FIELDS:
        argv += ["-e", name]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=_DECODE_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MonitorError(f"cannot decode {pcap} with tshark: {error}") from error
    if done.returncode != 0:
        raise MonitorError(f"tshark could not read {pcap}: {done.stderr.strip()}")
    return done.stdout


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _instances(process: str) -> list[tuple[int, int, int]]:
    """(group, listener's port id, queued messages) of every NFLOG group
    bound in the network namespace of `process` (a pid, or "thread-self"),
    from /proc/<process>/net/netfilter/nfnetlink_log (group, port id,
    queue length, copy mode, copy range, flush timeout, use count)."""
    try:
        lines = Path(f"/proc/{process}/net/netfilter/nfnetlink_log").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        words = line.split()
        if len(words) >= 3 and all(w.isdigit() for w in words[:3]):
            found.append((int(words[0]), int(words[1]), int(words[2])))
    return found
