"""kube-proxy's partial syncs (MinimizeIPTablesRestore) in the compiler:
netemu.rules.iptables.compile_partial_sync.

The sequence and every expected restore input are transcribed from
kube-proxy's own TestSyncProxyRulesRepeated (pkg/proxy/iptables/proxier_test.go,
Kubernetes 1.28): its fake proxier runs with hostname test-hostname, local
traffic detected by the cluster CIDR 10.0.0.0/8, masquerade bit 14, no
--random-fully, no nfacct and no nodePortAddresses. Like its
assertIPTablesRulesEqual, the comparison ignores the order of chain lines
and of `-X` lines and groups rules by chain (in order within each chain).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from netemu.kernel.iptables import FakeIptables, IptablesError
from netemu.rules import names as n
from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.iptables import (
    CompileCache,
    compile_node,
    compile_partial_sync,
    compile_resync,
    compile_sync,
)
from netemu.rules.model import RuleSet, parse_restore

CONFIG = ProxyConfig(
    node_name="test-hostname",
    cluster_cidr="10.0.0.0/8",
    random_fully=False,
    nfacct=False,
)

# ---------------------------------------------------------------- kube-proxy's expectations

FILTER_HEAD = """*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
"""
FILTER_TAIL = """-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""  # noqa: E501
NAT_HEAD = """*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
"""
CLUSTER_IP = {
    "svc1": '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',  # noqa: E501
    "svc2": '-A KUBE-SERVICES -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 -j KUBE-SVC-2VJB64SDSIJUP5T6',  # noqa: E501
    "svc3": '-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK',  # noqa: E501
    "svc4": '-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK',  # noqa: E501
}
NAT_COMMON = """-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
"""  # noqa: E501
SVC1 = """:KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-SNQ3ZNILQDEJNDQO
"""  # noqa: E501
SVC2 = """:KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]
:KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]
-A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -s 10.0.2.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -m tcp -p tcp -j DNAT --to-destination 10.0.2.1:8080
-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 -> 10.0.2.1:8080" -j KUBE-SEP-UHEGFW77JX3KXTOV
"""  # noqa: E501
SVC3_FIRST = """:KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
-A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -s 10.0.3.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.1:80
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.1:80" -j KUBE-SEP-BSWRHOQ77KEXZLNL
"""  # noqa: E501
SVC3_MOVED = """:KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]
:KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
-A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -s 10.0.3.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.2:80
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" -j KUBE-SEP-DKCFIS26GWF2WLWC
-X KUBE-SEP-BSWRHOQ77KEXZLNL
"""  # noqa: E501
SVC3_TWO = """:KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]
:KUBE-SEP-JVVZVJ7BSEPPRNBS - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
-A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -s 10.0.3.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.2:80
-A KUBE-SEP-JVVZVJ7BSEPPRNBS -m comment --comment ns3/svc3:p80 -s 10.0.3.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-JVVZVJ7BSEPPRNBS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.3:80
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-DKCFIS26GWF2WLWC
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.3:80" -j KUBE-SEP-JVVZVJ7BSEPPRNBS
"""  # noqa: E501
SVC4 = """:KUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
-A KUBE-SEP-AYCN5HPXMIRJNJXU -m comment --comment ns4/svc4:p80 -s 10.0.4.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-AYCN5HPXMIRJNJXU -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.4.1:80
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.0.4.1:80" -j KUBE-SEP-AYCN5HPXMIRJNJXU
"""  # noqa: E501
SVC4_REJECT = '-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j REJECT\n'  # noqa: E501
DELETE_SVC2 = ":KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]\n:KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]\n"
DELETE_SVC2 += "-X KUBE-SEP-UHEGFW77JX3KXTOV\n-X KUBE-SVC-2VJB64SDSIJUP5T6\n"
DELETE_SVC4 = ":KUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]\n:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]\n"
DELETE_SVC4 += "-X KUBE-SEP-AYCN5HPXMIRJNJXU\n-X KUBE-SVC-4SW47YFZTEDKD3PK\n"


