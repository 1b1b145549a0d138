"""Sandboxed container commands: the bubblewrap (`bwrap`) command line that
runs a container's command, an exec probe or `netemu exec` inside a pod.

A lab has no images, so a container sees the host's filesystem in place of
its image, but only read-only and in its own mount and PID namespaces
(joined to the pod's network namespace by `ip netns exec`, whose
/etc/netns/<ns>/ files, resolv.conf, hosts and hostname, are bound over /etc
before bwrap starts and so show through):

- the root is bwrap's own tmpfs, remounted read-only at the end, with every
  top-level host entry bound read-only (symlinks such as /bin -> usr/bin
  copied as symlinks);
- /tmp, /var and /run are private and writable, as is the working directory
  (`workingDir`; / when unset, not writable): directories of the container
  under the lab's run directory (`private_root`, made by `prepare_private`;
  the host's /var subdirectories appear empty in its var, so programs find
  /var/lib, /var/log...), shared by the container's process, its exec probes
  and `netemu exec`, as a container's filesystem is; without a
  `private_root`, tmpfs of the one process;
- a mount point that does not exist on the host (a workingDir like /app, a
  volume's mountPath like /etc/app) is made without touching the host: the
  directory above it becomes a tmpfs holding read-only binds of the host's
  entries, then read-only again once the mount is in;
- the process runs as `uid`/`gid` (setpriv inside the sandbox, which drops
  every capability on the switch to a non-root uid); root in the sandbox
  keeps only the container runtime's default capabilities (no
  CAP_SYS_ADMIN, so it cannot remount anything writable);
- its environment is exactly the container's (`--clearenv`), its hostname
  the pod's (own UTS namespace).

Owns: nothing beyond the command line; processes.py runs it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

BWRAP = "bwrap"
SETPRIV = "setpriv"
# The user a container runs as when neither the pod nor the container sets
# runAsUser: nobody, so a manifest's command never runs as root by accident.
DEFAULT_UID = 65534
DEFAULT_GID = 65534
# The capabilities containerd (and Docker) give a container by default
# (containerd's oci.defaultUnixCaps / moby's DefaultCapabilities).
DEFAULT_CAPS = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
PRIVATE_DIRS = ("/tmp", "/var", "/run")
# Top-level entries bwrap makes itself (or that must not be bound).
_OWN_ROOT_ENTRIES = frozenset({"proc", "dev", "tmp", "var", "run"})


@dataclass(frozen=True)
class Mount:
    """A host path bound at `target` in the sandbox."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class SandboxSpec:
    """Everything about a container's sandbox but its command."""

    hostname: str
    env: tuple[tuple[str, str], ...] = ()
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_GID
    workdir: str = "/"
    mounts: tuple[Mount, ...] = ()
    # For an interactive `netemu exec`: a new session, so a command cannot
    # push input into the caller's terminal (TIOCSTI).
    new_session: bool = False
    # End with the process that started bwrap (--die-with-parent): for
    # `netemu exec` and exec probes, whose starter waits for them. Not for
    # containers: the kernel's parent-death signal fires when the starting
    # *thread* ends, and the supervisor starts containers from threads that
    # end long before the container; processes.stop and `netemu down` end
    # a container's whole process group instead.
    die_with_parent: bool = False
    # The host directory holding the container's tmp, var, run and work
    # (see prepare_private); "" for tmpfs.
    private_root: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "hostname": self.hostname,
            "env": [list(pair) for pair in self.env],
            "uid": self.uid,
            "gid": self.gid,
            "workdir": self.workdir,
            "mounts": [[m.source, m.target, m.read_only] for m in self.mounts],
            "privateRoot": self.private_root,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> SandboxSpec:
        env = data.get("env")
        mounts = data.get("mounts")
        uid, gid = data.get("uid"), data.get("gid")
        return cls(
            hostname=str(data.get("hostname", "")),
            env=tuple((str(k), str(v)) for k, v in env) if isinstance(env, list) else (),
            uid=uid if isinstance(uid, int) else DEFAULT_UID,
            gid=gid if isinstance(gid, int) else DEFAULT_GID,
            workdir=str(data.get("workdir", "/")),
            mounts=tuple(Mount(str(s), str(t), bool(r)) for s, t, r in mounts)
            if isinstance(mounts, list)
            else (),
            private_root=str(data.get("privateRoot", "")),
        )


