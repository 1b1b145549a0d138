"""The trace report as text: the summary line, the hops as a table, and
what the kernel said (conntrack entries, the deciding rules, the pcaps).

Pure: returns renderables and strings; the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from netemu.trace.report import Hop, TraceReport


def _where(hop: Hop) -> str:
    place = hop.node or hop.site
    if hop.site.startswith(("pod ", "client ")):
        place = hop.site
    if hop.interface:
        arrow = "→" if hop.direction == "out" else "←"
        return f"{place} {hop.interface} {arrow}"
    return place


def _packet(hop: Hop) -> str:
    text = hop.packet.summary()
    if hop.tunnel:
        t = hop.tunnel
        text = (
            f"{t['kind']} {t['src']}:{t['sport']} → {t['dst']}:{t['dport']} vni {t['vni']} [{text}]"
        )
    return text


def _detail(hop: Hop) -> str:
    parts = []
    if hop.translated:
        parts.append(f"to {hop.translated}")
    if hop.rule:
        # The chain and target: the whole rule is listed under "rules on".
        parts.append(f"{hop.rule.table} {hop.rule.chain} -j {hop.rule.target}")
    if hop.detail:
        parts.append(hop.detail)
    return "; ".join(parts)


def _ends(t: dict[str, object]) -> str:
    if t["proto"] == "icmp":
        return f"{t['src']} → {t['dst']} id {t['sport']}"
    return f"{t['src']}:{t['sport']} → {t['dst']}:{t['dport']}"


def hop_table(report: TraceReport) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 2, 0, 0))
    for column in ("#", "LEG", "WHERE", "COMPONENT", "ACTION", "PACKET", "DETAIL"):
        table.add_column(column, no_wrap=column != "DETAIL")
    for index, hop in enumerate(report.hops, start=1):
        table.add_row(
            str(index),
            hop.leg,
            _where(hop),
            hop.component,
            hop.action,
            _packet(hop),
            _detail(hop),
        )
    return table


def render(report: TraceReport) -> RenderableType:
    lines: list[RenderableType] = [Text(report.summary()), Text("")]
    lines.append(hop_table(report))
    lines.append(Text(""))
    verdict = f"verdict: {report.verdict}"
    if report.endpoints:
        verdict += f" → {', '.join(report.endpoints)}"
    verdict += f"; masquerade: {'yes' if report.masquerade else 'no'}; outcome: {report.outcome}"
    lines.append(Text(verdict))
    if report.answer.dns is not None:
        lines.append(Text(dns_line(report.answer.dns)))
    if report.prediction is not None:
        p = report.prediction
        agrees = (
            p["verdict"] == report.verdict
            and set(report.endpoints) <= set(p["endpoints"])
            and p["masquerade"] == report.masquerade
        )
        lines.append(
            Text(
                f"offline prediction: {p['verdict']} {', '.join(p['endpoints'])} "
                f"masquerade={'yes' if p['masquerade'] else 'no'} "
                f"({'agrees' if agrees else 'DIFFERS'})"
            )
        )
    for entry in report.conntrack:
        o, r = entry["original"], entry["reply"]
        lines.append(
            Text(f"conntrack on {entry['node']}: {o['proto']} {_ends(o)}  reply {_ends(r)}")
        )
    if report.rules:
        lines.append(Text(f"rules on {report.flow.entry_node} ({report.rules_source}):"))
        lines += [Text(f"  {r.table:<7} {r.rule}") for r in report.rules]
    if report.pcaps:
        lines.append(
            Text(f"pcaps: {report.pcaps['directory']}/ (merged: {report.pcaps['merged']})")
        )
    return Group(*lines)


def dns_line(dns: Mapping[str, Any]) -> str:
    """`dns: QUESTION → RCODE: RECORDS` (or → what went wrong)."""
    if dns["error"]:
        return f"dns: {dns['question']} → {dns['error']}"
    records = "; ".join(dns["answers"]) or "no records"
    return f"dns: {dns['question']} → {dns['rcode']}: {records}"