def expected(
    services: Iterable[str], *chains: str, reject: str = "", nat_head_extra: str = ""
) -> str:
    """A restore input in kube-proxy's layout: the filter table, then nat's
    top-level chains with one cluster IP rule per service, then the service
    chains given (chain lines and rules; the comparison sorts them)."""
    cluster_ips = "".join(CLUSTER_IP[s] + "\n" for s in services)
    text = (
        FILTER_HEAD
        + reject
        + FILTER_TAIL
        + NAT_HEAD
        + nat_head_extra
        + cluster_ips
        + NAT_COMMON
        + "".join(chains)
        + "COMMIT\n"
    )
    # kube-proxy's fake proxier sets its mark to "0x4000" by hand; netemu
    # spells it as NewProxier formats the masquerade bit (names.masquerade_mark).
    return text.replace("0x4000", n.masquerade_mark(14))


def shape(rules: RuleSet) -> dict[str, tuple[object, ...]]:
    """What assertIPTablesRulesEqual compares: per table, the chains declared,
    the rules of each chain in order, the chains deleted."""
    out: dict[str, tuple[object, ...]] = {}
    for name, table in rules.tables.items():
        by_chain: dict[str, list[str]] = {}
        for rule in table.rules:
            by_chain.setdefault(rule.chain, []).append(rule.args)
        out[name] = (sorted(table.chains), by_chain, sorted(table.deletions))
    return out


def same(compiled: RuleSet, text: str) -> None:
    assert shape(compiled) == shape(parse_restore(text))


# ---------------------------------------------------------------- the cluster's states


def port(ns: str, name: str, port_name: str, ip: str, number: int) -> ServicePortInfo:
    return ServicePortInfo(ns, name, port_name, "tcp", ip, number)


def ep(ip: str, number: int) -> EndpointInfo:
    return EndpointInfo(ip, number, ready=True, serving=True, terminating=False, node_name=None)


SVC_PORTS = {
    "svc1": port("ns1", "svc1", "p80", "172.30.0.41", 80),
    "svc2": port("ns2", "svc2", "p8080", "172.30.0.42", 8080),
    "svc3": port("ns3", "svc3", "p80", "172.30.0.43", 80),
    "svc4": port("ns4", "svc4", "p80", "172.30.0.44", 80),
}


def state(services: dict[str, tuple[EndpointInfo, ...]]) -> ProxyInput:
    """Services by name, each with its endpoints (empty: no EndpointSlice)."""
    ports = tuple(SVC_PORTS[s] for s in sorted(services))
    endpoints = {
        (sp.namespace, sp.name, sp.port_name, sp.protocol): services[sp.name]
        for sp in ports
        if services[sp.name]
    }
    return ProxyInput(CONFIG, ports, endpoints)


SVC1_EPS = (ep("10.0.1.1", 80),)
SVC2_EPS = (ep("10.0.2.1", 8080),)
SVC3_EPS = (ep("10.0.3.1", 80),)
SVC4_EPS = (ep("10.0.4.1", 80),)


def ns(service: str) -> tuple[str, str]:
    return ("ns" + service[-1], service)


class Node:
    """A node whose kernel (FakeIptables) kube-proxy syncs: each sync reads
    the kernel's iptables-save first, as syncProxyRules does."""

    def __init__(self, first: ProxyInput) -> None:
        self.kernel = FakeIptables()
        self.kernel.restore(compile_node(first).render(), noflush=False)

    def partial(self, data: ProxyInput, *changed: str) -> RuleSet:
        sync = compile_partial_sync(
            data, {ns(s) for s in changed}, parse_restore(self.kernel.save())
        )
        self.kernel.restore(sync.rules.render())
        return sync.rules

    def full(self, data: ProxyInput) -> RuleSet:
        rules = compile_resync(data, parse_restore(self.kernel.save()))
        self.kernel.restore(rules.render())
        return rules