@dataclass(frozen=True)
class HostEntry:
    name: str
    is_dir: bool  # a real directory (not a symlink to one)
    link: str | None = None  # the symlink's target, for a symlink


Lister = Callable[[str], Sequence[HostEntry]]


def list_host(path: str) -> list[HostEntry]:
    """The entries of a host directory, as the layout needs them."""
    out = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_symlink():
                    out.append(HostEntry(entry.name, False, os.readlink(entry.path)))
                else:
                    out.append(HostEntry(entry.name, entry.is_dir(follow_symlinks=False)))
    except OSError:
        return []
    return sorted(out, key=lambda e: e.name)


def bwrap_argv(spec: SandboxSpec, argv: Sequence[str], lister: Lister = list_host) -> list[str]:
    """The command line that runs `argv` in `spec`'s sandbox (to be run in
    the pod's network namespace)."""
    out = [BWRAP, "--unshare-pid", "--unshare-uts", "--hostname", spec.hostname]
    if spec.die_with_parent:
        out.append("--die-with-parent")
    if spec.new_session:
        out.append("--new-session")
    out += _layout(spec, lister)
    out += ["--chdir", spec.workdir, "--clearenv"]
    for name, value in spec.env:
        out += ["--setenv", name, value]
    out += ["--cap-drop", "ALL"]
    for cap in DEFAULT_CAPS:
        out += ["--cap-add", cap]
    out.append("--")
    if spec.uid != 0 or spec.gid != 0:
        out += [SETPRIV, f"--reuid={spec.uid}", f"--regid={spec.gid}", "--clear-groups", "--"]
    return [*out, *argv]


def prepare_private(root: Path) -> None:
    """Make a container's private directories under `root` (kept if they
    exist): tmp, var (with empty copies of the host's /var subdirectories),
    run and work, world-writable with the sticky bit as /tmp is, since the
    container's user owns nothing there yet must be able to write."""
    subdirs = [f"var/{e.name}" for e in list_host("/var") if e.is_dir]
    for name in ("tmp", "var", "run", "work", *subdirs):
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o1777)


def prepare_mount_points(root: Path, mounts: Iterable[Mount]) -> None:
    """Make the mount points of `mounts` that lie in the container's private
    /tmp, /var or /run (under `root`, see prepare_private) as world-readable
    directories: bwrap would make missing ones readable by root alone."""
    for mount in mounts:
        target = _normal(mount.target)
        private = next((d for d in PRIVATE_DIRS if _under(target, d)), None)
        if private is None or target == private:
            continue
        parts = PurePosixPath(target).relative_to(private).parts
        if ".." in parts:
            continue
        base = root / private.lstrip("/")
        last = len(parts) if os.path.isdir(mount.source) else len(parts) - 1
        for depth in range(1, last + 1):
            path = base.joinpath(*parts[:depth])
            if path.is_symlink():
                break  # the container's own doing: never follow it
            path.mkdir(exist_ok=True)
            path.chmod(0o755)


