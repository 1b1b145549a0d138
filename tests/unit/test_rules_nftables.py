"""netemu.rules.nftables against kube-proxy's own nftables proxier tests.

The expected tables below are transcribed from kubernetes/kubernetes
pkg/proxy/nftables/proxier_test.go (TestOverallNFTablesRules,
TestSyncProxyRulesRepeated), compared as that file compares them
(sortNFTablesTransaction in helpers_test.go: by object type and name, rules
in order within a chain). Two adjustments, both to match what a real
kube-proxy 1.33 writes rather than its test harness:

- `baseRules` is kube-proxy 1.33's setupNFTables output: filter-prerouting,
  filter-input, filter-forward and filter-output at priority dstnat-10 (-110)
  and filter-output-post-dnat at dstnat+10 (-90), with nftablesJumpChains'
  jumps. (The newest proxier_test.go has 1.34's chains, filter-prerouting-pre-
  dnat and friends, from kubernetes PR #132456.)
- the masquerade rule of a service chain: 1.33 matches the ClusterIP, the
  protocol and the port (`ip daddr 172.30.0.41 tcp dport 80 ip saddr !=
  10.0.0.0/8 jump mark-for-masquerade`); 1.34 dropped the `tcp dport 80`
  (kubernetes PR #131492, merged after 1.33 was released).
- the mark: NewFakeProxier sets masqueradeMark to "0x4000", while NewProxier
  formats 1<<14 with Go's %#08x, which gives "0x00004000".
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from netemu.pipeline import compile_nftables, load_cluster, proxy_mode
from netemu.pipeline import proxy_input as proxy_input_of
from netemu.rules.flannel import FlannelConfig
from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.nftables import (
    NftRuleset,
    NftSync,
    NftSyncState,
    Transaction,
    compile_ruleset,
    iter_chain_rules,
    nftables_mode_iptables,
    render,
    sort_dump_lines,
    sync,
)

ROOT = Path(__file__).parents[2]
MARK = "0x00004000"
TEST_NODE = "test-node"

# NewFakeProxier's conventions: pod CIDR 10.0.0.0/8 (ClusterCIDR detector),
# service CIDR 172.30.0.0/16, node IP 192.168.0.2 with 192.168.1.2 and
# 192.168.99.11 on the same interface, nodePortAddresses as "primary" turns
# them into: 192.168.0.2/32 and 2001:db8::1/128.
CONFIG = ProxyConfig(
    TEST_NODE,
    node_ips=("192.168.0.2",),
    local_ips=("127.0.0.1", "192.168.0.2", "192.168.1.2", "192.168.99.11"),
    cluster_cidr="10.0.0.0/8",
    node_port_addresses=("192.168.0.2/32", "2001:db8::1/128"),
    service_cidrs=("172.30.0.0/16",),
)

BASE_RULES = f"""
add table ip kube-proxy {{ comment "rules for kube-proxy" ; }}

add set ip kube-proxy cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}
add set ip kube-proxy nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}

add map ip kube-proxy firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }}
add map ip kube-proxy no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}
add map ip kube-proxy no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}
add map ip kube-proxy service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}
add map ip kube-proxy service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}

add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting {{ type filter hook prerouting priority -110 ; }}
add chain ip kube-proxy filter-forward {{ type filter hook forward priority -110 ; }}
add chain ip kube-proxy filter-input {{ type filter hook input priority -110 ; }}
add chain ip kube-proxy filter-output {{ type filter hook output priority -110 ; }}
add chain ip kube-proxy filter-output-post-dnat {{ type filter hook output priority -90 ; }}
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output {{ type nat hook output priority -100 ; }}
add chain ip kube-proxy nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain ip kube-proxy nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check

add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr {{ 172.30.0.0/16 }} drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump firewall-check
add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or {MARK}
add rule ip kube-proxy masquerading mark and {MARK} == 0 return
add rule ip kube-proxy masquerading mark set mark xor {MARK}
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports

