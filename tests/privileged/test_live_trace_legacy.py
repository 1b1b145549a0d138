"""Live traces on the legacy iptables backend: a legacy copy of
controlplane/default, traced with the kernel's own rule trace (the TRACE
target's NFLOG messages, netemu.kernel.nflog) as on nft.

The NodePort flow client → node-1:30080 is traced until the kernel picks
the endpoint on node-2 (a bounded number of tries): its DNAT and
masquerade hops name the KUBE-SEP DNAT and KUBE-POSTROUTING MASQUERADE
rules, and node-1's traced rules are the offline tracer's path to that
endpoint, rule for rule. A pod → Service without endpoints is rejected by
the filter table's REJECT rule, as the trace names it. Every trace leaves
the nodes' IPv4 loggers as they were and no TRACE rules or monitors, also
when sending fails. The lab is taken down afterwards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from live_helpers import CONTROLPLANE, lab_name, pods_with, processes_in_lab, running_lab
from live_helpers import trace_chains as live_trace_chains

from netemu.cli import main
from netemu.kernel import netns
from netemu.kernel.nflog import NF_LOG_IPV4
from netemu.lab import LiveLab
from netemu.rules.spec import canonical
from netemu.trace.report import Hop, RuleRef, TraceReport

pytestmark = pytest.mark.skipif(
    shutil.which("tcpdump") is None or shutil.which("tshark") is None,
    reason="tcpdump or tshark is missing (./setup.sh installs them)",
)

# Tries until the kernel picks the endpoint on node-2 among 3 equally
# likely ones: missing it 30 times in a row has probability (2/3)**30 < 1e-5.
TRIES = 30
MONITOR_TOOLS = ("tcpdump", "conntrack")


@dataclass(frozen=True)
class LegacyLab:
    lab: LiveLab
    manifests: Path
    captures: Path

    def trace(self, frm: str, to: str) -> TraceReport:
        return self.lab.trace(frm, to, captures=self.captures)

    def node_netns(self) -> dict[str, str]:
        return {name: str(node["netns"]) for name, node in self.lab.info()["nodes"].items()}


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyLab]:
    target = tmp_path_factory.mktemp("legacy") / "default-legacy"
    shutil.copytree(CONTROLPLANE / "default", target)
    lab_yaml = target / "lab.yaml"
    text = lab_yaml.read_text()
    assert "  proxyMode: iptables\n" in text, "controlplane/default/lab.yaml changed"
    lab_yaml.write_text(
        text.replace(
            "  proxyMode: iptables\n", "  proxyMode: iptables\n  iptablesBackend: legacy\n"
        )
    )
    with running_lab([target], lab_name("trace-legacy")) as lab:
        assert lab.info()["backend"] == "legacy"
        yield LegacyLab(lab, target, tmp_path_factory.mktemp("captures"))


# -- what a trace leaves behind ----------------------------------------------------------


def loggers(lab: LegacyLab) -> dict[str, str]:
    return {
        node: netns.read_sysctls(name, [NF_LOG_IPV4])[NF_LOG_IPV4]
        for node, name in lab.node_netns().items()
    }


def trace_chains(lab: LegacyLab) -> dict[str, list[str]]:
    return live_trace_chains(lab.lab, "legacy")


def monitor_processes(lab: LegacyLab) -> list[str]:
    return processes_in_lab(lab.lab, MONITOR_TOOLS)


@pytest.fixture(scope="module")
def before(legacy: LegacyLab) -> dict[str, str]:
    """The nodes' IPv4 loggers before any trace."""
    found = loggers(legacy)
    assert "nfnetlink_log" not in found.values(), found
    return found


def assert_clean(lab: LegacyLab, before: dict[str, str]) -> None:
    assert loggers(lab) == before, "a node's IPv4 logger was not restored"
    chains = trace_chains(lab)
    assert not any(chains.values()), f"TRACE rules left behind: {chains}"
    assert not monitor_processes(lab), monitor_processes(lab)


# -- the flows ---------------------------------------------------------------------------


def show(report: TraceReport) -> str:
    lines = [report.summary()]
    for h in report.hops:
        rule = f" [{h.rule.table} {h.rule.rule}]" if h.rule else ""
        lines.append(
            f"  {h.leg:7} {h.site} {h.interface or '-'} {h.action} {h.packet.summary()}{rule}"
        )
    lines += [f"  rule {r.table} {r.rule}" for r in report.rules]
    return "\n".join(lines)


def the_hop(report: TraceReport, action: str) -> Hop:
    found = [h for h in report.hops if h.leg == "request" and h.action == action]
    assert len(found) == 1, f"expected one {action} hop:\n{show(report)}"
    return found[0]


@pytest.fixture(scope="module")
def nodeport_cross(legacy: LegacyLab, before: dict[str, str]) -> TraceReport:
    """client → node-1:30080 (web-nodeport), traced until the endpoint is on node-2."""
    seen = []
    for _ in range(TRIES):
        report = legacy.trace("client", "node-1:30080")
        assert report.outcome == "delivered", show(report)
        assert report.rules_source == "TRACE", show(report)
        seen.append(report.delivered_to)
        if report.delivered_to is not None and report.delivered_to.endswith(" on node-2"):
            return report
    raise AssertionError(f"no trace reached node-2 in {TRIES} tries: {seen}")


