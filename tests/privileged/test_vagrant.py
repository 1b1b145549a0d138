"""The Vagrant VM lab (`vagrant/`), checked without VMs (none can run here).

- Both Vagrantfiles pass `vagrant validate`: ignoring providers (what any
  machine with Vagrant can check), and with each provider's own config
  validation: libvirt when the vagrant-libvirt plugin is installed (it
  needs no libvirtd for that), VirtualBox through a stand-in `VBoxManage`
  that only answers `--version` (Vagrant asks nothing else before it
  validates the provider block). Every vagrant command runs in an empty
  network namespace (`unshare --net`), so nothing can be downloaded, with
  its own VAGRANT_HOME and `.vagrant` directory under the test's tmp_path.
- The multi-VM design's invariants, read from `vagrant/multi/machines.yaml`
  and the lab it names, and the multi Vagrantfile's own guard of them.
- `vagrant/provision.sh` runs twice on this machine with NETEMU_SRC=<repo>
  (exactly what the VM's provisioner runs, against the repo's own .venv),
  then the default lab is up and answers a real request from its client;
  the lab is taken down afterwards, also on failure. It is skipped when a
  lab named `default` is already up: the demo would take that lab down,
  and it may be someone's lab.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netemu.kernel.probe import http_get
from netemu.lab import LiveLab, down, running_labs
from netemu.net.plan import client_netns

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
MULTI_DIR = VAGRANT_DIR / "multi"
PROVISION = VAGRANT_DIR / "provision.sh"
LAB = "default"
LAB_YAML = REPO / "controlplane" / LAB / "lab.yaml"

VAGRANT_RANGE = ipaddress.IPv4Network("192.168.56.0/21")
SINGLE_VM_IP = ipaddress.IPv4Address("192.168.60.10")
VAGRANT_TIMEOUT = 120  # s, one vagrant command (validate takes about 1 s)
PROVISION_TIMEOUT = 600  # s, one provision.sh run (here: about 30 s fresh, 10 s again)

DIRS = {"single": VAGRANT_DIR, "multi": MULTI_DIR}
# Environment the Vagrantfiles read: the tests set what they need, nothing leaks in.
KNOBS = (
    "NETEMU_VM_MEMORY",
    "NETEMU_VM_CPUS",
    "NETEMU_MACHINES",
    "NETEMU_MULTI_PREVIEW",
    "VAGRANT_DEFAULT_PROVIDER",
    "VAGRANT_CWD",
    "VAGRANT_VAGRANTFILE",
)

Vagrant = Callable[..., subprocess.CompletedProcess[str]]


def _vagrant_missing() -> str | None:
    missing = [tool for tool in ("vagrant", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (./setup.sh installs Debian's packages)"
    return None


needs_vagrant = pytest.mark.skipif(_vagrant_missing() is not None, reason=_vagrant_missing() or "")


@pytest.fixture
def vagrant(tmp_path: Path) -> Vagrant:
    """`vagrant(args, cwd, **env)`: run vagrant offline, writing only under tmp_path."""
    base = {k: v for k, v in os.environ.items() if k not in KNOBS}
    base.update(
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dotvagrant"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_NO_COLOR="1",
    )

    def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["unshare", "--net", "vagrant", *args],
            cwd=cwd,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=VAGRANT_TIMEOUT,
            check=False,
        )

    return run


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


@pytest.fixture
def fake_virtualbox(tmp_path: Path) -> dict[str, str]:
    """Environment that has Vagrant's VirtualBox provider validate its block:
    a `VBoxManage` that reports a version and does nothing else."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    fake = bin_dir / "VBoxManage"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo 7.0.14r161095\nexit 0\n')
    fake.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VAGRANT_DEFAULT_PROVIDER": "virtualbox",
    }


