"""Long-running netlink monitor tools inside a namespace (`xtables-monitor
--trace`, `nft monitor trace`, `conntrack -E`), started and awaited until they are really
subscribed to their netlink multicast groups, so that no event a caller
causes afterwards is missed.

A monitor tool prints events only from the moment its netlink socket has
joined the groups, and the kernel does not even produce some events while
nobody listens (nf_tables emits a trace only with a NFNLGRP_NFTRACE
listener; with net.netfilter.nf_conntrack_events=2, a connection gets
events only if a listener existed when it was created). Process start-up is
not subscription, so `wait_ready` watches the kernel's own view: the
process's netlink sockets in /proc/<pid>/net/netlink.

Both tools flush stdout after every event (checked: output arrives through
a pipe while the tool still runs), so reading a pipe loses nothing, and
`stop` waits for output to go quiet before terminating the tool.

Owns: the processes it starts (each in its own process group) and their
pipes. Must not touch: rules, conntrack entries or anything else in the
namespace; other processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, Self

from netemu.kernel.processes import command_in

NETLINK_NETFILTER = 12
# <linux/netfilter/nfnetlink.h>: group N is bit N-1 of the "Groups" column
# of /proc/net/netlink (the kernel's first 32 groups of the socket).
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_UPDATE = 2
NFNLGRP_CONNTRACK_DESTROY = 3
NFNLGRP_NFTRACE = 9

_POLL = 0.005
_KILL_AFTER = 2.0
_READER_JOIN = 1.0


class MonitorError(RuntimeError):
    pass


def group_bit(group: int) -> int:
    return 1 << (group - 1)


class _Reader:
    """Reads a pipe to its end on a daemon thread, so the tool never blocks
    on a full pipe, and remembers when output last arrived."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self.last_output = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self._stream.fileno()
        try:
            while chunk := os.read(fd, 65536):
                with self._lock:
                    self._chunks.append(chunk)
                    self.last_output = time.monotonic()
        except OSError:
            pass  # a read error ends the output like an end of file would
        finally:
            self._stream.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", errors="replace")


