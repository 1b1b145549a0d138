"""hostPort over IPv6: the portmap CNI plugin's ip6tables chains for a pod's
IPv6 address (netemu.rules.portmap), as the kubelet writes them per family
(netemu.node.kubelet) and the offline view compiles and simulates them
(netemu.pipeline) on dual-stack and IPv6-only labs."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import cast

import pytest
from manifests import build

from netemu.api.ipfamilies import IPFamily
from netemu.controlplane import ClusterState, LocalClient, Store
from netemu.kernel import netns
from netemu.kernel.datapath import Datapath
from netemu.kernel.iptables import FakeIptables
from netemu.kernel.journal import Journal
from netemu.net.plan import plan_lab, plan_pod
from netemu.node.kubelet import Kubelet, RunningPod, portmap_pod_of
from netemu.node.testserver import TestServers
from netemu.pipeline import compile_rules, local_ips, proxy_mode, simulate_on_node
from netemu.rules.model import parse_restore
from netemu.rules.portmap import (
    MASQ,
    SETMARK,
    TOP_DNAT,
    PortMapping,
    PortmapPod,
    chain_name,
    dnat_chain_rules,
    dnat_entry_rules,
    portmap_pod,
    sync_text,
)
from netemu.rules.simulate import Packet, simulate

ID_A = "a" * 64
# A node's nat table before any rule: its built-in chains, which the kernel
# has and FakeIptables must be given.
BUILTIN_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""


def fresh_node() -> FakeIptables:
    ipt = FakeIptables()
    ipt.restore(BUILTIN_NAT, noflush=False)
    return ipt


# The mappings of portmap's own test of fillDnatRules
# (plugins/meta/portmap/portmap_iptables_test.go, "generates a correct
# standard container chain"): plain ones of both protocols, then hostIPs of
# each family, specified and unspecified.
PLUGIN_TEST_MAPPINGS = (
    PortMapping(8080, 80, "tcp"),
    PortMapping(8081, 80, "tcp"),
    PortMapping(8080, 81, "udp"),
    PortMapping(8082, 82, "udp"),
    PortMapping(8083, 83, "tcp", "192.168.0.2"),
    PortMapping(8084, 84, "tcp", "0.0.0.0"),
    PortMapping(8085, 85, "tcp", "2001:db8:a::1"),
    PortMapping(8086, 86, "tcp", "::"),
)


def _save_form(args: list[str]) -> str:
    """One of the plugin test's expected rules ("-p P --dport N [-d IP] [-s
    NET] -j ...") as ip(6)tables-save prints it: the addresses first, each
    as the network it matches, then the protocol's match."""
    head = args.index("-j")
    opts = dict(zip(args[0:head:2], args[1:head:2], strict=True))
    out = []
    for flag in ("-s", "-d"):
        if flag in opts:
            out.append(f"{flag} {ipaddress.ip_interface(opts[flag]).network}")
    out.append(f"-p {opts['-p']} -m {opts['-p']} --dport {opts['--dport']}")
    return " ".join([*out, *args[head:]])


def test_ipv6_chain_follows_the_plugins_own_expectations() -> None:
    # The plugin's expected rules for the container net 2001:db8::2/64.
    tcp, udp = ["-p", "tcp", "--dport"], ["-p", "udp", "--dport"]
    hairpin = ["-s", "2001:db8::2/64", "-j", SETMARK]
    bound = ["-d", "2001:db8:a::1"]

    def dnat(port: int) -> list[str]:
        return ["-j", "DNAT", "--to-destination", f"[2001:db8::2]:{port}"]

    expected = [
        [*tcp, "8080", *hairpin],
        [*tcp, "8080", *dnat(80)],
        [*tcp, "8081", *hairpin],
        [*tcp, "8081", *dnat(80)],
        [*udp, "8080", *hairpin],
        [*udp, "8080", *dnat(81)],
        [*udp, "8082", *hairpin],
        [*udp, "8082", *dnat(82)],
        [*tcp, "8085", *bound, *hairpin],
        [*tcp, "8085", *bound, *dnat(85)],
        [*tcp, "8086", *hairpin],
        [*tcp, "8086", *dnat(86)],
    ]
    pod = PortmapPod(ID_A, "2001:db8::2", 64, PLUGIN_TEST_MAPPINGS)
    assert dnat_chain_rules(pod) == [_save_form(rule) for rule in expected]


