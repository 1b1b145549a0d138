"""A live trace's outcome agrees with its own evidence, through the
`netemu trace` command (the trace runs in the lab's supervisor):

- a NodePort whose Service has no endpoints is `refused`, by the REJECT
  rule kube-proxy programs for it, which the report names;
- a TCP or UDP port where nothing listens is `refused` by the destination;
- `--check` exits 1 when what the kernel did differs from the offline
  prediction (here: an nftables table of the test's own on node-1 drops
  the SYN, which the prediction from kube-proxy's rules cannot know), 0
  when it agrees;
- a UDP trace to the cluster DNS sends a real query and shows the answer
  (and says so when what answers a DNS port is no DNS server);
- UDP a Service receives on 4789 or 8472, the VXLAN ports, is reported as
  the datagram it is when that is not the lab's own tunnel port (a
  host-gw lab has none), and is delivered and answered.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import CONTROLPLANE, host_gw_copy, lab_name, netemu_cli, pods_with, running_lab

from netemu.lab import LiveLab

EXTRA = """
# A NodePort whose selector matches nothing: kube-proxy rejects it.
apiVersion: v1
kind: Service
metadata:
  name: empty-np
spec:
  type: NodePort
  selector: {app: nothing}
  ports:
    - {name: http, port: 80, targetPort: 8080, nodePort: 30099}
