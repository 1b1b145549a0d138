"""What a privileged test needs from the machine, and exactly what is
missing: root, the tools the lab and the tracer run, and the kernel
features a lab is built from (network namespaces, veth, bridge, VXLAN,
nf_tables and ip_tables with the matches kube-proxy's rules use,
conntrack and nfacct over netlink).

The kernel is asked, not guessed at: a short-lived child process unshares
a fresh network namespace and tries each feature there (modules load on
demand as they would for a lab), so the answer holds for this kernel and
this container's permissions. The namespace dies with the child.

Owns: that child and its throw-away namespace. Must not touch: the host's
own namespace, or anything a lab owns. Cheap to import (the pytest plugin
imports it at start-up).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The tools a live lab, `netemu exec` and the tracer run. `unshare` (util-linux)
# gives exec'd commands the target's hostname.
REQUIRED_TOOLS = (
    "ip",
    "iptables-nft-restore",
    "iptables-legacy-restore",
    "nfacct",
    "conntrack",
    "xtables-monitor",
    "unshare",
)

# kube-proxy's rules in miniature: the matches and targets a lab's rules use
# most (statistic, comment, mark, conntrack; DNAT and MASQUERADE), in the
# built-in chains, so the kernel checks them against real hooks.
_RULES = """*filter
-A FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
-A PREROUTING -p tcp -m comment --comment "netemu check" -m statistic --mode random --probability 0.5 -j DNAT --to-destination 10.0.0.1:80
-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
"""  # noqa: E501


@dataclass(frozen=True)
class KernelCheck:
    """One feature, tried in the fresh namespace with one command."""

    feature: str
    argv: tuple[str, ...]
    stdin: str = ""


KERNEL_CHECKS = (
    KernelCheck(
        "veth links", ("ip", "link", "add", "nxc0", "type", "veth", "peer", "name", "nxc1")
    ),
    KernelCheck("bridge links", ("ip", "link", "add", "nxc-br", "type", "bridge")),
    KernelCheck(
        "VXLAN links",
        ("ip", "link", "add", "nxc-vx", "type", "vxlan", "id", "1", "dstport", "4789"),
    ),
    KernelCheck("nf_tables (iptables-nft)", ("iptables-nft-restore",), _RULES),
    KernelCheck("ip_tables (iptables-legacy)", ("iptables-legacy-restore",), _RULES),
    KernelCheck("conntrack over netlink", ("conntrack", "-L")),
    KernelCheck("nfacct (nfnetlink_acct)", ("nfacct", "list")),
)

# Runs in the child: unshare(CLONE_NEWNET), then each check; prints JSON
# {"unshare": error} or {"failed": {feature: first line of its error}}.
_PROBE = r"""
import ctypes, ctypes.util, json, os, subprocess, sys
checks = json.loads(sys.stdin.read())
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
if libc.unshare(0x40000000) != 0:
    code = ctypes.get_errno()
    print(json.dumps({"unshare": f"{os.strerror(code)} (errno {code})"}))
    sys.exit(0)
failed = {}
for feature, argv, stdin in checks:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        failed[feature] = str(exc)
        continue
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        failed[feature] = lines[0] if lines else f"exit status {done.returncode}"
print(json.dumps({"failed": failed}))
"""

PROBE_TIMEOUT = 60.0


def missing_tools(tools: Sequence[str] = REQUIRED_TOOLS) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def missing_kernel_features(
    checks: Sequence[KernelCheck] = KERNEL_CHECKS, netns_file: Path = Path("/proc/self/ns/net")
) -> list[str]:
    """Kernel features a lab needs that this machine lacks, each with the
    kernel's own words; checks whose tool is missing are left out (the
    tool is reported instead). Needs root."""
    if not netns_file.exists():
        return [f"network namespaces ({netns_file} does not exist: a kernel without CONFIG_NET_NS)"]
    runnable = [c for c in checks if shutil.which(c.argv[0]) is not None]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            input=json.dumps([[c.feature, list(c.argv), c.stdin] for c in runnable]),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
        answer = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return [f"could not check the kernel's features ({type(exc).__name__}: {exc})"]
    if "unshare" in answer:
        return [
            "a new network namespace (unshare(CLONE_NEWNET) failed: "
            f"{answer['unshare']}; in a container, run it privileged)"
        ]
    return [f"{feature} ({error})" for feature, error in answer["failed"].items()]


def missing_requirements(*, probe_kernel: bool = True) -> list[str]:
    """Everything a privileged test needs and this machine lacks, one
    phrase each; empty when all is there. The kernel is only probed as root
    (without root nothing could be tried) and with `probe_kernel`."""
    missing: list[str] = []
    uid = os.geteuid()
    if uid != 0:
        missing.append(
            f"root (running as uid {uid}; network namespaces and iptables need it: "
            "run as root or in CI)"
        )
    tools = missing_tools()
    if tools:
        missing.append(f"on PATH: {', '.join(tools)} (./setup.sh installs them)")
    if uid == 0 and probe_kernel:
        kernel = missing_kernel_features()
        if kernel:
            missing.append(f"kernel support: {'; '.join(kernel)}")
    return missing


def skip_reason(missing: Sequence[str]) -> str | None:
    """The one-line reason a privileged test is skipped for."""
    if not missing:
        return None
    return "privileged test, missing " + "; ".join(missing)


@functools.cache
def privileged_skip_reason() -> str | None:
    """Why privileged tests cannot run here (None: they can). Computed once
    per process: the kernel probe starts a child and a few commands."""
    return skip_reason(missing_requirements())