add element ip kube-proxy nodeport-ips {{ 192.168.0.2 }}
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"""  # noqa: E501


def port(ns: str, name: str, cluster_ip: str, **kw: object) -> ServicePortInfo:
    return ServicePortInfo(ns, name, str(kw.pop("port_name", "p80")), "tcp", cluster_ip, 80, **kw)  # type: ignore[arg-type]


def ep(ip: str, port_number: int = 80, node: str | None = None) -> EndpointInfo:
    return EndpointInfo(ip, port_number, True, True, False, node)


def proxy_input(
    ports: list[ServicePortInfo],
    endpoints: Mapping[tuple[str, str], tuple[EndpointInfo, ...]],
    config: ProxyConfig = CONFIG,
) -> ProxyInput:
    ports = sorted(ports, key=lambda sp: (sp.name_string, sp.protocol))
    by_port = {
        (sp.namespace, sp.name, sp.port_name, sp.protocol): tuple(
            sorted(endpoints[(sp.namespace, sp.name)], key=lambda e: e.text)
        )
        for sp in ports
        if (sp.namespace, sp.name) in endpoints
    }
    return ProxyInput(config, tuple(ports), by_port)


def assert_same_table(expected: str, actual: str) -> None:
    assert sort_dump_lines(actual) == sort_dump_lines(textwrap.dedent(expected))


# ---------------------------------------------------------------- TestOverallNFTablesRules


def overall_input() -> ProxyInput:
    """TestOverallNFTablesRules' Services and EndpointSlices."""
    ports = [
        # ClusterIP service
        port("ns1", "svc1", "172.30.0.41"),
        # LoadBalancer service with Local traffic policy
        port(
            "ns2",
            "svc2",
            "172.30.0.42",
            node_port=3001,
            load_balancer_vips=("1.2.3.4",),
            external_ips=("192.168.99.22",),
            external_local=True,
            health_check_node_port=30000,
        ),
        # NodePort service
        port("ns3", "svc3", "172.30.0.43", node_port=3003),
        # ExternalIP service (type NodePort, its port without a nodePort)
        port("ns4", "svc4", "172.30.0.44", external_ips=("192.168.99.33",)),
        # LoadBalancer service with Cluster traffic policy, source ranges and
        # session affinity
        port(
            "ns5",
            "svc5",
            "172.30.0.45",
            node_port=3002,
            load_balancer_vips=("5.6.7.8",),
            load_balancer_source_ranges=("203.0.113.0/25",),
            affinity_timeout=10800,
        ),
        # ClusterIP service with no endpoints
        port("ns6", "svc6", "172.30.0.46"),
    ]
    endpoints = {
        ("ns1", "svc1"): (ep("10.180.0.1"),),
        # No nodeName: not local, so svc2 has no local endpoint.
        ("ns2", "svc2"): (ep("10.180.0.2"),),
        ("ns3", "svc3"): (ep("10.180.0.3"),),
        ("ns4", "svc4"): (ep("10.180.0.4"), ep("10.180.0.5", node=TEST_NODE)),
        ("ns5", "svc5"): (ep("10.180.0.3"),),
    }
    return proxy_input(ports, endpoints)


OVERALL_SERVICES = """
# svc1
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }

add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }

# svc2
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80

add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }

add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }

# svc3
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }

# svc4
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80

add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }

# svc5
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80

add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }

# svc6
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"""  # noqa: E501


def test_overall_nftables_rules() -> None:
    assert_same_table(BASE_RULES + OVERALL_SERVICES, render(overall_input()))


def test_overall_rules_differ_from_kube_proxy_when_a_service_is_wrong() -> None:
    # The comparison is not vacuous: one endpoint more changes the table.
    data = overall_input()
    key = ("ns1", "svc1", "p80", "tcp")
    endpoints = {**data.endpoints, key: (*data.endpoints[key], ep("10.180.0.9"))}
    changed = ProxyInput(data.config, data.service_ports, endpoints)
    assert sort_dump_lines(render(changed)) != sort_dump_lines(BASE_RULES + OVERALL_SERVICES)


def test_dump_is_knftables_fake_order() -> None:
    """Fake.Dump(): table, chains, sets, maps (each sorted by name), then rules
    chain by chain, then elements set by set and map by map."""
    lines = render(overall_input()).splitlines()
    kinds = [line.split(" ")[1] for line in lines]
    first_rule = kinds.index("rule")
    assert kinds[0] == "table"
    assert set(kinds[1:first_rule]) == {"chain", "set", "map"}
    chains = [line.split(" ")[4] for line in lines if line.startswith("add chain")]
    assert chains == sorted(chains)
    assert kinds[first_rule:].count("rule") == kinds.count("rule")
    assert kinds[-1] == "element"


# ---------------------------------------------------------------- TestSyncProxyRulesRepeated


