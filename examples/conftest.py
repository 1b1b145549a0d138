"""Fixtures shared by the example tests: one live lab per test module (and
per xdist worker), brought up once and taken down after the module's last
test, whatever happens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netemu.testing import LabFactory, NetemuLab

# Relative to the pytest rootdir (the directory of pyproject.toml or
# pytest.ini), not to this file: copy the lab directory along, or give an
# absolute path.
LAB = "controlplane/default"


@pytest.fixture(scope="module")
def lab(netemu_lab_module: LabFactory) -> Iterator[NetemuLab]:
    """controlplane/default, shared by the tests of a module. Tests that
    change the lab (scale, apply, delete) take their own with `netemu_lab`."""
    with netemu_lab_module(LAB) as lab:
        yield lab
