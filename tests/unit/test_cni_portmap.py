"""hostPort through the portmap CNI plugin's chains (netemu.rules.portmap),
the pod plumbing the bridge plugin sets up (netemu.net.plan's pod parts),
and the API's and scheduler's hostPort checks."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from manifests import build

from netemu.api.core import Pod
from netemu.api.load import load_text
from netemu.api.validate import validate
from netemu.kernel.iptables import FakeIptables
from netemu.net.plan import Route, plan_lab, plan_pod, pod_routes, pod_sysctls
from netemu.pipeline import compile_rules, load_cluster, local_ips
from netemu.rules.model import RuleSet, parse_restore
from netemu.rules.portmap import (
    MASQ,
    SETMARK,
    TOP_DNAT,
    PortMapping,
    PortmapPod,
    chain_name,
    dnat_chain_rules,
    dnat_entry_rules,
    mark_spec,
    node_state,
    sync_text,
)
from netemu.rules.simulate import Packet, simulate

ID_A = "a" * 64
ID_B = "b" * 64
KUBE_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
"""


def web(container_id: str = ID_A, ip: str = "10.244.1.5") -> PortmapPod:
    return PortmapPod(container_id, ip, 24, (PortMapping(8080, 80, "tcp"),))


# -- names, marks -------------------------------------------------------------


def test_chain_names_follow_the_plugins_hash() -> None:
    # The vectors of containernetworking/plugins pkg/utils/utils_test.go.
    assert chain_name("test", "1234", "") == "CNI-2bbe0c48b91a7d1b8a6753a8"
    assert chain_name("test", "1234", "PREFIX-") == "CNI-PREFIX-2bbe0c48b91a7d1b8"
    assert chain_name("testalongnamethatdoesnotmakesense", "1234", "") == (
        "CNI-374f33fe84ab0ed84dcdebe3"
    )
    dn = chain_name("cbr0", ID_A)
    assert dn.startswith("CNI-DN-") and len(dn) == 28
    assert chain_name("cbr0", ID_B) != dn


def test_mark_is_bit_13_as_go_prints_it() -> None:
    assert mark_spec() == "0x2000/0x2000"
    assert mark_spec(14) == "0x4000/0x4000"


# -- rule layout ----------------------------------------------------------------


def test_each_mapping_marks_hairpin_and_localhost_before_its_dnat() -> None:
    pod = PortmapPod(
        ID_A,
        "10.244.1.5",
        24,
        (PortMapping(8080, 80, "tcp"), PortMapping(5353, 53, "udp", "192.168.56.11")),
    )
    assert dnat_chain_rules(pod) == [
        "-s 10.244.1.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        "-s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        "-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:80",
        "-s 10.244.1.0/24 -d 192.168.56.11/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
        "-s 127.0.0.1/32 -d 192.168.56.11/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
        "-d 192.168.56.11/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.244.1.5:53",
    ]


def test_unspecified_host_ip_matches_every_address_and_ipv6_ones_are_skipped() -> None:
    pod = PortmapPod(
        ID_A,
        "10.244.1.5",
        24,
        (PortMapping(80, 80, "tcp", "0.0.0.0"), PortMapping(81, 81, "tcp", "fd00::1")),
    )
    rules = dnat_chain_rules(pod)
    assert len(rules) == 3
    assert not any("-d " in r for r in rules)
    assert not any("--dport 81" in r for r in rules)


def test_entry_rules_group_ports_by_sorted_protocol_15_a_rule() -> None:
    udp = [PortMapping(9000 + i, 80, "udp") for i in range(16)]
    mappings = (*udp, PortMapping(8080, 80, "tcp"))
    rules = dnat_entry_rules("cbr0", PortmapPod(ID_A, "10.244.1.5", 24, mappings))
    comment = f'"dnat name: \\"cbr0\\" id: \\"{ID_A}\\""'
    dn = chain_name("cbr0", ID_A)
    assert rules == [
        f"-p tcp -m comment --comment {comment} -m multiport --dports 8080 -j {dn}",
        f"-p udp -m comment --comment {comment} -m multiport --dports "
        + ",".join(str(9000 + i) for i in range(15))
        + f" -j {dn}",
        f"-p udp -m comment --comment {comment} -m multiport --dports 9015 -j {dn}",
    ]


def test_no_pod_with_host_ports_means_no_chains() -> None:
    assert node_state("cbr0", []).tables == {}
    assert sync_text("cbr0", [PortmapPod(ID_A, "10.244.1.5", 24, ())], RuleSet()) == ""


# -- applied as transactions ------------------------------------------------------


def apply(ipt: FakeIptables, pods: list[PortmapPod]) -> None:
    text = sync_text("cbr0", pods, parse_restore(ipt.save()))
    if text:
        ipt.restore(text, noflush=True)


def nat_rules(ipt: FakeIptables, chain: str) -> list[str]:
    return [r.args for r in parse_restore(ipt.save()).tables["nat"].chain_rules(chain)]