SVC1 = """
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 }
add chain ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80
add rule ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 ip saddr 10.0.1.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 meta l4proto tcp dnat to 10.0.1.1:80
"""  # noqa: E501
SVC2 = """
add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 ip daddr 172.30.0.42 tcp dport 8080 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 numgen random mod 1 vmap { 0 : goto endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 }
add chain ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080
add rule ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 ip saddr 10.0.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 meta l4proto tcp dnat to 10.0.2.1:8080
"""  # noqa: E501
SVC3 = """
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80 }
add chain ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80
add rule ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80 ip saddr 10.0.3.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80 meta l4proto tcp dnat to 10.0.3.1:80
"""  # noqa: E501
SVC3_TWO_ENDPOINTS = """
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 , 1 : goto endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80 }
add chain ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80
add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 ip saddr 10.0.3.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 meta l4proto tcp dnat to 10.0.3.2:80
add chain ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80
add rule ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80 ip saddr 10.0.3.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80 meta l4proto tcp dnat to 10.0.3.3:80
"""  # noqa: E501
SVC4 = """
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80 }
add chain ip kube-proxy endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80
add rule ip kube-proxy endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80 ip saddr 10.0.4.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80 meta l4proto tcp dnat to 10.0.4.1:80
"""  # noqa: E501


class Proxier:
    """A kube-proxy for the repeated-sync test: the cluster's Services and
    endpoints, the Services changed since the last sync, the time, and what
    the last sync left (the kernel's table, stale chains)."""

    def __init__(self) -> None:
        self.ports: dict[tuple[str, str], ServicePortInfo] = {}
        self.endpoints: dict[tuple[str, str], tuple[EndpointInfo, ...]] = {}
        self.changed: set[tuple[str, str]] = set()
        self.state: NftSyncState | None = None
        self.now = 1000.0
        self.last: NftSync | None = None

    def set_service(self, sp: ServicePortInfo) -> None:
        self.ports[(sp.namespace, sp.name)] = sp
        self.changed.add((sp.namespace, sp.name))

    def delete_service(self, ns: str, name: str) -> None:
        del self.ports[(ns, name)]
        self.changed.add((ns, name))

    def set_endpoints(self, ns: str, name: str, *endpoints: EndpointInfo) -> None:
        self.endpoints[(ns, name)] = endpoints
        self.changed.add((ns, name))

    def age_stale_chains(self) -> None:
        # kube-proxy's test moves every stale chain's time 2 s back; moving
        # the clock 2 s on is the same to the sync.
        self.now += 2.0

    def sync(self) -> NftSync:
        data = proxy_input(list(self.ports.values()), self.endpoints)
        result = sync(data, self.state, full=self.state is None, changed=self.changed, now=self.now)
        self.state, self.last = result.state, result
        self.changed = set()
        self.now += 0.01
        return result

    @property
    def table(self) -> NftRuleset:
        assert self.state is not None
        return self.state.ruleset


