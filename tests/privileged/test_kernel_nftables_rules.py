"""kube-proxy's nftables-mode rules in a real kernel: `nft -f` takes every
lab's golden (rules/<lab>/<node>.nft) and every transaction of a run of full
and partial syncs, inside a fresh network namespace; after each, the table
the kernel lists has the chains, rule counts, sets, maps and element counts
that netemu.rules.nftables says it has (NftRuleset, the model the offline
stages use)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from netemu.pipeline import lab_name, load_cluster
from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.nftables import NftRuleset, NftSyncState, Transaction, sync

ROOT = Path(__file__).parents[2]
LABS = sorted(p for p in (ROOT / "controlplane").iterdir() if p.is_dir())


def nft(namespace: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def shape_in_kernel(namespace: str, family: str = "ip") -> dict[str, object]:
    """Chains with their rule counts, sets and maps with their element counts."""
    listing = json.loads(nft(namespace, "-j", "list", "table", family, "kube-proxy"))["nftables"]
    chains: Counter[str] = Counter()
    containers: dict[str, int] = {}
    for item in listing:
        if "chain" in item:
            chains[item["chain"]["name"]] += 0
        elif "rule" in item:
            chains[item["rule"]["chain"]] += 1
        elif "set" in item or "map" in item:
            body = item.get("set") or item["map"]
            containers[body["name"]] = len(body.get("elem", []))
    return {"chains": dict(chains), "containers": containers}


def shape_in_model(ruleset: NftRuleset) -> dict[str, object]:
    return {
        "chains": {name: len(ruleset.rules[name]) for name in ruleset.chains},
        "containers": {name: len(ruleset.elements[name]) for name in ruleset.sets},
    }


def run(namespace: str, tx: Transaction) -> None:
    if tx.ops:
        nft(namespace, "-f", "-", stdin=tx.render())


@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_goldens_load_as_compiled(namespace: str, lab: Path) -> None:
    from netemu.pipeline import compile_nftables, proxy_families, rules_suffix

    state = load_cluster([lab])
    for node in state.nodes:
        node_name = node.metadata.name or ""
        # Each family's table: `ip kube-proxy` (.nft), `ip6 kube-proxy` (.ip6.nft).
        for family in proxy_families(state, node_name):
            suffix = rules_suffix("nftables", family)
            golden = ROOT / "rules" / lab_name(state.lab, [str(lab)]) / f"{node_name}.{suffix}"
            table_family = "ip6" if family == "IPv6" else "ip"
            nft(namespace, "-f", str(golden))
            compiled = compile_nftables(state, node_name, family=family)
            assert shape_in_kernel(namespace, table_family) == shape_in_model(compiled)
            nft(namespace, "delete", "table", table_family, "kube-proxy")


def test_syncs_leave_the_table_the_model_predicts(namespace: str) -> None:
    config = ProxyConfig(
        "node-1",
        node_ips=("192.168.56.11",),
        local_ips=("192.168.56.11",),
        cluster_cidr="10.244.0.0/16",
        service_cidrs=("10.96.0.0/12",),
    )

    def data(endpoints: dict[str, tuple[str, ...]], affinity: bool = False) -> ProxyInput:
        ports = []
        by_port = {}
        for i, name in enumerate(sorted(endpoints)):
            sp = ServicePortInfo(
                "default",
                name,
                "http",
                "tcp",
                f"10.96.0.{10 + i}",
                80,
                node_port=30080 + i,
                load_balancer_vips=(f"192.168.56.{100 + i}",),
                load_balancer_source_ranges=("192.168.56.0/28",),
                affinity_timeout=60 if affinity else None,
            )
            ports.append(sp)
            by_port[(sp.namespace, sp.name, sp.port_name, sp.protocol)] = tuple(
                EndpointInfo(ip, 8080, True, True, False, "node-2") for ip in endpoints[name]
            )
        return ProxyInput(config, tuple(ports), by_port)

    steps: list[tuple[ProxyInput, bool, set[tuple[str, str]], float]] = [
        (data({"a": ("10.244.1.2",), "b": ("10.244.1.3", "10.244.1.4")}), True, set(), 0.0),
        (
            data({"a": ("10.244.1.2", "10.244.1.9"), "b": ()}),
            False,
            {("default", "a"), ("default", "b")},
            0.1,
        ),
        (data({"a": ("10.244.1.9",), "b": ()}, affinity=True), False, {("default", "a")}, 0.2),
        (data({"a": ("10.244.1.9",)}), False, {("default", "a"), ("default", "b")}, 2.0),
        (data({"a": ("10.244.1.9",), "c": ("10.244.1.5",)}), True, set(), 4.0),
        (data({"c": ("10.244.1.6",)}), False, {("default", "a"), ("default", "c")}, 6.0),
    ]
    state: NftSyncState | None = None
    for i, (inputs, full, changed, now) in enumerate(steps):
        result = sync(inputs, state, full=full, changed=changed, now=now)
        run(namespace, result.cleanup)
        run(namespace, result.transaction)
        state = result.state
        assert shape_in_kernel(namespace) == shape_in_model(state.ruleset), f"step {i}"


def test_ipv6_table_loads(namespace: str) -> None:
    config = ProxyConfig(
        "node-1",
        ip_family="IPv6",
        node_ips=("192.168.56.11", "fd00:56::11"),
        local_ips=("fd00:56::11",),
        cluster_cidr="fd00:10:244::/56",
        service_cidrs=("10.96.0.0/12", "fd00:10:96::/112"),
    )
    sp = ServicePortInfo(
        "default",
        "web",
        "http",
        "tcp",
        "fd00:10:96::10",
        80,
        node_port=30080,
        external_ips=("fd00:56::200",),
        affinity_timeout=60,
    )
    endpoints = tuple(
        EndpointInfo(ip, 8080, True, True, False, node)
        for ip, node in (("fd00:10:244:1::2", "node-1"), ("fd00:10:244:2::2", "node-2"))
    )
    data = ProxyInput(config, (sp,), {("default", "web", "http", "tcp"): endpoints})
    result = sync(data, None, full=True, now=0.0)
    run(namespace, result.transaction)
    assert shape_in_kernel(namespace, "ip6") == shape_in_model(result.state.ruleset)
    emptied = sync(
        ProxyInput(config, (sp,)), result.state, full=False, changed={("default", "web")}, now=1
    )
    run(namespace, emptied.transaction)
    assert shape_in_kernel(namespace, "ip6") == shape_in_model(emptied.state.ruleset)
