"""examples/ is a suite users copy: it must pass here as they would run it
(`python -m pytest examples -n 2` from the repository root), with every
test run (none skipped), and leave no lab or namespace behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from netemu.kernel import netns
from netemu.lab import running_labs

REPO = Path(__file__).resolve().parents[2]
EXPECTED_TESTS = 9
# The examples' labs are named after their module and their one
# self-contained test (netemu.testing.testlab.unique_lab_name):
# t<pid>-<n>-service-networking, t<pid>-<n>-scaling-changes-the-...
EXAMPLE_LAB = re.compile(r"t\d+-\d+-(service-networking|scaling-changes)")


def test_the_examples_pass_in_parallel_and_clean_up() -> None:
    labs_before = set(running_labs())
    netns_before = set(netns.list_names())
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-n", "2", "-p", "no:cacheprovider", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(rf"{EXPECTED_TESTS} passed in ", summary), output
    assert "skipped" not in summary and "SKIPPED" not in output, output

    new_labs = [n for n in set(running_labs()) - labs_before if EXAMPLE_LAB.match(n)]
    assert not new_labs, f"the examples left labs up: {new_labs}"
    new_netns = [
        n
        for n in set(netns.list_names()) - netns_before
        if EXAMPLE_LAB.match(n.removeprefix("netemu_"))
    ]
    assert not new_netns, f"the examples left namespaces behind: {new_netns}"