def test_sync_proxy_rules_repeated() -> None:
    fp = Proxier()
    fp.set_service(port("ns1", "svc1", "172.30.0.41"))
    fp.set_service(
        ServicePortInfo("ns2", "svc2", "p8080", "tcp", "172.30.0.42", 8080),
    )
    fp.set_endpoints("ns1", "svc1", ep("10.0.1.1"))
    fp.set_endpoints("ns2", "svc2", ep("10.0.2.1", 8080))
    fp.sync()
    expected = (
        BASE_RULES
        + """
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }
"""  # noqa: E501
        + SVC1
        + SVC2
    )
    assert_same_table(expected, fp.table.dump())

    # Add a new service and its endpoints.
    fp.set_service(port("ns3", "svc3", "172.30.0.43"))
    fp.set_endpoints("ns3", "svc3", ep("10.0.3.1"))
    result = fp.sync()
    elements = """
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
"""  # noqa: E501
    assert_same_table(BASE_RULES + elements + SVC1 + SVC2 + SVC3, fp.table.dump())
    # 1 element each in cluster-ips and service-ips; add+flush of 2 chains
    # and 2 rules in each.
    assert len(result.transaction) == 10

    # Delete a service; its chains are flushed, not yet deleted.
    fp.delete_service("ns2", "svc2")
    result = fp.sync()
    elements = """
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
"""  # noqa: E501
    flushed_svc2 = """
add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
add chain ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080
"""
    assert_same_table(BASE_RULES + elements + SVC1 + flushed_svc2 + SVC3, fp.table.dump())
    # 2 element deletions, 2 chain flushes.
    assert len(result.transaction) == 4

    # Time passes: the stale chains go, in a transaction of their own.
    fp.age_stale_chains()
    result = fp.sync()
    assert_same_table(BASE_RULES + elements + SVC1 + SVC3, fp.table.dump())
    assert len(result.transaction) == 0
    assert [line.split(" ", 4)[4] for line in result.cleanup.render().splitlines()] == [
        "endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080",
        "service-MHHHYRWA-ns2/svc2/tcp/p8080",
    ]

    # Add a service, sync, then add its endpoints.
    fp.set_service(port("ns4", "svc4", "172.30.0.44"))
    result = fp.sync()
    elements = """
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
"""  # noqa: E501
    no_endpoints_svc4 = """
add element ip kube-proxy no-endpoint-services { 172.30.0.44 . tcp . 80 comment "ns4/svc4:p80" : goto reject-chain }
"""  # noqa: E501
    assert_same_table(BASE_RULES + elements + SVC1 + SVC3 + no_endpoints_svc4, fp.table.dump())
    assert len(result.transaction) == 2

    fp.set_endpoints("ns4", "svc4", ep("10.0.4.1"))
    result = fp.sync()
    elements_with_svc4 = (
        elements
        + """
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
"""  # noqa: E501
    )
    assert_same_table(BASE_RULES + elements_with_svc4 + SVC1 + SVC3 + SVC4, fp.table.dump())
    # 1 element added, 1 deleted; add+flush of 2 chains, 2 rules in each.
    assert len(result.transaction) == 10

    # Change an endpoint of an existing service: the old endpoint chain stays.
    fp.set_endpoints("ns3", "svc3", ep("10.0.3.2"))
    result = fp.sync()
    svc3_moved = """
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 }
add chain ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80
add chain ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80
add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 ip saddr 10.0.3.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 meta l4proto tcp dnat to 10.0.3.2:80
"""  # noqa: E501
    assert_same_table(BASE_RULES + elements_with_svc4 + SVC1 + svc3_moved + SVC4, fp.table.dump())
    # add+flush of 2 chains with 2 rules each, and the flush of the old one.
    assert len(result.transaction) == 9

    # (The old svc3 endpoint chain goes in the next sync.)
    fp.age_stale_chains()

    # Add an endpoint to a service.
    fp.set_endpoints("ns3", "svc3", ep("10.0.3.2"), ep("10.0.3.3"))
    result = fp.sync()
    full_table = BASE_RULES + elements_with_svc4 + SVC1 + SVC3_TWO_ENDPOINTS + SVC4
    assert_same_table(full_table, fp.table.dump())
    # add+flush of 3 chains, 2 rules in each.
    assert len(result.transaction) == 12

    # Empty a service's endpoints: its chains are flushed, not yet deleted.
    fp.set_endpoints("ns3", "svc3")
    result = fp.sync()
    elements_svc3_empty = """
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 172.30.0.43 . tcp . 80 comment "ns3/svc3:p80" : goto reject-chain }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
"""  # noqa: E501
    svc3_flushed = """
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80
add chain ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80
"""
    assert_same_table(
        BASE_RULES + elements_svc3_empty + SVC1 + svc3_flushed + SVC4, fp.table.dump()
    )
    # 1 element removed, 1 added; 3 chains flushed.
    assert len(result.transaction) == 5
    assert fp.state is not None
    assert set(fp.state.stale_chains) == {
        "service-4AT6LBPK-ns3/svc3/tcp/p80",
        "endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80",
        "endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80",
    }

    # Restore the endpoints at once: the chains come back and are stale no more.
    fp.set_endpoints("ns3", "svc3", ep("10.0.3.2"), ep("10.0.3.3"))
    result = fp.sync()
    assert_same_table(full_table, fp.table.dump())
    assert len(result.transaction) == 14
    assert fp.state is not None
    assert not fp.state.stale_chains

    # Empty them and restore them after the stale chains aged: deleted by the
    # cleanup, then created again.
    fp.set_endpoints("ns3", "svc3")
    fp.sync()
    fp.age_stale_chains()
    fp.set_endpoints("ns3", "svc3", ep("10.0.3.2"), ep("10.0.3.3"))
    result = fp.sync()
    assert len(result.cleanup) == 3
    assert_same_table(full_table, fp.table.dump())

    # A sync with no changes writes nothing.
    result = fp.sync()
    assert_same_table(full_table, fp.table.dump())
    assert len(result.transaction) == 0


# ---------------------------------------------------------------- IPv6