def test_sync_proxy_rules_repeated() -> None:
    """TestSyncProxyRulesRepeated, step by step."""
    first = state({"svc1": SVC1_EPS, "svc2": SVC2_EPS})
    same(compile_sync(first), expected(["svc1", "svc2"], SVC1, SVC2))
    node = Node(first)

    # Add a new service and its endpoints: only its SVC and SEP chains are written.
    with_svc3 = state({"svc1": SVC1_EPS, "svc2": SVC2_EPS, "svc3": SVC3_EPS})
    same(node.partial(with_svc3, "svc3"), expected(["svc1", "svc2", "svc3"], SVC3_FIRST))

    # Delete a service: its chains are flushed and deleted, no other is written.
    without_svc2 = state({"svc1": SVC1_EPS, "svc3": SVC3_EPS})
    same(node.partial(without_svc2, "svc2"), expected(["svc1", "svc3"], DELETE_SVC2))

    # Add a service without endpoints: only its REJECT rule in filter.
    svc4_empty = state({"svc1": SVC1_EPS, "svc3": SVC3_EPS, "svc4": ()})
    same(node.partial(svc4_empty, "svc4"), expected(["svc1", "svc3"], reject=SVC4_REJECT))

    # ... then its endpoints: now its chains.
    svc4_ready = state({"svc1": SVC1_EPS, "svc3": SVC3_EPS, "svc4": SVC4_EPS})
    same(node.partial(svc4_ready, "svc4"), expected(["svc1", "svc3", "svc4"], SVC4))

    # Change an endpoint of an existing service: its SVC and SEP chains are
    # rewritten and the old endpoint's chain deleted.
    svc3_moved = state({"svc1": SVC1_EPS, "svc3": (ep("10.0.3.2", 80),), "svc4": SVC4_EPS})
    same(node.partial(svc3_moved, "svc3"), expected(["svc1", "svc3", "svc4"], SVC3_MOVED))

    # Add an endpoint to a service.
    svc3_two = (ep("10.0.3.2", 80), ep("10.0.3.3", 80))
    two = state({"svc1": SVC1_EPS, "svc3": svc3_two, "svc4": SVC4_EPS})
    same(node.partial(two, "svc3"), expected(["svc1", "svc3", "svc4"], SVC3_TWO))

    # Sync with no new changes: no SVC or SEP chain is written.
    same(node.partial(two), expected(["svc1", "svc3", "svc4"]))

    # A rule kube-proxy did not write jumps from svc3's service chain to
    # svc4's endpoint; deleting svc4 then fails in a partial sync (which does
    # not rewrite svc3's chain), and the full sync after it succeeds.
    svc3_chain = n.SVC_PREFIX + n.port_proto_hash("ns3/svc3:p80", "tcp")
    svc4_endpoint = n.endpoint_chain("ns4/svc4:p80", "tcp", "10.0.4.1:80")
    node.kernel.ruleset.table("nat").append(svc3_chain, f"-j {svc4_endpoint}")
    before = node.kernel.save()
    without_svc4 = state({"svc1": SVC1_EPS, "svc3": svc3_two})
    with pytest.raises(IptablesError):
        node.partial(without_svc4, "svc4")
    assert node.kernel.save() == before  # a failed restore applies nothing
    same(node.full(without_svc4), expected(["svc1", "svc3"], SVC1, SVC3_TWO, DELETE_SVC4))


def test_partial_sync_of_every_service_is_a_full_one() -> None:
    data = state({"svc1": SVC1_EPS, "svc2": SVC2_EPS, "svc3": SVC3_EPS, "svc4": ()})
    every = {ns(s) for s in SVC_PORTS}
    assert compile_partial_sync(data, every, None).rules.render() == compile_sync(data).render()
    # With nothing changed the nat table holds its top-level chains only.
    nat = compile_partial_sync(data, set(), None).rules.tables["nat"]
    assert nat.chains == [n.KUBE_SERVICES, n.KUBE_NODEPORTS, n.KUBE_POSTROUTING, n.KUBE_MARK_MASQ]


def test_every_port_of_a_changed_service_is_written() -> None:
    """The test is per Service (NamespacedName), not per port."""
    web = port("ns1", "web", "http", "172.30.0.50", 80)
    admin = port("ns1", "web", "admin", "172.30.0.50", 9000)
    other = port("ns1", "other", "", "172.30.0.51", 80)
    data = ProxyInput(
        CONFIG,
        (admin, web, other),
        {
            ("ns1", "web", "http", "tcp"): (ep("10.0.5.1", 80),),
            ("ns1", "web", "admin", "tcp"): (ep("10.0.5.1", 9000),),
            ("ns1", "other", "", "tcp"): (ep("10.0.5.2", 80),),
        },
    )
    sync = compile_partial_sync(data, {("ns1", "web")}, None)
    written = {c for c in sync.rules.tables["nat"].chains if n.is_service_chain(c)}
    assert written == {
        n.SVC_PREFIX + n.port_proto_hash("ns1/web:http", "tcp"),
        n.SVC_PREFIX + n.port_proto_hash("ns1/web:admin", "tcp"),
        n.endpoint_chain("ns1/web:http", "tcp", "10.0.5.1:80"),
        n.endpoint_chain("ns1/web:admin", "tcp", "10.0.5.1:9000"),
    }
    # The unchanged Service's chains were computed (they count as in use,
    # and in the rule total) but not written.
    assert set(sync.skipped.chains) == {
        n.SVC_PREFIX + n.port_proto_hash("ns1/other", "tcp"),
        n.endpoint_chain("ns1/other", "tcp", "10.0.5.2:80"),
    }
    total, written_counts = sync.rule_counts()
    full = compile_sync(data)
    assert total == {
        "filter": len(full.tables["filter"].rules),
        "nat": len(full.tables["nat"].rules),
    }
    assert written_counts["nat"] == total["nat"] - len(sync.skipped.rules)


