"""kube-proxy's HTTP servers for every node of a live lab: the service
health server (a listener per healthCheckNodePort), the proxier health
server (healthzBindAddress) and the metrics server (metricsBindAddress).
What they answer is netemu.node.proxyhealth and netemu.node.proxymetrics;
this module only serves it.

All nodes' servers share one asyncio loop in one daemon thread of the lab
supervisor. The listening sockets are opened in each node's namespace by a
`Binder` (netemu.kernel.sockets.bind_tcp_listener for a live lab); a socket
keeps its namespace, so this thread never switches namespace.

Owns: the sockets its binder returns and its loop thread. Must not touch:
namespaces, links, routes or rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from netemu.api.core import Node
from netemu.api.ipfamilies import IPFamily
from netemu.node.proxyhealth import (
    Answer,
    ProxierHealth,
    ProxySettings,
    node_eligible,
    proxy_mode_answer,
    service_health_answer,
    system_clock,
)
from netemu.node.proxymetrics import CONTENT_TYPE, ProxyMetrics

T = TypeVar("T")
CALL_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 1.0

# (namespace name, ip, port) → a listening, non-blocking TCP socket.
Binder = Callable[[str, str, int], socket.socket]


def _response(answer: Answer) -> web.Response:
    response = web.Response(status=answer.status, text=answer.body)
    # Set whole, as Go writes it: aiohttp would otherwise append its own charset.
    response.headers["Content-Type"] = answer.content_type
    for name, value in answer.headers:
        response.headers[name] = value
    return response


class _Loop:
    """An asyncio loop in a daemon thread; `call` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), name="netemu-kube-proxy-servers", daemon=True
        )
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("must not be called from the servers' own loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=CALL_TIMEOUT)


@dataclass
class NodeProxyServers:
    """One node's kube-proxy servers and the state they answer from. The
    proxy agent reports to it (queued, synced, sync_services); requests are
    answered on the shared loop. A lock guards what both threads touch."""

    node: str
    netns: str
    settings: ProxySettings
    loop: _Loop
    binder: Binder
    health: ProxierHealth = field(init=False)
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    listen_ips: tuple[str, ...] = ("0.0.0.0",)
    log: Callable[[str], None] = print
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _endpoints: dict[tuple[str, str], int] = field(default_factory=dict)
    _ports: dict[tuple[str, str], int] = field(default_factory=dict)
    _runners: dict[str, web.AppRunner] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.health = ProxierHealth(self.settings.health_timeout, system_clock())

    # -- what the proxy agent reports --------------------------------------

    def queued(self, when: float, family: IPFamily = "IPv4") -> None:
        with self._lock:
            self.health.queued_update(family)
            self.metrics.queued(when)

    def synced(self, family: IPFamily = "IPv4") -> None:
        with self._lock:
            self.health.updated(family)

    def set_node_eligible(self, eligible: bool) -> None:
        with self._lock:
            self.health.node_eligible = eligible

    def follow_node(self, node: Node) -> None:
        """The node's eligibility for load-balancer traffic, as kube-proxy's
        health server reads it from its Node (being deleted, or tainted
        ToBeDeletedByClusterAutoscaler)."""
        taints = [t.get("key", "") for t in node.spec.taints or [] if isinstance(t, dict)]
        self.set_node_eligible(node_eligible(node.metadata.deletion_timestamp is not None, taints))

    def sync_services(
        self, ports: dict[tuple[str, str], int], endpoints: dict[tuple[str, str], int]
    ) -> None:
        """ServiceHealthServer.SyncServices then SyncEndpoints: listeners for
        Services that are gone or changed port close, new ones open (a port
        that cannot be bound is logged and tried again on the next sync, as
        kube-proxy does); counts of Services without local endpoints are 0."""
        with self._lock:
            self._endpoints = {key: endpoints.get(key, 0) for key in ports}
        for key, port in list(self._ports.items()):
            if ports.get(key) != port:
                self.loop.call(self._close(_service_key(key)))
                del self._ports[key]
        for key, port in sorted(ports.items()):
            if key in self._ports:
                continue
            try:
                self._open(_service_key(key), port, self._service_app(key))
            except OSError as exc:
                self.log(
                    f"node {self.node} failed to start healthcheck "
                    f'"{key[0]}/{key[1]}" on port {port}: {exc}'
                )
                continue
            self._ports[key] = port

    def health_check_ports(self) -> dict[tuple[str, str], int]:
        return dict(self._ports)

    # -- serving ------------------------------------------------------------

    def start(self) -> None:
        """The proxier health and metrics servers (the service health
        listeners follow the syncs). A bind failure is logged, as kube-proxy
        logs it and keeps running."""
        for name, bind, app in (
            ("healthz", self.settings.healthz_bind, self._healthz_app()),
            ("metrics", self.settings.metrics_bind, self._metrics_app()),
        ):
            if bind is None:
                continue
            try:
                self._open(name, bind[1], app, ips=(bind[0],))
            except OSError as exc:
                self.log(f"node {self.node}: starting {name} server on {bind} failed: {exc}")

    def close(self) -> None:
        for key in list(self._runners):
            self.loop.call(self._close(key))
        self._ports.clear()

    def _open(
        self, key: str, port: int, app: web.Application, ips: Iterable[str] | None = None
    ) -> None:
        sockets: list[socket.socket] = []
        try:
            for ip in ips or self.listen_ips:
                sockets.append(self.binder(self.netns, ip, port))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self.loop.call(self._serve(key, app, sockets))

    async def _serve(self, key: str, app: web.Application, sockets: list[socket.socket]) -> None:
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        try:
            await runner.setup()
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            for sock in sockets:
                sock.close()
            raise
        self._runners[key] = runner

    async def _close(self, key: str) -> None:
        runner = self._runners.pop(key, None)
        if runner is not None:
            await runner.cleanup()

    # -- handlers -----------------------------------------------------------

    def _service_app(self, key: tuple[str, str]) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            with self._lock:
                count = self._endpoints.get(key, 0)
                healthy = self.health.is_healthy()
            return _response(service_health_answer(key[0], key[1], count, healthy))

        app = web.Application()
        # hcHandler is the server's only handler: every path answers.
        app.router.add_route("*", "/{tail:.*}", answer)
        return app

    def _healthz_app(self) -> web.Application:
        def handler(path: str, get: Callable[[], Answer]) -> Any:
            async def answer(request: web.Request) -> web.Response:
                with self._lock:
                    result = get()
                    self.metrics.answered(path, result.status)
                return _response(result)

            return answer

        app = web.Application()
        app.router.add_route("*", "/healthz", handler("healthz", self.health.healthz))
        app.router.add_route("*", "/livez", handler("livez", self.health.livez))
        return app

    def _metrics_app(self) -> web.Application:
        async def proxy_mode(request: web.Request) -> web.Response:
            return _response(proxy_mode_answer(self.settings.mode))

        async def healthz(request: web.Request) -> web.Response:
            # healthz.InstallHandler's ping check.
            return _response(
                Answer(
                    200, "text/plain; charset=utf-8", "ok", (("X-Content-Type-Options", "nosniff"),)
                )
            )

        async def metrics(request: web.Request) -> web.Response:
            with self._lock:
                body = self.metrics.render()
            response = web.Response(body=body)
            response.headers["Content-Type"] = CONTENT_TYPE
            return response

        app = web.Application()
        app.router.add_get("/proxyMode", proxy_mode)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        return app


def _service_key(key: tuple[str, str]) -> str:
    return f"service/{key[0]}/{key[1]}"


class ProxyServers:
    """Every node's kube-proxy servers on one loop."""

    def __init__(self, binder: Binder) -> None:
        self.binder = binder
        self._loop: _Loop | None = None
        self.nodes: dict[str, NodeProxyServers] = {}

    def add_node(
        self,
        node: str,
        netns: str,
        settings: ProxySettings,
        listen_ips: tuple[str, ...] = ("0.0.0.0",),
        log: Callable[[str], None] = print,
    ) -> NodeProxyServers:
        if self._loop is None:
            self._loop = _Loop()
        servers = NodeProxyServers(
            node=node,
            netns=netns,
            settings=settings,
            loop=self._loop,
            binder=self.binder,
            listen_ips=listen_ips,
            log=log,
        )
        servers.start()
        self.nodes[node] = servers
        return servers

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            for servers in self.nodes.values():
                servers.close()
        finally:
            loop.stop()