V6_CONFIG = ProxyConfig(
    "n1",
    ip_family="IPv6",
    node_ips=("192.168.0.2", "2001:db8::1"),
    local_ips=("::1", "2001:db8::1", "2001:db8:1::2"),
    cluster_cidr="fd00:10::/64",
    service_cidrs=("10.96.0.0/12", "fd00:10:96::/112"),
)


def test_ipv6_table() -> None:
    """An IPv6 kube-proxy writes table `ip6 kube-proxy`: ipv6_addr sets and
    maps, `ip6` matches, the endpoint's colons turned to dots in chain names,
    the DNAT target bracketed, only this family's ServiceCIDR and NodePort
    address (nftables mode's "primary" default: the node's IPv6 address)."""
    sp = ServicePortInfo("ns1", "svc1", "p80", "tcp", "fd00:10:96::1", 80, node_port=3001)
    endpoint = EndpointInfo("fd00:10::5", 80, True, True, False, "n1")
    data = ProxyInput(V6_CONFIG, (sp,), {("ns1", "svc1", "p80", "tcp"): (endpoint,)})
    dump = render(data)
    endpoint_chain = "endpoint-3Y56MOQP-ns1/svc1/tcp/p80__fd00.10..5/80"
    service_chain = "service-ULMVA6XW-ns1/svc1/tcp/p80"
    for line in (
        'add table ip6 kube-proxy { comment "rules for kube-proxy" ; }',
        'add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }',
        "add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : "
        'verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        "add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop "
        'comment "Drop traffic to unallocated ClusterIPs"',
        f"add rule ip6 kube-proxy {service_chain} ip6 daddr fd00:10:96::1 tcp dport 80 "
        "ip6 saddr != fd00:10::/64 jump mark-for-masquerade",
        f"add rule ip6 kube-proxy {service_chain} numgen random mod 1 vmap "
        f"{{ 0 : goto {endpoint_chain} }}",
        f"add rule ip6 kube-proxy {endpoint_chain} ip6 saddr fd00:10::5 jump mark-for-masquerade",
        f"add rule ip6 kube-proxy {endpoint_chain} meta l4proto tcp dnat to [fd00:10::5]:80",
        "add rule ip6 kube-proxy services ip6 daddr @nodeport-ips meta l4proto . th dport "
        "vmap @service-nodeports",
        "add element ip6 kube-proxy nodeport-ips { 2001:db8::1 }",
        "add element ip6 kube-proxy service-ips { fd00:10:96::1 . tcp . 80 : goto "
        f"{service_chain} }}",
    ):
        assert line in dump.splitlines(), line
    assert " ip " not in dump and "ipv4_addr" not in dump and "10.96.0.0/12" not in dump


def test_nodeports_on_every_address_when_no_cidr_of_the_family() -> None:
    """nodePortAddresses with only IPv4 CIDRs leaves an IPv6 kube-proxy
    matching every address (MatchAll): no nodeport-ips set, and the NodePort
    rules match `fib daddr type local` except localhost instead."""
    config = replace(V6_CONFIG, node_port_addresses=("192.168.0.0/24",))
    dump = render(ProxyInput(config))
    assert "nodeport-ips" not in dump
    assert (
        "add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 "
        "meta l4proto . th dport vmap @service-nodeports"
    ) in dump.splitlines()
    assert (
        "add rule ip6 kube-proxy nodeport-endpoints-check ip6 daddr != ::1 "
        "meta l4proto . th dport vmap @no-endpoint-nodeports"
    ) in dump.splitlines()


# ---------------------------------------------------------------- sync behaviour


def small_input(**kw: object) -> ProxyInput:
    sp = port("ns1", "svc1", "172.30.0.41", **kw)
    return proxy_input([sp], {("ns1", "svc1"): (ep("10.0.1.1"), ep("10.0.1.2"))})


def test_sync_leaves_the_previous_state_alone() -> None:
    first = sync(small_input(), None, full=True, now=0.0)
    before = first.state.ruleset.dump()
    second = sync(proxy_input([], {}), first.state, full=False, changed={("ns1", "svc1")}, now=5.0)
    assert first.state.ruleset.dump() == before
    assert not first.state.stale_chains
    assert second.state.stale_chains  # the service's chains, now unused
    assert "svc1" not in "".join(
        line for line in second.state.ruleset.dump().splitlines() if "element" in line
    )


