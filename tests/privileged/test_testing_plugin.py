"""The pytest plugin with real labs, each inner pytest run a process of its
own (pytester): a lab is taken down when its test fails, when KeyboardInterrupt
is raised inside the block, on a real Ctrl-C (SIGINT) while it is up, and
at the end of the session when a test left it up; labs of tests running
in parallel (`-n 2`, and two in one test) get distinct names.

Each inner test writes the names of its labs to a file, so the checks
look for exactly those labs and namespaces afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netemu.kernel import netns
from netemu.lab import running_labs
from netemu.net.plan import lab_prefix
from netemu.testing.requirements import KernelCheck, missing_kernel_features

pytest_plugins = ["pytester"]

LAB = str(Path(__file__).resolve().parents[2] / "controlplane" / "default")
RUN_TIMEOUT = 120.0


def recorded(names: Path) -> list[str]:
    return names.read_text().split() if names.exists() else []


def assert_gone(name: str) -> None:
    assert name not in running_labs(), f"lab {name} is still up"
    left = [n for n in netns.list_names() if n.startswith(lab_prefix(name))]
    assert not left, f"lab {name} left namespaces behind: {left}"


def inner(names: Path, body: str) -> str:
    """An inner test module: `record(lab)` notes a lab's name."""
    return (
        "import os, time\n"
        "import pytest\n"
        "from netemu.lab import running_labs\n"
        f"LAB = {LAB!r}\n"
        "def record(lab):\n"
        f"    with open({str(names)!r}, 'a') as out:\n"
        "        out.write(lab.name + '\\n')\n"
        "    assert lab.name in running_labs()\n" + body
    )


def test_a_failing_test_takes_its_lab_down(pytester: pytest.Pytester, tmp_path: Path) -> None:
    names = tmp_path / "names"
    pytester.makepyfile(
        inner(
            names,
            "def test_fails(netemu_lab):\n"
            "    with netemu_lab(LAB) as lab:\n"
            "        record(lab)\n"
            "        assert False, 'the test fails'\n",
        )
    )
    result = pytester.runpytest_subprocess(timeout=RUN_TIMEOUT)
    result.assert_outcomes(failed=1)
    [name] = recorded(names)
    assert_gone(name)


def test_keyboard_interrupt_inside_the_block(pytester: pytest.Pytester, tmp_path: Path) -> None:
    names = tmp_path / "names"
    pytester.makepyfile(
        inner(
            names,
            "def test_interrupted(netemu_lab):\n"
            "    with netemu_lab(LAB) as lab:\n"
            "        record(lab)\n"
            "        raise KeyboardInterrupt\n",
        )
    )
    result = pytester.runpytest_subprocess(timeout=RUN_TIMEOUT)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    [name] = recorded(names)
    assert_gone(name)


def test_ctrl_c_while_the_lab_is_up(pytester: pytest.Pytester, tmp_path: Path) -> None:
    names = tmp_path / "names"
    module = pytester.makepyfile(
        inner(
            names,
            "def test_waits(netemu_lab):\n"
            "    with netemu_lab(LAB) as lab:\n"
            "        record(lab)\n"
            "        time.sleep(60)\n",
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(module)],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not recorded(names) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorded(names), "the inner test never brought its lab up"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    [name] = recorded(names)
    assert_gone(name)


def test_the_session_takes_down_labs_left_up(pytester: pytest.Pytester, tmp_path: Path) -> None:
    names = tmp_path / "names"
    pytester.makepyfile(
        inner(
            names,
            # Entered and never exited; kept referenced, so that no garbage
            # collection closes it before the session ends.
            "KEPT = []\n"
            "def test_leaves_it_up(netemu_lab):\n"
            "    block = netemu_lab(LAB)\n"
            "    record(block.__enter__())\n"
            "    KEPT.append(block)\n"
            "def test_it_is_still_up():\n"
            f"    assert open({str(names)!r}).read().split()[0] in running_labs()\n",
        )
    )
    result = pytester.runpytest_subprocess(timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=2)
    [name] = recorded(names)
    result.stdout.fnmatch_lines([f"netemu: took down lab(s) left up by the session: {name}"])
    assert_gone(name)


def test_parallel_labs_get_distinct_names(pytester: pytest.Pytester, tmp_path: Path) -> None:
    names = tmp_path / "names"
    pytester.makepyfile(
        inner(
            names,
            "@pytest.mark.parametrize('n', range(3))\n"
            "def test_one(netemu_lab, n):\n"
            "    with netemu_lab(LAB) as lab:\n"
            "        record(lab)\n"
            "        assert lab.http('client', 'node-1:30080').ok\n"
            "def test_two_at_once(netemu_lab):\n"
            "    with netemu_lab(LAB) as a, netemu_lab(LAB) as b:\n"
            "        record(a)\n"
            "        record(b)\n"
            "        assert a.name != b.name\n",
        )
    )
    result = pytester.runpytest_subprocess("-n", "2", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=4)
    found = recorded(names)
    assert len(found) == 5 and len(set(found)) == 5, found
    # Two workers, two processes: the pid in the names tells them apart.
    assert len({name.split("-")[0] for name in found}) == 2, found
    assert os.getpid() not in {int(name.split("-")[0][1:]) for name in found}
    for name in found:
        assert_gone(name)


def test_the_kernel_probe_names_what_fails() -> None:
    # As root with every tool (else this test would be skipped), the real
    # checks pass; a feature the kernel lacks is named with its own words.
    assert missing_kernel_features() == []
    bogus = KernelCheck("frobnicator links", ("ip", "link", "add", "x0", "type", "frobnicator"))
    [problem] = missing_kernel_features([bogus])
    assert problem.startswith("frobnicator links (")
    assert "Unknown device type" in problem or "not supported" in problem.lower()
