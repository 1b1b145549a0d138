"""`netemu get` on a live lab prints the table the lab's supervisor builds:
for every kind and output it is what the same code prints from the lab's
own objects (the -o json List), kubectl's columns with AGE and no trailing
spaces; a namespace filter drops the NAMESPACE column as kubectl -n does;
and every kind's -o json deserialises with the official Kubernetes client
(tests/k8s_client.py), with the live lab's statuses in it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from k8s_client import LIST_TYPES, check_kind, deserialize
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.lab import LiveLab

AGE = re.compile(r"^(<unknown>|\d+s|\d+m(\d+s)?|\d+h(\d+m)?|\d+d(\d+h)?|\d+y(\d+d)?)$")


def netemu(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "netemu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def cells(text: str) -> list[list[str]]:
    """A printed table's cells: columns are at least 3 spaces apart and no
    cell holds 3 spaces running."""
    return [re.split(r" {3,}", line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("get")) as live:
        yield live


@pytest.mark.parametrize("resource", sorted(LIST_TYPES))
def test_live_get_prints_and_lists_every_kind(lab: LiveLab, resource: str) -> None:
    listed = json.loads(netemu("get", resource, "--lab", lab.name, "-o", "json"))
    assert yaml.safe_load(netemu("get", resource, "--lab", lab.name, "-o", "yaml")) == listed
    names = [item["metadata"]["name"] for item in listed["items"]]
    for wide in (False, True):
        text = netemu("get", resource, "--lab", lab.name, *(["-o", "wide"] if wide else []))
        if not names:
            assert text == "No resources found.\n"
            continue
        assert all(line == line.rstrip() for line in text.splitlines())
        head, *rows = cells(text)
        namespaced = head[0] == "NAMESPACE"
        assert namespaced == (resource not in ("nodes", "namespaces"))
        assert [row[1 if namespaced else 0] for row in rows] == names
        age = head.index("AGE")
        assert all(AGE.match(row[age]) and row[age] != "<unknown>" for row in rows)
        assert all(len(row) == len(head) for row in rows)


@pytest.mark.parametrize("resource", sorted(LIST_TYPES))
def test_live_get_json_deserialises_with_the_kubernetes_client(lab: LiveLab, resource: str) -> None:
    text = netemu("get", resource, "--lab", lab.name, "-o", "json")
    listed = deserialize(text, LIST_TYPES[resource])
    if resource in ("daemonsets", "statefulsets"):
        assert listed.items == []  # the default lab has none
        return
    check_kind(resource, listed.items)
    if resource == "pods":
        dns = [p for p in listed.items if p.metadata.namespace == "kube-system"]
        assert dns and dns[0].status.container_statuses[0].ready


def test_live_get_of_one_namespace(lab: LiveLab) -> None:
    shown = netemu("get", "pods", "--lab", lab.name, "-n", "kube-system")
    head, *rows = cells(shown)
    assert head == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows and all(row[0].startswith("coredns-") for row in rows)
    assert netemu("get", "pods", "--lab", lab.name, "-n", "No_Such") == "No resources found.\n"
    services = cells(netemu("get", "svc", "--lab", lab.name, "-n", "kube-system"))
    assert services[1][:5] == [
        "kube-dns",
        "ClusterIP",
        "10.96.0.10",
        "<none>",
        "53/UDP,53/TCP,9153/TCP",
    ]