def test_ipv4_chain_of_the_same_mappings_keeps_localhost_and_skips_ipv6_host_ips() -> None:
    expected = []
    for port, to, proto, dst in (
        (8080, 80, "tcp", None),
        (8081, 80, "tcp", None),
        (8080, 81, "udp", None),
        (8082, 82, "udp", None),
        (8083, 83, "tcp", "192.168.0.2"),
        (8084, 84, "tcp", None),
    ):
        base = ["-p", proto, "--dport", str(port)] + (["-d", dst] if dst else [])
        expected += [
            [*base, "-s", "10.0.0.2/24", "-j", SETMARK],
            [*base, "-s", "127.0.0.1", "-j", SETMARK],
            [*base, "-j", "DNAT", "--to-destination", f"10.0.0.2:{to}"],
        ]
    pod = PortmapPod(ID_A, "10.0.0.2", 24, PLUGIN_TEST_MAPPINGS)
    assert dnat_chain_rules(pod) == [_save_form(rule) for rule in expected]


def test_entry_rules_are_the_same_in_both_families() -> None:
    # fillDnatRules builds them from every mapping, whatever its hostIP.
    v4 = dnat_entry_rules("test", PortmapPod(ID_A, "10.0.0.2", 24, PLUGIN_TEST_MAPPINGS))
    v6 = dnat_entry_rules("test", PortmapPod(ID_A, "2001:db8::2", 64, PLUGIN_TEST_MAPPINGS))
    assert v4 == v6
    assert [r.split("--dports ")[1].split()[0] for r in v6] == [
        "8080,8081,8083,8084,8085,8086",
        "8080,8082",
    ]


def test_a_pods_address_of_each_family_is_the_first_one() -> None:
    mappings = (PortMapping(80, 8080, "tcp"),)
    addresses = [("10.244.1.5", 24), ("fd00:10:244:1::5", 64), ("fd00:10:244:1::6", 64)]
    assert portmap_pod(ID_A, addresses, mappings, "IPv4") == PortmapPod(
        ID_A, "10.244.1.5", 24, mappings
    )
    assert portmap_pod(ID_A, addresses, mappings, "IPv6") == PortmapPod(
        ID_A, "fd00:10:244:1::5", 64, mappings
    )
    assert portmap_pod(ID_A, [("10.244.1.5", 24), ("", 0)], mappings, "IPv6") is None


def test_ipv6_transaction_adds_and_deletes_as_ipv4s_does() -> None:
    ipt = fresh_node()
    web = PortmapPod(ID_A, "fd00:10:244:1::5", 64, (PortMapping(80, 8080, "tcp"),))
    ipt.restore(sync_text("cbr0", [web], parse_restore(ipt.save())), noflush=True)
    nat = parse_restore(ipt.save()).tables["nat"]
    dn = chain_name("cbr0", ID_A)
    assert [r.args for r in nat.chain_rules(dn)] == [
        f"-s fd00:10:244:1::/64 -p tcp -m tcp --dport 80 -j {SETMARK}",
        "-p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00:10:244:1::5]:8080",
    ]
    assert nat.chain_rules("POSTROUTING")[0].args.endswith(f"-j {MASQ}")
    assert nat.chain_rules("PREROUTING")[0].args.endswith(f"-j {TOP_DNAT}")
    # DEL: the pod's chain goes, the shared ones stay.
    ipt.restore(sync_text("cbr0", [], parse_restore(ipt.save())), noflush=True)
    nat = parse_restore(ipt.save()).tables["nat"]
    assert dn not in nat.chains and {TOP_DNAT, SETMARK, MASQ} <= set(nat.chains)


# -- labs: the kubelet's per-family writes, the offline view ---------------------

ROOT = Path(__file__).parents[2]

HOST_PORT_PODS = """
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 8080, hostPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: v4-only}
spec:
  nodeName: node-1
  containers:
  - {name: c, ports: [{containerPort: 8081, hostPort: 81, hostIP: 192.168.56.11}]}
"""


def lab_state(lab: str, mode: str = "iptables") -> ClusterState:
    """controlplane/<lab>'s Lab (and proxy configuration) with HOST_PORT_PODS,
    its kube-proxy in `mode`."""
    text = (ROOT / "controlplane" / lab / "lab.yaml").read_text()
    assert "proxyMode: iptables" in text, f"controlplane/{lab} no longer sets its proxyMode"
    return build(text.replace("proxyMode: iptables", f"proxyMode: {mode}") + HOST_PORT_PODS)


def pod_ips(state: ClusterState, name: str) -> dict[IPFamily, str]:
    (pod,) = [p for p in state.pods if p.metadata.name == name]
    return {("IPv6" if ":" in p.ip else "IPv4"): p.ip for p in pod.status.pod_ips}


def dn_chains(state: ClusterState, family: IPFamily) -> list[str]:
    nat = compile_rules(state, "node-1", family=family).tables["nat"]
    return [c for c in nat.chains if c.startswith("CNI-DN-")]


