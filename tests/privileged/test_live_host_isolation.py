"""A live lab lives only in its own namespaces: bringing it up, using it and
taking it down leaves the host's root namespace as it was (rules of both
iptables backends, nftables, links, routes, forwarding sysctls), and
`down` removes everything even after the supervisor was killed with
SIGKILL (namespaces, processes in them, /etc/netns files, the run dir).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from live_helpers import (
    CONTROLPLANE,
    answers,
    cluster_ip,
    lab_name,
    lab_prefix,
    running_lab,
    service_port,
)

from netemu.api.validate import load_and_validate
from netemu.kernel import netns
from netemu.kernel.journal import run_dir
from netemu.kernel.processes import ETC_NETNS, command_in
from netemu.lab import LiveLab, down

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
)
COUNTERS = re.compile(r"\[\d+:\d+\]")
NFT_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
WITHIN = 5.0

SLEEPER = """\
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  nodeName: node-2
  containers:
    - name: sleep
      image: busybox:1.36
      command: ["sleep", "301"]
"""


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr.strip()}"
    return done.stdout


def _rules(argv: list[str]) -> str:
    """A ruleset dump without what changes by itself (timestamps, counters)."""
    lines = [line for line in _run(argv).splitlines() if not line.startswith("#")]
    return "\n".join(NFT_COUNTER.sub("counter", COUNTERS.sub("[]", line)) for line in lines)


def _sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class HostSnapshot:
    iptables_nft: str
    iptables_legacy: str
    nft: str
    links: str
    routes: str
    sysctls: tuple[tuple[str, str | None], ...]


def host_snapshot() -> HostSnapshot:
    # Taken in the namespace the test process was started in (the host's):
    # this thread has not switched into a lab namespace.
    assert os.stat("/proc/thread-self/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    return HostSnapshot(
        iptables_nft=_rules(["iptables-nft-save"]),
        iptables_legacy=_rules(["iptables-legacy-save"]),
        nft=_rules(["nft", "list", "ruleset"]),
        links=_run(["ip", "-o", "link", "show"]),
        routes=_run(["ip", "route", "show", "table", "all"]),
        sysctls=tuple((key, _sysctl(key)) for key in SYSCTLS),
    )


def assert_unchanged(before: HostSnapshot, after: HostSnapshot, when: str) -> None:
    for field in ("iptables_nft", "iptables_legacy", "nft", "links", "routes", "sysctls"):
        old, new = getattr(before, field), getattr(after, field)
        assert old == new, f"{when}: the host's {field} changed:\nbefore:\n{old}\nafter:\n{new}"


def running(pid: int) -> bool:
    """Alive, and not a zombie (the supervisor is this process's child:
    `down` reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def lab_namespaces(name: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(lab_prefix(name))]


def processes_in(inodes: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.append(int(entry))
        except OSError:
            continue
    return found


def exercise(name: str) -> None:
    """Real traffic through the lab, so rules, conntrack and ARP are used."""
    lab = LiveLab(name)
    state = lab.state()
    vip, port = cluster_ip(state, "web"), int(service_port(state, "web", "tcp")["port"])
    pod_ns = next(iter(lab.info()["pods"].values()))["netns"]
    assert len(answers(pod_ns, vip, port, count=10)) == 10
    node_port = int(service_port(state, "web-nodeport", "tcp")["nodePort"])
    client = lab.info()["clients"]["client"]["netns"]
    assert len(answers(client, lab.info()["nodes"]["node-2"]["ip"], node_port, count=5)) == 5


def test_up_and_down_leave_the_host_namespace_unchanged() -> None:
    before = host_snapshot()
    name = lab_name("host")
    with running_lab([CONTROLPLANE / "default"], name):
        exercise(name)
        assert_unchanged(before, host_snapshot(), "while the lab is up")
    assert not lab_namespaces(name)
    assert_unchanged(before, host_snapshot(), "after up and down")


def test_down_after_the_supervisor_was_killed_removes_everything(tmp_path: Path) -> None:
    before = host_snapshot()
    name = lab_name("kill")
    manifest = tmp_path / "sleeper.yaml"
    manifest.write_text(SLEEPER)
    with running_lab([CONTROLPLANE / "default"], name) as lab:
        # A container process (journalled by the supervisor) and a process
        # started by hand in a pod's namespace (as `netemu exec` would leave
        # one): neither may survive `down`.
        lab.apply([item.obj for item in load_and_validate([manifest])])
        web_ns = next(p["netns"] for k, p in lab.info()["pods"].items() if "web-" in k)
        stray = subprocess.Popen(command_in(web_ns, ["sleep", "302"]), start_new_session=True)

        namespaces = lab_namespaces(name)
        # underlay, load balancer, 2 nodes, client
        assert len(namespaces) == len(lab.info()["pods"]) + 5
        inodes = {netns.inode(n) for n in namespaces}
        sleeper_ns = lab.info()["pods"]["default/sleeper"]["netns"]
        # Both processes enter their namespace on their own, shortly after
        # being started.
        deadline = time.monotonic() + WITHIN
        while time.monotonic() < deadline and not (
            stray.pid in processes_in(inodes) and netns.pids(sleeper_ns)
        ):
            time.sleep(0.02)
        assert stray.pid in processes_in(inodes), "the stray process never entered the pod"
        assert netns.pids(sleeper_ns), "the sleeper pod's container never started"
        etc_dirs = sorted(ETC_NETNS.glob(f"{lab_prefix(name)}*"))
        assert etc_dirs, "the lab's pods have no /etc/netns files"

        supervisor = int(lab.info()["pid"])
        os.kill(supervisor, signal.SIGKILL)
        deadline = time.monotonic() + WITHIN
        while running(supervisor) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not running(supervisor), "the killed supervisor did not die"
        # Killing the supervisor removed nothing by itself: down has it all to do.
        assert lab_namespaces(name) == namespaces

        down(name)

        assert not lab_namespaces(name), f"left behind: {lab_namespaces(name)}"
        left = processes_in(inodes)
        assert not left, f"processes left in the lab's namespaces: {left}"
        assert stray.wait(timeout=WITHIN) is not None, "the stray process survived down"
        assert not list(ETC_NETNS.glob(f"{lab_prefix(name)}*")), "left /etc/netns entries"
        assert not run_dir(name).exists(), f"{run_dir(name)} left behind"
    assert_unchanged(before, host_snapshot(), "after SIGKILL and down")
