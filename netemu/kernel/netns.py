"""Network namespaces, named as `ip netns` names them (bind mounts under
/run/netns), created and entered from the calling thread only.

A thread may switch its own network namespace (setns(2) acts on the calling
thread), so the lab builds hundreds of namespaces and opens netlink and
server sockets inside them without a process per namespace: a socket keeps
the namespace it was created in after the thread switches back. Every
switch here is undone before the function returns, even on error.

Owns: /run/netns/<name> mounts it creates. Must not touch: any namespace it
was not asked for by name, or the host's own namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_DIR = Path("/run/netns")

_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_run_dir_lock = threading.Lock()
_run_dir_ready = False


class NetnsError(OSError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NetnsError(code, f"{what}: {os.strerror(code)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, _CLONE_NEWNET), "setns")


def path(name: str) -> Path:
    return RUN_DIR / name


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so a
    namespace mounted here is visible to `ip netns` in every mount namespace."""
    global _run_dir_ready
    with _run_dir_lock:
        if _run_dir_ready:
            return
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        target = str(RUN_DIR).encode()
        if _libc.mount(b"none", target, b"none", _MS_SHARED | _MS_REC, None) != 0:
            _check(
                _libc.mount(target, target, b"none", _MS_BIND | _MS_REC, None), "bind /run/netns"
            )
            _check(
                _libc.mount(b"none", target, b"none", _MS_SHARED | _MS_REC, None),
                "share /run/netns",
            )
        _run_dir_ready = True


@contextmanager
def _home_kept() -> Iterator[None]:
    """Return the calling thread to the namespace it started in."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        yield
    finally:
        try:
            _setns(home)
        finally:
            os.close(home)


def create(name: str) -> None:
    """A new, empty network namespace mounted at /run/netns/<name>."""
    _ensure_run_dir()
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    try:
        with _home_kept():
            _check(_libc.unshare(_CLONE_NEWNET), "unshare")
            _check(
                _libc.mount(
                    b"/proc/thread-self/ns/net", str(target).encode(), b"none", _MS_BIND, None
                ),
                f"mount {target}",
            )
    except BaseException:
        _libc.umount2(str(target).encode(), _MNT_DETACH)
        target.unlink(missing_ok=True)
        raise


def remove(name: str) -> None:
    """Unmount and unlink /run/netns/<name>; the kernel frees the namespace
    (and every link in it) once no process or socket holds it."""
    target = path(name)
    if not target.exists():
        return
    _libc.umount2(str(target).encode(), _MNT_DETACH)
    target.unlink(missing_ok=True)


def exists(name: str) -> bool:
    return path(name).exists()


def list_names() -> list[str]:
    return sorted(p.name for p in RUN_DIR.iterdir()) if RUN_DIR.is_dir() else []


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace `name`."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        with _home_kept():
            _setns(fd)
            yield
    finally:
        os.close(fd)


def open_socket(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace `name` whatever thread uses it later."""
    with entered(name):
        return socket.socket(family, kind, proto)


def inode(name: str) -> int:
    return os.stat(path(name)).st_ino


def pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (as `ip netns pids`)."""
    try:
        wanted = inode(name)
    except FileNotFoundError:
        return []
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == wanted:
                found.append(int(entry))
        except OSError:
            continue
    return found


def write_sysctls(name: str, values: dict[str, str], ignore_missing: bool = False) -> None:
    """Write /proc/sys entries as seen from inside namespace `name`
    (net.* sysctls are per namespace; /proc/sys/net resolves against the
    writing thread's namespace). `ignore_missing`: skip entries the kernel
    does not have (net.ipv6.* on a kernel without IPv6), as the CNI plugins
    ignore their failed writes."""
    with entered(name):
        for key, value in values.items():
            try:
                Path("/proc/sys", *key.split(".")).write_text(value)
            except FileNotFoundError:
                if not ignore_missing:
                    raise


def read_sysctls(name: str, keys: list[str]) -> dict[str, str]:
    """/proc/sys entries as seen from inside namespace `name`, without the
    trailing newline (see write_sysctls)."""
    with entered(name):
        return {key: Path("/proc/sys", *key.split(".")).read_text().strip() for key in keys}


# TCP states (include/net/tcp_states.h) of a connection that is open, or
# closed by this side with its FIN not yet acknowledged by the peer:
# ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING.
_OPEN_OR_FIN_UNACKED = {0x01, 0x02, 0x03, 0x04, 0x08, 0x09, 0x0B}


def wait_tcp_closed(name: str, timeout: float) -> bool:
    """Wait until every TCP connection in namespace `name` is closed and its
    FIN acknowledged by the peer, so a pod's closing connections reach the
    peers before its links go. /proc/thread-self/net is the reading
    thread's namespace. True if everything closed within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with entered(name):
            lines = Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]
        states = {int(line.split()[3], 16) for line in lines if line.strip()}
        if not states & _OPEN_OR_FIN_UNACKED:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
