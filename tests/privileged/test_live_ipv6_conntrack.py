"""kube-proxy's UDP conntrack cleanup for IPv6 in a live IPv6-only lab
(controlplane/ipv6only plus a UDP NodePort Service): a UDP flow pinned to an
endpoint by its IPv6 conntrack entry moves to a serving endpoint once the
first one is deleted, because the IPv6 proxier deletes the stale entry
(`conntrack -f ipv6`). In both of kube-proxy's modes."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.kernel import netns
from netemu.lab import LiveLab

CLIENT_PORT = 40000
NODE_PORT = 30053
UDP_APP = f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: udp
spec:
  replicas: 2
  selector:
    matchLabels:
      app: udp
  template:
    metadata:
      labels:
        app: udp
    spec:
      containers:
        - name: udp
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
          ports:
            - name: udp
              containerPort: 5353
              protocol: UDP
---
apiVersion: v1
kind: Service
metadata:
  name: udp
spec:
  type: NodePort
  selector:
    app: udp
  ports:
    - name: udp
      port: 53
      protocol: UDP
      targetPort: udp
      nodePort: {NODE_PORT}
"""


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    mode = str(request.param)
    target = tmp_path_factory.mktemp(f"v6ct-{mode}")
    shutil.copytree(CONTROLPLANE / "ipv6only", target, dirs_exist_ok=True)
    text = (target / "lab.yaml").read_text()
    (target / "lab.yaml").write_text(text.replace("proxyMode: iptables", f"proxyMode: {mode}"))
    (target / "udp.yaml").write_text(UDP_APP)
    with running_lab([target], lab_name(f"v6ct-{mode[:3]}")) as live:
        yield live


def _udp_conntrack(lab: LiveLab, node: str, family: str) -> str:
    netns_name = lab.target(node).netns
    argv = ["ip", "netns", "exec", netns_name, "conntrack", "-L", "-p", "udp", "-f", family]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_ipv6_udp_flow_moves_to_a_serving_endpoint_when_its_endpoint_is_deleted(
    lab: LiveLab,
) -> None:
    info = lab.info()
    client = info["clients"]["client"]
    node_ip = info["nodes"]["node-1"]["ip"]
    assert ":" in node_ip
    sock = netns.open_socket(lab.target("client").netns, socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind((client["ip"], CLIENT_PORT))  # one 5-tuple: one conntrack entry
    sock.settimeout(1.0)

    def ask() -> str:
        sock.sendto(b"which pod?", (node_ip, NODE_PORT))
        return str(json.loads(sock.recv(4096))["pod"])

    try:
        first = ask()
        # The entry pins the flow: every datagram of it reaches the same pod.
        assert {ask() for _ in range(5)} == {first}
        first_ip = info["pods"][f"default/{first}"]["ip"]
        assert f"src={first_ip}" in _udp_conntrack(lab, "node-1", "ipv6")

        lab.delete([("Pod", "default", first)])

        # The same 5-tuple is answered at once by a pod that still serves:
        # the IPv6 proxier deleted the entry pointing at the deleted pod.
        after = {ask() for _ in range(5)}
        assert first not in after and len(after) == 1
        assert f"src={first_ip}" not in _udp_conntrack(lab, "node-1", "ipv6")
    finally:
        sock.close()
