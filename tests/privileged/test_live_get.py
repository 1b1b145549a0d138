"""`netemu get` on a live lab prints the table the lab's supervisor builds:
for every kind and output it is what the same code prints from the lab's
own objects read back as models (the `state` request), and a namespace
filter and an unknown namespace behave as kubectl's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.cli_table import in_namespace, items, listing, render, table, with_lb_health
from netemu.lab import LiveLab


def netemu(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "netemu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("get")) as live:
        yield live


@pytest.mark.parametrize("kind", ["pods", "services", "endpointslices", "nodes"])
def test_live_get_prints_the_labs_objects(lab: LiveLab, kind: str) -> None:
    state = lab.cluster_state()
    assert items(kind, state), "the default lab has objects of every kind"
    for output, wide in ((None, False), ("wide", True)):
        args = ["get", kind, "--lab", lab.name] + (["-o", output] if output else [])
        expected_table = table(kind, state, wide)
        if kind == "services" and wide:
            # A live lab adds its load balancer's health per node.
            balancer = lab.request("loadbalancer")["loadBalancer"]
            expected_table = with_lb_health(expected_table, balancer)
        assert netemu(*args) == render(expected_table)
    expected = listing(items(kind, state))
    assert json.loads(netemu("get", kind, "--lab", lab.name, "-o", "json")) == expected
    assert yaml.safe_load(netemu("get", kind, "--lab", lab.name, "-o", "yaml")) == expected


def test_live_get_of_one_namespace(lab: LiveLab) -> None:
    state = in_namespace(lab.cluster_state(), "kube-system")
    shown = netemu("get", "pods", "--lab", lab.name, "-n", "kube-system")
    assert shown == render(table("pods", state, wide=False))
    assert "coredns-" in shown and "web-" not in shown
    assert netemu("get", "pods", "--lab", lab.name, "-n", "No_Such") == "No resources found.\n"