@pytest.mark.parametrize("lab", ["dualstack", "ipv6primary"])
def test_dual_stack_pods_get_chains_in_both_families(lab: str) -> None:
    state = lab_state(lab)
    assert len(dn_chains(state, "IPv4")) == 2
    assert len(dn_chains(state, "IPv6")) == 2
    web6 = pod_ips(state, "web")["IPv6"]
    v6_rules = compile_rules(state, "node-1", family="IPv6").render()
    assert f"--to-destination [{web6}]:8080" in v6_rules
    assert "127.0.0.1" not in v6_rules
    # The IPv4 hostIP's mapping has no IPv6 rule, only its port in the entry.
    assert "--dport 81" not in v6_rules and "--to-destination 1" not in v6_rules


def test_ipv6_only_pods_get_ip6tables_chains_only() -> None:
    state = lab_state("ipv6only")
    assert dn_chains(state, "IPv6") and not dn_chains(state, "IPv4")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
@pytest.mark.parametrize("lab", ["dualstack", "ipv6primary", "ipv6only"])
def test_offline_trace_to_the_nodes_ipv6_host_port_is_dnated_to_the_pod(
    lab: str, mode: str
) -> None:
    state = lab_state(lab, mode)
    assert proxy_mode(state) == mode
    web6 = pod_ips(state, "web")["IPv6"]
    sim = simulate_on_node(state, "node-1", Packet("fd00:56::20", "fd00:56::11", 80), family="IPv6")
    assert sim.endpoints == [f"[{web6}]:8080"], sim.to_dict()
    assert not sim.masquerade
    # The IPv4 hostIP's port is not mapped on the IPv6 address.
    sim = simulate_on_node(state, "node-1", Packet("fd00:56::20", "fd00:56::11", 81), family="IPv6")
    assert sim.endpoints == []


def test_hairpin_over_ipv6_is_masqueraded() -> None:
    state = lab_state("dualstack")
    web6 = pod_ips(state, "web")["IPv6"]
    rules = compile_rules(state, "node-1", family="IPv6")
    sim = simulate(rules, local_ips(state, "node-1"), Packet(web6, "fd00:56::11", 80))
    assert sim.endpoints == [f"[{web6}]:8080"] and sim.masquerade


class _NoDatapath:
    pass


@pytest.mark.parametrize("lab", ["dualstack", "ipv6only"])
def test_kubelet_writes_each_family_and_deletes_both(
    lab: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = lab_state(lab)
    assert state.lab is not None
    localnet: list[dict[str, str]] = []
    monkeypatch.setattr(netns, "write_sysctls", lambda _ns, values: localnet.append(values))
    node = plan_lab(state, "hp6").node("node-1")
    ipv6_only = lab == "ipv6only"
    ip4, ip6 = (None if ipv6_only else fresh_node()), fresh_node()
    kubelet = Kubelet(
        client=LocalClient(Store()),
        lab_name="hp6",
        lab=state.lab,
        node=node,
        datapath=cast(Datapath, _NoDatapath()),
        servers=cast(TestServers, None),
        journal=cast(Journal, None),
        log_dir=tmp_path,
        iptables=ip4,
        ip6tables=ip6,
    )
    for pod in state.pods:
        plan = plan_pod("hp6", node, pod)
        kubelet.running[plan.key] = RunningPod(plan)
    assert kubelet.sync_host_ports()

    web = kubelet.running["default/web"].plan
    dn = chain_name("cbr0", web.sandbox_id)
    web6 = pod_ips(state, "web")["IPv6"]
    six = parse_restore(ip6.save()).tables["nat"]
    assert six.chain_rules(dn)[-1].args.endswith(f"--to-destination [{web6}]:8080")
    assert portmap_pod_of(web, "IPv6") is not None
    if ip4 is None:
        # No IPv4 address: no IPv4 ADD, so route_localnet is left alone.
        assert portmap_pod_of(web, "IPv4") is None and localnet == []
    else:
        four = parse_restore(ip4.save()).tables["nat"]
        web4 = pod_ips(state, "web")["IPv4"]
        assert four.chain_rules(dn)[-1].args.endswith(f"--to-destination {web4}:8080")
        assert localnet == [{"net.ipv4.conf.cni0.route_localnet": "1"}]

    # Both pods go: DEL in every family leaves no CNI-DN- chain.
    kubelet.running.clear()
    assert kubelet.sync_host_ports()
    for ipt in (ip4, ip6):
        if ipt is not None:
            nat = parse_restore(ipt.save()).tables["nat"]
            assert not [c for c in nat.chains if c.startswith("CNI-DN-")]
