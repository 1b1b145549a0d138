"""The built-in test server: what a lab container with no `command` runs on
every declared containerPort, answering like agnhost netexec so tests can
see which pod answered and which client address it saw (after any NAT).

Health switches, for the kubelet's probes: `GET /healthz` (liveness) and
`GET /readyz` (readiness) answer 200 "ok" unless told to fail, then 500.
`GET /fail-readiness` and `GET /fail-liveness` make them fail,
`GET /pass-readiness` and `GET /pass-liveness` undo that; these switches
live in the serving container's memory, so a restart of the container
(`stop_serving` and `serve` again) clears them, as a real process
restarting would. A flag file `fail-readiness` or `fail-liveness` in the
pod's flag directory (`flags`, for live labs
/run/netemu/<lab>/health/<namespace>/<pod>/) fails them too, for as long
as it exists, restarts or not (a file outlives a process).

Stand-ins (netemu.net.standin): a container whose own program cannot run
is served here too, and must pass its own probes. Its httpGet probe paths
(`probe_paths`) answer 200 "ok" (or what the path's own route answers, for
`/`, `/hostname`...), and 500 while a switch of a probe kind using the path
is on (`fail-readiness` for readiness probes, `fail-liveness` for liveness
and startup probes), by request or by flag file as above. Its `tls_ports`
speak HTTPS with a self-signed certificate, made once per `TestServers`
(one per lab supervisor) with the `cryptography` package. The ports of its
grpc probes (`grpc_ports`) serve the gRPC health service instead of HTTP/1
(netemu.node.grpcserver): SERVING, NOT_SERVING while a switch of a probe
kind using the port is on.

Access log: with a `log` file, every HTTP request is appended to it as a
combined-log-format line (as an nginx or Apache access log), and every UDP
datagram as a line too: the container's log (`netemu logs`).

Every pod of a lab is served by one asyncio loop in one daemon thread of the
lab supervisor; the supervisor creates the listening sockets inside each
pod's namespace (netemu.kernel.sockets) and hands them over here, so no
process is spawned per pod. A socket keeps its namespace, so this thread
never switches namespace.

Owns: the sockets handed to `serve` (closed by `stop_serving`, `close`, or a
failed `serve`) and its loop thread. Must not touch: namespaces, links,
routes or rules; it only serves the sockets it is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from netemu.net.addresses import host_port
from netemu.node import tls
from netemu.node.dnsserver import METRICS_PORT, DnsFeed, DnsServing, serve_dns
from netemu.node.grpcserver import GrpcHealthProtocol

T = TypeVar("T")

# How long a caller waits for the loop thread to carry out one request.
CALL_TIMEOUT = 10.0
# How long a stopping pod's in-flight HTTP requests may run before their
# connections are cut. The handlers answer at once, so this only bounds a
# stuck client; idle keep-alive connections are closed without waiting.
SHUTDOWN_TIMEOUT = 1.0


# Flag files in a pod's flag directory that make the built-in server's
# health checks fail.
FAIL_READINESS = "fail-readiness"
FAIL_LIVENESS = "fail-liveness"

Check = Literal["readiness", "liveness"]
CHECKS: tuple[Check, ...] = ("readiness", "liveness")
# The stand-ins' certificate: its subject, and how long it is valid (a lab
# lives far shorter).
CERT_SUBJECT = "netemu stand-in"


@dataclass(frozen=True)
class PodIdentity:
    pod: str
    namespace: str
    pod_ip: str
    node: str
    # The kernel hostname its containers have (agnhost's /hostname answers
    # os.Hostname()): spec.hostname or the pod's name, the node's name in a
    # hostNetwork pod; empty: the pod's name.
    hostname: str = ""


def reply(identity: PodIdentity, client_ip: str, client_port: int) -> dict[str, Any]:
    """The JSON a test server answers on `GET /` and to every UDP datagram."""
    return {
        "pod": identity.pod,
        "podIP": identity.pod_ip,
        "node": identity.node,
        "clientIP": client_ip,
        "clientPort": client_port,
    }


@dataclass
class _Health:
    """One serving container's health switches (its memory) and its pod's flag files."""

    flags: Path | None = None
    failing: set[Check] = field(default_factory=set)

    def why_failing(self, check: Check) -> str | None:
        if check in self.failing:
            return f"fail-{check} was requested"
        if self.flags is not None:
            flag = self.flags / (FAIL_READINESS if check == "readiness" else FAIL_LIVENESS)
            if flag.exists():
                return f"flag file {flag} exists"
        return None


class _AccessLog:
    """Lines appended to a container's log file (None: not logged)."""

    def __init__(self, path: Path | None) -> None:
        self._out: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def write(self, line: str) -> None:
        if self._out is not None:
            self._out.write(line + "\n")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _log_time() -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime())


