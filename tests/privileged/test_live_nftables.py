"""A live lab with kube-proxy in nftables mode (controlplane/default with
`proxyMode: nftables`): every node's `ip kube-proxy` table, read back with
`nft list table`, parses and is the compiler's table for the lab's state;
kube-proxy wrote none of its iptables chains; /proxyMode answers
"nftables"; a live trace reports the DNAT, the masquerade and the
kube-proxy nft rules that matched, and leaves no trace table behind; and
`netemu down` leaves no namespace of the lab."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from live_helpers import lab_name, lab_prefix, mode_copy, netemu_cli, running_lab

from netemu.api.config import Lab
from netemu.api.core import Service
from netemu.kernel import netns
from netemu.kernel.iptables import KernelIptables
from netemu.kernel.nftables import KernelNftables
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab
from netemu.pipeline import proxy_input
from netemu.rules.nftables import compile_ruleset
from netemu.rules.nftmodel import NftTable, parse_nft
from netemu.trace.live import TraceOptions, trace

pytestmark = pytest.mark.privileged

NODES = ("node-1", "node-2")


SYNC_PERIOD = 2.0
# A short nftables.syncPeriod, so that the agent's periodic work shows within a test.
PROXY_CONFIG = f"""\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
nftables:
  syncPeriod: {SYNC_PERIOD:g}s
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    path = mode_copy("default", tmp_path_factory.mktemp("nft"), "nftables")
    (path / "proxy.yaml").write_text(PROXY_CONFIG)
    name = lab_name("nft")
    with running_lab([path], name) as live:
        yield live
    left = [ns for ns in netns.list_names() if ns.startswith(lab_prefix(name))]
    assert not left, f"netemu down left {left}"


def structure(table: NftTable) -> dict[str, object]:
    """What a table holds, as the kernel cannot print it differently:
    chains (hook, type, priority, how many rules), sets and maps with their
    elements (any order), and the table's comment."""
    return {
        "comment": table.comment,
        "chains": {
            name: (c.type, c.hook, c.priority, len(c.rules)) for name, c in table.chains.items()
        },
        "sets": {
            name: (s.kind, s.key_type, frozenset((e.key, e.value) for e in s.elements))
            for name, s in table.sets.items()
        },
    }


def rules(table: NftTable) -> dict[str, tuple[str, ...]]:
    return {name: tuple(r.text for r in c.rules) for name, c in table.chains.items()}


def _table(text: str) -> NftTable:
    table = parse_nft(text).table("ip", "kube-proxy")
    assert table is not None
    return table


def test_each_nodes_table_is_the_compilers(lab: LiveLab, namespace: str) -> None:
    # The lab's objects, and its Lab (the cluster CIDR kube-proxy's rules use).
    state = replace(lab.cluster_state(), lab=Lab.model_validate(lab.info()["lab"]))
    for node in NODES:
        live = _table(
            KernelNftables(lab.info()["nodes"][node]["netns"]).list_table("ip", "kube-proxy")
        )
        compiled_text = compile_ruleset(proxy_input(state, node)).dump()
        compiled = _table(compiled_text)
        assert structure(live) == structure(compiled), node
        # Rule texts as the kernel prints them: the compiled table put
        # through a fresh namespace's kernel must read exactly as the node's.
        fresh = KernelNftables(namespace)
        fresh.apply(compiled_text)
        assert rules(live) == rules(_table(fresh.list_table("ip", "kube-proxy"))), node
        fresh.delete_table("ip", "kube-proxy")


def test_no_kube_proxy_chains_in_iptables_and_proxy_mode_answers_nftables(lab: LiveLab) -> None:
    for node in NODES:
        ns = lab.info()["nodes"][node]["netns"]
        saved = KernelIptables(ns, "nft").save()
        assert "KUBE-SERVICES" not in saved and "KUBE-SVC-" not in saved, node
        assert "FLANNEL-POSTRTG" in saved and "KUBE-FIREWALL" in saved, node
        mode = http_get(ns, "127.0.0.1", 10249, "/proxyMode")
        assert (mode.status, mode.body) == (200, "nftables"), node
        health = http_get(ns, lab.info()["nodes"][node]["ip"], 10256, "/healthz")
        assert health.status == 200, (node, health)
        metrics = http_get(ns, "127.0.0.1", 10249, "/metrics").body.splitlines()
        full_syncs = next(
            float(line.split()[1])
            for line in metrics
            if line.startswith("kubeproxy_sync_full_proxy_rules_duration_seconds_count ")
        )
        assert full_syncs >= 1, node
        shown = netemu_cli("rules", "--lab", lab.name, node)
        assert shown.returncode == 0, shown.stderr
        assert "KUBE-FIREWALL" in shown.stdout and "table ip kube-proxy {" in shown.stdout


