"""Services kube-proxy never sees: its informers' label selector
"!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
(cmd/kube-proxy/app/server.go) leaves a Service carrying either label, with
any value, and its EndpointSlices unprogrammed; offline compile and trace
follow the same input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netemu.pipeline import compile_rules, load_cluster, local_ips
from netemu.rules.simulate import Packet, simulate

LB_LAB = Path(__file__).parents[2] / "controlplane" / "loadbalancer"

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: other-proxy
  labels: {labels}
spec:
  clusterIP: 10.96.200.10
  selector:
    app: shop
  ports:
    - port: 80
      targetPort: 8080
"""


def _lab(tmp_path: Path, labels: str) -> Path:
    lab = tmp_path / "lab"
    shutil.copytree(LB_LAB, lab)
    (lab / "other.yaml").write_text(SERVICE.format(labels=labels))
    return lab


def _verdict(lab: Path) -> tuple[str, bool]:
    state = load_cluster([lab])
    rules = compile_rules(state, "node-1")
    text = rules.render()
    sim = simulate(rules, local_ips(state, "node-1"), Packet("10.244.1.50", "10.96.200.10", 80))
    return sim.verdict, "default/other-proxy" in text


@pytest.mark.parametrize(
    "labels",
    [
        "{service.kubernetes.io/service-proxy-name: cilium}",
        '{service.kubernetes.io/service-proxy-name: ""}',
        '{service.kubernetes.io/headless: ""}',
    ],
)
def test_labelled_service_gets_no_rules(tmp_path: Path, labels: str) -> None:
    verdict, programmed = _verdict(_lab(tmp_path, labels))
    assert not programmed
    assert verdict != "DNAT"


def test_control_unlabelled_service_is_programmed(tmp_path: Path) -> None:
    verdict, programmed = _verdict(_lab(tmp_path, "{team: shop}"))
    assert programmed
    assert verdict == "DNAT"
