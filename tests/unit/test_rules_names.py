"""kube-proxy's chain names and number formats, checked against known values."""

from __future__ import annotations

import pytest

from netemu.rules import names


def test_service_chain_hash_matches_kube_proxy() -> None:
    # The value kube-proxy's own tests use for ns1/svc1:p80 over TCP.
    assert names.SVC_PREFIX + names.port_proto_hash("ns1/svc1:p80", "tcp") == (
        "KUBE-SVC-XPGD46QRK7WJZT7O"
    )


def test_protocol_is_hashed_lower_case() -> None:
    assert names.port_proto_hash("ns1/svc1:p80", "TCP") == names.port_proto_hash(
        "ns1/svc1:p80", "tcp"
    )
    assert names.port_proto_hash("ns1/svc1:p80", "udp") != names.port_proto_hash(
        "ns1/svc1:p80", "tcp"
    )


def test_endpoint_chain_hash_matches_kube_proxy() -> None:
    # KUBE-SEP-SXIVWICOYRO3J4NJ is ns1/svc1:p80's endpoint 10.180.0.1:80 in kube-proxy's tests.
    assert names.endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == (
        "KUBE-SEP-SXIVWICOYRO3J4NJ"
    )


def test_chain_names_fit_iptables_limit() -> None:
    chain = names.endpoint_chain(
        "some-namespace/a-long-service-name:https", "sctp", "[fd00::1]:443"
    )
    assert len(chain) == 25 <= 28


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1.0000000000"),
        (2, "0.5000000000"),
        (3, "0.3333333333"),
        (4, "0.2500000000"),
        (5, "0.2000000000"),
    ],
)
def test_probability_has_ten_decimals(n: int, text: str) -> None:
    assert names.probability(n) == text


def test_masquerade_mark_is_formatted_like_go() -> None:
    assert names.masquerade_mark(14) == "0x00004000"
    assert names.masquerade_mark(0) == "0x00000001"


def test_service_chain_prefixes_are_owned() -> None:
    assert names.is_service_chain("KUBE-SEP-ABC")
    # Dropped from isServiceChainName after 1.26: no longer kube-proxy's to delete.
    assert not names.is_service_chain("KUBE-XLB-ABC")
    assert not names.is_service_chain("KUBE-SERVICES")
    assert not names.is_service_chain("CNI-FORWARD")