@pytest.fixture(scope="module")
def libvirt_plugin(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """vagrant-libvirt is installed (a system plugin: Debian's package)."""
    if _vagrant_missing():
        return False
    home = tmp_path_factory.mktemp("vagrant-plugins")
    done = subprocess.run(
        ["unshare", "--net", "vagrant", "plugin", "list"],
        cwd=home,
        env={**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=VAGRANT_TIMEOUT,
        check=False,
    )
    return done.returncode == 0 and "vagrant-libvirt" in done.stdout


def _provider_env(
    provider: str, libvirt_plugin: bool, fake_virtualbox: dict[str, str]
) -> dict[str, str]:
    if provider == "virtualbox":
        return fake_virtualbox
    if not libvirt_plugin:
        pytest.skip("vagrant-libvirt not installed: the libvirt provider block goes unchecked")
    return {"VAGRANT_DEFAULT_PROVIDER": "libvirt"}


# -- vagrant validate ----------------------------------------------------------


@needs_vagrant
@pytest.mark.parametrize("variant", sorted(DIRS))
def test_validate_ignoring_providers(variant: str, vagrant: Vagrant) -> None:
    done = vagrant(["validate", "--ignore-provider"], DIRS[variant])
    assert done.returncode == 0, _output(done)
    assert "Vagrantfile validated successfully" in done.stdout


@needs_vagrant
@pytest.mark.parametrize("provider", ["virtualbox", "libvirt"])
@pytest.mark.parametrize("variant", sorted(DIRS))
def test_validate_with_provider(
    variant: str,
    provider: str,
    vagrant: Vagrant,
    libvirt_plugin: bool,
    fake_virtualbox: dict[str, str],
) -> None:
    env = _provider_env(provider, libvirt_plugin, fake_virtualbox)
    done = vagrant(["validate"], DIRS[variant], **env)
    assert done.returncode == 0, _output(done)
    assert "Vagrantfile validated successfully" in done.stdout


@needs_vagrant
@pytest.mark.parametrize("provider", ["virtualbox", "libvirt"])
def test_provider_validation_catches_a_bad_setting(
    provider: str,
    vagrant: Vagrant,
    libvirt_plugin: bool,
    fake_virtualbox: dict[str, str],
    tmp_path: Path,
) -> None:
    """The provider runs above are real checks: a misspelt setting in the
    provider's block fails them."""
    env = _provider_env(provider, libvirt_plugin, fake_virtualbox)
    copy = tmp_path / "vagrant"
    copy.mkdir()
    shutil.copy(PROVISION, copy / "provision.sh")
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    var = {"virtualbox": "vb", "libvirt": "lv"}[provider]
    assert f"{var}.memory = MEMORY" in text
    (copy / "Vagrantfile").write_text(text.replace(f"{var}.memory = ", f"{var}.memroy = "))
    done = vagrant(["validate"], copy, **env)
    assert done.returncode != 0, _output(done)
    assert "memroy" in done.stdout + done.stderr


# -- the single VM -------------------------------------------------------------


def test_single_vm_address_is_in_the_vagrant_range_and_outside_the_lab() -> None:
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    match = re.search(r'^VM_IP = "([0-9.]+)"', text, re.MULTILINE)
    assert match, "vagrant/Vagrantfile defines no VM_IP"
    assert ipaddress.IPv4Address(match.group(1)) == SINGLE_VM_IP
    assert 'private_network", ip: VM_IP' in text
    assert SINGLE_VM_IP in VAGRANT_RANGE
    lab = yaml.safe_load(LAB_YAML.read_text())["spec"]
    # Not even the same /24: the VM's NIC and the lab never look alike, and
    # the multi-VM lab's networks (the lab's own /24 and the next) stay free.
    assert SINGLE_VM_IP not in ipaddress.IPv4Network(lab["underlayCIDR"])
    multi = yaml.safe_load((MULTI_DIR / "machines.yaml").read_text())
    for net in (multi["underlayNetwork"], multi["controlNetwork"]):
        assert SINGLE_VM_IP not in ipaddress.IPv4Network(net)


# -- the multi-VM design -------------------------------------------------------


def _design() -> tuple[dict[str, Any], dict[str, Any]]:
    machines_file = MULTI_DIR / "machines.yaml"
    design = yaml.safe_load(machines_file.read_text())
    lab_path = (machines_file.parent / design["lab"]).resolve()
    assert lab_path == LAB_YAML.resolve(), "the multi-VM design carries the default lab"
    return design, yaml.safe_load(lab_path.read_text())["spec"]


def test_multi_design_invariants() -> None:
    design, lab = _design()
    machines = design["machines"]
    underlay = ipaddress.IPv4Network(design["underlayNetwork"])
    control = ipaddress.IPv4Network(design["controlNetwork"])

    # One VM per lab member, at the member's own lab address: the VMs' underlay
    # network is the lab's underlay, and the overlay runs between these NICs.
    members = {n["name"]: ("node", n["underlayIP"]) for n in lab["nodes"]}
    members.update({c["name"]: ("client", c["ip"]) for c in lab.get("externalClients", [])})
    assert sorted(m["name"] for m in machines) == sorted(members)
    for m in machines:
        assert (m["role"], m["underlayIP"]) == members[m["name"]], m["name"]
    assert underlay == ipaddress.IPv4Network(lab["underlayCIDR"])

    # Every address in VirtualBox's host-only range, unique, a host address
    # of its /24 other than .1 (the host's own), on the right network.
    assert underlay != control
    assert underlay.subnet_of(VAGRANT_RANGE) and control.subnet_of(VAGRANT_RANGE)
    seen: list[ipaddress.IPv4Address] = []
    for m in machines:
        for key, net in (("underlayIP", underlay), ("controlIP", control)):
            ip = ipaddress.IPv4Address(m[key])
            assert ip in VAGRANT_RANGE and ip in net, f"{m['name']} {key} {ip}"
            assert int(ip) & 0xFF not in (0, 1, 255), f"{m['name']} {key} {ip}"
            seen.append(ip)
    assert len(set(seen)) == len(seen), f"addresses repeat: {seen}"

    # The control plane runs on a node VM; names are valid hostnames.
    api = [m for m in machines if m["name"] == design["apiServer"]]
    assert len(api) == 1 and api[0]["role"] == "node"
    for m in machines:
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", m["name"]), m["name"]


BROKEN_DESIGNS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "address-outside-range": (
        lambda d: d["machines"][2].update(controlIP="192.168.64.20"),
        "outside 192.168.57.0/24",
    ),
    "network-outside-range": (
        lambda d: d.update(controlNetwork="192.168.64.0/24"),
        "controlNetwork 192.168.64.0/24 is outside 192.168.56.0/21",
    ),
    "address-repeated": (
        lambda d: d["machines"][1].update(controlIP=d["machines"][0]["controlIP"]),
        "is also node-1's controlIP",
    ),
    "host-address": (
        lambda d: d["machines"][0].update(controlIP="192.168.57.1"),
        "network, broadcast or host (.1) address",
    ),
    "node-ip-not-lab-ip": (
        lambda d: d["machines"][1].update(underlayIP="192.168.56.13"),
        "but the lab says 192.168.56.12",
    ),
    "node-without-vm": (
        lambda d: d["machines"].pop(1),
        "are not the lab's nodes and clients",
    ),
    "api-server-on-client": (
        lambda d: d.update(apiServer="client"),
        "apiServer client is not a node machine",
    ),
    "one-network-for-both": (
        lambda d: d.update(controlNetwork=d["underlayNetwork"]),
        "are the same /24",
    ),
}


@needs_vagrant
@pytest.mark.parametrize("case", sorted(BROKEN_DESIGNS))
def test_multi_vagrantfile_rejects_a_broken_design(
    case: str, vagrant: Vagrant, tmp_path: Path
) -> None:
    break_it, message = BROKEN_DESIGNS[case]
    design, _ = _design()
    design["lab"] = str(LAB_YAML)
    break_it(design)
    broken = tmp_path / "machines.yaml"
    broken.write_text(yaml.safe_dump(design))
    done = vagrant(["validate", "--ignore-provider"], MULTI_DIR, NETEMU_MACHINES=str(broken))
    assert done.returncode != 0, _output(done)
    assert message in done.stdout + done.stderr, _output(done)


@needs_vagrant
def test_multi_up_stops_before_anything_with_the_design_message(
    vagrant: Vagrant, libvirt_plugin: bool, fake_virtualbox: dict[str, str]
) -> None:
    env = {"VAGRANT_DEFAULT_PROVIDER": "libvirt"} if libvirt_plugin else fake_virtualbox
    done = vagrant(["up"], MULTI_DIR, **env)
    assert done.returncode != 0, _output(done)
    assert "designed, not runnable yet" in done.stdout, _output(done)
    assert "Vagrant has been configured to abort" in done.stdout, _output(done)


# -- provision.sh on this machine ---------------------------------------------


def test_provision_refuses_without_root_or_source(tmp_path: Path) -> None:
    # The script on stdin: the repo need not be readable by nobody.
    with PROVISION.open() as script:
        nobody = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s"],
            stdin=script,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert nobody.returncode == 1 and "run as root" in nobody.stderr, nobody.stderr
    nowhere = subprocess.run(
        ["bash", str(PROVISION), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert nowhere.returncode == 1 and "setup.sh not found" in nowhere.stderr, nowhere.stderr


def _provision(log: Path) -> tuple[int, float, str]:
    """One run of provision.sh against this repo: exit code, seconds, output.
    Output goes to a file: the lab's supervisor outlives the script and would
    hold a pipe open."""
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    env["NETEMU_SRC"] = str(REPO)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(PROVISION)],
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=PROVISION_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            code = -9
    return code, time.monotonic() - started, log.read_text()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def default_lab_free() -> Iterator[None]:
    """Lab `default` is not up before; whatever this test brought up is down
    after, and the demo's trace directories are removed (no one else's)."""
    if LAB in running_labs():
        pytest.skip(
            f"a lab named {LAB} is up (someone's?): provision.sh's demo would take it "
            f"down, so this test does not run (netemu down {LAB} frees it)"
        )
    captures = REPO / "captures" / LAB
    existed = captures.is_dir()
    before = set(captures.iterdir()) if existed else set()
    try:
        yield
    finally:
        down(LAB)
        if captures.is_dir():
            for trace_dir in set(captures.iterdir()) - before:
                shutil.rmtree(trace_dir, ignore_errors=True)
            if not existed:
                captures.rmdir()  # the demo's trace made it


def test_provision_twice_leaves_the_default_lab_answering(
    default_lab_free: None, tmp_path: Path
) -> None:
    runs = []
    for attempt in (1, 2):
        code, seconds, output = _provision(tmp_path / f"provision-{attempt}.log")
        runs.append((code, seconds))
        assert code == 0, f"run {attempt}: exit {code} after {seconds:.0f} s\n{_tail(output)}"
        assert f"lab {LAB} is up; client → node-1:30080 answered" in output, _tail(output)
        if attempt == 2:
            # The second run really met the first one's lab and rebuilt it.
            assert f"lab {LAB} is already up: taking it down first" in output, _tail(output)
    print(f"provision.sh: {', '.join(f'{s:.0f} s' for _, s in runs)}")

    labs = subprocess.run(
        [str(REPO / ".venv" / "bin" / "netemu"), "labs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert labs.returncode == 0, labs.stderr
    assert f"{LAB}\tready" in labs.stdout.splitlines(), labs.stdout

    # A real request, from the client's namespace to node-1's NodePort.
    info = LiveLab(LAB).info()
    node_ip = info["nodes"]["node-1"]["ip"]
    result = http_get(client_netns(LAB, "client"), node_ip, 30080, timeout=2.0)
    assert result.outcome == "answered", f"{result.outcome}: {result.detail}"
    assert result.reply is not None and str(result.reply["pod"]).startswith("web-"), result.body