def write_volume(directory: Path, files: Mapping[str, tuple[bytes, int]] | None) -> None:
    """A volume's directory on the host: empty and world-writable for
    `files` None (emptyDir), else the files in the kubelet's atomic-writer
    layout: a timestamped `..<time>` directory holding them, a `..data`
    symlink to it swapped in by rename, and one symlink per top-level name
    through `..data`, so a reader never sees half an update."""
    directory.mkdir(parents=True, exist_ok=True)
    if files is None:
        directory.chmod(0o1777)
        return
    # Directories readable by any user whatever the umask: the container's
    # user is not root; each file keeps its own mode.
    directory.chmod(0o755)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir(mode=0o755)
    stamp.chmod(0o755)
    for relative, (data, mode) in files.items():
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or ".." in parts:
            continue  # validation forbids such paths; never write outside
        target = stamp.joinpath(*parts)
        for depth in range(1, len(parts)):
            sub = stamp.joinpath(*parts[:depth])
            sub.mkdir(exist_ok=True)
            sub.chmod(0o755)
        target.write_bytes(data)
        target.chmod(mode & 0o777)
    link = directory / "..data_tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(stamp.name)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    link.rename(directory / "..data")
    tops = {PurePosixPath(p).parts[0] for p in files if PurePosixPath(p).parts}
    for top in tops:
        if top == ".." or top.startswith(".."):
            continue
        entry = directory / top
        if not entry.is_symlink():
            entry.symlink_to(f"..data/{top}")
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()  # a key that is gone
    if old is not None and old != stamp.name:
        shutil.rmtree(directory / old, ignore_errors=True)


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _layout(spec: SandboxSpec, lister: Lister) -> list[str]:
    workdir = _normal(spec.workdir)
    own_workdir = workdir != "/" and not any(_under(workdir, d) for d in PRIVATE_DIRS)
    # Paths to be mounted on: they need a writable directory above them.
    targets = [_normal(m.target) for m in spec.mounts]
    if own_workdir:
        targets.append(workdir)
    needs = [t for t in targets if not any(_under(t, d) for d in PRIVATE_DIRS)]
    out: list[str] = []
    relocked: list[str] = []
    _populate("/", needs, lister, out, relocked)
    out += ["--proc", "/proc", "--dev", "/dev"]
    if spec.private_root:
        for private in PRIVATE_DIRS:
            out += ["--bind", f"{spec.private_root}{private}", private]
        if own_workdir:
            out += ["--bind", f"{spec.private_root}/work", workdir]
    else:
        # World-writable with the sticky bit, as /tmp is: the container's user
        # (nobody by default) owns nothing there yet must be able to write.
        for private in PRIVATE_DIRS:
            out += ["--perms", "1777", "--tmpfs", private]
        for entry in lister("/var"):
            if entry.is_dir:
                out += ["--perms", "1777", "--dir", f"/var/{entry.name}"]
        if own_workdir:
            out += ["--perms", "1777", "--tmpfs", workdir]
    for mount in spec.mounts:
        out += ["--ro-bind" if mount.read_only else "--bind", mount.source, _normal(mount.target)]
    for path in reversed(relocked):
        out += ["--remount-ro", path]
    out += ["--remount-ro", "/"]
    return out


def _populate(
    directory: str, needs: Iterable[str], lister: Lister, out: list[str], relocked: list[str]
) -> None:
    """Fill `directory` (a tmpfs in the sandbox) with read-only binds of the
    host's entries; an entry with a mount point somewhere below it becomes a
    tmpfs filled the same way (and made read-only again after the mounts)."""
    needs = list(needs)
    for entry in lister(directory):
        path = str(PurePosixPath(directory) / entry.name)
        if directory == "/" and entry.name in _OWN_ROOT_ENTRIES:
            continue
        if entry.link is not None:
            out += ["--symlink", entry.link, path]
            continue
        below = [n for n in needs if n != path and _under(n, path)]
        if entry.is_dir and below and path not in needs:
            out += ["--tmpfs", path]
            relocked.append(path)
            _populate(path, below, lister, out, relocked)
        elif path not in needs:
            out += ["--ro-bind", path, path]


def _normal(path: str) -> str:
    return str(PurePosixPath("/") / PurePosixPath(path))


__all__ = [
    "DEFAULT_GID",
    "DEFAULT_UID",
    "HostEntry",
    "Mount",
    "SandboxSpec",
    "bwrap_argv",
    "list_host",
    "prepare_mount_points",
    "prepare_private",
    "write_volume",
]
