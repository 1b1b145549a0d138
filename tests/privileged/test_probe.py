"""Probes sent from one network namespace to the built-in test server in
another, over a real veth pair: what an answer, a refusal and silence look
like, and that an HttpSession keeps one connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute

from netemu.kernel import netns
from netemu.kernel.probe import HttpSession, http_get, udp_request
from netemu.kernel.sockets import bind_pod_sockets
from netemu.node.testserver import PodIdentity, TestServers

CLIENT_IP = "10.123.0.1"
SERVER_IP = "10.123.0.2"
NOBODY_IP = "10.123.0.9"
HTTP_PORT = 8080
UDP_PORT = 5353
SCTP_PORT = 9999
CLOSED_PORT = 8081
WEB = PodIdentity(pod="web-abc", namespace="default", pod_ip=SERVER_IP, node="node-1")


@dataclass(frozen=True)
class Lab:
    client: str  # namespace A, 10.123.0.1
    server: str  # namespace B, 10.123.0.2, serving WEB
    servers: TestServers


def _configure(name: str, ifname: str, address: str, peer_netns: str | None = None) -> None:
    # Every netlink call is made inside the namespace, whatever the handle
    # does about opening its socket lazily.
    with netns.entered(name), IPRoute() as ipr:
        if peer_netns is not None:
            ipr.link(
                "add",
                ifname=ifname,
                kind="veth",
                peer={"ifname": "veth_b", "net_ns_fd": str(netns.path(peer_netns))},
            )
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=address, prefixlen=24)
        ipr.link("set", index=index, state="up")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    suffix = uuid.uuid4().hex[:8]
    client, server = f"netemu_test_probe_a_{suffix}", f"netemu_test_probe_b_{suffix}"
    servers = TestServers()
    try:
        netns.create(client)
        netns.create(server)
        _configure(client, "veth_a", CLIENT_IP, peer_netns=server)
        _configure(server, "veth_b", SERVER_IP)
        servers.start()
        tcp, udp = bind_pod_sockets(
            server, SERVER_IP, [(HTTP_PORT, "TCP"), (UDP_PORT, "UDP"), (SCTP_PORT, "SCTP")]
        )
        # SCTP is declared but not served (see bind_pod_sockets).
        assert (len(tcp), len(udp)) == (1, 1)
        servers.serve("default/web-abc", WEB, tcp, udp)
        yield Lab(client, server, servers)
    finally:
        servers.close()
        netns.remove(client)
        netns.remove(server)


def expected_reply(client_port: int) -> dict[str, object]:
    return {
        "pod": "web-abc",
        "podIP": SERVER_IP,
        "node": "node-1",
        "clientIP": CLIENT_IP,
        "clientPort": client_port,
    }


def test_http_get_sees_the_pod_and_is_seen_from_its_own_address(lab: Lab) -> None:
    result = http_get(lab.client, SERVER_IP, HTTP_PORT)
    assert result.outcome == "answered", result.detail
    assert result.status == 200
    assert result.local is not None
    assert result.local[0] == CLIENT_IP
    assert result.reply == expected_reply(result.local[1])


def test_http_get_clientip_and_unknown_path(lab: Lab) -> None:
    result = http_get(lab.client, SERVER_IP, HTTP_PORT, "/clientip")
    assert result.outcome == "answered", result.detail
    assert result.local is not None
    assert result.body == f"{CLIENT_IP}:{result.local[1]}"
    assert result.reply is None
    missing = http_get(lab.client, SERVER_IP, HTTP_PORT, "/nope")
    assert (missing.outcome, missing.status) == ("answered", 404)


def test_http_get_from_a_chosen_source_port(lab: Lab) -> None:
    for _ in range(2):  # the same port twice in a row
        result = http_get(lab.client, SERVER_IP, HTTP_PORT, source_port=40123)
        assert result.outcome == "answered", result.detail
        assert result.local == (CLIENT_IP, 40123)
        assert result.reply == expected_reply(40123)


def test_udp_request_gets_the_json_reply(lab: Lab) -> None:
    result = udp_request(lab.client, SERVER_IP, UDP_PORT)
    assert result.outcome == "answered", result.detail
    assert result.local is not None
    assert result.local[0] == CLIENT_IP
    assert result.reply == expected_reply(result.local[1])


def test_no_listener_is_refused_quickly(lab: Lab) -> None:
    tcp = http_get(lab.client, SERVER_IP, CLOSED_PORT)
    assert tcp.outcome == "refused", tcp.detail
    assert tcp.elapsed < 1.0
    udp = udp_request(lab.client, SERVER_IP, CLOSED_PORT)
    assert udp.outcome == "refused", udp.detail
    assert udp.elapsed < 1.0


def test_nobody_at_the_address_is_timeout_or_unreachable(lab: Lab) -> None:
    # Nothing answers ARP for it: either the probe's timeout or the
    # kernel's "no route to host" comes first.
    tcp = http_get(lab.client, NOBODY_IP, HTTP_PORT, timeout=1.0)
    assert tcp.outcome in ("timeout", "unreachable"), tcp.detail
    udp = udp_request(lab.client, NOBODY_IP, UDP_PORT, timeout=1.0)
    assert udp.outcome in ("timeout", "unreachable"), udp.detail


def test_http_session_reuses_one_connection(lab: Lab) -> None:
    with HttpSession(lab.client, SERVER_IP, HTTP_PORT) as session:
        results = [session.get("/") for _ in range(3)]
    assert [r.outcome for r in results] == ["answered"] * 3, [r.detail for r in results]
    local = results[0].local
    assert local is not None
    assert [r.local for r in results] == [local] * 3
    assert [r.reply for r in results] == [expected_reply(local[1])] * 3


def test_http_session_breaks_when_its_pod_stops_and_never_reconnects(lab: Lab) -> None:
    other = PodIdentity(pod="web-def", namespace="default", pod_ip=SERVER_IP, node="node-1")
    tcp, udp = bind_pod_sockets(lab.server, SERVER_IP, [(8090, "TCP")])
    lab.servers.serve("default/web-def", other, tcp, udp)
    with HttpSession(lab.client, SERVER_IP, 8090) as session:
        first = session.get("/hostname")
        assert (first.outcome, first.body) == ("answered", "web-def")
        lab.servers.stop_serving("default/web-def")
        broken = session.get("/hostname")
        assert broken.outcome == "error"
        # Even though nothing listens now, the session reports its own
        # connection's fate rather than trying (and being refused) anew.
        again = session.get("/hostname")
        assert again.outcome == "error"
        assert "closed" in again.detail
    assert http_get(lab.client, SERVER_IP, 8090).outcome == "refused"