def test_add_puts_the_masquerade_jump_first_and_the_dnat_jumps_last() -> None:
    ipt = FakeIptables()
    ipt.restore(KUBE_NAT, noflush=False)
    apply(ipt, [web()])
    postrouting = nat_rules(ipt, "POSTROUTING")
    assert postrouting[0].endswith(f"-j {MASQ}")
    assert postrouting[1].endswith("-j KUBE-POSTROUTING")
    for chain in ("PREROUTING", "OUTPUT"):
        rules = nat_rules(ipt, chain)
        assert rules[0].endswith("-j KUBE-SERVICES")
        assert rules[1] == f"-m addrtype --dst-type LOCAL -j {TOP_DNAT}"
    assert nat_rules(ipt, SETMARK) == [
        '-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000'
    ]
    assert nat_rules(ipt, MASQ) == ["-m mark --mark 0x2000/0x2000 -j MASQUERADE"]


def test_a_second_add_keeps_one_entry_rule_each_and_both_pods_in_order() -> None:
    ipt = FakeIptables()
    ipt.restore(KUBE_NAT, noflush=False)
    apply(ipt, [web()])
    apply(ipt, [web(), web(ID_B, "10.244.1.6")])
    for chain in ("PREROUTING", "OUTPUT", "POSTROUTING"):
        assert sum(TOP_DNAT in r or MASQ in r for r in nat_rules(ipt, chain)) == 1
    jumps = [r.split(" -j ")[-1] for r in nat_rules(ipt, TOP_DNAT)]
    assert jumps == [chain_name("cbr0", ID_A), chain_name("cbr0", ID_B)]
    assert nat_rules(ipt, chain_name("cbr0", ID_B))[-1].endswith("10.244.1.6:80")


def test_del_removes_the_pods_chain_and_jumps_and_keeps_the_shared_chains() -> None:
    ipt = FakeIptables()
    ipt.restore(KUBE_NAT, noflush=False)
    apply(ipt, [web(), web(ID_B, "10.244.1.6")])
    apply(ipt, [web(ID_B, "10.244.1.6")])
    nat = parse_restore(ipt.save()).tables["nat"]
    assert chain_name("cbr0", ID_A) not in nat.chains
    assert [r.split(" -j ")[-1] for r in nat_rules(ipt, TOP_DNAT)] == [chain_name("cbr0", ID_B)]
    apply(ipt, [])
    nat = parse_restore(ipt.save()).tables["nat"]
    assert not [c for c in nat.chains if c.startswith("CNI-DN-")]
    # As the plugin's DEL: the shared chains and the entry rules stay.
    assert {TOP_DNAT, SETMARK, MASQ} <= set(nat.chains)
    assert nat_rules(ipt, TOP_DNAT) == []
    assert nat_rules(ipt, "POSTROUTING")[0].endswith(f"-j {MASQ}")
    # Nothing left to do afterwards.
    assert sync_text("cbr0", [], parse_restore(ipt.save())) == ""


def test_insert_lines_are_refused_where_a_dump_is_read() -> None:
    text = "*nat\n:POSTROUTING ACCEPT [0:0]\n-I POSTROUTING 1 -j RETURN\nCOMMIT\n"
    assert parse_restore(text, inserts=True).tables["nat"].inserts[0].args == "-j RETURN"
    try:
        parse_restore(text)
    except ValueError as exc:
        assert "unsupported line" in str(exc)
    else:
        raise AssertionError("a dump with -I must not parse")


# -- pod plumbing and the pod's CNI input ----------------------------------------------

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
"""


def host_port_pod(name: str, ports: str, extra: str = "") -> str:
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec: {{{extra}containers: [{{name: c, ports: [{ports}]}}]}}
"""


def pod(state_pods: Sequence[Pod], name: str) -> Pod:
    return next(p for p in state_pods if p.metadata.name == name)


def test_pod_routes_send_the_cluster_cidr_and_default_via_the_bridge() -> None:
    assert pod_routes("10.244.1.1", "10.244.0.0/16") == (
        Route("10.244.0.0/16", via="10.244.1.1", device="eth0"),
        Route("default", via="10.244.1.1", device="eth0"),
    )
    assert dict(pod_sysctls()) == {
        "net.ipv6.conf.eth0.accept_dad": "0",
        "net.ipv4.conf.eth0.arp_notify": "1",
    }


def test_plan_pod_carries_routes_sandbox_id_and_port_mappings() -> None:
    state = build(
        LAB
        + host_port_pod(
            "hp",
            "{containerPort: 80, hostPort: 8080}, {containerPort: 53, hostPort: 5353, "
            "protocol: UDP, hostIP: 192.168.56.11}, {containerPort: 9000}",
        )
        + host_port_pod("hn", "{containerPort: 9100, hostPort: 9100}", "hostNetwork: true, ")
    )
    node = plan_lab(state, "lab").nodes[0]
    plan = plan_pod("lab", node, pod(state.pods, "hp"))
    assert plan.routes == pod_routes(node.bridge_ip, "10.244.0.0/16")
    assert (
        len(plan.sandbox_id) == 64
        and plan.sandbox_id == plan_pod("lab", node, pod(state.pods, "hp")).sandbox_id
    )
    assert plan.host_ports == (
        PortMapping(8080, 80, "tcp"),
        PortMapping(5353, 53, "udp", "192.168.56.11"),
    )
    host_net = plan_pod("lab", node, pod(state.pods, "hn"))
    assert host_net.host_ports == () and host_net.routes == ()