def test_first_sync_recreates_base_chains_once() -> None:
    """proxier.flushed: the first sync adds and deletes every base chain before
    creating it, so that older properties cannot fail the transaction; later
    full syncs only add and flush them."""
    first = sync(small_input(), None, full=True, now=0.0)
    assert "delete chain ip kube-proxy nat-prerouting" in first.transaction.render()
    again = sync(small_input(), first.state, full=True, now=1.0)
    text = again.transaction.render()
    assert "delete chain ip kube-proxy nat-prerouting" not in text
    assert "flush chain ip kube-proxy nat-prerouting" in text
    assert again.state.ruleset.dump() == first.state.ruleset.dump()


def test_full_resync_refills_the_maps() -> None:
    """A full sync flushes every element container and adds all elements
    again (nftElementStorage.reset); a partial one with nothing changed writes
    nothing."""
    first = sync(small_input(), None, full=True, now=0.0)
    full = sync(small_input(), first.state, full=True, now=1.0).transaction.render()
    assert "flush map ip kube-proxy service-ips" in full
    assert "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80" in full
    partial = sync(small_input(), first.state, full=False, now=1.0)
    assert len(partial.transaction) == 0


def test_changed_verdict_replaces_the_element() -> None:
    """An element whose value changes is deleted and added again (ensureElem);
    here svc1 loses its endpoints, so its service-ips element moves to
    no-endpoint-services."""
    first = sync(small_input(node_port=30080), None, full=True, now=0.0)
    sp = port("ns1", "svc1", "172.30.0.41", node_port=30080)
    empty = proxy_input([sp], {})
    result = sync(empty, first.state, full=False, changed={("ns1", "svc1")}, now=0.5)
    lines = result.transaction.render().splitlines()
    assert "delete element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 }" in lines
    assert "delete element ip kube-proxy service-nodeports { tcp . 30080 }" in lines
    assert (
        "add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 "
        'comment "ns1/svc1:p80" : goto reject-chain }'
    ) in lines
    # A chain is still stale half a second later, gone after another second.
    later = sync(empty, result.state, full=False, now=1.0)
    assert len(later.cleanup) == 0
    latest = sync(empty, later.state, full=False, now=2.5)
    # service, external and 2 endpoint chains, stale since the sync at 1.0
    assert len(latest.cleanup) == 4
    assert not any("svc1/" in chain for chain in latest.state.ruleset.chains)


def test_stale_affinity_sets_are_deleted_at_once() -> None:
    first = sync(small_input(affinity_timeout=60), None, full=True, now=0.0)
    affinity = sorted(s for s in first.state.ruleset.sets if s.startswith("affinity-"))
    assert len(affinity) == 2
    result = sync(small_input(), first.state, full=False, changed={("ns1", "svc1")}, now=0.1)
    assert [line for line in result.transaction.render().splitlines() if "delete set" in line] == [
        f"delete set ip kube-proxy {name}" for name in affinity
    ]
    assert not any(s.startswith("affinity-") for s in result.state.ruleset.sets)


def test_after_failure_forgets_stale_chains() -> None:
    first = sync(small_input(), None, full=True, now=0.0)
    emptied = sync(proxy_input([], {}), first.state, full=False, changed={("ns1", "svc1")}, now=1)
    assert emptied.state.stale_chains
    assert not emptied.state.after_failure().stale_chains
    assert emptied.state.after_failure().ruleset is emptied.state.ruleset


def test_unchanged_services_chains_are_not_rewritten() -> None:
    """A partial sync rewrites only the chains of the Services in `changed`."""
    ports = [port("ns1", "svc1", "172.30.0.41"), port("ns2", "svc2", "172.30.0.42")]
    endpoints: dict[tuple[str, str], tuple[EndpointInfo, ...]] = {
        ("ns1", "svc1"): (ep("10.0.1.1"),),
        ("ns2", "svc2"): (ep("10.0.2.1"),),
    }
    first = sync(proxy_input(ports, endpoints), None, full=True, now=0.0)
    endpoints[("ns2", "svc2")] = (ep("10.0.2.2"),)
    result = sync(
        proxy_input(ports, endpoints), first.state, full=False, changed={("ns2", "svc2")}, now=0.1
    )
    text = result.transaction.render()
    assert "ns1/svc1" not in text
    assert "add chain ip kube-proxy service-" in text and "ns2/svc2" in text


def test_transaction_applies_to_the_same_table_as_the_dump() -> None:
    """A sync's state is its transaction applied to the table before it."""
    ruleset = compile_ruleset(overall_input())
    replay = Transaction("ip")
    for line in ruleset.dump().splitlines():
        assert line.startswith("add ")
    # The first sync's own transaction, on an empty table, gives the table of
    # the state it returned; so does an empty transaction on that state.
    result = sync(overall_input(), None, full=True, now=0.0)
    assert NftRuleset("ip").applied(result.transaction).dump() == ruleset.dump()
    assert ruleset.applied(replay).dump() == ruleset.dump()