def test_nodeport_hops_name_the_dnat_and_masquerade_rules(
    legacy: LegacyLab, before: dict[str, str], nodeport_cross: TraceReport
) -> None:
    report = nodeport_cross
    where = show(report)
    assert report.rules_source == "TRACE"
    assert report.verdict == "DNAT" and report.masquerade, where
    (endpoint,) = report.endpoints
    dnat = the_hop(report, "DNAT")
    assert dnat.node == "node-1" and dnat.translated == endpoint, where
    assert dnat.rule is not None and dnat.rule.table == "nat", where
    assert dnat.rule.chain.startswith("KUBE-SEP-") and dnat.rule.target == "DNAT", where
    assert f"--to-destination {endpoint}" in dnat.rule.rule, where
    assert dnat.rule in report.rules

    masquerade = the_hop(report, "Masquerade")
    assert masquerade.node == "node-1", where
    assert masquerade.rule is not None
    assert (masquerade.rule.table, masquerade.rule.chain, masquerade.rule.target) == (
        "nat",
        "KUBE-POSTROUTING",
        "MASQUERADE",
    ), where
    assert masquerade.rule in report.rules
    assert report.answer.reply is not None
    assert report.answer.reply["clientIP"] == report.seen_client
    # The service chain the kernel traced picked exactly this endpoint.
    assert any(
        r.chain.startswith("KUBE-SVC-") and f"-> {endpoint}" in r.rule for r in report.rules
    ), where
    assert_clean(legacy, before)


def offline(lab: LegacyLab, report: TraceReport) -> dict[str, Any]:
    """`netemu trace --offline -f <manifests> FROM TO -o json` for the report's flow."""
    flow = report.flow
    args = ["trace", "--offline", "-f", str(lab.manifests), flow.source.name]
    args += [f"{flow.dst}:{flow.dport}", "--proto", flow.proto, "-o", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _args(rule: str) -> str:
    words = rule.split(" ", 2)
    assert words[0] == "-A" and len(words) == 3, rule
    return words[2]


def test_entry_node_rules_agree_with_the_offline_path(
    legacy: LegacyLab, nodeport_cross: TraceReport
) -> None:
    """As test_live_trace.test_live_trace_agrees_with_offline_trace on nft:
    the same rules in the same order as the offline path to the live
    endpoint, compared by (table, chain, target) and in canonical form."""
    report = nodeport_cross
    expected = offline(legacy, report)
    assert report.prediction == {k: expected[k] for k in ("verdict", "endpoints", "masquerade")}
    (path,) = [
        p
        for p in expected["paths"]
        if p["endpoint"] == report.endpoints[0] and p["verdict"] == report.verdict
    ]
    assert path["masquerade"] == report.masquerade
    offline_rules = [RuleRef(r["table"], r["chain"], r["rule"]) for r in path["rules"]]
    assert [(r.table, r.chain, r.target) for r in report.rules] == [
        (r.table, r.chain, r.target) for r in offline_rules
    ], (
        show(report)
        + "\noffline path:\n"
        + "\n".join(f"  {r.table} {r.rule}" for r in offline_rules)
    )
    for got, want in zip(report.rules, offline_rules, strict=True):
        assert canonical(_args(got.rule)) == canonical(_args(want.rule)), (
            f"live:    {got.rule}\noffline: {want.rule}"
        )


def test_service_without_endpoints_is_rejected_by_the_traced_rule(
    legacy: LegacyLab, before: dict[str, str]
) -> None:
    pods = pods_with(legacy.lab.state(), "web", "node-2")
    assert pods, "no web pod on node-2"
    meta = pods[0]["metadata"]
    report = legacy.trace(f"{meta.get('namespace', 'default')}/{meta['name']}", "empty")
    where = show(report)
    assert (report.outcome, report.verdict, report.rules_source) == ("refused", "REJECT", "TRACE")
    rejected = the_hop(report, "Rejected")
    assert rejected.node == "node-2" and rejected.rule is not None, where
    assert (rejected.rule.table, rejected.rule.chain, rejected.rule.target) == (
        "filter",
        "KUBE-SERVICES",
        "REJECT",
    ), where
    assert "default/empty:http has no endpoints" in rejected.rule.rule
    assert_clean(legacy, before)


def test_failed_trace_restores_the_loggers_and_removes_the_rules(
    legacy: LegacyLab, before: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    during: dict[str, Any] = {}

    def failing_send(*args: object, **kwargs: object) -> None:
        during["loggers"] = loggers(legacy)
        during["chains"] = trace_chains(legacy)
        during["monitors"] = monitor_processes(legacy)
        raise RuntimeError("send failed (injected by the test)")

    monkeypatch.setattr("netemu.trace.live.send", failing_send)
    with pytest.raises(RuntimeError, match="injected by the test"):
        legacy.trace("client", "node-1:30080")
    assert set(during["loggers"].values()) == {"nfnetlink_log"}, during["loggers"]
    assert all(during["chains"].values()), f"no TRACE rules while tracing: {during['chains']}"
    assert len(during["monitors"]) == 2 * len(before), during["monitors"]
    assert_clean(legacy, before)
