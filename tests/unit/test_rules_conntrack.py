"""kube-proxy's UDP conntrack cleanup: which entries a sync deletes."""

from __future__ import annotations

import pytest

from netemu.kernel.conntrack import FakeConntrack, parse_entries
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules.conntrack import FlowEntry, FlowFilter, stale_udp_filters
from netemu.rules.input import ProxyInput


@pytest.fixture(scope="module")
def protocols() -> ProxyInput:
    # dns: UDP/TCP/SCTP port 53 with NodePort 30890 and two endpoints.
    return proxy_input(load_cluster(["controlplane/protocols"]), "node-1")


def _dns(data: ProxyInput) -> tuple[str, int, set[str]]:
    sp = next(sp for sp in data.service_ports if sp.name == "dns" and sp.protocol == "udp")
    return sp.cluster_ip, sp.node_port, {ep.ip for ep in data.endpoints_of(sp)}


def test_entry_to_the_cluster_ip_of_a_gone_endpoint_is_deleted(protocols: ProxyInput) -> None:
    cluster_ip, _, serving = _dns(protocols)
    assert len(serving) == 2
    gone = FlowEntry("udp", cluster_ip, 53, "10.244.9.9")
    kept = FlowEntry("udp", cluster_ip, 53, sorted(serving)[0])
    assert stale_udp_filters(protocols, [gone, kept]) == [FlowFilter("10.244.9.9", 53, cluster_ip)]


def test_entry_to_the_node_port_of_a_gone_endpoint_is_deleted_on_any_address(
    protocols: ProxyInput,
) -> None:
    _, node_port, serving = _dns(protocols)
    gone = FlowEntry("udp", "192.168.56.11", node_port, "10.244.9.9")
    kept = FlowEntry("udp", "192.168.56.11", node_port, sorted(serving)[1])
    assert stale_udp_filters(protocols, [gone, kept]) == [FlowFilter("10.244.9.9", node_port)]


def test_tcp_entries_and_unknown_frontends_are_left_alone(protocols: ProxyInput) -> None:
    cluster_ip, _, _ = _dns(protocols)
    entries = [
        FlowEntry("tcp", cluster_ip, 53, "10.244.9.9"),  # TCP closes its own connections
        FlowEntry("udp", cluster_ip, 54, "10.244.9.9"),  # not a service port
        FlowEntry("udp", "10.96.0.99", 53, "10.244.9.9"),  # not a service IP
    ]
    assert stale_udp_filters(protocols, entries) == []


def test_a_service_without_serving_endpoints_keeps_its_entries(protocols: ProxyInput) -> None:
    cluster_ip, _, _ = _dns(protocols)
    empty = ProxyInput(config=protocols.config, service_ports=protocols.service_ports, endpoints={})
    assert stale_udp_filters(empty, [FlowEntry("udp", cluster_ip, 53, "10.244.9.9")]) == []


def test_conntrack_listing_is_parsed_into_original_and_reply_tuples() -> None:
    text = (
        "udp      17 29 src=192.168.56.20 dst=192.168.56.11 sport=40000 dport=30890 "
        "src=10.244.1.3 dst=10.244.0.0 sport=5353 dport=53743 mark=0 use=1\n"
        "tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=10.96.0.1 sport=1 dport=443 "
        "src=10.244.1.2 dst=10.244.0.2 sport=6443 dport=1 [ASSURED] mark=0 use=1\n"
        "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n"
    )
    assert parse_entries(text) == [
        FlowEntry("udp", "192.168.56.11", 30890, "10.244.1.3"),
        FlowEntry("tcp", "10.96.0.1", 443, "10.244.1.2"),
    ]


def test_fake_conntrack_deletes_what_a_filter_names() -> None:
    fake = FakeConntrack(
        [
            FlowEntry("udp", "10.96.0.10", 53, "10.244.9.9"),
            FlowEntry("udp", "10.96.0.10", 53, "10.244.0.2"),
            FlowEntry("udp", "192.168.56.11", 30890, "10.244.9.9"),
        ]
    )
    fake.delete(FlowFilter("10.244.9.9", 53, "10.96.0.10"))
    assert fake.list_udp() == [
        FlowEntry("udp", "10.96.0.10", 53, "10.244.0.2"),
        FlowEntry("udp", "192.168.56.11", 30890, "10.244.9.9"),
    ]