# ---------------------------------------------------------------- iptables in nftables mode


def test_nftables_mode_iptables_has_no_kube_proxy_chains() -> None:
    rules = nftables_mode_iptables(FlannelConfig("10.244.0.0/16", "10.244.1.0/24"))
    text = rules.render()
    for chain in (
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
        "KUBE-PROXY-CANARY",
        "KUBE-SVC-",
        "KUBE-SEP-",
        "KUBE-FORWARD",
    ):
        assert chain not in text, chain
    filter_rules = [r.line() for r in rules.tables["filter"].rules]
    assert filter_rules[:2] == ["-A INPUT -j KUBE-FIREWALL", "-A OUTPUT -j KUBE-FIREWALL"]
    assert '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD' in filter_rules
    assert rules.tables["mangle"].chains == ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"]
    assert "KUBE-KUBELET-CANARY" in rules.tables["nat"].chains
    assert "FLANNEL-POSTRTG" in rules.tables["nat"].chains


def test_sorted_comparison_keeps_rule_order() -> None:
    """sort_dump_lines (kube-proxy's sortNFTablesTransaction) orders elements but
    never the rules of one chain: swapped rules compare different."""
    a = "add rule ip kube-proxy c x\nadd rule ip kube-proxy c y\n"
    b = "add rule ip kube-proxy c y\nadd rule ip kube-proxy c x\n"
    assert sort_dump_lines(a) != sort_dump_lines(b)
    e1 = "add element ip kube-proxy s { 1 }\nadd element ip kube-proxy s { 2 }\n"
    e2 = "add element ip kube-proxy s { 2 }\nadd element ip kube-proxy s { 1 }\n"
    assert sort_dump_lines(e1) == sort_dump_lines(e2)


# ---------------------------------------------------------------- traffic policies


def chain_rules(data: ProxyInput, chain: str) -> list[str]:
    return list(iter_chain_rules(compile_ruleset(data), chain))


def elements(data: ProxyInput, container: str) -> list[str]:
    ruleset = compile_ruleset(data)
    return [
        f"{e.key_text} : {e.value_text}" if e.value else e.key_text
        for e in ruleset.elements[container].values()
    ]


SVC = "ULMVA6XW-ns1/svc1/tcp/p80"


def test_internal_local_without_local_endpoints_drops() -> None:
    """internalTrafficPolicy Local with no endpoint on this node: the
    ClusterIP gets a `drop` verdict in no-endpoint-services, not `goto
    reject-chain` (there are endpoints, just not here), and no chains."""
    sp = port("ns1", "svc1", "172.30.0.41", internal_local=True)
    data = proxy_input([sp], {("ns1", "svc1"): (ep("10.0.1.1", node="other"),)})
    assert elements(data, "no-endpoint-services") == ["172.30.0.41 . tcp . 80 : drop"]
    assert elements(data, "service-ips") == []
    assert not any("/" in chain for chain in compile_ruleset(data).chains)


def test_internal_local_with_a_local_endpoint_uses_the_local_chain() -> None:
    sp = port("ns1", "svc1", "172.30.0.41", internal_local=True)
    data = proxy_input(
        [sp], {("ns1", "svc1"): (ep("10.0.1.1", node=TEST_NODE), ep("10.0.1.2", node="other"))}
    )
    assert elements(data, "service-ips") == [f"172.30.0.41 . tcp . 80 : goto local-{SVC}"]
    rules = chain_rules(data, f"local-{SVC}")
    assert rules[0] == (
        "ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
    )
    assert rules[1].startswith("numgen random mod 1 vmap { 0 : goto endpoint-")
    assert f"service-{SVC}" not in compile_ruleset(data).chains


def test_external_local_with_a_local_endpoint() -> None:
    """externalTrafficPolicy Local: the external chain short-circuits pods and
    the node to the cluster chain, and sends the rest to the local chain."""
    sp = port("ns1", "svc1", "172.30.0.41", node_port=30080, external_local=True)
    data = proxy_input(
        [sp], {("ns1", "svc1"): (ep("10.0.1.1", node=TEST_NODE), ep("10.0.1.2", node="other"))}
    )
    assert chain_rules(data, f"external-{SVC}") == [
        f'ip saddr 10.0.0.0/8 goto service-{SVC} comment "short-circuit pod traffic"',
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'fib saddr type local goto service-{SVC} comment "short-circuit local traffic"',
        f"goto local-{SVC}",
    ]
    assert chain_rules(data, f"service-{SVC}")[1].startswith("numgen random mod 2 vmap")
    assert chain_rules(data, f"local-{SVC}")[0].startswith("numgen random mod 1 vmap")
    assert elements(data, "no-endpoint-nodeports") == []