def test_a_trace_shows_dnat_masquerade_and_kube_proxys_nft_rules(lab: LiveLab) -> None:
    # client -> node-1's NodePort of web-nodeport (ETP Cluster): DNATed to
    # a web pod and masqueraded, both by kube-proxy's nft rules.
    report = trace(lab, "client", "node-1", TraceOptions(port=30080, pcap=False))
    assert report.outcome == "delivered", report.outcome
    assert report.verdict == "DNAT" and report.masquerade
    assert report.prediction is not None and report.prediction["verdict"] == "DNAT"
    assert set(report.endpoints) <= set(report.prediction["endpoints"])
    hops = {h.action: h for h in report.hops if h.rule is not None}
    dnat, masquerade = hops["DNAT"], hops["Masquerade"]
    assert dnat.rule is not None and dnat.rule.table == "kube-proxy"
    assert dnat.rule.chain.startswith("endpoint-") and " dnat to " in dnat.rule.rule
    assert dnat.translated == report.endpoints[0]
    assert masquerade.rule is not None
    assert (masquerade.rule.table, masquerade.rule.chain) == ("kube-proxy", "masquerading")
    chains = [(r.table, r.chain) for r in report.rules]
    assert ("kube-proxy", "services") in chains
    assert any(c.startswith("service-") for _, c in chains)
    # The tracer's own table is neither in the report nor left in a node.
    assert all(not t.startswith("netemu-trace") for t, _ in chains)
    for node in NODES:
        listed = KernelNftables(lab.info()["nodes"][node]["netns"]).list_ruleset()
        assert "netemu-trace" not in listed, node


def test_a_trace_to_a_service_without_endpoints_is_rejected_by_kube_proxys_nft_rules(
    lab: LiveLab,
) -> None:
    state = lab.cluster_state()
    web = next(p for p in state.pods if (p.metadata.name or "").startswith("web-"))
    report = trace(lab, f"pod/{web.metadata.name}", "service/empty", TraceOptions(pcap=False))
    assert report.outcome == "refused", report.outcome
    targets = [(r.chain, r.target) for r in report.rules]
    assert ("reject-chain", "REJECT") in targets, targets


def test_a_deleted_table_stays_gone_until_a_failed_sync_is_retried(lab: LiveLab) -> None:
    """kube-proxy's nftables proxier has no canary: a deleted table stays
    gone past syncPeriod; the next sync that writes a Service's chains fails
    on it, and the full sync that retries it syncPeriod later writes it back."""
    node_ns = lab.info()["nodes"]["node-2"]["netns"]
    nft = KernelNftables(node_ns)
    assert nft.delete_table("ip", "kube-proxy")
    time.sleep(SYNC_PERIOD + 1.0)
    assert not nft.has_table("ip", "kube-proxy")
    extra = Service.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web-extra", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 81, "targetPort": 8080}]},
        }
    )
    lab.apply([extra])
    try:
        changed = time.monotonic()
        while not nft.has_table("ip", "kube-proxy"):
            assert time.monotonic() - changed < 2 * SYNC_PERIOD + 2.0, "not written back"
            time.sleep(0.1)
        time.sleep(0.2)  # the table is created and filled in one transaction; read it settled
        state = replace(lab.cluster_state(), lab=Lab.model_validate(lab.info()["lab"]))
        compiled = _table(compile_ruleset(proxy_input(state, "node-2")).dump())
        assert structure(_table(nft.list_table("ip", "kube-proxy"))) == structure(compiled)
    finally:
        lab.delete([("Service", "default", "web-extra")])


def trace_json(lab: LiveLab, *args: str) -> tuple[int, dict[str, Any], str]:
    done = netemu_cli("trace", "--lab", lab.name, "--no-pcap", "-o", "json", *args)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def test_netemu_trace_check_agrees_with_the_nftables_prediction(lab: LiveLab) -> None:
    # A NodePort through the CLI, in the lab's supervisor: the kernel did
    # what the prediction from the node's nft and iptables rules says.
    code, report, stderr = trace_json(lab, "client", "node-1:30080", "--check")
    assert code == 0, stderr
    assert (report["outcome"], report["verdict"]) == ("delivered", "DNAT"), report["summary"]
    assert "service-" in report["summary"] and "endpoint-" in report["summary"]
    # A Service without endpoints: rejected by kube-proxy's reject-chain.
    pod = next(
        p["metadata"]["name"]
        for p in lab.state()["pods"]
        if p["metadata"]["name"].startswith("web-")
    )
    code, report, stderr = trace_json(lab, f"pod/{pod}", "service/empty", "--check")
    assert code == 0, stderr
    assert report["outcome"] == "refused", report["summary"]
    assert report["prediction"]["verdict"] == "REJECT"
    rejecting = [r for r in report["rules"] if r["chain"] == "reject-chain"]
    assert rejecting and rejecting[0]["table"] == "kube-proxy"
