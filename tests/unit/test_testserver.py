"""The built-in test server on loopback sockets (no root needed): what it
answers over HTTP and UDP, that connections are kept alive, and that a
stopped pod stops answering, on new and already open connections."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading

import pytest

from netemu.node.testserver import PodIdentity, TestServers

WEB = PodIdentity(pod="web-abc", namespace="default", pod_ip="10.244.1.5", node="node-1")
DB = PodIdentity(pod="db-xyz", namespace="data", pod_ip="10.244.2.7", node="node-2")
TIMEOUT = 5.0


def tcp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


def udp_bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def serve_one(
    servers: TestServers, key: str = "default/web-abc", identity: PodIdentity = WEB
) -> tuple[int, int]:
    """Serve `identity` on a fresh TCP and UDP socket; their ports."""
    tcp, udp = tcp_listener(), udp_bound()
    ports = port_of(tcp), port_of(udp)
    servers.serve(key, identity, [tcp], [udp])
    return ports


def connected(port: int) -> tuple[http.client.HTTPConnection, int]:
    """An open HTTP connection to 127.0.0.1:port and its own local port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.connect()
    return conn, port_of(conn.sock)


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str, str]:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read().decode()
    return response.status, response.getheader("Content-Type") or "", body


def udp_ask(port: int, payload: bytes = b"ping") -> tuple[dict[str, object], int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(("127.0.0.1", port))
        client.send(payload)
        answer = json.loads(client.recv(65535))
        assert isinstance(answer, dict)
        return answer, port_of(client)


def expected(identity: PodIdentity, client_port: int) -> dict[str, object]:
    return {
        "pod": identity.pod,
        "podIP": identity.pod_ip,
        "node": identity.node,
        "clientIP": "127.0.0.1",
        "clientPort": client_port,
    }


def test_root_answers_pod_identity_and_the_client_address(servers: TestServers) -> None:
    tcp_port, _ = serve_one(servers)
    conn, local_port = connected(tcp_port)
    try:
        status, content_type, body = get(conn, "/")
    finally:
        conn.close()
    assert status == 200
    assert content_type.startswith("application/json")
    assert json.loads(body) == expected(WEB, local_port)


def test_hostname_and_clientip_are_plain_text(servers: TestServers) -> None:
    tcp_port, _ = serve_one(servers)
    conn, local_port = connected(tcp_port)
    try:
        hostname = get(conn, "/hostname")
        clientip = get(conn, "/clientip")
    finally:
        conn.close()
    assert hostname[0] == 200
    assert hostname[1].startswith("text/plain")
    assert hostname[2] == "web-abc"
    assert clientip[0] == 200
    assert clientip[1].startswith("text/plain")
    # agnhost netexec answers Go's RemoteAddr: "ip:port".
    assert clientip[2] == f"127.0.0.1:{local_port}"


def test_unknown_path_is_404(servers: TestServers) -> None:
    tcp_port, _ = serve_one(servers)
    conn, _ = connected(tcp_port)
    try:
        status, _, _ = get(conn, "/nope")
    finally:
        conn.close()
    assert status == 404


def test_connection_is_kept_alive_across_requests(servers: TestServers) -> None:
    tcp_port, _ = serve_one(servers)
    conn, local_port = connected(tcp_port)
    first_socket = conn.sock
    try:
        replies = [json.loads(get(conn, "/")[2]) for _ in range(3)]
        # http.client reconnects silently when the server closed the
        # connection; the same socket object proves it never had to.
        assert conn.sock is first_socket
    finally:
        conn.close()
    assert [r["clientPort"] for r in replies] == [local_port] * 3


def test_udp_datagram_is_answered_with_the_same_json(servers: TestServers) -> None:
    _, udp_port = serve_one(servers)
    answer, local_port = udp_ask(udp_port)
    assert answer == expected(WEB, local_port)
    # Whatever the payload says, the answer is the same reply.
    answer, local_port = udp_ask(udp_port, b"hostname")
    assert answer == expected(WEB, local_port)


def test_each_pod_answers_as_itself(servers: TestServers) -> None:
    web_tcp, web_udp = serve_one(servers, "default/web-abc", WEB)
    db_tcp, db_udp = serve_one(servers, "data/db-xyz", DB)
    assert servers.serving() == ["data/db-xyz", "default/web-abc"]
    for port, identity in ((web_tcp, WEB), (db_tcp, DB)):
        conn, local_port = connected(port)
        try:
            assert json.loads(get(conn, "/")[2]) == expected(identity, local_port)
        finally:
            conn.close()
    for port, identity in ((web_udp, WEB), (db_udp, DB)):
        answer, local_port = udp_ask(port)
        assert answer == expected(identity, local_port)


def test_several_ports_of_one_pod(servers: TestServers) -> None:
    tcp = [tcp_listener(), tcp_listener()]
    udp = [udp_bound(), udp_bound()]
    servers.serve("default/web-abc", WEB, tcp, udp)
    for sock in tcp:
        conn, _ = connected(port_of(sock))
        try:
            assert get(conn, "/hostname")[2] == "web-abc"
        finally:
            conn.close()
    for sock in udp:
        assert udp_ask(port_of(sock))[0]["pod"] == "web-abc"


def test_stopped_pod_refuses_new_and_drops_open_connections(servers: TestServers) -> None:
    tcp_port, udp_port = serve_one(servers)
    db_tcp, _ = serve_one(servers, "data/db-xyz", DB)
    conn, _ = connected(tcp_port)
    try:
        assert get(conn, "/")[0] == 200
        servers.stop_serving("default/web-abc")
        assert servers.serving() == ["data/db-xyz"]
        # The idle keep-alive connection was closed by the server: the
        # next request on it finds the connection gone.
        with pytest.raises(ConnectionError):
            get(conn, "/")
    finally:
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tcp_port), timeout=TIMEOUT)
    # Nothing listens on the UDP port any more: loopback's ICMP port
    # unreachable shows as a refusal on a connected UDP socket.
    with pytest.raises(ConnectionRefusedError):
        udp_ask(udp_port)
    # The other pod is untouched.
    conn, _ = connected(db_tcp)
    try:
        assert get(conn, "/hostname")[2] == "db-xyz"
    finally:
        conn.close()


