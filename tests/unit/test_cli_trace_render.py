"""A live trace's text comes from the report as JSON (the supervisor runs
the trace and sends trace.json's content): netemu.cli_trace.render_report
makes of it exactly the text netemu.trace.render makes of the report
object, for the recorded trace and for variants that reach every branch
(a prediction that differs, pcaps, a hop without rule or translation,
an ICMP flow's conntrack entry, a DNS answer, a DNS query unanswered), at a
wide and a narrow terminal width."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType
from test_trace_report import report

from netemu.trace.render import render
from netemu.trace.report import TraceReport


def text(renderable: RenderableType, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, highlight=False).print(renderable)
    return out.getvalue()


def variants() -> list[TraceReport]:
    recorded = report()
    plain = report()
    plain.prediction = {"verdict": "DROP", "endpoints": [], "masquerade": False}
    plain.pcaps = {"directory": "captures/lab/t-1", "merged": "captures/lab/t-1/merged.pcapng"}
    plain.hops = [replace(h, rule=None, translated=None, tunnel=None) for h in plain.hops]
    plain.rules = []
    plain.endpoints = []
    plain.conntrack = [
        {
            "node": "node-1",
            "original": {"proto": "icmp", "src": "a", "dst": "b", "sport": 7, "dport": None},
            "reply": {"proto": "icmp", "src": "b", "dst": "a", "sport": 7, "dport": None},
        }
    ]
    dns = report()
    dns.answer = replace(
        dns.answer,
        dns={
            "question": "web.default.svc.cluster.local. IN A",
            "rcode": "NOERROR",
            "answers": ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"],
            "error": None,
        },
    )
    failed = report()
    failed.answer = replace(
        failed.answer,
        dns={
            "question": "dns-version.cluster.local. IN TXT",
            "rcode": None,
            "answers": [],
            "error": "no answer",
        },
    )
    return [recorded, plain, dns, failed]


EXPECTED = Path(__file__).parent / "data" / "trace_render"
NAMES = ["recorded", "plain", "dns", "dns-failed"]


@pytest.mark.parametrize("width", [10_000, 100])
@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_the_json_report_renders_as_recorded(index: int, width: int) -> None:
    traced = variants()[index]
    assert traced.hops and any(h.rule for h in variants()[0].hops)
    as_json: dict[str, Any] = json.loads(json.dumps(traced.to_dict()))
    shown = text(render(as_json), width)
    assert shown == (EXPECTED / f"{NAMES[index]}-{width}.txt").read_text()
    if traced.answer.dns is not None:
        line = "dns: web.default.svc.cluster.local. IN A → NOERROR: web.default.svc.cluster.local."
        wanted = (
            line if traced.answer.dns["rcode"] else "dns: dns-version.cluster.local. IN TXT → no"
        )
        assert wanted in text(render(as_json), 10_000)