---
# UDP servers on the two VXLAN ports (and one more).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tunnelish
spec:
  replicas: 1
  selector:
    matchLabels: {app: tunnelish}
  template:
    metadata:
      labels: {app: tunnelish}
    spec:
      containers:
        - name: udp
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
          ports:
            - {name: iana, containerPort: 4789, protocol: UDP}
            - {name: linux, containerPort: 8472, protocol: UDP}
            - {name: other, containerPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: udp-4789
spec:
  selector: {app: tunnelish}
  ports:
    - {name: vx, port: 4789, targetPort: 4789, protocol: UDP}
---
# Port 53 served by the test server, not a DNS server.
apiVersion: v1
kind: Service
metadata:
  name: not-dns
spec:
  selector: {app: tunnelish}
  ports:
    - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: udp-8472
spec:
  selector: {app: tunnelish}
  ports:
    - {name: vx, port: 8472, targetPort: 8472, protocol: UDP}
"""


def trace_json(lab: LiveLab, *args: str) -> tuple[int, dict[str, Any], str]:
    done = netemu_cli("trace", "--lab", lab.name, "--no-pcap", "-o", "json", *args)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def manifests(directory: Path, base: Path) -> Path:
    target = directory / "lab"
    shutil.copytree(base, target)
    (target / "outcomes.yaml").write_text(EXTRA)
    return target


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    paths = manifests(tmp_path_factory.mktemp("outcomes"), CONTROLPLANE / "default")
    with running_lab([paths], lab_name("outcomes")) as live:
        yield live


@pytest.fixture(scope="module")
def host_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    base = host_gw_copy(tmp_path_factory.mktemp("hostgw"))
    paths = manifests(tmp_path_factory.mktemp("outcomes-hostgw"), base)
    with running_lab([paths], lab_name("outcomes-gw")) as live:
        yield live


def web_pod(lab: LiveLab) -> str:
    pods = pods_with(lab.state(), "web", "node-2")
    assert pods, "no web pod on node-2"
    meta = pods[0]["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def test_a_nodeport_without_endpoints_is_refused_by_the_named_reject_rule(lab: LiveLab) -> None:
    code, report, stderr = trace_json(lab, "client", "node-1:30099", "--check")
    assert code == 0, stderr  # the kernel did what the rules predict: REJECT
    assert (report["outcome"], report["verdict"]) == ("refused", "REJECT"), report["summary"]
    assert report["answer"]["outcome"] == "refused"
    assert report["deliveredTo"] is None
    request = [h for h in report["hops"] if h["leg"] == "request"]
    assert "Delivered" not in [h["action"] for h in request], report["summary"]
    rejected = request[-1]
    assert (rejected["action"], rejected["node"]) == ("Rejected", "node-1")
    rule = rejected["rule"]
    assert (rule["table"], rule["chain"]) == ("filter", "KUBE-EXTERNAL-SERVICES"), rule
    assert "-j REJECT" in rule["rule"] and "default/empty-np:http has no endpoints" in rule["rule"]
    assert rule in report["rules"]
    assert "rejected on node-1 by filter KUBE-EXTERNAL-SERVICES" in report["summary"]
    # The text output says the same.
    done = netemu_cli("trace", "--lab", lab.name, "--no-pcap", "client", "node-1:30099")
    assert done.returncode == 0, done.stderr
    assert "outcome: refused" in done.stdout and "outcome: delivered" not in done.stdout


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_port_nothing_listens_on_is_refused_by_the_destination(lab: LiveLab, proto: str) -> None:
    code, report, stderr = trace_json(
        lab, "client", "192.168.56.11", "--port", "9999", "--proto", proto
    )
    assert code == 0, stderr
    assert report["outcome"] == "refused", report["summary"]
    assert report["answer"]["outcome"] == "refused"
    assert report["deliveredTo"] == "node node-1"
    replies = [h["packet"] for h in report["hops"] if h["leg"] == "reply"]
    assert replies, report["summary"]
    if proto == "tcp":
        assert "R" in (replies[0]["tcpFlags"] or "")
    else:
        assert (replies[0]["icmpType"], replies[0]["icmpCode"]) == (3, 3)


def test_check_exits_1_when_the_kernel_differs_from_the_prediction(lab: LiveLab) -> None:
    netns_name = lab.node_netns("node-1")[0]
    table = "netemu_outcomes_check"
    ruleset = (
        f"table ip {table} {{\n"
        "  chain pre {\n"
        "    type filter hook prerouting priority -300;\n"
        "    tcp dport 30080 drop\n"
        "  }\n"
        "}\n"
    )
    nft = ["ip", "netns", "exec", netns_name, "nft"]
    subprocess.run([*nft, "-f", "-"], input=ruleset, text=True, check=True)
    try:
        code, report, stderr = trace_json(lab, "client", "node-1:30080", "--check")
    finally:
        subprocess.run([*nft, "delete", "table", "ip", table], check=True)
    assert report["prediction"]["verdict"] == "DNAT", report["prediction"]
    assert (report["outcome"], report["verdict"]) == ("dropped", "DROP"), report["summary"]
    assert code == 1, stderr
    assert "differs from the offline prediction: verdict DROP, predicted DNAT" in stderr
    # Without the table the same trace agrees.
    code, report, stderr = trace_json(lab, "client", "node-1:30080", "--check")
    assert (code, report["outcome"], report["verdict"]) == (0, "delivered", "DNAT"), stderr


def test_a_udp_trace_to_the_cluster_dns_asks_a_real_question(lab: LiveLab) -> None:
    code, report, stderr = trace_json(lab, web_pod(lab), "kube-system/kube-dns", "--proto", "udp")
    assert code == 0, stderr
    assert report["outcome"] == "delivered", report["summary"]
    dns = report["answer"]["dns"]
    assert dns["question"] == "kube-dns.kube-system.svc.cluster.local. IN A"
    assert (dns["rcode"], dns["error"]) == ("NOERROR", None)
    assert [a.split()[-2:] for a in dns["answers"]] == [["A", "10.96.0.10"]], dns


def test_a_dns_port_that_answers_no_dns_says_so(lab: LiveLab) -> None:
    code, report, stderr = trace_json(lab, web_pod(lab), "not-dns", "--proto", "udp")
    assert code == 0, stderr
    assert report["outcome"] == "delivered", report["summary"]
    answer = report["answer"]
    assert answer["dns"]["question"] == "not-dns.default.svc.cluster.local. IN A"
    assert answer["dns"]["error"].startswith("not a DNS message"), answer["dns"]
    # The test server's own account of the datagram is kept.
    assert answer["reply"] is not None and answer["reply"]["pod"].startswith("tunnelish-")


def other_vxlan_port(lab: LiveLab) -> int:
    own = lab.topology().vxlan_port
    assert own in (4789, 8472), own
    return 8472 if own == 4789 else 4789


def assert_plain_udp_delivered(lab: LiveLab, port: int, own: bool = False) -> None:
    code, report, stderr = trace_json(lab, web_pod(lab), f"udp-{port}", "--proto", "udp")
    assert code == 0, stderr
    where = report["summary"]
    assert report["outcome"] == "delivered", where
    assert report["answer"]["outcome"] == "answered", report["answer"]
    assert report["deliveredTo"] is not None and report["deliveredTo"].startswith("tunnelish-")
    # Wherever the datagram was seen as such (not inside the lab's own
    # tunnel), it is the Service's UDP to `port`, never a tunnel of its own.
    endpoint = report["endpoints"][0]
    seen = [h for h in report["hops"] if h["packet"]["dst"] == endpoint.rsplit(":", 1)[0]]
    assert seen and all(h["packet"]["dport"] == port for h in seen), where
    if own:
        # The lab's own tunnel carries the datagram (and its answer) between
        # nodes: only those hops are VXLAN, and inside is the Service's
        # datagram to `port` or the answer from it.
        tunnelled = [h for h in report["hops"] if h["tunnel"] is not None]
        assert tunnelled and all(h["tunnel"]["dport"] == port for h in tunnelled), where
        assert all(port in (h["packet"]["dport"], h["packet"]["sport"]) for h in tunnelled), where
    else:
        assert all(h["tunnel"] is None or h["tunnel"]["dport"] != port for h in report["hops"])


def test_udp_to_the_vxlan_port_the_lab_does_not_use_is_plain_udp(lab: LiveLab) -> None:
    assert_plain_udp_delivered(lab, other_vxlan_port(lab))


def test_udp_to_a_service_on_the_labs_own_vxlan_port_is_plain_udp(lab: LiveLab) -> None:
    own = lab.topology().vxlan_port
    assert own == 8472, "the default lab runs flannel's port"
    assert_plain_udp_delivered(lab, own, own=True)


@pytest.mark.parametrize("port", [4789, 8472])
def test_without_a_vxlan_overlay_udp_to_either_vxlan_port_is_plain_udp(
    host_gw: LiveLab, port: int
) -> None:
    assert host_gw.topology().vxlan_port is None
    assert_plain_udp_delivered(host_gw, port)