def test_masquerade_all_and_no_local_detector() -> None:
    sp = port("ns1", "svc1", "172.30.0.41")
    endpoints = {("ns1", "svc1"): (ep("10.0.1.1"),)}
    everything = proxy_input([sp], endpoints, replace(CONFIG, masquerade_all=True))
    assert chain_rules(everything, f"service-{SVC}")[0] == (
        "ip daddr 172.30.0.41 tcp dport 80 jump mark-for-masquerade"
    )
    # Without a cluster CIDR there is no local-traffic detector: no
    # masquerade rule for off-cluster ClusterIP traffic at all.
    undetected = proxy_input([sp], endpoints, replace(CONFIG, cluster_cidr=None))
    assert chain_rules(undetected, f"service-{SVC}") == [
        "numgen random mod 1 vmap { 0 : goto endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 }"
    ]


def test_firewall_allows_the_node_and_its_vips() -> None:
    """loadBalancerSourceRanges that hold the node's IP also let the VIPs in
    as sources (a VIP bound on the node is the source of node → VIP traffic)."""
    sp = port(
        "ns1",
        "svc1",
        "172.30.0.41",
        load_balancer_vips=("1.2.3.4", "5.6.7.8"),
        load_balancer_source_ranges=("192.168.0.0/24", "203.0.113.0/25"),
    )
    data = proxy_input([sp], {("ns1", "svc1"): (ep("10.0.1.1"),)})
    assert chain_rules(data, f"firewall-{SVC}") == [
        "ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 1.2.3.4 , 5.6.7.8 } drop"
    ]
    assert elements(data, "firewall-ips") == [
        f"1.2.3.4 . tcp . 80 : goto firewall-{SVC}",
        f"5.6.7.8 . tcp . 80 : goto firewall-{SVC}",
    ]


# ---------------------------------------------------------------- mode selection


def lab_dir(tmp_path: Path, proxy_mode: str | None, kube_proxy: str | None) -> Path:
    lab = (ROOT / "controlplane" / "default" / "lab.yaml").read_text()
    lab = lab.replace(
        "  proxyMode: iptables\n", f"  proxyMode: {proxy_mode}\n" if proxy_mode else ""
    )
    (tmp_path / "lab.yaml").write_text(lab)
    if kube_proxy is not None:
        (tmp_path / "kube-proxy.yaml").write_text(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
            + kube_proxy
        )
    return tmp_path


def test_proxy_mode_rule(tmp_path: Path) -> None:
    """A KubeProxyConfiguration's explicit mode wins; "" or none leaves it to
    the Lab's proxyMode, whose default is iptables."""
    cases = [
        (None, None, "iptables"),
        ("nftables", None, "nftables"),
        (None, "mode: nftables\n", "nftables"),
        ("nftables", 'mode: ""\n', "nftables"),
        ("iptables", "mode: iptables\n", "iptables"),
    ]
    for i, (lab_mode, kube_proxy, expected) in enumerate(cases):
        directory = tmp_path / str(i)
        directory.mkdir()
        state = load_cluster([lab_dir(directory, lab_mode, kube_proxy)])
        assert proxy_mode(state) == expected, (lab_mode, kube_proxy)


def test_nftables_mode_takes_the_nftables_section(tmp_path: Path) -> None:
    """In nftables mode kube-proxy's masquerade bit and masqueradeAll come
    from the `nftables` section of its configuration."""
    state = load_cluster(
        [
            lab_dir(
                tmp_path,
                "nftables",
                "nftables:\n  masqueradeBit: 10\n  masqueradeAll: true\n"
                "iptables:\n  masqueradeBit: 12\n",
            )
        ]
    )
    nft = proxy_input_of(state, "node-1", "nftables").config
    ipt = proxy_input_of(state, "node-1", "iptables").config
    assert (nft.masquerade_bit, nft.masquerade_all) == (10, True)
    assert (ipt.masquerade_bit, ipt.masquerade_all) == (12, False)
    assert "mark set mark or 0x00000400" in compile_nftables(state, "node-1").dump()
