"""A container with a `command` runs it as a real process in the pod's
network namespace, with kubelet's hostname and resolv.conf; deleting the
Pod ends the process and removes the namespace.

The Pod is applied to a running controlplane/default lab, loaded from a
manifest file through the same validation as `netemu apply -f`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel import netns
from netemu.kernel.processes import etc_dir
from netemu.lab import LiveLab

POD = "sleeper"
STARTED_WITHIN = 2.0
MANIFEST = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {POD}
  namespace: default
spec:
  containers:
    - name: sleep
      image: busybox:1.36
      command: ["sleep", "300"]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("command")) as lab:
        yield lab


def processes_running(argv: list[str]) -> list[int]:
    """Pids whose command line is exactly `argv` (zombies have none)."""
    wanted = "\0".join(argv) + "\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_text()
        except OSError:
            continue
        if cmdline == wanted:
            found.append(int(entry))
    return found


def test_pod_command_runs_in_the_pod_namespace(lab: LiveLab, tmp_path: Path) -> None:
    manifest = tmp_path / "sleeper.yaml"
    manifest.write_text(MANIFEST)
    objects = [item.obj for item in load_and_validate([manifest])]
    already = set(processes_running(["sleep", "300"]))

    applied = lab.apply(objects)
    assert applied == [f"Pod/{POD}"]
    pod = lab.info()["pods"].get(f"default/{POD}")
    assert pod is not None, f"the applied Pod is not running: {sorted(lab.info()['pods'])}"
    pod_ns = str(pod["netns"])
    assert netns.exists(pod_ns)
    assert not pod["hostNetwork"]

    hostname = lab.exec(POD, ["hostname"])
    assert hostname.returncode == 0, hostname.stderr
    assert hostname.stdout.strip() == POD

    resolv = lab.exec(POD, ["cat", "/etc/resolv.conf"])
    assert resolv.returncode == 0, resolv.stderr
    lines = resolv.stdout.splitlines()
    for line in (
        "nameserver 10.96.0.10",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ):
        assert line in lines, f"{line!r} not in the pod's /etc/resolv.conf:\n{resolv.stdout}"

    # The container's process: `sleep 300`, in the pod's network namespace
    # (and only there: not the node's, not the host's). It is started by
    # the time apply returns, but may still be on its way to exec `sleep`.
    deadline = time.monotonic() + STARTED_WITHIN
    sleepers = set(processes_running(["sleep", "300"])) - already
    while not sleepers and time.monotonic() < deadline:
        time.sleep(0.02)
        sleepers = set(processes_running(["sleep", "300"])) - already
    assert sleepers, f"no `sleep 300` process appeared within {STARTED_WITHIN} s of apply"
    in_pod = set(netns.pids(pod_ns))
    assert sleepers <= in_pod, (
        f"`sleep 300` runs as {sorted(sleepers)} but the pod's namespace {pod_ns} holds "
        f"{sorted(in_pod)}"
    )
    pod_inode = netns.inode(pod_ns)
    for pid in sleepers:
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == pod_inode
    assert os.stat("/proc/self/ns/net").st_ino != pod_inode

    # Deleting the Pod ends its process and removes its namespace.
    assert lab.delete([("Pod", "default", POD)]) == [f"Pod/{POD}"]
    assert f"default/{POD}" not in lab.info()["pods"]
    assert not netns.exists(pod_ns), f"the deleted Pod's namespace {pod_ns} is still there"
    assert not set(processes_running(["sleep", "300"])) & sleepers, "the Pod's process survived"
    assert not etc_dir(pod_ns).exists(), f"{etc_dir(pod_ns)} survived the Pod"
