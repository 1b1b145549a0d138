"""`netemu get -f ... -o json` of every kind deserialises with the official
Kubernetes Python client, and the fields a client relies on survive it
(tests/k8s_client.py)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from k8s_client import LIST_TYPES, check_kind, deserialize
from pydantic import ValidationError

from netemu.cli import main

DEFAULT = Path(__file__).resolve().parents[2] / "controlplane" / "default"
# A DaemonSet and a StatefulSet beside the default lab's Deployment.
SETS = """
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: agent, namespace: kube-system}
    spec:
      selector: {matchLabels: {app: agent}}
      template:
        metadata: {labels: {app: agent}}
        spec:
          containers:
          - name: agent
            image: busybox
            resources: {limits: {cpu: 100m, memory: 64Mi}}
    ---
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec:
      serviceName: db
      replicas: 2
      selector: {matchLabels: {app: db}}
      template:
        metadata: {labels: {app: db}}
        spec:
          containers:
          - {name: db, image: "postgres:16", resources: {requests: {cpu: 50m}}}
    """


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("lab")
    for manifest in DEFAULT.glob("*.yaml"):
        shutil.copy(manifest, where)
    (where / "sets.yaml").write_text(textwrap.dedent(SETS))
    return where


def get_json(lab: Path, resource: str) -> str:
    result = CliRunner().invoke(main, ["get", resource, "-f", str(lab), "-o", "json"])
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("resource", sorted(LIST_TYPES))
def test_every_kind_deserialises_with_the_kubernetes_client(lab: Path, resource: str) -> None:
    text = get_json(lab, resource)
    listed = deserialize(text, LIST_TYPES[resource])
    assert len(listed.items) == len(json.loads(text)["items"])
    check_kind(resource, listed.items)


def test_qos_classes_survive(lab: Path) -> None:
    pods = deserialize(get_json(lab, "pods"), "V1PodList").items
    qos = {p.metadata.name.rsplit("-", 1)[0]: p.status.qos_class for p in pods}
    # limits only: requests default to them (Guaranteed); requests only: Burstable.
    assert qos["agent"] == "Guaranteed" and qos["db"] == "Burstable"
    assert qos["web-7769d69d5c"] == "BestEffort"


def test_the_client_rejects_what_it_must(lab: Path) -> None:
    """The check can fail: a container status without imageID (a required
    field) is refused by the client."""
    listed = json.loads(get_json(lab, "pods"))
    del listed["items"][0]["status"]["containerStatuses"][0]["imageID"]
    with pytest.raises(ValidationError, match="imageID"):
        deserialize(json.dumps(listed), "V1PodList")
