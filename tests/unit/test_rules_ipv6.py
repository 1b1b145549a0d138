"""kube-proxy's IPv6 iptables proxier (ip6tables): on a dual-stack node
kube-proxy runs one proxier per family (cmd/kube-proxy/app/server_linux.go,
NewDualStackProxier), each seeing only its family's service IPs and
EndpointSlices. The IPv6 one differs from the IPv4 one where
pkg/proxy/iptables/proxier.go branches on the family: no localhost NodePorts
(NewNodePortAddresses never contains an IPv4 loopback for IPv6), so no
localnet KUBE-FIREWALL rule and no 127.0.0.0/8 nfacct NodePort rule, and the
NodePort tail call excludes ::1/128."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from netemu.api.config import KubeProxyConfiguration
from netemu.cli import main
from netemu.controlplane.state import ClusterState
from netemu.pipeline import compile_rules, load_cluster, local_ips, proxy_families, proxy_input
from netemu.rules.flannel import flannel_config
from netemu.rules.input import (
    EndpointInfo,
    IPFamily,
    ProxyConfig,
    ProxyInput,
    ServicePortInfo,
    service_ports,
)
from netemu.rules.iptables import compile_sync
from netemu.rules.model import RuleSet, parse_restore
from netemu.rules.simulate import Packet, Simulation, _dnat_destination, simulate
from netemu.rules.spec import parse_args

ROOT = Path(__file__).parents[2]
DUAL = ROOT / "controlplane" / "dualstack"


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return load_cluster([DUAL])


def nat_rules(rules: RuleSet) -> list[str]:
    return [f"-A {r.chain} {r.args}" for r in rules.tables["nat"].rules]


def filter_rules(rules: RuleSet) -> list[str]:
    return [f"-A {r.chain} {r.args}" for r in rules.tables["filter"].rules]


def test_a_dual_stack_node_runs_a_proxier_per_family_primary_first(state: ClusterState) -> None:
    assert proxy_families(state, "node-1") == ["IPv4", "IPv6"]


def test_an_ipv4_lab_runs_only_the_ipv4_proxier() -> None:
    state = load_cluster([ROOT / "controlplane" / "default"])
    assert proxy_families(state, "node-1") == ["IPv4"]


def test_each_proxier_sees_its_familys_cluster_ips_only(state: ClusterState) -> None:
    v4 = {sp.name: sp.cluster_ip for sp in service_ports(state.services, "IPv4")}
    v6 = {sp.name: sp.cluster_ip for sp in service_ports(state.services, "IPv6")}
    # web-v6 is SingleStack IPv6: the IPv4 proxier never sees it.
    assert "web-v6" not in v4
    assert set(v6) >= {"web", "web-v6", "web-nodeport", "web-local"}
    assert all(":" in ip for ip in v6.values())
    assert all("." in ip for ip in v4.values())
    web = next(s for s in state.services if s.metadata.name == "web")
    assert (v4["web"], v6["web"]) == tuple(web.spec.cluster_ips)


def test_the_ipv6_proxier_reads_only_ipv6_slices(state: ClusterState) -> None:
    data = proxy_input(state, "node-1", family="IPv6")
    endpoints = [ep for eps in data.endpoints.values() for ep in eps]
    assert endpoints
    assert all(":" in ep.ip and ep.text.startswith("[") for ep in endpoints)


def test_the_ipv6_proxier_config_is_of_its_family(state: ClusterState) -> None:
    cfg = proxy_input(state, "node-1", family="IPv6").config
    assert cfg.ip_family == "IPv6"
    assert cfg.node_ips == ("fd00:56::11",)
    assert cfg.cluster_cidr == "fd00:10:244::/56"
    assert cfg.node_pod_cidr == "fd00:10:244::/64"
    assert all(":" in ip for ip in cfg.local_ips)
    # NewNodePortAddresses(IPv6, ...) never contains an IPv4 loopback.
    assert cfg.localhost_node_ports is False


def test_ip6tables_have_no_localhost_nodeport_or_localnet_rules(state: ClusterState) -> None:
    rules = compile_rules(state, "node-1", family="IPv6")
    text = rules.render()
    assert "127.0.0.0/8" not in text
    assert "localhost_nps_accepted_pkts" not in text
    # kube-proxy still ensures kubelet's KUBE-FIREWALL chain and its jumps,
    # but nothing writes a rule into it for IPv6.
    assert "KUBE-FIREWALL" in rules.tables["filter"].chains
    assert [r for r in rules.tables["filter"].rules if r.chain == "KUBE-FIREWALL"] == []
    assert "-A INPUT -j KUBE-FIREWALL" in filter_rules(rules)


def test_ip6tables_nodeport_tail_excludes_ipv6_loopback(state: ClusterState) -> None:
    rules = nat_rules(compile_rules(state, "node-1", family="IPv6"))
    assert (
        rules.count(
            '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must '
            'be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 '
            "-j KUBE-NODEPORTS"
        )
        == 1
    )


def test_ip6tables_dnat_to_bracketed_endpoints(state: ClusterState) -> None:
    rules = nat_rules(compile_rules(state, "node-1", family="IPv6"))
    dnats = [r for r in rules if "-j DNAT" in r]
    assert dnats
    assert all("--to-destination [fd00:10:244:" in r and "]:8080" in r for r in dnats)


def test_ip6tables_masquerade_off_cluster_traffic_by_the_ipv6_cluster_cidr(
    state: ClusterState,
) -> None:
    rules = nat_rules(compile_rules(state, "node-1", family="IPv6"))
    assert any("! -s fd00:10:244::/56 -j KUBE-MARK-MASQ" in r for r in rules)


def test_the_ipv4_rules_of_a_dual_stack_node_hold_no_ipv6_address(state: ClusterState) -> None:
    text = compile_rules(state, "node-1", family="IPv4").render()
    assert "fd00:" not in text
    # ...and keep the IPv4 proxier's localhost NodePorts.
    assert "127.0.0.0/8" in text


def test_a_service_without_ipv6_endpoints_is_rejected_in_ip6tables(state: ClusterState) -> None:
    # Only the IPv4 slices left: the IPv6 proxier sees no endpoints and REJECTs
    # in filter's KUBE-SERVICES (hasEndpoints false), the IPv4 one still DNATs.
    v4_only = replace(
        state, endpoint_slices=tuple(s for s in state.endpoint_slices if s.address_type == "IPv4")
    )
    six = filter_rules(compile_rules(v4_only, "node-1", family="IPv6"))
    web = next(s for s in state.services if s.metadata.name == "web")
    assert (
        '-A KUBE-SERVICES -m comment --comment "default/web:http has no endpoints" -m tcp -p tcp '
        f"-d {web.spec.cluster_ips[1]} --dport 80 -j REJECT"
    ) in six
    four = nat_rules(compile_rules(v4_only, "node-1", family="IPv4"))
    assert any("-j DNAT --to-destination 10.244." in r for r in four)


def test_node_port_addresses_are_filtered_by_family(state: ClusterState) -> None:
    config = KubeProxyConfiguration(node_port_addresses=["192.168.56.0/24", "fd00:56::/64"])
    both = replace(state, proxy_config=config)
    tails = {
        family: [
            r.split(" -d ")[1].split()[0]
            for r in nat_rules(compile_rules(both, "node-1", family=family))
            if "this must be the last rule" in r
        ]
        for family in ("IPv4", "IPv6")
    }
    assert tails == {"IPv4": ["192.168.56.11"], "IPv6": ["fd00:56::11"]}


def test_flannel_masquerades_ipv6_with_ipv6_multicast_excluded(state: ClusterState) -> None:
    cfg = flannel_config(state.lab, "fd00:10:244::/64")
    assert cfg is not None and cfg.network == "fd00:10:244::/56"
    rules = nat_rules(compile_rules(state, "node-1", family="IPv6"))
    assert (
        '-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld '
        'masq" -j MASQUERADE --random-fully'
    ) in rules


# ---------------------------------------------------------------- offline walks over IPv6
# The IPv6 counterparts of the iptables packet-flow cases: the ip6tables rules
# compiled for node-1 of controlplane/dualstack, walked by the simulator.
# One web pod runs on each node (node-1: fd00:10:244::2, node-2: fd00:10:244:1::2).


def walk(state: ClusterState, src: str, dst: str, dport: int) -> Simulation:
    family: IPFamily = "IPv6" if ":" in dst else "IPv4"
    rules = compile_rules(state, "node-1", family=family)
    return simulate(rules, local_ips(state, "node-1"), Packet(src=src, dst=dst, dport=dport))


def v6_cluster_ip(state: ClusterState, name: str) -> str:
    svc = next(s for s in state.services if s.metadata.name == name)
    return next(ip for ip in svc.spec.cluster_ips if ":" in ip)


V6_ENDPOINTS = ["[fd00:10:244:1::2]:8080", "[fd00:10:244::2]:8080"]


def test_pod_to_an_ipv6_cluster_ip_reaches_every_endpoint_unmasqueraded(
    state: ClusterState,
) -> None:
    result = walk(state, "fd00:10:244::9", v6_cluster_ip(state, "web"), 80)
    assert result.verdict == "DNAT"
    assert sorted(result.endpoints) == V6_ENDPOINTS
    assert [round(p.probability, 4) for p in result.paths] == [0.5, 0.5]
    assert result.masquerade is False


def test_an_ipv6_only_service_is_reached_over_ipv6(state: ClusterState) -> None:
    result = walk(state, "fd00:10:244::9", v6_cluster_ip(state, "web-v6"), 80)
    assert sorted(result.endpoints) == V6_ENDPOINTS


def test_an_outside_client_to_an_ipv6_cluster_ip_is_masqueraded(state: ClusterState) -> None:
    result = walk(state, "fd00:56::20", v6_cluster_ip(state, "web"), 80)
    assert result.verdict == "DNAT" and result.masquerade is True


def test_external_client_to_an_ipv6_nodeport_cluster_policy(state: ClusterState) -> None:
    result = walk(state, "fd00:56::20", "fd00:56::11", 30080)
    assert result.verdict == "DNAT"
    assert sorted(result.endpoints) == V6_ENDPOINTS
    assert result.masquerade is True


def test_external_client_to_an_ipv6_nodeport_local_policy_keeps_its_address(
    state: ClusterState,
) -> None:
    result = walk(state, "fd00:56::20", "fd00:56::11", 30081)
    assert result.endpoints == ["[fd00:10:244::2]:8080"]
    assert result.masquerade is False


def test_ipv6_loopback_never_reaches_a_nodeport(state: ClusterState) -> None:
    # `! -d ::1/128` on the tail call: no DNAT for [::1]:30080.
    result = walk(state, "::1", "::1", 30080)
    assert result.verdict != "DNAT"
    assert result.endpoints == []


def test_ipv4_on_the_same_dual_stack_node_still_dnats_to_ipv4_endpoints(
    state: ClusterState,
) -> None:
    result = walk(state, "192.168.56.20", "192.168.56.11", 30080)
    assert result.verdict == "DNAT"
    assert all(e.startswith("10.244.") for e in result.endpoints)


def test_no_ipv6_endpoints_means_reject(state: ClusterState) -> None:
    v4_only = replace(
        state, endpoint_slices=tuple(s for s in state.endpoint_slices if s.address_type == "IPv4")
    )
    result = walk(v4_only, "fd00:10:244::9", v6_cluster_ip(state, "web"), 80)
    assert result.verdict == "REJECT"


def test_ip6tables_dnat_destinations_parse_in_every_form() -> None:
    # ip6tables writes the address in brackets when a port follows.
    for text, expected in (
        ("[fd00::2]:8080", ("fd00::2", 8080)),
        ("fd00::2", ("fd00::2", None)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
    ):
        spec = parse_args(f"-p tcp -j DNAT --to-destination {text}")
        assert _dnat_destination(spec) == expected
    with pytest.raises(ValueError):
        _dnat_destination(parse_args("-p tcp -j DNAT --to-destination [fd00::2]x80"))


def test_trace_offline_cli_takes_ipv6_addresses() -> None:
    result = CliRunner().invoke(
        main,
        [
            "trace", "--offline", "-f", str(DUAL), "--node", "node-1",
            "--src", "fd00:56::20", "--dst", "fd00:56::11", "--dport", "30080", "-o", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "DNAT"
    assert sorted(data["endpoints"]) == V6_ENDPOINTS


@pytest.mark.parametrize(("src", "verdict"), [("fd00:56::20", "DNAT"), ("fd00:56::40", "DROP")])
def test_trace_offline_cli_walks_an_ipv6_load_balancer_ip_through_its_source_ranges(
    src: str, verdict: str
) -> None:
    # web-lb's IPv6 ingress IP (the default IPv6 pool's first address): the
    # IPv6 proxier checks only its IPv6 loadBalancerSourceRanges.
    result = CliRunner().invoke(
        main,
        [
            "trace", "--offline", "-f", str(DUAL), "--node", "node-1",
            "--src", src, "--dst", "fd00:56::c8", "--dport", "80", "-o", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == verdict
    assert sorted(data["endpoints"]) == (V6_ENDPOINTS if verdict == "DNAT" else [])


@pytest.mark.parametrize(("client", "verdict"), [("client", "DNAT"), ("blocked", "DROP")])
def test_trace_offline_from_to_walks_ipv6_flows_through_the_ipv6_proxier(
    client: str, verdict: str
) -> None:
    result = CliRunner().invoke(
        main, ["trace", "--offline", "-f", str(DUAL), client, "[fd00:56::c8]:80", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["service"], data["verdict"]) == ("default/web-lb", verdict)
    assert sorted(data["endpoints"]) == (V6_ENDPOINTS if verdict == "DNAT" else [])


def test_trace_offline_cli_refuses_mixed_families() -> None:
    result = CliRunner().invoke(
        main,
        [
            "trace", "--offline", "-f", str(DUAL), "--node", "node-1",
            "--src", "192.168.56.20", "--dst", "fd00:56::11", "--dport", "30080",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "different IP families" in result.stderr


def test_trace_offline_cli_refuses_ipv6_on_an_ipv4_lab() -> None:
    result = CliRunner().invoke(
        main,
        [
            "trace", "--offline", "-f", str(ROOT / "controlplane" / "default"),
            "--node", "node-1", "--src", "fd00::1", "--dst", "fd00::2", "--dport", "80",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "runs only IPv4" in result.stderr


# ---------------------------------------------------------------- kube-proxy's own IPv6 case
# Transcribed from kube-proxy's TestEnableLocalhostNodePortsIPv6
# (pkg/proxy/iptables/proxier_test.go): an IPv6 fake proxier (hostname
# test-hostname, no local-traffic detector, no --random-fully, no nfacct)
# asked for localhost NodePorts still writes no 127.0.0.0/8 rule and excludes
# ::1/128 from the NodePort tail call. Compared as its assertIPTablesRulesEqual
# does: chains as a set, rules grouped by chain, in order within each.

KUBE_PROXY_IPV6_LOCALHOST = """*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-LIGRYQQLSZN4UWQ5 - [0:0]
:KUBE-SEP-XJJ5QXWGJG344QDZ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SVL-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30001 -j KUBE-EXT-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d fd00:ab34::20 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-LIGRYQQLSZN4UWQ5 -m comment --comment ns1/svc1:p80 -s ff06::c1 -j KUBE-MARK-MASQ
-A KUBE-SEP-LIGRYQQLSZN4UWQ5 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [ff06::c1]:80
-A KUBE-SEP-XJJ5QXWGJG344QDZ -m comment --comment ns1/svc1:p80 -s ff06::c2 -j KUBE-MARK-MASQ
-A KUBE-SEP-XJJ5QXWGJG344QDZ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [ff06::c2]:80
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c1]:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-LIGRYQQLSZN4UWQ5
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c2]:80" -j KUBE-SEP-XJJ5QXWGJG344QDZ
-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c2]:80" -j KUBE-SEP-XJJ5QXWGJG344QDZ
COMMIT
"""  # noqa: E501


def shape(rules: RuleSet) -> dict[str, tuple[object, ...]]:
    """Per table: the chains declared, each chain's rules in order (with
    kube-proxy's 0x4000 marks, which netemu writes zero-padded)."""
    out: dict[str, tuple[object, ...]] = {}
    for name, table in rules.tables.items():
        by_chain: dict[str, list[str]] = {}
        for rule in table.rules:
            by_chain.setdefault(rule.chain, []).append(rule.args.replace("0x00004000", "0x4000"))
        out[name] = (sorted(table.chains), by_chain)
    return out


