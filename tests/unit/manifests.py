"""Shared by the unit tests: Kubernetes YAML in a test turned into objects,
into the state the controllers compute, or into a running control plane."""

from __future__ import annotations

import textwrap

from netemu.api.base import K8sModel
from netemu.api.load import load_text
from netemu.controlplane import (
    ClusterState,
    ControlPlane,
    LocalClient,
    Store,
    apply_objects,
    build_cluster_state,
)
from netemu.controlplane.client import Client


def objects(text: str) -> list[K8sModel]:
    """The objects of a (dedented) YAML text; fails the test on any problem."""
    loaded, problems = load_text(textwrap.dedent(text), "test.yaml")
    assert not problems, problems
    return [item.obj for item in loaded]


def build(text: str) -> ClusterState:
    """What the controllers compute from the text, in one pass."""
    return build_cluster_state(objects(text))


def running(text: str) -> tuple[Client, ControlPlane]:
    """A live control plane: a store, its controllers, the objects applied, settled."""
    client = LocalClient(Store())
    plane = ControlPlane(client)
    apply_objects(client, objects(text))
    plane.run_to_fixed_point()
    return client, plane
