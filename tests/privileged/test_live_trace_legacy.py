"""Live traces on the legacy iptables backend, in either IP family: a
legacy copy of controlplane/default (IPv4) and of controlplane/dualstack
(its IPv6 NodePort), traced with the kernel's own rule trace (the TRACE
target's NFLOG messages through each node's logger of the flow's family,
netemu.kernel.nflog) as on nft.

The NodePort flow client → node-1:30080 (on the dual-stack lab, node-1's
IPv6 address) is traced until the kernel picks the endpoint on node-2 (a
bounded number of tries): its DNAT and masquerade hops name the KUBE-SEP
DNAT and KUBE-POSTROUTING MASQUERADE rules (ip6tables' for IPv6), and
node-1's traced rules are the offline tracer's path to that endpoint, rule
for rule. A pod → Service without endpoints is rejected by the filter
table's REJECT rule, as the trace names it. Every trace leaves the nodes'
loggers as they were and no TRACE rules (in either family's raw table) or
monitors, also when sending fails. Each lab is taken down afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from live_helpers import CONTROLPLANE, lab_name, pods_with, processes_in_lab, running_lab

from netemu.cli import main
from netemu.kernel import netns
from netemu.kernel.nflog import NF_LOG_IPV4, NF_LOG_IPV6, NFNETLINK_LOG
from netemu.lab import LiveLab
from netemu.rules.spec import canonical
from netemu.trace.report import Hop, RuleRef, TraceReport
from netemu.trace.scope import CHAIN_PREFIX

pytestmark = pytest.mark.skipif(
    shutil.which("tcpdump") is None or shutil.which("tshark") is None,
    reason="tcpdump or tshark is missing (./setup.sh installs them)",
)

MONITOR_TOOLS = ("tcpdump", "conntrack")


@dataclass(frozen=True)
class Family:
    """What the traced NodePort flow of one IP family needs."""

    name: str
    lab: str  # the directory under controlplane/ copied with the legacy backend
    node1: str  # node-1's address of the family
    # Tries until the kernel picks the endpoint on node-2 among the lab's
    # equally likely ones: missing it that often has probability < 1e-5.
    tries: int
    loggers: tuple[str, ...]  # the nodes' nf_log loggers a trace of the family sets
    saves: tuple[str, ...]  # the raw tables its TRACE rules may go to

    @property
    def nodeport(self) -> str:
        host = f"[{self.node1}]" if ":" in self.node1 else self.node1
        return f"{host}:30080"


FAMILIES = {
    # 3 endpoints: (2/3)**30 < 1e-5.
    "IPv4": Family(
        "IPv4", "default", "192.168.56.11", 30, (NF_LOG_IPV4,), ("iptables-legacy-save",)
    ),
    # 2 endpoints: 2**-20 < 1e-6. libpcap binds nfnetlink_log to AF_INET
    # only: the monitor sets the AF_INET6 logger itself.
    "IPv6": Family(
        "IPv6",
        "dualstack",
        "fd00:56::11",
        20,
        (NF_LOG_IPV4, NF_LOG_IPV6),
        ("iptables-legacy-save", "ip6tables-legacy-save"),
    ),
}


@dataclass(frozen=True)
class LegacyLab:
    lab: LiveLab
    manifests: Path
    captures: Path
    family: Family

    def trace(self, frm: str, to: str) -> TraceReport:
        return self.lab.trace(frm, to, captures=self.captures)

    def node_netns(self) -> dict[str, str]:
        return {name: str(node["netns"]) for name, node in self.lab.info()["nodes"].items()}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def legacy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LegacyLab]:
    family = FAMILIES[request.param]
    target = tmp_path_factory.mktemp("legacy") / f"{family.lab}-legacy"
    shutil.copytree(CONTROLPLANE / family.lab, target)
    lab_yaml = target / "lab.yaml"
    text = lab_yaml.read_text()
    assert "  proxyMode: iptables\n" in text, f"controlplane/{family.lab}/lab.yaml changed"
    lab_yaml.write_text(
        text.replace(
            "  proxyMode: iptables\n", "  proxyMode: iptables\n  iptablesBackend: legacy\n"
        )
    )
    with running_lab([target], lab_name(f"trace-legacy-{family.lab}")) as lab:
        assert lab.info()["backend"] == "legacy"
        yield LegacyLab(lab, target, tmp_path_factory.mktemp("captures"), family)


# -- what a trace leaves behind ----------------------------------------------------------


def loggers(lab: LegacyLab) -> dict[str, dict[str, str]]:
    """Per node, its loggers of the lab's traced family (IPv4's, and IPv6's too)."""
    return {
        node: netns.read_sysctls(name, list(lab.family.loggers))
        for node, name in lab.node_netns().items()
    }