@pytest.mark.parametrize("localhost", [True, False])
def test_kube_proxys_ipv6_localhost_nodeports_case(localhost: bool) -> None:
    # TestEnableLocalhostNodePortsIPv6 and TestDisableLocalhostNodePortsIPv6
    # expect the same rules: localhost NodePorts never apply to IPv6.
    config = ProxyConfig(
        node_name="test-hostname",
        ip_family="IPv6",
        localhost_node_ports=localhost,
        random_fully=False,
        nfacct=False,
    )
    sp = ServicePortInfo(
        "ns1", "svc1", "p80", "tcp", "fd00:ab34::20", 80, node_port=30001, external_local=True
    )
    endpoints = (
        EndpointInfo("ff06::c1", 80, True, True, False, None),
        EndpointInfo("ff06::c2", 80, True, True, False, "test-hostname"),
    )
    data = ProxyInput(config, (sp,), {("ns1", "svc1", "p80", "tcp"): endpoints})
    assert shape(compile_sync(data)) == shape(parse_restore(KUBE_PROXY_IPV6_LOCALHOST))


SIX_LAB = (
    "apiVersion: netemu/v1alpha1\nkind: Lab\nmetadata: {name: six}\nspec:\n"
    "  underlayCIDR: fd00:56::/64\n  serviceCIDR: fd00:10:96::/112\n"
    "  podCIDR: fd00:10:244::/56\n  clusterDNS: fd00:10:96::a\n"
    '  nodes: [{name: node-1, underlayIP: "fd00:56::11"}]\n'
)


