"""kube-proxy's health and metrics answers (netemu.node.proxyhealth,
netemu.node.proxymetrics), its periodic canary check and full resync
(netemu.node.proxy), and Go durations (netemu.api.duration)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.duration import DurationError, parse_duration
from netemu.api.load import load_text
from netemu.api.validate import load_and_validate, validate
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.kernel.iptables import FakeIptables
from netemu.node.proxy import ProxyAgent, canary_gone
from netemu.node.proxyhealth import (
    Instant,
    ProxierHealth,
    bind_address,
    default_bind_addresses,
    go_time,
    health_check_ips,
    health_check_ports,
    local_ready_endpoints,
    proxy_settings,
    service_health_answer,
)
from netemu.node.proxymetrics import (
    ProxyMetrics,
    rules_by_table,
    updated_services,
)
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules.input import EndpointInfo, ProxyInput
from netemu.rules.iptables import compile_full_resync, compile_node
from netemu.rules.model import BUILTIN_CHAINS, RuleSet, parse_restore
from netemu.rules.spec import canonical_ruleset

LB_LAB = Path(__file__).parents[2] / "controlplane" / "loadbalancer"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("1m30s", 90.0), ("300ms", 0.3), ("1.5h", 5400.0), ("0", 0.0), ("-1s", -1.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "30", "1x", "s", "1m30", 30])
def test_bad_go_durations(text: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_service_health_answer_is_kube_proxys() -> None:
    ok = service_health_answer("shop", "web", 2, True)
    assert ok.status == 200
    assert ok.content_type == "application/json"
    assert dict(ok.headers) == {
        "X-Content-Type-Options": "nosniff",
        "X-Load-Balancing-Endpoint-Weight": "2",
    }
    assert json.loads(ok.body) == {
        "service": {"namespace": "shop", "name": "web"},
        "localEndpoints": 2,
        "serviceProxyHealthy": True,
    }
    assert service_health_answer("shop", "web", 0, True).status == 503
    unhealthy = service_health_answer("shop", "web", 3, False)
    assert unhealthy.status == 503
    assert json.loads(unhealthy.body)["serviceProxyHealthy"] is False


def _lb_input(node: str = "node-1") -> ProxyInput:
    return proxy_input(load_cluster([LB_LAB]), node)


def test_health_check_ports_are_etp_local_load_balancers_only() -> None:
    data = _lb_input()
    ports = health_check_ports(data)
    assert list(ports) == [("default", "shop-local")]
    assert 30000 <= ports[("default", "shop-local")] <= 32767


def test_local_ready_endpoints_count_ready_local_ips_once() -> None:
    data = _lb_input()
    key = ("default", "shop", "", "tcp")
    ready = EndpointInfo("10.244.1.2", 80, True, True, False, "node-1")
    other_port = dataclasses.replace(ready, port=443)
    terminating = EndpointInfo("10.244.1.3", 80, False, True, True, "node-1")
    remote = EndpointInfo("10.244.2.2", 80, True, True, False, "node-2")
    sp = next(sp for sp in data.service_ports if sp.name == "shop-local")
    key = (sp.namespace, sp.name, sp.port_name, sp.protocol)
    twin = dataclasses.replace(sp, port_name="https", port=443)
    twin_key = (twin.namespace, twin.name, twin.port_name, twin.protocol)
    data = dataclasses.replace(
        data,
        service_ports=(sp, twin),
        endpoints={key: (ready, terminating, remote), twin_key: (other_port,)},
    )
    # Only the ready one on this node, counted once over both ports.
    assert local_ready_endpoints(data) == {("default", "shop-local"): 1}
    only_terminating = dataclasses.replace(data, endpoints={key: (terminating, remote)})
    assert local_ready_endpoints(only_terminating) == {}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> Instant:
        return Instant(int((1_800_000_000 + self.now) * 1e9), self.now)


def test_proxier_health_goes_stale_after_health_timeout() -> None:
    clock = _Clock()
    health = ProxierHealth(health_timeout=4.0, clock=clock)
    assert health.healthz().status == 200  # starting up
    health.updated()
    clock.now = 1.0
    health.queued_update()
    clock.now = 4.9
    assert health.healthz().status == 200  # queued, not late yet
    clock.now = 5.0
    stale = health.healthz()
    assert stale.status == 503
    body = json.loads(stale.body)
    assert body["lastUpdated"] == go_time(int(1_800_000_000 * 1e9), 0.0)
    assert body["currentTime"] == go_time(int(1_800_000_005 * 1e9), 5.0)
    assert body["nodeEligible"] is True
    assert health.livez().status == 503
    health.updated()
    assert health.healthz().status == 200
    assert health.answered == {("healthz", 200): 3, ("healthz", 503): 1, ("livez", 503): 1}


def test_a_dual_stack_node_is_unhealthy_when_either_familys_proxier_is_late() -> None:
    # One health server for both proxiers (kube-proxy's MetaProxier,
    # pkg/proxy/healthcheck/proxy_health.go): the IPv6 proxier late makes
    # the node unhealthy though the IPv4 one synced, and lastUpdated is the
    # late family's own.
    clock = _Clock()
    health = ProxierHealth(health_timeout=4.0, clock=clock)
    health.updated("IPv4")
    health.updated("IPv6")
    clock.now = 1.0
    health.queued_update("IPv6")
    clock.now = 3.0
    health.queued_update("IPv4")
    health.updated("IPv4")
    clock.now = 5.0
    stale = health.healthz()
    assert stale.status == 503
    assert json.loads(stale.body)["lastUpdated"] == go_time(int(1_800_000_000 * 1e9), 0.0)
    health.updated("IPv6")
    assert health.healthz().status == 200


def test_a_family_that_never_synced_counts_as_starting_up() -> None:
    # isHealthy walks the families that have synced once: one only queued
    # (still starting) does not make the node unhealthy.
    clock = _Clock()
    health = ProxierHealth(health_timeout=4.0, clock=clock)
    health.updated("IPv4")
    health.queued_update("IPv6")
    clock.now = 10.0
    assert health.healthz().status == 200


def test_healthz_fails_on_a_node_leaving_but_livez_does_not() -> None:
    health = ProxierHealth(health_timeout=60.0, clock=_Clock(), node_eligible=False)
    assert health.healthz().status == 503
    assert json.loads(health.healthz().body)["nodeEligible"] is False
    assert health.livez().status == 200


def test_go_time_prints_as_go() -> None:
    assert go_time(None) == "0001-01-01 00:00:00 +0000 UTC"
    assert go_time(1_700_000_000_120_000_000, 3.5) == (
        "2023-11-14 22:13:20.12 +0000 UTC m=+3.500000000"
    )


def test_bind_addresses_and_sync_period_default_as_kube_proxy() -> None:
    assert bind_address(None, "0.0.0.0:10256", 10256) == ("0.0.0.0", 10256)
    assert bind_address("192.168.56.11", "0.0.0.0:10256", 10256) == ("192.168.56.11", 10256)
    assert bind_address("0.0.0.0:9999", "127.0.0.1:10249", 10249) == ("0.0.0.0", 9999)
    default = proxy_settings(None)
    assert (default.healthz_bind, default.metrics_bind) == (
        ("0.0.0.0", 10256),
        ("127.0.0.1", 10249),
    )
    assert (default.sync_period, default.health_timeout) == (30.0, 60.0)
    cfg = KubeProxyConfiguration.model_validate({"iptables": {"syncPeriod": "1m30s"}})
    assert proxy_settings(cfg).sync_period == 90.0


def test_an_ipv6_bind_address_makes_healthz_and_metrics_default_to_ipv6() -> None:
    # getDefaultAddresses: an IPv6 bindAddress ("::" on an IPv6-only node)
    # moves both servers to IPv6's wildcard and loopback.
    assert default_bind_addresses(None) == ("0.0.0.0:10256", "127.0.0.1:10249")
    assert default_bind_addresses("::") == ("[::]:10256", "[::1]:10249")
    cfg = KubeProxyConfiguration.model_validate({"bindAddress": "::"})
    settings = proxy_settings(cfg)
    assert (settings.healthz_bind, settings.metrics_bind) == (("::", 10256), ("::1", 10249))


def test_an_ipv6_only_nodes_health_check_listens_on_ipv6s_wildcard() -> None:
    assert health_check_ips((), ["fd00:56::11"], ["fd00:56::11"], "::") == ("::",)


def test_health_check_listens_where_node_port_addresses_say() -> None:
    ips = ["192.168.56.11", "10.244.0.1"]
    assert health_check_ips((), ["192.168.56.11"], ips) == ("0.0.0.0",)
    assert health_check_ips(("primary",), ["192.168.56.11"], ips) == ("192.168.56.11",)
    assert health_check_ips(("10.244.0.0/16",), ["192.168.56.11"], ips) == ("10.244.0.1",)


def test_metrics_render_kube_proxys_names_with_sync_values() -> None:
    metrics = ProxyMetrics()
    metrics.synced(0.003, True, 1_800_000_000.0, {"filter": 7, "nat": 40, "mangle": 0})
    metrics.changes(services=2, endpoints=1)
    metrics.answered("healthz", 503)
    text = metrics.render().decode()
    lines = set(text.splitlines())
    assert "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram" in lines
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004"} 1.0' in lines
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.002"} 0.0' in lines
    assert "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1.0" in lines
    assert "kubeproxy_sync_partial_proxy_rules_duration_seconds_count 0.0" in lines
    assert "kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.8e+09" in lines
    assert 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"} 40.0' in lines
    assert 'kubeproxy_sync_proxy_rules_iptables_total{table="filter"} 7.0' in lines
    assert "kubeproxy_sync_proxy_rules_service_changes_total 2.0" in lines
    assert "kubeproxy_sync_proxy_rules_endpoint_changes_total 1.0" in lines
    assert 'kubeproxy_proxy_healthz_total{code="503"} 1.0' in lines
    assert "_created" not in text


def test_rules_and_changes_are_counted_from_the_sync() -> None:
    data = _lb_input()
    text = compile_node(data).render()
    counts = rules_by_table(text)
    assert counts["nat"] == sum(1 for _ in compile_node(data).tables["nat"].rules)
    assert updated_services(None, data)[0] == {(s.namespace, s.name) for s in data.service_ports}
    assert updated_services(data, data) == (set(), set())
    fewer = dataclasses.replace(data, endpoints={})
    assert updated_services(data, fewer) == (set(), {k[:2] for k in data.endpoints})


def test_updated_services_names_each_service_whose_ports_or_endpoints_changed() -> None:
    """kube-proxy's UpdatedServices: by value, whether or not the objects are
    the same ones (updated_services compares identity first)."""
    data = _lb_input()
    first, second = data.service_ports[0], data.service_ports[1]
    copied = dataclasses.replace(
        data,
        service_ports=tuple(dataclasses.replace(sp) for sp in data.service_ports),
        endpoints={key: tuple(eps) for key, eps in data.endpoints.items()},
    )
    assert updated_services(data, copied) == (set(), set())  # equal, not identical
    moved = dataclasses.replace(first, port=first.port + 1)
    without_second = dataclasses.replace(
        data,
        service_ports=(moved, *(sp for sp in data.service_ports[1:] if sp.name != second.name)),
    )
    ports, endpoints = updated_services(data, without_second)
    assert ports == {(first.namespace, first.name), (second.namespace, second.name)}
    assert endpoints == set()
    key = next(iter(data.endpoints))
    one_less = {**data.endpoints, key: data.endpoints[key][1:]}
    assert updated_services(data, dataclasses.replace(data, endpoints=one_less)) == (
        set(),
        {key[:2]},
    )
    added = {**data.endpoints, ("other", "svc", "", "tcp"): data.endpoints[key]}
    assert updated_services(data, dataclasses.replace(data, endpoints=added))[1] == {
        ("other", "svc")
    }


def test_full_resync_after_a_flush_restores_a_fresh_nodes_rules() -> None:
    data = _lb_input()
    kernel = FakeIptables()
    kernel.restore(compile_node(data).render(), noflush=False)
    fresh = canonical_ruleset(parse_restore(kernel.save()))
    assert not canary_gone(parse_restore(kernel.save()))
    # Someone flushes every table and deletes every chain (`iptables -F; -X`):
    # the built-in chains and their policies stay.
    _flush_all(kernel)
    assert canary_gone(parse_restore(kernel.save()))
    kernel.restore(compile_full_resync(data, parse_restore(kernel.save())).render())
    assert canonical_ruleset(parse_restore(kernel.save())) == fresh
    # A second full resync on an intact node adds no duplicate jumps.
    again = compile_full_resync(data, parse_restore(kernel.save()))
    assert not any(t.inserts for t in again.tables.values())
    kernel.restore(again.render())
    assert canonical_ruleset(parse_restore(kernel.save())) == fresh


def _flush_all(kernel: FakeIptables) -> None:
    flushed = RuleSet()
    for table in ("mangle", "filter", "nat"):
        flushed.table(table).policies.update({c: "ACCEPT" for c in BUILTIN_CHAINS[table]})
    kernel.ruleset = flushed


def _agent(sync_period: float, clock: list[float]) -> ProxyAgent:
    objects = [item.obj for item in load_and_validate([str(LB_LAB)])]
    client = LocalClient(Store())
    apply_objects(client, objects)
    ControlPlane(client).run_to_fixed_point()
    lab = next(o for o in objects if isinstance(o, Lab))
    return ProxyAgent(
        client=client,
        node="node-1",
        iptables=FakeIptables(),
        lab=lab,
        proxy_config=None,
        sync_period=sync_period,
        clock=lambda: clock[0],
    )


def test_agent_checks_the_canary_every_sync_period_and_repairs() -> None:
    clock = [100.0]
    agent = _agent(2.0, clock)
    assert agent.reconcile()
    kernel = agent.iptables
    assert isinstance(kernel, FakeIptables)
    synced = canonical_ruleset(parse_restore(kernel.save()))
    clock[0] = 101.0
    assert not agent.tick()  # not yet a syncPeriod since the last sync
    clock[0] = 102.0
    assert not agent.tick()  # canary present: nothing to do
    _flush_all(kernel)
    clock[0] = 103.0
    assert not agent.tick()  # checked at 102; next check at 104
    clock[0] = 104.0
    assert agent.tick()
    assert canonical_ruleset(parse_restore(kernel.save())) == synced


def test_agent_retries_a_failed_sync_after_sync_period() -> None:
    clock = [0.0]
    agent = _agent(5.0, clock)
    agent.reconcile()
    kernel = agent.iptables
    assert isinstance(kernel, FakeIptables)
    calls = []

    def failing(text: str, *, noflush: bool = True) -> None:
        calls.append(text)
        raise RuntimeError("iptables-restore: resource busy")

    good = kernel.restore
    kernel.restore = failing  # type: ignore[method-assign]
    assert agent.last_input is not None
    agent.last_input = dataclasses.replace(agent.last_input, endpoints={})
    with pytest.raises(RuntimeError):
        agent.reconcile()
    assert agent.failed
    kernel.restore = good  # type: ignore[method-assign]
    clock[0] = 4.0
    assert not agent.tick()
    clock[0] = 5.0
    assert agent.tick()
    assert not agent.failed


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (
            "iptables:\n  syncPeriod: 30\n",
            4,
            'iptables.syncPeriod: expected a duration string such as "30s"',
        ),
        (
            "iptables:\n  syncPeriod: 1m30\n",
            4,
            'iptables.syncPeriod: missing unit in duration "1m30"',
        ),
        ("iptables:\n  syncPeriod: 0s\n", 4, "iptables.syncPeriod: must be greater than 0"),
        (
            "iptables:\n  syncPeriod: 1s\n  minSyncPeriod: 2s\n",
            4,
            "iptables.syncPeriod: must be greater than or equal to iptables.minSyncPeriod",
        ),
        ("healthzBindAddress: 0.0.0.0:0\n", 3, "healthzBindAddress: must be"),
        ("metricsBindAddress: nowhere\n", 3, "metricsBindAddress: must be"),
        ("bindAddress: {a: mapping}\n", 3, "bindAddress: must be an IP address"),
        ("bindAddress: '::1:10256x'\n", 3, "bindAddress: must be an IP address"),
    ],
)
def test_bad_kube_proxy_periods_and_addresses_name_file_line_field(
    body: str, line: int, message: str
) -> None:
    text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n" + body
    loaded, problems = load_text(text, "kp.yaml")
    assert not problems
    found = [str(p) for p in validate(loaded)]
    assert len(found) == 1, found
    assert found[0].startswith(f"kp.yaml:{line}: KubeProxyConfiguration/")
    assert message in found[0]


def test_good_kube_proxy_periods_pass() -> None:
    text = (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "healthzBindAddress: 0.0.0.0:10256\nmetricsBindAddress: 127.0.0.1\nbindAddress: '::'\n"
        "iptables:\n  syncPeriod: 1m30s\n  minSyncPeriod: 500ms\n"
    )
    loaded, problems = load_text(text, "kp.yaml")
    assert not problems
    assert validate(loaded) == []