class NetlinkMonitor:
    """A monitor tool run with `ip netns exec <netns> <argv>`; it counts as
    ready once one of its netlink sockets of family `protocol` has joined
    every multicast group in the bitmask `groups` (bit N-1 for group N, as
    /proc/net/netlink shows them).

    `ip netns exec` execs the tool, so the pid Popen returns is the tool's;
    sockets are still looked for in the whole process tree, so a wrapper
    that forks (a shell, `stdbuf`, `unshare`) works as well.
    """

    def __init__(
        self, netns: str, argv: Sequence[str], groups: int, protocol: int = NETLINK_NETFILTER
    ) -> None:
        self.netns = netns
        self.argv = tuple(argv)
        self.groups = groups
        self.protocol = protocol
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: _Reader | None = None
        self._stderr: _Reader | None = None
        self._reaped = False
        self._final: str | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the tool; does not wait for it to subscribe."""
        if self._process is not None:
            return
        try:
            process = subprocess.Popen(
                command_in(self.netns, self.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: stopped as one
            )
        except OSError as error:
            raise MonitorError(f"cannot start {self._what()}: {error}") from error
        assert process.stdout is not None and process.stderr is not None
        self._process = process
        self._stdout = _Reader(process.stdout, f"monitor-out-{process.pid}")
        self._stderr = _Reader(process.stderr, f"monitor-err-{process.pid}")

    def wait_ready(self, timeout: float = 3.0) -> None:
        """Return once the tool has subscribed to all `groups`; raise
        MonitorError (with the tool's stderr) if it exits first or the
        deadline passes."""
        process = self._started()
        deadline = time.monotonic() + timeout
        while True:
            status = self._exit_status()
            if status is not None:
                assert self._stderr is not None
                self._stderr.join(_READER_JOIN)  # it exited: stderr is complete
                raise MonitorError(
                    f"{self._what()} exited ({status}) before subscribing: "
                    f"{self._stderr.text().strip() or 'no error output'}"
                )
            if self._subscribed(process.pid):
                return
            if time.monotonic() >= deadline:
                raise MonitorError(
                    f"{self._what()} did not {self._awaited()} within {timeout} s: "
                    f"{self.stderr().strip() or 'no error output'}"
                )
            time.sleep(_POLL)

    def output(self) -> str:
        """The tool's stdout so far (the tool keeps running)."""
        if self._final is not None:
            return self._final
        return "" if self._stdout is None else self._stdout.text()

    def stderr(self) -> str:
        return "" if self._stderr is None else self._stderr.text()

    def stop(self, quiet: float = 0.05, limit: float = 1.0) -> str:
        """Wait until no new output arrived for `quiet` seconds (at most
        `limit`), so events the kernel already sent are printed; then
        SIGTERM the tool's process group (SIGKILL after 2 s) and return its
        whole stdout. Idempotent."""
        if self._final is not None:
            return self._final
        if self._process is None:
            return ""
        assert self._stdout is not None and self._stderr is not None
        self._await_quiet(quiet, limit)
        self._terminate()
        self._stdout.join(_READER_JOIN)
        self._stderr.join(_READER_JOIN)
        self._final = self._stdout.text()
        return self._final

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(quiet=0, limit=0)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _what(self) -> str:
        return f"{' '.join(self.argv)!r} in namespace {self.netns!r}"

    def _awaited(self) -> str:
        """What wait_ready waits for, as its error message says it."""
        return f"join netlink groups {self.groups:#x} (protocol {self.protocol})"

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise MonitorError(f"{self._what()} was not started")
        return self._process

    def _exit_status(self) -> str | None:
        """How the tool ended, or None while it runs. WNOWAIT leaves the
        zombie unreaped, so its pid (= our process group id) cannot be
        reused before stop() signals the group."""
        process = self._started()
        if self._reaped:
            return f"exit code {process.returncode}"
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return "reaped elsewhere"
        if info is None or info.si_pid == 0:
            return None
        if info.si_code == os.CLD_EXITED:
            return f"exit code {info.si_status}"
        return f"signal {info.si_status}"

    def _subscribed(self, pid: int) -> bool:
        for member in _process_tree(pid):
            inodes = _socket_inodes(member)
            if not inodes:
                continue
            for sock in netlink_sockets(member):
                if (
                    sock.inode in inodes
                    and sock.protocol == self.protocol
                    and sock.groups & self.groups == self.groups
                ):
                    return True
        return False

    def _await_quiet(self, quiet: float, limit: float) -> None:
        assert self._stdout is not None
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if now - start >= limit or self._exit_status() is not None:
                return
            if now - max(start, self._stdout.last_output) >= quiet:
                return
            time.sleep(min(_POLL, quiet))

    def _terminate(self) -> None:
        process = self._started()
        if self._reaped:
            return
        # The leader is alive or an unreaped zombie here, so the group id is
        # still ours: signalling it reaches only processes we started.
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _KILL_AFTER
        while self._exit_status() is None and time.monotonic() < deadline:
            time.sleep(_POLL)
        # Whatever is left in the group (a leader ignoring SIGTERM, a child
        # that outlived it) is killed before the leader is reaped, and
        # waited for: stop() returns only once no process of it is left.
        _signal_group(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_AFTER
        while _live_group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(_POLL)
        process.wait()
        self._reaped = True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # nobody left in the group
        os.killpg(pgid, sig)


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that have not exited (zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except (OSError, IndexError, ValueError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: the command name (field 2)
    may hold spaces and parentheses, so it is cut at its last ")"."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, found through /proc/<pid>/task/*/children
    (or by scanning /proc if the kernel lacks CONFIG_PROC_CHILDREN)."""
    found = [pid]
    index = 0
    while index < len(found):
        found.extend(_children(found[index]))
        index += 1
    return found


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    try:
        names = os.listdir(tasks)
    except OSError:
        return []
    children: list[int] = []
    for task in names:
        try:
            children.extend(int(c) for c in (tasks / task / "children").read_text().split())
        except FileNotFoundError:
            return _children_by_scan(pid)
        except OSError:
            continue
    return children


def _children_by_scan(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.append(int(entry))
    return children


def _socket_inodes(pid: int) -> set[int]:
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return set()
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


class NetlinkSocket(NamedTuple):
    """One row of /proc/<pid>/net/netlink."""

    protocol: int  # "Eth"
    port: int  # "Pid": the socket's netlink port id
    groups: int  # the first 32 multicast groups, as a bitmask
    rmem: int  # bytes queued for reading
    inode: int


def netlink_sockets(pid: int) -> list[NetlinkSocket]:
    """Every netlink socket in the network namespace of `pid`
    (/proc/<pid>/net is that process's view)."""
    try:
        lines = Path(f"/proc/{pid}/net/netlink").read_text().splitlines()
    except OSError:
        return []
    if not lines:
        return []
    header = lines[0].split()
    columns = [header.index(name) for name in ("Eth", "Pid", "Groups", "Rmem", "Inode")]
    sockets = []
    for line in lines[1:]:
        words = line.split()
        if len(words) == len(header):
            eth, port, groups, rmem, inode = (words[c] for c in columns)
            sockets.append(
                NetlinkSocket(int(eth), int(port), int(groups, 16), int(rmem), int(inode))
            )
    return sockets


def trace_monitor(netns: str) -> NetlinkMonitor:
    """`xtables-monitor --trace`: nf_tables rule traces (set by iptables-nft's
    TRACE target) as PACKET:/TRACE: lines."""
    return NetlinkMonitor(
        netns, ["xtables-monitor", "--trace"], group_bit(NFNLGRP_NFTRACE), NETLINK_NETFILTER
    )


def nft_trace_monitor(netns: str) -> NetlinkMonitor:
    """`nft monitor trace`: nf_tables rule traces (set by `meta nftrace set
    1`, or iptables-nft's TRACE) of every table, as `trace id ...` lines."""
    return NetlinkMonitor(
        netns, ["nft", "monitor", "trace"], group_bit(NFNLGRP_NFTRACE), NETLINK_NETFILTER
    )


def conntrack_monitor(netns: str) -> NetlinkMonitor:
    """`conntrack -E` with timestamps and ids: [NEW], [UPDATE] and [DESTROY]
    events of the namespace's connection tracking table."""
    return NetlinkMonitor(
        netns,
        ["conntrack", "-E", "-o", "timestamp,id"],
        group_bit(NFNLGRP_CONNTRACK_NEW)
        | group_bit(NFNLGRP_CONNTRACK_UPDATE)
        | group_bit(NFNLGRP_CONNTRACK_DESTROY),
        NETLINK_NETFILTER,
    )
