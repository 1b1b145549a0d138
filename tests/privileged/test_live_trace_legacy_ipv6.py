"""Live IPv6 traces on the legacy iptables backend: a legacy copy of
controlplane/dualstack, traced with ip6tables' own rule trace (the TRACE
target's NFLOG messages through each node's AF_INET6 logger,
netemu.kernel.nflog).

The NodePort flow client → [node-1's IPv6 address]:30080 is traced until
the kernel picks the endpoint on node-2 (a bounded number of tries): its
DNAT and masquerade hops name ip6tables' KUBE-SEP DNAT and KUBE-POSTROUTING
MASQUERADE rules, and node-1's traced rules are the offline tracer's path
to that endpoint over the IPv6 rules, rule for rule. Every trace leaves the
nodes' IPv4 and IPv6 loggers as they were and no TRACE rules (in either
family's raw table) or monitors, also when sending fails. The lab is taken
down afterwards.
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
from live_helpers import CONTROLPLANE, lab_name, processes_in_lab, running_lab

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

NODE1_V6 = "fd00:56::11"
# Tries until the kernel picks the endpoint on node-2 among 2 equally
# likely ones: missing it 20 times in a row has probability 2**-20 < 1e-6.
TRIES = 20
MONITOR_TOOLS = ("tcpdump", "conntrack")
LOGGERS = [NF_LOG_IPV4, NF_LOG_IPV6]


@dataclass(frozen=True)
class LegacyLab:
    lab: LiveLab
    manifests: Path

    def node_netns(self) -> dict[str, str]:
        return {name: str(node["netns"]) for name, node in self.lab.info()["nodes"].items()}


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyLab]:
    target = tmp_path_factory.mktemp("legacy6") / "dualstack-legacy"
    shutil.copytree(CONTROLPLANE / "dualstack", target)
    lab_yaml = target / "lab.yaml"
    text = lab_yaml.read_text()
    assert "  proxyMode: iptables\n" in text, "controlplane/dualstack/lab.yaml changed"
    lab_yaml.write_text(
        text.replace(
            "  proxyMode: iptables\n", "  proxyMode: iptables\n  iptablesBackend: legacy\n"
        )
    )
    with running_lab([target], lab_name("lg6-trace")) as lab:
        assert lab.info()["backend"] == "legacy"
        yield LegacyLab(lab, target)


# -- what a trace leaves behind ----------------------------------------------------------


def loggers(lab: LegacyLab) -> dict[str, dict[str, str]]:
    """Per node, its IPv4 and IPv6 loggers."""
    return {node: netns.read_sysctls(name, LOGGERS) for node, name in lab.node_netns().items()}


def trace_chains(lab: LegacyLab) -> dict[str, list[str]]:
    """Per node, the lines of either family's raw table that name a
    NETEMU-TRACE chain."""
    found: dict[str, list[str]] = {}
    for node, name in lab.node_netns().items():
        lines: list[str] = []
        for save in ("iptables-legacy-save", "ip6tables-legacy-save"):
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
    assert not processes_in_lab(lab.lab, MONITOR_TOOLS)


# -- the flow ----------------------------------------------------------------------------


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
    """client → [node-1]:30080 (web-nodeport) over IPv6, traced until the
    endpoint is on node-2."""
    seen = []
    for _ in range(TRIES):
        report = legacy.lab.trace("client", f"[{NODE1_V6}]:30080", pcap=False)
        assert report.outcome == "delivered", show(report)
        seen.append(report.delivered_to)
        if report.delivered_to is not None and report.delivered_to.endswith(" on node-2"):
            return report
    raise AssertionError(f"no trace reached node-2 in {TRIES} tries: {seen}")


def test_nodeport_hops_name_the_ip6tables_dnat_and_masquerade_rules(
    legacy: LegacyLab, before: dict[str, dict[str, str]], nodeport_cross: TraceReport
) -> None:
    report = nodeport_cross
    where = show(report)
    assert (report.flow.dst, report.rules_source) == (NODE1_V6, "TRACE"), where
    assert report.verdict == "DNAT" and report.masquerade, where
    (endpoint,) = report.endpoints
    assert endpoint.startswith("[fd00:10:244:"), where
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
    # ip6tables' rules: the nodeports jump leaves out the IPv6 loopback.
    assert any("! -d ::1/128" in r.rule for r in report.rules), where
    assert report.answer.reply is not None
    assert report.answer.reply["clientIP"] == report.seen_client
    assert any(
        r.chain.startswith("KUBE-SVC-") and f"-> {endpoint}" in r.rule for r in report.rules
    ), where
    assert_clean(legacy, before)


def offline(lab: LegacyLab, report: TraceReport) -> dict[str, Any]:
    """`netemu trace --offline -f <manifests> FROM [DST]:PORT -o json`."""
    flow = report.flow
    args = ["trace", "--offline", "-f", str(lab.manifests), flow.source.name]
    args += [f"[{flow.dst}]:{flow.dport}", "--proto", flow.proto, "-o", "json"]
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
    """The same rules in the same order as the offline path to the live
    endpoint over ip6tables' rules, compared by (table, chain, target) and
    in canonical form."""
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


def test_failed_trace_restores_both_loggers_and_removes_the_rules(
    legacy: LegacyLab, before: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    during: dict[str, Any] = {}

    def failing_send(*args: object, **kwargs: object) -> None:
        during["loggers"] = loggers(legacy)
        during["chains"] = trace_chains(legacy)
        raise RuntimeError("send failed (injected by the test)")

    monkeypatch.setattr("netemu.trace.live.send", failing_send)
    with pytest.raises(RuntimeError, match="injected by the test"):
        legacy.lab.trace("client", f"[{NODE1_V6}]:30080", pcap=False)
    assert all(
        node == {NF_LOG_IPV4: NFNETLINK_LOG, NF_LOG_IPV6: NFNETLINK_LOG}
        for node in during["loggers"].values()
    ), during["loggers"]
    # The TRACE rules are ip6tables' only.
    for node, lines in during["chains"].items():
        assert lines and all(line.startswith("ip6tables-legacy-save: ") for line in lines), (
            node,
            lines,
        )
    assert_clean(legacy, before)
