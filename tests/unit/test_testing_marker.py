"""The pytest plugin without a lab: the `privileged` marker and its skip
reason, lab fixtures marking their tests privileged, and a start-up that
imports nothing heavy. Inner pytest runs are in-process (pytester), so
monkeypatched os.geteuid and shutil.which reach them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from netemu.testing import requirements
from netemu.testing.requirements import privileged_skip_reason

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    privileged_skip_reason.cache_clear()
    yield
    privileged_skip_reason.cache_clear()


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def skip_lines(result: pytest.RunResult, reason: str) -> int:
    """How many tests the short summary (-rs) says were skipped for `reason`."""
    return sum(
        line.startswith("SKIPPED [1] ") and line.split(": ", 1)[-1].startswith(reason)
        for line in result.stdout.lines
    )


INNER = """
import pytest

@pytest.mark.privileged
def test_marked():
    pass

def test_lab(netemu_lab):
    with netemu_lab("nowhere"):
        pass

def test_plain():
    pass
"""


def test_marked_tests_and_lab_tests_are_skipped_naming_root(
    pytester: pytest.Pytester, not_root: None
) -> None:
    pytester.makepyfile(INNER)
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(passed=1, skipped=2)
    assert skip_lines(result, "privileged test, missing root (running as uid 1000; ") == 2


def test_a_mark_added_by_a_conftest_hook_is_honoured(
    pytester: pytest.Pytester, not_root: None
) -> None:
    # As netemu's own tests/conftest.py marks everything under tests/privileged.
    pytester.makeconftest(
        "import pytest\n"
        "def pytest_collection_modifyitems(config, items):\n"
        "    for item in items:\n"
        "        item.add_marker(pytest.mark.privileged)\n"
    )
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    assert skip_lines(result, "privileged test, missing root (running as uid 1000; ") == 1


def test_a_missing_tool_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.which

    def which(name: str, *args: Any, **kwargs: Any) -> str | None:
        return None if name == "nfacct" else real(name) or f"/usr/sbin/{name}"

    monkeypatch.setattr(shutil, "which", which)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(requirements, "missing_kernel_features", lambda: [])
    pytester.makepyfile(INNER)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    reason = "privileged test, missing on PATH: nfacct (./setup.sh installs them)"
    assert skip_lines(result, reason) == 2


def test_without_privileged_tests_nothing_is_checked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(**kwargs: Any) -> list[str]:
        raise AssertionError("checked although no privileged test was collected")

    monkeypatch.setattr(requirements, "missing_requirements", fail)
    pytester.makepyfile("def test_plain():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.privileged: needs root, network namespaces*"])


def test_the_plugin_is_loaded_through_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("--co", "-q", "--trace-config")
    result.stdout.fnmatch_lines(["*netemu.testing.plugin*"])


def test_start_up_imports_nothing_heavy() -> None:
    code = (
        "import sys, netemu.testing.plugin\n"
        "print(sorted(m for m in ('netemu.lab', 'scapy', 'pydantic', 'rich', 'netemu.api') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
