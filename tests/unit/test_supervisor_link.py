"""The CLI/supervisor link without a lab: a supervisor that stops answering
is reported within seconds, one that is working on a long request (and
says so with heartbeats) is waited for, and the request's own deadline
still holds. The real socket server of netemu.supervisor runs here with a
stand-in for the supervisor behind it. And a supervisor started ahead of its
lab (netemu.launch) exits cleanly when it is called off."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

import netemu.lab
import netemu.supervisor
from netemu.cli import main
from netemu.kernel import journal
from netemu.lab import ANSWER_TIMEOUT, LabError, LiveLab, SupervisorNotAnswering
from netemu.launch import call_off, start_supervisor, supervisor_ahead
from netemu.supervisor import HEARTBEAT, _Server

PID = 4242


@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Lab t1 "up" under a temporary /run/netemu, as root."""
    root = tmp_path / "run"
    directory = root / "t1"
    directory.mkdir(parents=True)
    (directory / journal.JOURNAL).write_text(json.dumps({"netns": "netemu_t1_underlay"}) + "\n")
    (directory / journal.INFO).write_text(json.dumps({"name": "t1", "pid": PID}))
    if len(str(directory / journal.SOCKET)) >= 100:
        pytest.skip(f"socket path too long for AF_UNIX: {directory}")
    monkeypatch.setattr(journal, "RUN_ROOT", root)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return directory


@pytest.fixture
def silent_supervisor(lab_dir: Path) -> Iterator[Path]:
    """A supervisor socket that takes requests and never answers (a stopped
    process: the kernel still accepts connections into its backlog)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(lab_dir / journal.SOCKET))
    server.listen()
    yield lab_dir
    server.close()


class SlowSupervisor:
    """Stands in for netemu.supervisor.Supervisor: answers after `delay` s."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay)
        return {"ok": True, "progress": {"op": request["op"]}}


# The real timings, shrunk fivefold below so these tests take seconds, not
# minutes: a heartbeat every 0.1 s, silence of 0.4 s fails a request, and a
# request that takes 0.6 s outlasts that silence.
SCALE = 5
WORK = 3.0 / SCALE


def test_heartbeats_are_well_inside_the_answer_timeout() -> None:
    assert HEARTBEAT * 4 <= ANSWER_TIMEOUT


@pytest.fixture
def slow_supervisor(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    """The real request server, with a supervisor that takes longer per
    request than the client's ANSWER_TIMEOUT."""
    monkeypatch.setattr(netemu.supervisor, "HEARTBEAT", HEARTBEAT / SCALE)
    monkeypatch.setattr(netemu.lab, "ANSWER_TIMEOUT", ANSWER_TIMEOUT / SCALE)
    assert WORK > ANSWER_TIMEOUT / SCALE
    server = _Server(str(lab_dir / journal.SOCKET), cast(Any, SlowSupervisor(WORK)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_silent_supervisor_fails_a_command_within_seconds(silent_supervisor: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(main, ["get", "pods"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert ANSWER_TIMEOUT <= elapsed < ANSWER_TIMEOUT + 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: lab t1: its supervisor (pid {PID}) is not answering")
    assert lines[0].endswith("netemu down t1 takes the lab down")


def test_a_silent_supervisor_raises_not_answering(
    silent_supervisor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netemu.lab, "ANSWER_TIMEOUT", 0.2)
    with pytest.raises(SupervisorNotAnswering):
        LiveLab("t1").request("state")


def test_labs_says_which_supervisor_does_not_answer(
    silent_supervisor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netemu.lab, "ANSWER_TIMEOUT", 0.2)
    result = CliRunner().invoke(main, ["labs"])
    assert result.exit_code == 0
    assert result.stdout == "t1\tsupervisor not answering (netemu down t1 takes it down)\n"


def test_a_supervisor_working_longer_than_the_answer_timeout_is_waited_for(
    slow_supervisor: _Server,
) -> None:
    started = time.monotonic()
    reply = LiveLab("t1").request("state")
    assert reply == {"ok": True, "progress": {"op": "state"}}
    assert time.monotonic() - started >= WORK


def test_heartbeats_come_before_the_reply(slow_supervisor: _Server, lab_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(lab_dir / journal.SOCKET))
        sock.sendall(b'{"op": "status"}\n')
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    heartbeats = len(data) - len(data.lstrip(b"\n"))
    # WORK s of work, one empty line every HEARTBEAT / SCALE s (allowing for
    # scheduling on a loaded machine).
    assert heartbeats >= int(WORK / (HEARTBEAT / SCALE)) - 3 > 0
    assert json.loads(data.lstrip(b"\n")) == {"ok": True, "progress": {"op": "status"}}
    assert data.endswith(b"}\n")


def test_the_request_deadline_still_holds(slow_supervisor: _Server) -> None:
    started = time.monotonic()
    with pytest.raises(LabError, match=re.escape("still working on 'state' after 0.3 s")) as raised:
        LiveLab("t1").request("state", timeout=0.3)
    assert not isinstance(raised.value, SupervisorNotAnswering)
    assert time.monotonic() - started < WORK


def test_a_client_that_leaves_does_not_stop_the_server(
    slow_supervisor: _Server, lab_dir: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(lab_dir / journal.SOCKET))
        sock.sendall(b'{"op": "state"}\n')
    assert LiveLab("t1").request("status")["ok"]


# ---------------------------------------------------------------- started ahead


def test_a_supervisor_started_ahead_and_called_off_exits_cleanly() -> None:
    proc = start_supervisor()
    call_off(proc)
    assert proc.wait(timeout=60) == 0  # without orders it neither fails nor waits


def test_a_supervisor_started_ahead_is_called_off_when_up_fails_first() -> None:
    with pytest.raises(RuntimeError), supervisor_ahead() as proc:
        raise RuntimeError("bad manifests")
    assert proc.stdin is not None and proc.stdin.closed
    assert proc.wait(timeout=60) == 0