def test_duplicate_host_port_in_one_pod_is_rejected_with_its_place() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
            - name: a
              ports: [{containerPort: 80, hostPort: 8080}]
            - name: b
              ports:
                - {containerPort: 81, hostPort: 8080}
                - {containerPort: 82, hostPort: 8080, protocol: UDP}
                - {containerPort: 83, hostPort: 70000}
        """
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    assert [str(d) for d in validate(loaded)] == [
        'x.yaml:10: Pod/p: spec.containers[1].ports[0].hostPort: Duplicate value: "TCP//8080": '
        "already the hostPort of spec.containers[0].ports[0]",
        "x.yaml:12: Pod/p: spec.containers[1].ports[2].hostPort: must be between 1 and 65535, "
        "inclusive",
    ]


def test_scheduler_keeps_host_ports_free_per_node() -> None:
    two_nodes = LAB + "  - {name: node-2, underlayIP: 192.168.56.12}\n"
    state = build(
        two_nodes
        + host_port_pod("a", "{containerPort: 80, hostPort: 8080}")
        + host_port_pod("b", "{containerPort: 80, hostPort: 8080}")
        + host_port_pod("c", "{containerPort: 80, hostPort: 8080}")
        + host_port_pod("udp", "{containerPort: 80, hostPort: 8080, protocol: UDP}")
    )
    a, b, c = (pod(state.pods, n) for n in "abc")
    assert {a.spec.node_name, b.spec.node_name} == {"node-1", "node-2"}
    assert c.spec.node_name is None and c.status.phase == "Pending"
    (cond,) = c.status.conditions
    assert (cond.reason, cond.message) == (
        "Unschedulable",
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.",
    )
    assert pod(state.pods, "udp").spec.node_name is not None


def test_host_ip_conflicts_only_with_the_same_ip_or_every_address() -> None:
    state = build(
        LAB
        + host_port_pod("one", "{containerPort: 80, hostPort: 8080, hostIP: 192.168.56.11}")
        + host_port_pod("other-ip", "{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}")
        + host_port_pod("any", "{containerPort: 80, hostPort: 8080}")
    )
    assert pod(state.pods, "one").spec.node_name == "node-1"
    assert pod(state.pods, "other-ip").spec.node_name == "node-1"
    assert pod(state.pods, "any").spec.node_name is None


# -- the offline view: goldens, simulation ------------------------------------------

HOSTPORT_LAB = Path(__file__).parents[2] / "controlplane" / "hostport"


def test_compiled_rules_carry_the_portmap_chains_of_the_nodes_pods_only() -> None:
    state = load_cluster([HOSTPORT_LAB])
    one = compile_rules(state, "node-1").tables["nat"]
    two = compile_rules(state, "node-2").tables["nat"]
    # node-1 runs the UDP pod and an ingress pod, node-2 an ingress pod.
    assert len([c for c in one.chains if c.startswith("CNI-DN-")]) == 2
    assert len([c for c in two.chains if c.startswith("CNI-DN-")]) == 1
    assert one.chain_rules("POSTROUTING")[0].args.endswith(f"-j {MASQ}")
    assert one.chain_rules("PREROUTING")[-1].args == f"-m addrtype --dst-type LOCAL -j {TOP_DNAT}"


def hostport_flow(
    src: str, dst: str, dport: int, proto: str = "tcp"
) -> tuple[str, list[str], bool]:
    state = load_cluster([HOSTPORT_LAB])
    sim = simulate(
        compile_rules(state, "node-1"), local_ips(state, "node-1"), Packet(src, dst, dport, proto)
    )
    return sim.verdict, sim.endpoints, sim.masquerade


def ingress_ip(node: str) -> str:
    state = load_cluster([HOSTPORT_LAB])
    (found,) = [
        p.status.pod_ip
        for p in state.pods
        if p.spec.node_name == node and (p.metadata.name or "").startswith("ingress-")
    ]
    assert found
    return found


def test_host_port_from_outside_is_dnated_to_the_nodes_pod_without_masquerade() -> None:
    verdict, endpoints, masquerade = hostport_flow("192.168.56.20", "192.168.56.11", 80)
    assert endpoints == [f"{ingress_ip('node-1')}:8080"]
    assert not masquerade
    assert verdict != "DROP"


def test_host_port_from_the_pod_subnet_is_masqueraded_hairpin() -> None:
    _, endpoints, masquerade = hostport_flow(ingress_ip("node-1"), "192.168.56.11", 80)
    assert endpoints == [f"{ingress_ip('node-1')}:8080"]
    assert masquerade


def test_host_ip_bound_port_answers_only_on_that_address() -> None:
    _, endpoints, _ = hostport_flow("192.168.56.20", "192.168.56.11", 5353, "udp")
    assert len(endpoints) == 1 and endpoints[0].endswith(":8081")
    _, endpoints, _ = hostport_flow("192.168.56.20", "10.244.0.1", 5353, "udp")
    assert endpoints == []
