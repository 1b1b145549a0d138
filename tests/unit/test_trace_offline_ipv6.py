"""`netemu trace --offline -f LAB FROM TO` on an IPv6-first dual-stack lab
(controlplane/ipv6primary) and an IPv6-only one (controlplane/ipv6only), in
each proxy mode: FROM and TO resolve to the primary family's addresses
(IPv6: the node's first underlayIP, the pod's podIP, the Service's first
clusterIP), the packet walks the node's IPv6 rules (ip6tables', or the
`ip6 kube-proxy` table with ip6tables' beside it), and on the dual-stack
lab --family IPv4 picks the other family, as a live trace does.

Expected addresses come from the lab's manifests (underlayIP, client ip)
and from the computed state (podIPs, clusterIPs), never from the tracer."""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from netemu.cli import main
from netemu.controlplane.state import ClusterState
from netemu.pipeline import load_cluster

CONTROLPLANE = Path(__file__).parents[2] / "controlplane"
CLIENT_V6 = "fd00:56::20"
NODE_V6 = {"node-1": "fd00:56::11", "node-2": "fd00:56::12"}
LABS = [(lab, mode) for lab in ("ipv6primary", "ipv6only") for mode in ("iptables", "nftables")]


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """controlplane/<lab> per proxy mode (the labs say iptables)."""
    found = {}
    for lab, mode in LABS:
        target = tmp_path_factory.mktemp(f"{lab}-{mode}")
        shutil.copytree(CONTROLPLANE / lab, target, dirs_exist_ok=True)
        text = (target / "lab.yaml").read_text()
        assert "proxyMode: iptables" in text
        (target / "lab.yaml").write_text(text.replace("proxyMode: iptables", f"proxyMode: {mode}"))
        found[lab, mode] = str(target)
    return found


@cache
def state_of(path: str) -> ClusterState:
    return load_cluster([path])


def trace(path: str, *words: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["trace", "--offline", "-f", path, *words, "-o", "json"])
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def web_pods(path: str) -> dict[str, tuple[str, list[str]]]:
    """node → (the web pod on it, its podIPs in status order)."""
    found = {}
    for pod in state_of(path).pods:
        if (pod.metadata.labels or {}).get("app") == "web":
            assert pod.spec.node_name is not None
            ips = [p.ip for p in pod.status.pod_ips]
            found[pod.spec.node_name] = (pod.metadata.name or "", ips)
    assert set(found) == {"node-1", "node-2"}
    return found


def cluster_ips(path: str, name: str) -> list[str]:
    (svc,) = [s for s in state_of(path).services if s.metadata.name == name]
    return list(svc.spec.cluster_ips)


def endpoint(ip: str, port: int = 8080) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def dnat_target(path: dict[str, Any]) -> str:
    """The address the path's DNAT rule writes: iptables' `--to-destination`
    or nftables' `dnat to`."""
    (rule,) = [
        r["rule"]
        for r in path["rules"]
        if "-j DNAT --to-destination " in r["rule"] or " dnat to " in f" {r['rule']}"
    ]
    return str(rule.split("--to-destination " if "-j DNAT" in rule else "dnat to ")[1].split()[0])


def check_paths(data: dict[str, Any], masquerade: dict[str, bool]) -> None:
    """One DNAT path per expected endpoint, its DNAT rule writing that
    endpoint, masqueraded (the SNAT to the node's address) as given."""
    assert data["verdict"] == "DNAT"
    assert sorted(data["endpoints"]) == sorted(masquerade)
    assert {p["endpoint"]: p["masquerade"] for p in data["paths"]} == masquerade
    for path in data["paths"]:
        assert path["verdict"] == "DNAT" and dnat_target(path) == path["endpoint"]
        masquerading = [
            r["rule"]
            for r in path["rules"]
            if "-j MASQUERADE" in r["rule"] or r["rule"].startswith("masquerade")
        ]
        assert bool(masquerading) == masquerade[path["endpoint"]], path["rules"]
    assert data["masquerade"] is any(masquerade.values())


def check_ipv6_rules(data: dict[str, Any], mode: str) -> None:
    """The walk went through the IPv6 proxier's rules, no IPv4 ones."""
    tables = {r["table"] for r in data["rules"]}
    if mode == "nftables":
        assert "ip6 kube-proxy" in tables and "ip kube-proxy" not in tables
    else:
        assert not any(" 10." in r["rule"] or "/32" in r["rule"] for r in data["rules"])


@pytest.mark.parametrize(("lab", "mode"), LABS)
def test_client_to_a_node_port_is_the_nodes_ipv6_address_masqueraded(
    copies: dict[tuple[str, str], str], lab: str, mode: str
) -> None:
    path = copies[lab, mode]
    data = trace(path, "client", "node-2:30080")
    assert data["node"] == "node-2" and data["service"] == "default/web-nodeport"
    assert data["packet"] == {
        "src": CLIENT_V6,
        "dst": NODE_V6["node-2"],
        "dport": 30080,
        "proto": "tcp",
    }
    # externalTrafficPolicy Cluster: every endpoint, each masqueraded.
    check_paths(data, {endpoint(ips[0]): True for _, ips in web_pods(path).values()})
    check_ipv6_rules(data, mode)


