"""`netemu down --all` takes every lab down, and each lab's names stay its own."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from live_helpers import CONTROLPLANE, lab_name, lab_prefix

from netemu.cli import main
from netemu.kernel import netns
from netemu.kernel.journal import run_dir
from netemu.lab import LiveLab, down, running_labs, up


def test_down_all_removes_every_lab_and_nothing_else() -> None:
    names = [lab_name("all-a"), lab_name("all-b")]
    if running_labs():
        pytest.skip(f"labs {', '.join(running_labs())} are up, and down --all would take them down")
    try:
        labs = [up([str(CONTROLPLANE / "default")], name) for name in names]
        spaces = [
            {n for n in netns.list_names() if n.startswith(lab_prefix(name))} for name in names
        ]
        # Same manifests, two labs: no namespace name in common.
        assert spaces[0] and spaces[1] and not spaces[0] & spaces[1]
        assert all(isinstance(lab, LiveLab) for lab in labs)

        result = CliRunner().invoke(main, ["down", "--all"])
        assert result.exit_code == 0, result.output
        for name in names:
            assert f"lab {name} is down" in result.output
            assert not [n for n in netns.list_names() if n.startswith(lab_prefix(name))]
            assert not run_dir(name).exists()
        assert set(running_labs()) == set()
    finally:
        for name in names:
            down(name)
