"""A stand-in's gRPC health server: grpc.health.v1.Health/Check over
cleartext HTTP/2 (h2c with prior knowledge, as gRPC's insecure transport
and the kubelet's grpc probe speak it), served on a socket the test
servers' loop already owns (netemu.node.testserver). Every service name
answers SERVING, or NOT_SERVING while `serving()` says no (the stand-in's
fail switches); any other method is UNIMPLEMENTED, as a server that
registered only the health service answers.

Owns: the connections it accepts. Must not touch anything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from netemu.net.grpchealth import (
    CHECK_PATH,
    CONTENT_TYPE,
    OK,
    UNIMPLEMENTED,
    check_response,
    requested_service,
)


class GrpcHealthProtocol(asyncio.Protocol):
    """One HTTP/2 connection to a stand-in's gRPC health server."""

    def __init__(self, serving: Callable[[], bool], log: Callable[[str], None]) -> None:
        self.serving = serving
        self.log = log
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.paths: dict[int, str] = {}
        self.bodies: dict[int, bytearray] = {}
        self.peer = "-"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "-"
        self.conn.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # Not HTTP/2 (an HTTP/1 client, say): gRPC servers hang up.
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(cast(list[tuple[str, str]], event.headers))
                self.paths[event.stream_id] = headers.get(":path", "")
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._answer(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated) and self.transport:
                self.transport.close()
        self._flush()

    def _answer(self, stream: int) -> None:
        path = self.paths.pop(stream, "")
        body = bytes(self.bodies.pop(stream, b""))
        if path != CHECK_PATH:
            # Trailers-only: the status in the one HEADERS frame.
            self.conn.send_headers(
                stream,
                [
                    (":status", "200"),
                    ("content-type", CONTENT_TYPE),
                    ("grpc-status", str(UNIMPLEMENTED)),
                    ("grpc-message", f"unknown method {path}"),
                ],
                end_stream=True,
            )
            self.log(f'{self.peer} - - "gRPC {path}" {UNIMPLEMENTED}')
            return
        serving = self.serving()
        self.conn.send_headers(stream, [(":status", "200"), ("content-type", CONTENT_TYPE)])
        self.conn.send_data(stream, check_response(serving))
        self.conn.send_headers(stream, [("grpc-status", str(OK))], end_stream=True)
        service = requested_service(body) or ""
        state = "SERVING" if serving else "NOT_SERVING"
        self.log(f'{self.peer} - - "gRPC {path} service={service!r}" {OK} {state}')

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