@pytest.mark.parametrize(("lab", "mode"), LABS)
def test_client_to_a_local_node_port_keeps_its_address(
    copies: dict[tuple[str, str], str], lab: str, mode: str
) -> None:
    path = copies[lab, mode]
    data = trace(path, "client/client", "node-1:30081")
    assert data["node"] == "node-1" and data["packet"]["dst"] == NODE_V6["node-1"]
    _, ips = web_pods(path)["node-1"]
    # externalTrafficPolicy Local: node-1's own endpoint only, no SNAT.
    check_paths(data, {endpoint(ips[0]): False})


@pytest.mark.parametrize(("lab", "mode"), LABS)
def test_pod_to_a_service_name_is_its_ipv6_cluster_ip(
    copies: dict[tuple[str, str], str], lab: str, mode: str
) -> None:
    path = copies[lab, mode]
    pods = web_pods(path)
    source, source_ips = pods["node-1"]
    data = trace(path, f"pod/{source}", "web")
    assert data["node"] == "node-1" and data["to"] == "Service default/web port 80/TCP (ClusterIP)"
    (vip,) = cluster_ips(path, "web")
    assert ":" in vip
    assert data["packet"] == {"src": source_ips[0], "dst": vip, "dport": 80, "proto": "tcp"}
    # To the pod on node-2 the source is kept; back to the sending pod
    # itself (hairpin) kube-proxy masquerades, as KUBE-SEP's `-s <endpoint>
    # -j KUBE-MARK-MASQ` (nftables: `ip6 saddr <endpoint> jump
    # mark-for-masquerade`) says.
    check_paths(data, {endpoint(pods["node-2"][1][0]): False, endpoint(source_ips[0]): True})
    check_ipv6_rules(data, mode)


@pytest.mark.parametrize(("lab", "mode"), LABS)
def test_pod_to_a_pod_on_another_node_is_forwarded_untranslated(
    copies: dict[tuple[str, str], str], lab: str, mode: str
) -> None:
    path = copies[lab, mode]
    pods = web_pods(path)
    (source, source_ips), (target, target_ips) = pods["node-1"], pods["node-2"]
    data = trace(path, source, target)
    assert data["node"] == "node-1" and data["to"] == f"pod default/{target}"
    assert data["packet"] == {
        "src": source_ips[0],
        "dst": target_ips[0],
        "dport": 8080,
        "proto": "tcp",
    }
    # No Service: kube-proxy translates nothing, flanneld's FORWARD rule
    # for the cluster's pod CIDR (ip6tables' on IPv6) accepts it.
    assert (data["verdict"], data["endpoints"], data["masquerade"]) == ("ACCEPT", [], False)
    (accepted,) = [r["rule"] for r in data["rules"] if r["chain"] == "FLANNEL-FWD"]
    assert accepted.startswith("-A FLANNEL-FWD -s fd00:10:244::/56 ")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_family_ipv4_on_the_ipv6_primary_lab_traces_the_other_family(
    copies: dict[tuple[str, str], str], mode: str
) -> None:
    path = copies["ipv6primary", mode]
    pods = web_pods(path)
    source, source_ips = pods["node-1"]
    v6, v4 = cluster_ips(path, "web-dual")
    assert ":" in v6 and ":" not in v4
    # Without --family (and with -6): the primary family, IPv6.
    for words in ((), ("-6",), ("--family", "IPv6")):
        data = trace(path, source, "web-dual", *words)
        assert (data["packet"]["src"], data["packet"]["dst"]) == (source_ips[0], v6)
    data = trace(path, source, "web-dual", "--family", "IPv4")
    assert (data["packet"]["src"], data["packet"]["dst"]) == (source_ips[1], v4)
    check_paths(data, {endpoint(pods["node-2"][1][1]): False, endpoint(source_ips[1]): True})
    # The single-stack IPv6 NodePort has no IPv4 rule: nothing of
    # kube-proxy's takes the node's IPv4 address and port 30080.
    data = trace(path, "client", "node-1:30080", "--family", "IPv4")
    assert data["packet"]["dst"] == "192.168.56.11" and data["packet"]["src"] == "192.168.56.20"
    assert (data["verdict"], data["endpoints"]) == ("NONE", [])


def test_family_ipv4_on_the_ipv6_only_lab_says_there_is_none(
    copies: dict[tuple[str, str], str],
) -> None:
    path = copies["ipv6only", "iptables"]
    source, _ = web_pods(path)["node-1"]
    cases = [
        ((source, "web", "--family", "IPv4"), "Service default/web has no IPv4 clusterIP"),
        (("client", "node-1:30080", "--family", "IPv4"), "node node-1 has no IPv4 address"),
        (("client", "192.168.56.11:30080"), "client client has no IPv4 address"),
    ]
    for words, message in cases:
        result = CliRunner().invoke(main, ["trace", "--offline", "-f", path, *words])
        assert result.exit_code == 2, result.stdout
        assert message in result.stderr


def test_family_with_src_and_dst_must_be_the_packets(copies: dict[tuple[str, str], str]) -> None:
    path = copies["ipv6only", "iptables"]
    words = ["--node", "node-1", "--src", CLIENT_V6, "--dst", NODE_V6["node-1"], "--dport", "30080"]
    result = CliRunner().invoke(
        main, ["trace", "--offline", "-f", path, *words, "--family", "IPv4"]
    )
    assert result.exit_code == 2 and "--family IPv4 disagrees" in result.stderr
    result = CliRunner().invoke(main, ["trace", "--offline", "-f", path, *words, "-6"])
    assert result.exit_code == 0 and "DNAT" in result.stdout
