"""The files a live trace writes (`netemu trace`): private to the user who
ran it (the sudo user under sudo), and never written through a symlink
planted in captures/. One default lab, up once for the module."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, REPO, lab_name, running_lab

from netemu.lab import LabError, LiveLab

pytestmark = pytest.mark.privileged

NETEMU = REPO / ".venv" / "bin" / "netemu"
# Not a user of this machine: only root could have given it the files.
SUDO_UID, SUDO_GID = 54321, 54322


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("files")) as live:
        yield live


def test_cli_trace_writes_private_files_owned_by_the_sudo_user(
    lab: LiveLab, tmp_path: Path
) -> None:
    env = {**os.environ, "SUDO_UID": str(SUDO_UID), "SUDO_GID": str(SUDO_GID)}
    done = subprocess.run(
        [str(NETEMU), "trace", "--lab", lab.name, "client", "node-1:30080", "-o", "json",
         "--captures", str(tmp_path / "captures")],
        capture_output=True, text=True, timeout=120, check=False, env=env, umask=0,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    directory = Path(data["pcaps"]["directory"])
    assert directory == tmp_path / "captures" / lab.name / data["id"]
    files = sorted(directory.iterdir())
    names = {path.name for path in files}
    assert {"trace.json", "merged.pcapng"} <= names
    assert {Path(p).name for p in data["pcaps"]["points"]} <= names
    for path in files:
        info = os.lstat(path)
        assert stat.S_ISREG(info.st_mode), path
        assert stat.S_IMODE(info.st_mode) == 0o600, (path, oct(info.st_mode))
        assert (info.st_uid, info.st_gid) == (SUDO_UID, SUDO_GID), path
    # Every directory netemu created, none of them open to others.
    for path in (tmp_path / "captures", tmp_path / "captures" / lab.name, directory):
        info = os.lstat(path)
        assert stat.S_IMODE(info.st_mode) == 0o700, (path, oct(info.st_mode))
        assert (info.st_uid, info.st_gid) == (SUDO_UID, SUDO_GID), path


def test_trace_refuses_a_symlink_planted_in_captures(lab: LiveLab, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / lab.name).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(LabError, match="is a symbolic link: refusing to follow it"):
        lab.trace("client", "node-1:30080", captures=captures)
    assert list(elsewhere.iterdir()) == []
    # The same through the CLI: one line, exit 1, no traceback.
    done = subprocess.run(
        [str(NETEMU), "trace", "--lab", lab.name, "client", "node-1:30080",
         "--captures", str(captures)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"{captures / lab.name}: is a symbolic link: refusing to follow it" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(elsewhere.iterdir()) == []
