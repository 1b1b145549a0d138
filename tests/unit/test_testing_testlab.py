"""The parts of netemu.testing that need no lab: unique lab names, lab
paths, names refused before any lab starts, and the structured results'
own logic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netemu.lab import LabError, LabUsageError
from netemu.net.plan import check_lab_name
from netemu.testing import testlab
from netemu.testing.results import ExecFailedError, ExecResult, HttpResult
from netemu.testing.testlab import LabRegistry, resolve_paths, running_lab, slug, unique_lab_name


def test_names_are_valid_short_and_carry_the_pid() -> None:
    names = [
        unique_lab_name(label, taken=[])
        for label in (
            "test_nodeport_cluster_masquerades",
            "test_spread[10.96.0.1-80]",
            "TEST_Ü",
            "x" * 80,
            "",
        )
    ]
    for name in names:
        assert check_lab_name(name) == name
        assert len(name) <= 32
        assert name.startswith(f"t{os.getpid()}-")
    assert len(set(names)) == len(names)
    # The label is cut to fit, never the pid or the counter.
    assert "nodeport-cluster-masquerades".startswith(names[0].split("-", 2)[2])
    assert names[-1].endswith("-lab")


def test_a_name_already_up_is_skipped() -> None:
    first = unique_lab_name("web", taken=[])
    counter = int(first.split("-")[1])
    taken = [f"t{os.getpid()}-{counter + 1}-web"]
    assert unique_lab_name("web", taken=taken) == f"t{os.getpid()}-{counter + 2}-web"


def test_slug() -> None:
    assert slug("test_Foo[bar-1]") == "foo-bar-1"
    assert slug("tests_x") == "s-x"
    assert slug("--") == ""


def test_relative_lab_paths_are_taken_from_the_base(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    assert resolve_paths(["lab"], tmp_path) == [tmp_path / "lab"]
    assert resolve_paths([tmp_path / "lab"], Path("/nowhere")) == [tmp_path / "lab"]
    with pytest.raises(FileNotFoundError, match=f"relative paths are taken from {tmp_path}"):
        resolve_paths(["missing"], tmp_path)


def http(
    outcome: str = "answered", status: int | None = 200, client: str | None = None
) -> HttpResult:
    return HttpResult(
        outcome="answered" if outcome == "answered" else "timeout",
        status=status,
        body="",
        client_ip=client,
        pod="web-1" if client else None,
        node="node-1" if client else None,
        elapsed=0.0025,
        source="client client",
        source_ip="192.168.56.20",
        destination="192.168.56.11:30080",
        target="NodePort 30080",
    )


def test_http_result_masquerade_and_ok() -> None:
    assert http(client="10.244.0.1").masqueraded is True
    assert http(client="192.168.56.20").masqueraded is False
    assert http("timeout", None).masqueraded is None
    assert http(client="192.168.56.20").ok
    assert not http(status=503, client="192.168.56.20").ok
    assert not http("timeout", None).ok
    assert http().latency_ms == pytest.approx(2.5)


def test_exec_result_check() -> None:
    good = ExecResult("client", ("true",), 0, "", "")
    assert good.check() is good
    bad = ExecResult("node-1", ("ip", "route", "get", "1.2.3.4"), 2, "", "RTNETLINK: no route\n")
    with pytest.raises(
        ExecFailedError, match=r"ip route get 1.2.3.4 in node-1 exited 2: RTNETLINK"
    ):
        bad.check()
    assert isinstance(ExecFailedError("x"), AssertionError)


@pytest.fixture
def no_lab_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("no lab may be started or taken down")

    monkeypatch.setattr(testlab, "up", never)
    monkeypatch.setattr(testlab, "down", never)
    monkeypatch.setattr(testlab, "running_labs", lambda: ["theirs"])


def test_a_bad_name_is_refused_before_anything_runs(tmp_path: Path, no_lab_started: None) -> None:
    registry = LabRegistry()
    with (
        pytest.raises(LabUsageError, match=r"lab name '\.\./etc'"),
        running_lab([tmp_path], "../etc", registry=registry),
    ):
        pass
    assert registry.names() == []


def test_a_lab_already_up_is_not_ours_to_take_down(tmp_path: Path, no_lab_started: None) -> None:
    with (
        pytest.raises(LabError, match="lab theirs is already up"),
        running_lab([tmp_path], "theirs"),
    ):
        pass