def test_trace_offline_from_to_on_an_ipv6_only_lab_walks_the_ipv6_rules(tmp_path: Path) -> None:
    # FROM/TO reads the IPv6-only lab's plan: the node's one (IPv6) address
    # to itself, through its IPv6 proxier's rules (`! -d ::1/128` is
    # ip6tables' NodePort rule; iptables' has `! -d 127.0.0.0/8`).
    (tmp_path / "lab.yaml").write_text(SIX_LAB)
    result = CliRunner().invoke(
        main, ["trace", "--offline", "-f", str(tmp_path), "node-1", "node-1:30080", "-o", "json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["node"] == "node-1" and data["localOrigin"] is True
    assert data["packet"] == {
        "src": "fd00:56::11",
        "dst": "fd00:56::11",
        "dport": 30080,
        "proto": "tcp",
    }
    assert any("! -d ::1/128 -j KUBE-NODEPORTS" in r["rule"] for r in data["rules"])
    # No Service has NodePort 30080 here: no rule of kube-proxy's takes it.
    assert (data["verdict"], data["endpoints"]) == ("NONE", [])


def test_trace_offline_from_to_on_a_lab_without_a_plan_points_to_src_dst(tmp_path: Path) -> None:
    # A dual-stack underlay with IPv6-only Service and pod CIDRs: no live lab
    # is built from it, so it has no plan to resolve FROM/TO in. The error
    # says why, and what handles such a lab offline.
    (tmp_path / "lab.yaml").write_text(
        SIX_LAB.replace("fd00:56::/64", "fd00:56::/64,192.168.56.0/24").replace(
            '"fd00:56::11"', '"fd00:56::11,192.168.56.11"'
        )
    )
    picture = str(tmp_path / "lab.dot")
    for args in (["trace", "--offline", "node-1", "node-1:30080"], ["graph", "-o", picture]):
        result = CliRunner().invoke(main, [*args, "-f", str(tmp_path)])
        assert result.exit_code == 2
        assert "needs the lab's plan" in result.stderr
        assert "serviceCIDR, podCIDR not an IPv4/IPv6 pair" in result.stderr
        assert "trace --offline --src/--dst handle such labs offline" in result.stderr
