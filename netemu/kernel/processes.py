"""Processes inside lab namespaces: container commands and `netemu exec`.

A process runs under `ip netns exec` (so /etc/netns/<ns>/ files such as
resolv.conf and hosts are bind-mounted over /etc, as for any `ip netns`
user) and in its own UTS namespace whose hostname is the pod's (or node's)
name. A container's command runs sandboxed (netemu.kernel.sandbox: bwrap,
read-only host, its own user and environment). Container output goes to a
log file per container.

Owns: the processes it starts and the /etc/netns/<ns>/ files it writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from netemu.kernel.sandbox import SandboxSpec, bwrap_argv

ETC_NETNS = Path("/etc/netns")
CONTAINER_UMASK = 0o022

# `unshare --uts` gives the process its own hostname; the shell sets it and
# then execs the command, so the pid we record is the command's own.
_WITH_HOSTNAME = 'hostname "$1" && shift && exec "$@"'
# The same, first mounting each file of directory $1 over /etc/<its name>.
# `ip netns exec` has already made the process a mount namespace whose
# mounts do not propagate back (it remounts / as a recursive slave), so
# the mounts are the process's own and vanish with it.
_WITH_ETC = (
    'for f in "$1"/*; do mount --bind "$f" "/etc/${f##*/}" || exit 125; done'
    ' && shift && hostname "$1" && shift && exec "$@"'
)


def command_in(
    netns: str,
    argv: Sequence[str],
    hostname: str | None = None,
    etc: Path | None = None,
) -> list[str]:
    """The argv that runs `argv` inside namespace `netns` (with `hostname`,
    and with the files of `etc` over /etc's: a hostNetwork pod's own)."""
    prefix = ["ip", "netns", "exec", netns]
    if hostname is None:
        return [*prefix, *argv]
    shell = ["unshare", "--uts", "--", "sh", "-c"]
    if etc is not None:
        return [*prefix, *shell, _WITH_ETC, "sh", str(etc), hostname, *argv]
    return [*prefix, *shell, _WITH_HOSTNAME, "sh", hostname, *argv]


def sandboxed_in(netns: str, argv: Sequence[str], sandbox: SandboxSpec) -> list[str]:
    """The argv that runs `argv` in namespace `netns`, in `sandbox`."""
    return ["ip", "netns", "exec", netns, *bwrap_argv(sandbox, argv)]


def etc_dir(netns: str) -> Path:
    return ETC_NETNS / netns


def write_etc(netns: str, files: Mapping[str, str]) -> Path:
    """Files that `ip netns exec` mounts over /etc/<name> in namespace `netns`."""
    return write_etc_dir(etc_dir(netns), files)


def write_etc_dir(directory: Path, files: Mapping[str, str]) -> Path:
    """Files to mount over /etc/<name>: by `ip netns exec` for the namespace
    the directory is named after, or by command_in's `etc`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@dataclass(frozen=True)
class StartSpec:
    """What a container process was started with, to start it again."""

    netns: str
    argv: tuple[str, ...]
    sandbox: SandboxSpec
    log: Path


class ContainerProcess(subprocess.Popen[bytes]):
    """A container's process, knowing how it was started."""

    spec: StartSpec


def start(
    netns: str, argv: Sequence[str], *, sandbox: SandboxSpec, log: Path
) -> subprocess.Popen[bytes]:
    return _launch(StartSpec(netns, tuple(argv), sandbox, log))


def start_again(
    process: subprocess.Popen[bytes], env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start a container process that `start` started (and that has ended)
    again: same namespace, command, sandbox and log file (appended to), with
    the environment the kubelet computes for this start."""
    if not isinstance(process, ContainerProcess):
        raise TypeError(f"process {process.pid} was not started by processes.start")
    sandbox = replace(process.spec.sandbox, env=tuple(env.items()))
    return _launch(replace(process.spec, sandbox=sandbox))


def _launch(spec: StartSpec) -> ContainerProcess:
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log, "ab") as out:
        process = ContainerProcess(
            sandboxed_in(spec.netns, spec.argv, spec.sandbox),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # For `ip` and bwrap only: the sandbox starts from an empty environment.
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            # Its own session and process group, without a terminal (bwrap's
            # --new-session would put the command in another group, out of
            # reach of `stop`'s SIGTERM).
            start_new_session=True,
            # A container runtime's umask (containerd's 0022), whatever the
            # supervisor's: the directories bwrap makes for mount points and the
            # files the command writes are readable by the container's user.
            umask=CONTAINER_UMASK,
        )
    process.spec = spec
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
    """SIGTERM the container's processes, SIGKILL its process group after
    `timeout`, and SIGKILL whatever of the group outlived its leader.

    The group's leader is bwrap outside the sandbox, which waits for the
    command and exits with its status: it is spared the SIGTERM, since its
    death would end the sandbox before the command could act on the signal.
    bwrap's reaper, PID 1 inside, ignores SIGTERM and may outlive the
    leader; killing it ends every process left in the sandbox's PID
    namespace, daemons included."""
    if process.poll() is None:
        members = [pid for pid in group_members(process.pid) if pid != process.pid]
        for pid in members or [process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a container's whole process group at once: bwrap and its
    sandbox (killing bwrap alone would leave the sandbox's PID 1 behind)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """The pids of the processes in process group `pgid` (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = text[text.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found