def _peer_ip(request: web.Request) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else "-"


def _access_middleware(log: _AccessLog) -> Middleware:
    @web.middleware
    async def access(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        status, size = 500, "-"
        try:
            response = await handler(request)
            status = response.status
            if isinstance(response, web.Response) and isinstance(response.body, bytes):
                size = str(len(response.body))
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            version = f"HTTP/{request.version.major}.{request.version.minor}"
            referer = request.headers.get("Referer", "-")
            agent = request.headers.get("User-Agent", "-")
            log.write(
                f'{_peer_ip(request)} - - [{_log_time()}] "{request.method} {request.path_qs} '
                f'{version}" {status} {size} "{referer}" "{agent}"'
            )

    return access


class _Handlers:
    def __init__(self, identity: PodIdentity, health: _Health) -> None:
        self.identity = identity
        self.health = health

    @staticmethod
    def _peer(request: web.Request) -> tuple[str, int]:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if not peer:
            # The client is already gone; nobody will read this answer.
            raise web.HTTPServiceUnavailable(text="connection closed\n")
        return str(peer[0]), int(peer[1])

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response(reply(self.identity, *self._peer(request)))

    async def hostname(self, request: web.Request) -> web.Response:
        return web.Response(text=self.identity.hostname or self.identity.pod)

    async def echo(self, request: web.Request) -> web.Response:
        """agnhost's /echo: the `msg` parameter, with status `code` if given
        (a code that is no integer: a 200 saying so, as agnhost answers)."""
        msg = request.query.get("msg", "")
        code = request.query.get("code", "")
        if not code:
            return web.Response(text=msg)
        try:
            status = int(code)
        except ValueError:
            # Go's %q quoting, which JSON's string quoting matches here.
            quoted = json.dumps(code)
            return web.Response(text=f"argument 'code' must be an integer or empty, got {quoted}\n")
        if not 100 <= status <= 999:
            # Go's net/http refuses such a status (its handler panics and the
            # connection closes unanswered); netemu answers 500 instead.
            raise web.HTTPInternalServerError(text="invalid status code\n")
        return web.Response(status=status, text=msg)

    async def clientip(self, request: web.Request) -> web.Response:
        return web.Response(text=host_port(*self._peer(request)))

    async def header(self, request: web.Request) -> web.Response:
        """agnhost netexec's /header: the value of the request header named by
        the `key` query parameter (empty when absent), e.g. the X-Request-ID a
        proxy passed on."""
        return web.Response(text=request.headers.get(request.query.get("key", ""), ""))

    def check(self, check: Check) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            why = self.health.why_failing(check)
            if why is None:
                return web.Response(text="ok")
            return web.Response(status=500, text=f"{check} failing: {why}\n")

        return answer

    def switch(self, check: Check, fail: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            if fail:
                self.health.failing.add(check)
            else:
                self.health.failing.discard(check)
            path = "/healthz" if check == "liveness" else "/readyz"
            state = "fails" if self.health.why_failing(check) else "passes"
            return web.Response(text=f"{self.identity.pod}: {check} ({path}) now {state}\n")

        return answer


def _checks(names: Iterable[str]) -> tuple[Check, ...]:
    """The fail switches among `names`, in CHECKS order."""
    given = set(names)
    return tuple(check for check in CHECKS if check in given)


def _probe_middleware(health: _Health, probe_paths: dict[str, tuple[Check, ...]]) -> Middleware:
    """A stand-in's probe paths: 500 while a switch of a probe kind using
    the path is on; else the path's own route, or 200 "ok" for a path the
    test server has no route for."""

    @web.middleware
    async def probe(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        checks = probe_paths.get(request.path)
        if checks is None:
            return await handler(request)
        for check in checks:
            why = health.why_failing(check)
            if why is not None:
                return web.Response(status=500, text=f"{check} failing: {why}\n")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.Response(text="ok")

    return probe


def _app(
    identity: PodIdentity,
    health: _Health,
    log: _AccessLog,
    probe_paths: dict[str, tuple[Check, ...]] | None = None,
) -> web.Application:
    handlers = _Handlers(identity, health)
    middlewares = [_access_middleware(log)]
    if probe_paths:
        middlewares.append(_probe_middleware(health, probe_paths))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", handlers.root)
    app.router.add_get("/hostname", handlers.hostname)
    app.router.add_get("/hostName", handlers.hostname)  # agnhost's older name
    app.router.add_get("/echo", handlers.echo)
    app.router.add_get("/clientip", handlers.clientip)
    app.router.add_get("/header", handlers.header)
    app.router.add_get("/healthz", handlers.check("liveness"))
    app.router.add_get("/readyz", handlers.check("readiness"))
    for check in ("readiness", "liveness"):
        app.router.add_get(f"/fail-{check}", handlers.switch(check, fail=True))
        app.router.add_get(f"/pass-{check}", handlers.switch(check, fail=False))
    return app


class _UdpResponder(asyncio.DatagramProtocol):
    def __init__(self, identity: PodIdentity, log: _AccessLog) -> None:
        self.identity = identity
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass
        # asyncio.DatagramTransport, though it implements it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is None:
            return
        answer = json.dumps(reply(self.identity, str(addr[0]), int(addr[1]))).encode()
        self.transport.sendto(answer, addr)
        self.log.write(
            f'{addr[0]} - - [{_log_time()}] "UDP datagram of {len(data)} bytes" - {len(answer)}'
        )

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier answer (the client went away). Each
        # datagram is answered on its own, so there is nothing to undo.
        pass


@dataclass
class _Served:
    log: _AccessLog = field(default_factory=lambda: _AccessLog(None))
    runner: web.AppRunner | None = None
    udp: list[asyncio.DatagramTransport] = field(default_factory=list)
    dns: DnsServing | None = None
    grpc: list[asyncio.Server] = field(default_factory=list)
    grpc_connections: set[GrpcHealthProtocol] = field(default_factory=set)


class TestServers:
    """Runs an asyncio loop in a daemon thread; thread-safe methods.

    Every public method except `start` hands its work to the loop thread and
    waits for it, so the pod table is only ever touched by that thread.
    """

    # The name starts with "Test"; tell pytest this is not a test class.
    __test__ = False

    def __init__(self, call_timeout: float = CALL_TIMEOUT) -> None:
        self._call_timeout = call_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._served: dict[str, _Served] = {}
        self._tls: ssl.SSLContext | None = None

    def start(self) -> None:
        with self._lock:
            if self._loop is not None:
                raise RuntimeError("test servers already started")
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name="netemu-testservers", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            coro.close()
            raise RuntimeError("test servers not started")
        if threading.current_thread() is thread:
            # Waiting on the loop from inside the loop would never return.
            coro.close()
            raise RuntimeError("TestServers methods must not be called from its loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=self._call_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def serve(
        self,
        key: str,
        identity: PodIdentity,
        tcp: list[socket.socket],
        udp: list[socket.socket],
        *,
        log: Path | None = None,
        flags: Path | None = None,
        tls_ports: Iterable[int] = (),
        probe_paths: Iterable[tuple[str, Iterable[str]]] = (),
        grpc_ports: Iterable[tuple[int, Iterable[str]]] = (),
    ) -> None:
        """Serve `identity` on already bound sockets (TCP ones listening);
        returns once every socket is being served. The sockets belong to the
        servers from this call on, even if it raises. Requests are appended
        to `log`; `flags` is the pod's flag directory; the TCP sockets bound
        to `tls_ports` speak TLS; `probe_paths` are a stand-in's probe paths
        and `grpc_ports` the ports of its grpc probes (gRPC health there,
        not HTTP/1), each with the switches that fail them (see the module)."""
        if self._loop is None:
            for sock in (*tcp, *udp):
                sock.close()
        paths = {path: _checks(checks) for path, checks in probe_paths}
        grpc = {port: _checks(checks) for port, checks in grpc_ports}
        try:
            context = self._tls_context() if tls_ports else None
        except BaseException:
            for sock in (*tcp, *udp):
                sock.close()
            raise
        self._call(
            self._serve(
                key,
                identity,
                list(tcp),
                list(udp),
                log,
                flags,
                context,
                set(tls_ports),
                paths,
                grpc,
            )
        )

    def _tls_context(self) -> ssl.SSLContext:
        """The stand-ins' server TLS context, made on first use."""
        with self._lock:
            if self._tls is None:
                # Kubelet HTTPS probes do not verify the certificate (pkg/probe/http
                # sets InsecureSkipVerify), and neither need clients of a stand-in.
                self._tls = tls.server_context(*tls.self_signed(CERT_SUBJECT))
            return self._tls

    async def _serve(
        self,
        key: str,
        identity: PodIdentity,
        tcp: list[socket.socket],
        udp: list[socket.socket],
        log: Path | None,
        flags: Path | None,
        tls: ssl.SSLContext | None = None,
        tls_ports: set[int] | None = None,
        probe_paths: dict[str, tuple[Check, ...]] | None = None,
        grpc_ports: dict[int, tuple[Check, ...]] | None = None,
    ) -> None:
        if key in self._served:
            for sock in (*tcp, *udp):
                sock.close()
            raise ValueError(f"{key} is already being served")
        try:
            access = _AccessLog(log)
        except BaseException:
            for sock in (*tcp, *udp):
                sock.close()
            raise
        served = _Served(log=access)
        # Registered before anything starts so a failure halfway is undone
        # by the same path as a normal stop.
        self._served[key] = served
        health = _Health(flags)
        grpc_ports = grpc_ports or {}
        grpc = [sock for sock in tcp if sock.getsockname()[1] in grpc_ports]
        tcp_http = [sock for sock in tcp if sock.getsockname()[1] not in grpc_ports]
        try:
            loop = asyncio.get_running_loop()
            for sock in grpc:
                checks = grpc_ports[sock.getsockname()[1]]
                server = await loop.create_server(
                    self._grpc_factory(served, health, checks), sock=sock
                )
                served.grpc.append(server)
            if tcp_http:
                runner = web.AppRunner(
                    _app(identity, health, access, probe_paths),
                    handle_signals=False,
                    access_log=None,
                    shutdown_timeout=SHUTDOWN_TIMEOUT,
                )
                await runner.setup()
                served.runner = runner
                for sock in tcp_http:
                    port = sock.getsockname()[1]
                    context = tls if tls_ports and port in tls_ports else None
                    await web.SockSite(runner, sock, ssl_context=context).start()
            for sock in udp:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpResponder(identity, access), sock=sock
                )
                served.udp.append(transport)
        except BaseException:
            await self._stop(key)
            # Sockets not yet taken by a server; closing a closed one is a no-op.
            for sock in (*tcp, *udp):
                sock.close()
            raise

    def serve_app(
        self,
        key: str,
        app: web.Application,
        tcp: list[socket.socket],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Serve an aiohttp application (the stand-in API server,
        netemu.node.apiserver) on listening TCP sockets, over TLS with
        `ssl_context`; stopped with `stop_serving(key)` like a pod's."""
        if self._loop is None:
            for sock in tcp:
                sock.close()
        self._call(self._serve_app(key, app, list(tcp), ssl_context))

    async def _serve_app(
        self,
        key: str,
        app: web.Application,
        tcp: list[socket.socket],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        if key in self._served:
            for sock in tcp:
                sock.close()
            raise ValueError(f"{key} is already being served")
        served = _Served()
        self._served[key] = served
        try:
            runner = web.AppRunner(
                app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
            )
            await runner.setup()
            served.runner = runner
            for sock in tcp:
                await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        except BaseException:
            await self._stop(key)
            for sock in tcp:
                sock.close()
            raise

    def serve_dns(
        self,
        key: str,
        feed: DnsFeed,
        tcp: list[socket.socket],
        udp: list[socket.socket],
        metrics_port: int = METRICS_PORT,
    ) -> None:
        """Serve the built-in cluster DNS (netemu.node.dnsserver) from `feed`
        instead of the test server on these sockets (its metrics on the TCP
        one bound to `metrics_port`); otherwise as `serve`."""
        if self._loop is None:
            for sock in (*tcp, *udp):
                sock.close()
        self._call(self._serve_dns(key, feed, list(tcp), list(udp), metrics_port))

    async def _serve_dns(
        self,
        key: str,
        feed: DnsFeed,
        tcp: list[socket.socket],
        udp: list[socket.socket],
        metrics_port: int,
    ) -> None:
        if key in self._served:
            for sock in (*tcp, *udp):
                sock.close()
            raise ValueError(f"{key} is already being served")
        served = _Served()
        self._served[key] = served
        try:
            served.dns = await serve_dns(feed, tcp, udp, metrics_port)
        except BaseException:
            await self._stop(key)
            for sock in (*tcp, *udp):
                sock.close()
            raise

    def stop_serving(self, key: str) -> None:
        """Stop serving `key`: its sockets are closed and its open TCP
        connections dropped by the time this returns. Unknown keys are ignored."""
        self._call(self._stop(key))

    @staticmethod
    def _grpc_factory(
        served: _Served, health: _Health, checks: tuple[Check, ...]
    ) -> Callable[[], GrpcHealthProtocol]:
        def serving() -> bool:
            return all(health.why_failing(check) is None for check in checks)

        def made() -> GrpcHealthProtocol:
            protocol = GrpcHealthProtocol(serving, served.log.write)
            served.grpc_connections.add(protocol)
            return protocol

        return made

    async def _stop(self, key: str) -> None:
        served = self._served.pop(key, None)
        if served is None:
            return
        for transport in served.udp:
            transport.close()
        for server in served.grpc:
            server.close()
        for protocol in served.grpc_connections:
            # asyncio.Server.close leaves accepted connections open (3.11).
            if protocol.transport is not None:
                protocol.transport.close()
        if served.dns is not None:
            await served.dns.aclose()
        if served.runner is not None:
            # Closes the listening sockets, then every open connection
            # (idle keep-alive ones at once), so a removed pod stops answering
            # even on connections made before.
            await served.runner.cleanup()
        # A closed datagram transport releases its socket on the next loop turn.
        await asyncio.sleep(0)
        served.log.close()

    def serving(self) -> list[str]:
        return self._call(self._keys())

    async def _keys(self) -> list[str]:
        return sorted(self._served)

    def close(self) -> None:
        """Stop serving every pod and end the loop thread. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            try:
                self._call(self._stop_all())
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=self._call_timeout)
                self._loop, self._thread = None, None

    async def _stop_all(self) -> None:
        for key in list(self._served):
            await self._stop(key)
