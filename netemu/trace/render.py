"""The trace report as text: the summary line, the hops as a table, and
what the kernel said (the DNS answer, the offline prediction, conntrack
entries, the deciding rules, the pcaps).

It reads the report as trace.json holds it, the one form every trace has:
a live trace's reply from the lab's supervisor, `TraceReport.to_dict()`
in-process, a trace.json on disk. Pure, and light on purpose: the `trace`
command imports it without the tracer (no Scapy, no models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from netemu.trace.nftrace import rule_target


def render(report: Mapping[str, Any]) -> RenderableType:
    """A trace report, as trace.json holds it (TraceReport.to_dict(), or a
    live trace's reply from the supervisor), as text."""
    hops = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 2, 0, 0))
    for column in ("#", "LEG", "WHERE", "COMPONENT", "ACTION", "PACKET", "DETAIL"):
        hops.add_column(column, no_wrap=column != "DETAIL")
    for index, hop in enumerate(report["hops"], start=1):
        place = hop["node"] or hop["site"]
        if hop["site"].startswith(("pod ", "client ")):
            place = hop["site"]
        if hop["interface"]:
            arrow = "→" if hop["direction"] == "out" else "←"
            place = f"{place} {hop['interface']} {arrow}"
        packet = hop["packet"]["summary"]
        if hop["tunnel"]:
            t = hop["tunnel"]
            packet = (
                f"{t['kind']} {t['src']}:{t['sport']} → {t['dst']}:{t['dport']} "
                f"vni {t['vni']} [{packet}]"
            )
        detail = []
        if hop["translated"]:
            detail.append(f"to {hop['translated']}")
        if hop["rule"]:
            rule = hop["rule"]
            if rule["rule"].startswith("-"):
                found = rule_target(rule["rule"])
                detail.append(f"{rule['table']} {rule['chain']} -j {found[1] if found else None}")
            else:  # an nft rule (nftables mode): its own text says what it did
                detail.append(f"{rule['table']} {rule['chain']}: {rule['rule']}")
        if hop["detail"]:
            detail.append(hop["detail"])
        # Text, not markup: `[fd00::1]:80` and `[S]` are not Rich style tags.
        hops.add_row(
            str(index),
            hop["leg"],
            Text(place),
            hop["component"],
            hop["action"],
            Text(packet),
            Text("; ".join(detail)),
        )
    lines: list[RenderableType] = [Text(report["summary"]), Text(""), hops, Text("")]
    verdict = f"verdict: {report['verdict']}"
    if report["endpoints"]:
        verdict += f" → {', '.join(report['endpoints'])}"
    masquerade = "yes" if report["masquerade"] else "no"
    verdict += f"; masquerade: {masquerade}; outcome: {report['outcome']}"
    lines.append(Text(verdict))
    if report["answer"].get("dns") is not None:
        lines.append(Text(dns_line(report["answer"]["dns"])))
    prediction = report["prediction"]
    if prediction is not None:
        agrees = not prediction_differences(report)
        lines.append(
            Text(
                f"offline prediction: {prediction['verdict']} "
                f"{', '.join(prediction['endpoints'])} "
                f"masquerade={'yes' if prediction['masquerade'] else 'no'} "
                f"({'agrees' if agrees else 'DIFFERS'})"
            )
        )
    if report.get("loadBalancer"):
        lines += load_balancer_lines(report["loadBalancer"])
    for entry in report["conntrack"]:
        o, r = entry["original"], entry["reply"]
        lines.append(
            Text(f"conntrack on {entry['node']}: {o['proto']} {_ends(o)}  reply {_ends(r)}")
        )
    if report["rules"]:
        lines.append(Text(f"rules on {report['node']} ({report['rulesSource']}):"))
        lines += [Text(f"  {r['table']:<7} {r['rule']}") for r in report["rules"]]
    if report["pcaps"]:
        pcaps = report["pcaps"]
        lines.append(Text(f"pcaps: {pcaps['directory']}/ (merged: {pcaps['merged']})"))
    return Group(*lines)


def load_balancer_lines(lb: Mapping[str, Any]) -> list[RenderableType]:
    """The load balancer's hop: health per node, the spread, the choice."""
    health = ", ".join(
        f"{node} healthy" if h["healthy"] else f"{node} unhealthy ({h['reason']})"
        for node, h in lb["nodes"].items()
    )
    spread = ", ".join(lb["spread"]) + (" (fail open: no node healthy)" if lb["failOpen"] else "")
    return [
        Text(
            f"load balancer {lb['ip']} ({lb['ipMode']}) for {lb['service']}: "
            f"checks {lb['healthCheck']}: {health}"
        ),
        Text(f"  new connections go to {spread}; this one to {lb['chosen'] or 'none'}"),
        Text(f"  why: {lb['why']}"),
    ]


def prediction_differences(report: Mapping[str, Any]) -> list[str]:
    """Where the live report (as trace.json holds it) differs from the
    offline prediction it carries: the verdict, the endpoint (the kernel's
    choice must be one the rules allow) and masquerade. Empty: they agree."""
    prediction = report["prediction"]
    if prediction is None:
        return ["the report carries no offline prediction"]
    differences = []
    if prediction["verdict"] != report["verdict"]:
        differences.append(f"verdict {report['verdict']}, predicted {prediction['verdict']}")
    if not set(report["endpoints"]) <= set(prediction["endpoints"]):
        predicted = ", ".join(prediction["endpoints"]) or "none"
        differences.append(f"endpoint {', '.join(report['endpoints'])}, predicted {predicted}")
    if prediction["masquerade"] != report["masquerade"]:
        said = {True: "yes", False: "no"}
        differences.append(
            f"masquerade {said[report['masquerade']]}, predicted {said[prediction['masquerade']]}"
        )
    return differences


def dns_line(dns: Mapping[str, Any]) -> str:
    """`dns: QUESTION → RCODE: RECORDS` (or → what went wrong)."""
    if dns["error"]:
        return f"dns: {dns['question']} → {dns['error']}"
    records = "; ".join(dns["answers"]) or "no records"
    return f"dns: {dns['question']} → {dns['rcode']}: {records}"


def _ends(t: Mapping[str, Any]) -> str:
    if t["proto"] == "icmp":
        return f"{t['src']} → {t['dst']} id {t['sport']}"
    return f"{t['src']}:{t['sport']} → {t['dst']}:{t['dport']}"