def trace_chains(lab: LegacyLab) -> dict[str, list[str]]:
    """Per node, the lines of the raw tables that name a NETEMU-TRACE chain."""
    found: dict[str, list[str]] = {}
    for node, name in lab.node_netns().items():
        lines: list[str] = []
        for save in lab.family.saves:
            done = subprocess.run(
                ["ip", "netns", "exec", name, save, "-t", "raw"],
                capture_output=True,
                text=True,
                check=True,
            )
            lines += [
                f"{save}: {line}" for line in done.stdout.splitlines() if CHAIN_PREFIX in line
            ]
        found[node] = lines
    return found


def monitor_processes(lab: LegacyLab) -> list[str]:
    return processes_in_lab(lab.lab, MONITOR_TOOLS)


@pytest.fixture(scope="module")
def before(legacy: LegacyLab) -> dict[str, dict[str, str]]:
    """The nodes' loggers before any trace."""
    found = loggers(legacy)
    assert all(NFNETLINK_LOG not in node.values() for node in found.values()), found
    return found


def assert_clean(lab: LegacyLab, before: dict[str, dict[str, str]]) -> None:
    assert loggers(lab) == before, "a node's logger was not restored"
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
def nodeport_cross(legacy: LegacyLab, before: dict[str, dict[str, str]]) -> TraceReport:
    """client → node-1:30080 (web-nodeport) in the lab's traced family,
    traced until the endpoint is on node-2."""
    seen = []
    for _ in range(legacy.family.tries):
        report = legacy.trace("client", legacy.family.nodeport)
        assert report.outcome == "delivered", show(report)
        assert report.rules_source == "TRACE", show(report)
        seen.append(report.delivered_to)
        if report.delivered_to is not None and report.delivered_to.endswith(" on node-2"):
            return report
    raise AssertionError(f"no trace reached node-2 in {legacy.family.tries} tries: {seen}")


def test_nodeport_hops_name_the_dnat_and_masquerade_rules(
    legacy: LegacyLab, before: dict[str, dict[str, str]], nodeport_cross: TraceReport
) -> None:
    report = nodeport_cross
    where = show(report)
    assert (report.flow.dst, report.rules_source) == (legacy.family.node1, "TRACE"), where
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
    if legacy.family.name == "IPv6":
        # ip6tables' rules: an IPv6 endpoint, and the nodeports jump leaves
        # out the IPv6 loopback.
        assert endpoint.startswith("[fd00:10:244:"), where
        assert any("! -d ::1/128" in r.rule for r in report.rules), where
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
    host = f"[{flow.dst}]" if ":" in flow.dst else flow.dst
    args = ["trace", "--offline", "-f", str(lab.manifests), flow.source.name]
    args += [f"{host}:{flow.dport}", "--proto", flow.proto, "-o", "json"]
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
    legacy: LegacyLab, before: dict[str, dict[str, str]]
) -> None:
    # The Service's name: its primary family's (IPv4) clusterIP on either lab.
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
    legacy: LegacyLab, before: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    during: dict[str, Any] = {}

    def failing_send(*args: object, **kwargs: object) -> None:
        during["loggers"] = loggers(legacy)
        during["chains"] = trace_chains(legacy)
        during["monitors"] = monitor_processes(legacy)
        raise RuntimeError("send failed (injected by the test)")

    monkeypatch.setattr("netemu.trace.live.send", failing_send)
    with pytest.raises(RuntimeError, match="injected by the test"):
        legacy.trace("client", legacy.family.nodeport)
    assert all(set(node.values()) == {NFNETLINK_LOG} for node in during["loggers"].values()), (
        during["loggers"]
    )
    # The TRACE rules are in the raw table of the flow's family only.
    save = legacy.family.saves[-1]
    for node, lines in during["chains"].items():
        assert lines and all(line.startswith(f"{save}: ") for line in lines), (node, lines)
    assert len(during["monitors"]) == 2 * len(before), during["monitors"]
    assert_clean(legacy, before)