def test_unchanged_services_chains_are_not_deleted() -> None:
    """Chains of unchanged Services are still in use although not written;
    a chain nothing uses is deleted whichever Service changed."""
    data = state({"svc1": SVC1_EPS, "svc3": SVC3_EPS})
    node = Node(data)
    existing = parse_restore(node.kernel.save())
    existing.table("nat").declare("KUBE-SEP-STALESTALESTALE1")
    sync = compile_partial_sync(data, {ns("svc3")}, existing)
    assert sync.rules.tables["nat"].deletions == ["KUBE-SEP-STALESTALESTALE1"]
    # Without the kernel's state (large-cluster mode between cleanups) nothing is deleted.
    assert compile_partial_sync(data, {ns("svc3")}, None).rules.tables["nat"].deletions == []


def test_cached_compile_equals_uncached() -> None:
    """A CompileCache kept across a sequence of syncs gives the same restore
    input and the same skipped chains as compiling from scratch, and reuses
    every Service port whose port and endpoints did not change."""
    svc3_two = (ep("10.0.3.2", 80), ep("10.0.3.3", 80))
    masquerade_all = replace(CONFIG, masquerade_all=True)
    steps: list[tuple[ProxyInput, set[str], int]] = [  # state, changed, expected cache hits
        (state({"svc1": SVC1_EPS, "svc2": SVC2_EPS}), {"svc1", "svc2"}, 0),
        (state({"svc1": SVC1_EPS, "svc2": SVC2_EPS, "svc3": SVC3_EPS}), {"svc3"}, 2),
        (state({"svc1": SVC1_EPS, "svc3": SVC3_EPS}), {"svc2"}, 2),
        (state({"svc1": SVC1_EPS, "svc3": SVC3_EPS, "svc4": ()}), {"svc4"}, 2),
        (state({"svc1": SVC1_EPS, "svc3": SVC3_EPS, "svc4": SVC4_EPS}), {"svc4"}, 2),
        (state({"svc1": SVC1_EPS, "svc3": svc3_two, "svc4": SVC4_EPS}), {"svc3"}, 2),
        (state({"svc1": SVC1_EPS, "svc3": svc3_two, "svc4": SVC4_EPS}), set(), 3),
        # An endpoint moves back: its earlier rules were dropped from the
        # cache (only the last compile's are kept), so they are compiled anew.
        (state({"svc1": SVC1_EPS, "svc3": SVC3_EPS, "svc4": SVC4_EPS}), {"svc3"}, 2),
        # Another config: nothing is reused.
        (
            replace(state({"svc1": SVC1_EPS, "svc3": SVC3_EPS}), config=masquerade_all),
            {"svc4"},
            0,
        ),
        (state({"svc1": SVC1_EPS, "svc3": SVC3_EPS}), set(), 0),
    ]
    cache = CompileCache()
    for data, changed, hits in steps:
        names = {ns(s) for s in changed}
        cached = compile_partial_sync(data, names, None, cache)
        plain = compile_partial_sync(data, names, None)
        assert cached.rules.render() == plain.rules.render()
        assert cached.skipped == plain.skipped
        assert cache.hits == hits


def test_a_full_sync_fills_the_cache_for_the_partial_syncs_after_it() -> None:
    """compile_sync with the node's cache leaves every Service port's rules
    in it: the first partial sync after it recompiles only the changed one,
    and writes what it would have written without the cache."""
    before = state({"svc1": SVC1_EPS, "svc2": SVC2_EPS, "svc3": SVC3_EPS})
    cache = CompileCache()
    assert compile_sync(before, cache).render() == compile_sync(before).render()
    after = state({"svc1": SVC1_EPS, "svc2": SVC2_EPS, "svc3": (ep("10.0.3.9", 80),)})
    cached = compile_partial_sync(after, {ns("svc3")}, None, cache)
    assert cache.hits == len(after.service_ports) - 1
    assert cached.rules.render() == compile_partial_sync(after, {ns("svc3")}, None).rules.render()
