"""Processes inside lab namespaces: container commands and `netemu exec`.

A process runs under `ip netns exec` (so /etc/netns/<ns>/ files such as
resolv.conf and hosts are bind-mounted over /etc, as for any `ip netns`
user) and in its own UTS namespace whose hostname is the pod's (or node's)
name. Container output goes to a log file per container.

Owns: the processes it starts and the /etc/netns/<ns>/ files it writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ETC_NETNS = Path("/etc/netns")

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
    hostname: str
    env: tuple[tuple[str, str], ...]
    log: Path
    etc: Path | None = None


class ContainerProcess(subprocess.Popen[bytes]):
    """A container's process, knowing how it was started."""

    spec: StartSpec


def start(
    netns: str,
    argv: Sequence[str],
    *,
    hostname: str,
    env: Mapping[str, str],
    log: Path,
    etc: Path | None = None,
) -> subprocess.Popen[bytes]:
    return _launch(StartSpec(netns, tuple(argv), hostname, tuple(env.items()), log, etc))


def start_again(
    process: subprocess.Popen[bytes], env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start a container process that `start` started (and that has ended)
    again: same namespace, command, hostname and log file (appended to), with
    the environment the kubelet computes for this start."""
    if not isinstance(process, ContainerProcess):
        raise TypeError(f"process {process.pid} was not started by processes.start")
    return _launch(replace(process.spec, env=tuple(env.items())))


def _launch(spec: StartSpec) -> ContainerProcess:
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log, "ab") as out:
        process = ContainerProcess(
            command_in(spec.netns, spec.argv, spec.hostname, spec.etc),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **dict(spec.env)},
            start_new_session=True,  # its own process group: stopped as one
        )
    process.spec = spec
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
