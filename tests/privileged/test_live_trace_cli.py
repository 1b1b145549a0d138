"""`netemu trace` on a live lab runs the trace in the lab's supervisor: the
command prints the report it got back, writes the pcaps and trace.json
under --captures (not the supervisor), and a FROM or TO the lab does not
have is bad input (exit 2, one line), as when the command traced itself."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, lab_name, netemu_cli, running_lab
from rich.console import Console

from netemu.lab import LiveLab
from netemu.trace.render import render


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("tracecli")) as live:
        yield live


def test_the_printed_report_is_the_one_written(lab: LiveLab, tmp_path: Path) -> None:
    done = netemu_cli(
        "trace", "--lab", lab.name, "client", "node-1:30080", "--captures", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    (directory,) = (tmp_path / lab.name).iterdir()
    report = json.loads((directory / "trace.json").read_text())
    assert report["outcome"] == "delivered" and report["pcaps"]["directory"] == str(directory)
    points = sorted(Path(p).name for p in report["pcaps"]["points"])
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted([*points, "merged.pcapng", "trace.json"])
    assert report["pcaps"]["merged"] == str(directory / "merged.pcapng")
    # Each capture point's pcap starts with the nanosecond pcap magic and
    # holds frames; the merged file is pcapng (a Section Header Block first).
    for name in points:
        data = (directory / name).read_bytes()
        assert data[:4] == bytes.fromhex("4d3cb2a1") and len(data) > 24, name
    assert (directory / "merged.pcapng").read_bytes()[:4] == bytes.fromhex("0a0d0d0a")
    shown = io.StringIO()
    Console(file=shown, width=10_000, highlight=False).print(render(report))
    assert done.stdout == shown.getvalue()


def test_no_pcap_writes_nothing(lab: LiveLab, tmp_path: Path) -> None:
    done = netemu_cli(
        "trace", "--lab", lab.name, "client", "node-1:30080", "--no-pcap",
        "--captures", str(tmp_path), "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pcaps"] is None
    assert list(tmp_path.iterdir()) == []


def test_a_target_the_lab_does_not_have_is_bad_input(lab: LiveLab, tmp_path: Path) -> None:
    done = netemu_cli("trace", "--lab", lab.name, "client", "nowhere", "--captures", str(tmp_path))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]
    assert "Traceback" not in done.stderr