def test_stop_serving_an_unknown_key_is_a_no_op(servers: TestServers) -> None:
    servers.stop_serving("default/never-served")
    assert servers.serving() == []


def test_serving_a_key_twice_is_refused_and_closes_the_new_sockets(
    servers: TestServers,
) -> None:
    tcp_port, _ = serve_one(servers)
    again_tcp, again_udp = tcp_listener(), udp_bound()
    with pytest.raises(ValueError, match="already being served"):
        servers.serve("default/web-abc", WEB, [again_tcp], [again_udp])
    assert again_tcp.fileno() == -1
    assert again_udp.fileno() == -1
    # The first serving is unaffected.
    conn, _ = connected(tcp_port)
    try:
        assert get(conn, "/hostname")[2] == "web-abc"
    finally:
        conn.close()


def test_close_stops_every_server_and_the_loop_thread() -> None:
    before = set(threading.enumerate())
    servers = TestServers()
    servers.start()
    started = set(threading.enumerate()) - before
    assert started, "start() runs the loop in a new thread"
    assert all(thread.daemon for thread in started)
    tcp_port, _ = serve_one(servers)
    servers.close()
    assert not any(thread.is_alive() for thread in started)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tcp_port), timeout=TIMEOUT)
    servers.close()  # idempotent
    unused = tcp_listener()
    with pytest.raises(RuntimeError, match="not started"):
        servers.serve("default/web-abc", WEB, [unused], [])
    assert unused.fileno() == -1


def test_requests_are_not_access_logged(
    servers: TestServers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    tcp_port, _ = serve_one(servers)
    conn, _ = connected(tcp_port)
    try:
        get(conn, "/")
    finally:
        conn.close()
    assert [r for r in caplog.records if r.name == "aiohttp.access"] == []


# -- agnhost netexec's answers (test/images/agnhost/netexec) ------------------------


def test_hostname_is_the_kernel_hostname_the_pod_has(servers: TestServers) -> None:
    # spec.hostname, or the node's name in a hostNetwork pod: agnhost
    # answers os.Hostname(), which is the pod's kernel hostname.
    named = PodIdentity(
        pod="web-abc", namespace="default", pod_ip="10.244.1.5", node="node-1", hostname="h1"
    )
    tcp_port, _ = serve_one(servers, identity=named)
    conn, _ = connected(tcp_port)
    try:
        assert get(conn, "/hostname")[::2] == (200, "h1")
        assert get(conn, "/hostName")[::2] == (200, "h1")
    finally:
        conn.close()


def test_echo_answers_msg_with_the_asked_status(servers: TestServers) -> None:
    tcp_port, _ = serve_one(servers)
    conn, _ = connected(tcp_port)
    try:
        assert get(conn, "/echo?msg=hello")[::2] == (200, "hello")
        assert get(conn, "/echo?msg=gone&code=410")[::2] == (410, "gone")
        assert get(conn, "/echo?msg=x&code=abc")[::2] == (
            200,
            "argument 'code' must be an integer or empty, got \"abc\"\n",
        )
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/shell?cmd=id", "/upload", "/exit", "/shutdown", "/dial"])
def test_agnhost_endpoints_netemu_lacks_are_not_found(servers: TestServers, path: str) -> None:
    tcp_port, _ = serve_one(servers)
    conn, _ = connected(tcp_port)
    try:
        assert get(conn, path)[0] == 404
    finally:
        conn.close()


def test_header_answers_the_named_request_header(servers: TestServers) -> None:
    tcp_port, _ = serve_one(servers)
    conn, _ = connected(tcp_port)
    try:
        conn.request("GET", "/header?key=X-Request-ID", headers={"X-Request-ID": "abc123"})
        seen = conn.getresponse()
        body = seen.read().decode()
        missing = get(conn, "/header?key=X-Missing")
    finally:
        conn.close()
    assert (seen.status, body) == (200, "abc123")
    assert missing[0] == 200 and missing[2] == ""
