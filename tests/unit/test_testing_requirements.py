"""What privileged tests need, and the skip reason naming exactly what is
missing: root, tools on PATH, kernel features (the kernel probe is faked
here; tests/privileged runs the real one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netemu.testing import requirements
from netemu.testing.requirements import (
    REQUIRED_TOOLS,
    KernelCheck,
    missing_kernel_features,
    missing_requirements,
    privileged_skip_reason,
    skip_reason,
)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    # privileged_skip_reason is cached per process; these tests change what it sees.
    privileged_skip_reason.cache_clear()
    yield
    privileged_skip_reason.cache_clear()


def only_missing(monkeypatch: pytest.MonkeyPatch, *absent: str) -> None:
    real = shutil.which

    def which(name: str, *args: Any, **kwargs: Any) -> str | None:
        return None if name in absent else (real(name) or f"/usr/sbin/{name}")

    monkeypatch.setattr(shutil, "which", which)


def test_not_root_is_named_with_the_uid_and_the_kernel_is_not_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    only_missing(monkeypatch)

    def no_probe(*args: Any, **kwargs: Any) -> list[str]:
        raise AssertionError("the kernel cannot be probed without root")

    monkeypatch.setattr(requirements, "missing_kernel_features", no_probe)
    reason = privileged_skip_reason()
    assert reason is not None
    assert reason.startswith("privileged test, missing root (running as uid 1000;")
    assert "PATH" not in reason


def test_missing_tools_are_named_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    only_missing(monkeypatch, "conntrack", "xtables-monitor")
    monkeypatch.setattr(requirements, "missing_kernel_features", lambda: [])
    assert privileged_skip_reason() == (
        "privileged test, missing on PATH: conntrack, xtables-monitor (./setup.sh installs them)"
    )


def test_everything_missing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    only_missing(monkeypatch, *REQUIRED_TOOLS)
    missing = missing_requirements()
    assert len(missing) == 2
    assert missing[1] == f"on PATH: {', '.join(REQUIRED_TOOLS)} (./setup.sh installs them)"


def test_a_missing_kernel_feature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    only_missing(monkeypatch)
    monkeypatch.setattr(
        requirements,
        "missing_kernel_features",
        lambda: ["VXLAN links (Error: Unknown device type.)"],
    )
    assert privileged_skip_reason() == (
        "privileged test, missing kernel support: VXLAN links (Error: Unknown device type.)"
    )


def test_nothing_missing_means_no_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    only_missing(monkeypatch)
    monkeypatch.setattr(requirements, "missing_kernel_features", lambda: [])
    assert privileged_skip_reason() is None
    assert skip_reason([]) is None


def test_the_reason_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    def counted(*, probe_kernel: bool = True) -> list[str]:
        calls.append(probe_kernel)
        return ["root (running as uid 1000)"]

    monkeypatch.setattr(requirements, "missing_requirements", counted)
    assert privileged_skip_reason() == privileged_skip_reason()
    assert calls == [True]


# -- the kernel probe's answers, as the child process would give them ----------


def fake_child(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]) -> list[Any]:
    sent: list[Any] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        sent.append(json.loads(kwargs["input"]))
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer), "")

    monkeypatch.setattr(subprocess, "run", run)
    return sent


def test_no_network_namespaces(tmp_path: Path) -> None:
    assert missing_kernel_features(netns_file=tmp_path / "net") == [
        f"network namespaces ({tmp_path / 'net'} does not exist: a kernel without CONFIG_NET_NS)"
    ]


def test_unshare_not_permitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "net").touch()
    fake_child(monkeypatch, {"unshare": "Operation not permitted (errno 1)"})
    assert missing_kernel_features(netns_file=tmp_path / "net") == [
        "a new network namespace (unshare(CLONE_NEWNET) failed: Operation not permitted "
        "(errno 1); in a container, run it privileged)"
    ]


def test_failed_features_carry_the_kernels_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "net").touch()
    sent = fake_child(monkeypatch, {"failed": {"VXLAN links": "Error: Unknown device type."}})
    only_missing(monkeypatch, "nfacct")
    checks = [
        KernelCheck("VXLAN links", ("ip", "link", "add", "x", "type", "vxlan", "id", "1")),
        KernelCheck("nfacct (nfnetlink_acct)", ("nfacct", "list")),
    ]
    assert missing_kernel_features(checks, netns_file=tmp_path / "net") == [
        "VXLAN links (Error: Unknown device type.)"
    ]
    # A check whose tool is missing is not run: the tool is reported instead.
    assert [check[0] for check in sent[0]] == ["VXLAN links"]


def test_a_child_that_cannot_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "net").touch()

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "Traceback ...")

    monkeypatch.setattr(subprocess, "run", run)
    [problem] = missing_kernel_features(netns_file=tmp_path / "net")
    assert problem.startswith("could not check the kernel's features (JSONDecodeError")
