"""A trace's outcome never contradicts its own evidence: a flow answered by
ICMP port-unreachable or a RST is `refused`, never `delivered`.

Recorded from a live default lab (netemu.trace.live, as
recorded-nodeport-vxlan.json, see test_trace_report) with a NodePort
Service whose selector matches nothing (`default/empty-np`, nodePort
30099) added:
- recorded-refused-nodeport.json: client → node-1:30099; kube-proxy's
  REJECT rule in KUBE-EXTERNAL-SERVICES answers port-unreachable;
- recorded-tcp-no-listener.json: client → node-1 192.168.56.11:9999/tcp,
  where nothing listens: node-1's kernel answers the SYN with a RST;
- recorded-udp-no-listener.json: the same with UDP: port-unreachable;
- recorded-dropped-by-nft.json: client → node-1:30080 with an nftables
  table of its own on node-1 (`outcomescheck`, not kube-proxy's) dropping
  the SYN at prerouting priority -300: no answer at all.

No kernel needed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from netemu.api.core import EndpointSlice, Node, Pod, Service
from netemu.controlplane.state import ClusterState
from netemu.kernel.capture import Frame
from netemu.trace.ctevents import parse_events
from netemu.trace.flow import resolve_flow
from netemu.trace.nftrace import parse_trace
from netemu.trace.render import prediction_differences
from netemu.trace.report import REQUEST, Answer, Evidence, TraceReport, build_report
from netemu.trace.topology import Topology

DATA = Path(__file__).parent / "data" / "trace"


@cache
def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"recorded-{name}.json").read_text())
    return data


def traced(name: str, with_rule_trace: bool = True) -> TraceReport:
    data = recorded(name)
    raw = data["state"]
    state = ClusterState(
        nodes=tuple(Node.model_validate(o) for o in raw["nodes"]),
        services=tuple(Service.model_validate(o) for o in raw["services"]),
        pods=tuple(Pod.model_validate(o) for o in raw["pods"]),
        endpoint_slices=tuple(EndpointSlice.model_validate(o) for o in raw["endpointslices"]),
    )
    topology = Topology.from_info(data["info"])
    flow = resolve_flow(state, topology, data["from"], data["to"], data["port"], data["proto"])
    evidence = Evidence(
        sport=data["sport"],
        frames=[
            Frame(
                f["netns"], f["interface"], f["direction"], f["timestamp"], bytes.fromhex(f["data"])
            )
            for f in data["frames"]
        ],
        traces={
            node: parse_trace(text) for node, text in data["traces"].items() if with_rule_trace
        },
        conntrack={node: parse_events(text) for node, text in data["conntrack"].items()},
    )
    answer = Answer(outcome=data["answer"]["outcome"], reply=data["answer"]["reply"])
    return build_report("t-1", flow, topology, evidence, answer)


def test_a_nodeport_without_endpoints_is_refused_by_the_reject_rule() -> None:
    report = traced("refused-nodeport")
    assert report.answer.outcome == "refused"
    assert (report.outcome, report.verdict) == ("refused", "REJECT")
    assert report.delivered_to is None and report.endpoints == []
    # The SYN went no further than the rule: no request hop delivers it.
    request = [h for h in report.hops if h.leg == REQUEST]
    assert "Delivered" not in [h.action for h in request]
    rejected = request[-1]
    assert (rejected.action, rejected.node, rejected.component) == (
        "Rejected",
        "node-1",
        "netfilter",
    )
    assert rejected.rule is not None and rejected.rule in report.rules
    assert (rejected.rule.table, rejected.rule.chain, rejected.rule.target) == (
        "filter",
        "KUBE-EXTERNAL-SERVICES",
        "REJECT",
    )
    assert "default/empty-np:http has no endpoints" in rejected.rule.rule
    assert "port-unreachable" in rejected.detail
    summary = report.summary()
    assert "rejected on node-1 by filter KUBE-EXTERNAL-SERVICES" in summary
    assert "(default/empty-np:http has no endpoints)" in summary
    assert summary.endswith("⇒ refused") and "delivered" not in summary


def test_a_refused_nodeport_agrees_with_the_prediction() -> None:
    data = traced("refused-nodeport").to_dict()
    data["prediction"] = {"verdict": "REJECT", "endpoints": [], "masquerade": False}
    assert prediction_differences(data) == []
    assert (data["outcome"], data["verdict"]) == ("refused", "REJECT")


def test_a_tcp_port_without_listener_is_refused_by_the_destination() -> None:
    report = traced("tcp-no-listener")
    assert report.answer.outcome == "refused"
    assert report.outcome == "refused"
    # No rule refused it: it reached node-1, whose kernel sent the RST.
    assert report.verdict == "NONE"
    assert report.delivered_to == "node node-1"
    assert all(h.action != "Rejected" for h in report.hops)
    first_reply = next(h for h in report.hops if h.leg != REQUEST)
    assert first_reply.packet.tcp_flags is not None and "R" in first_reply.packet.tcp_flags
    assert report.summary().endswith("⇒ refused by node node-1 (nothing listens)")


def test_a_udp_port_without_listener_is_refused_by_the_destination() -> None:
    report = traced("udp-no-listener")
    assert report.answer.outcome == "refused"
    assert (report.outcome, report.verdict, report.delivered_to) == (
        "refused",
        "NONE",
        "node node-1",
    )
    first_reply = next(h for h in report.hops if h.leg != REQUEST)
    assert first_reply.packet.icmp_name == "port-unreachable"


def test_a_syn_dropped_by_a_rule_outside_kube_proxys_tables_is_dropped() -> None:
    report = traced("dropped-by-nft")
    assert report.answer.outcome == "timeout"
    assert (report.outcome, report.verdict, report.delivered_to) == ("dropped", "DROP", None)
    dropped = report.hops[-1]
    assert dropped.action == "Dropped" and dropped.rule is not None
    assert (dropped.rule.table, dropped.rule.chain, dropped.rule.target) == (
        "outcomescheck",
        "pre",
        "DROP",
    )


def test_a_syn_nothing_answered_is_not_delivered_even_without_a_traced_rule() -> None:
    """The SYN was captured arriving on node-1, which owns the address, but
    a SYN that reached a stack is answered (SYN-ACK or RST): with no answer
    and no rule to name, it was still stopped there, not delivered."""
    report = traced("dropped-by-nft", with_rule_trace=False)
    assert (report.outcome, report.verdict, report.delivered_to) == ("dropped", "DROP", None)
    assert "Delivered" not in [h.action for h in report.hops]
    dropped = report.hops[-1]
    assert (dropped.action, dropped.node, dropped.rule) == ("Dropped", "node-1", None)
    assert dropped.detail == "no traced rule dropped it, and no answer came back"


def live_report(**changes: Any) -> dict[str, Any]:
    data = traced("refused-nodeport").to_dict()
    data.update(
        {
            "verdict": "DNAT",
            "endpoints": ["10.244.1.2:8080"],
            "masquerade": True,
            "prediction": {
                "verdict": "DNAT",
                "endpoints": ["10.244.0.3:8080", "10.244.1.2:8080"],
                "masquerade": True,
            },
        }
    )
    data.update(changes)
    return data


def test_prediction_differences_names_what_differs() -> None:
    assert prediction_differences(live_report()) == []
    assert prediction_differences(live_report(verdict="REJECT", endpoints=[])) == [
        "verdict REJECT, predicted DNAT"
    ]
    assert prediction_differences(live_report(endpoints=["10.244.9.9:8080"])) == [
        "endpoint 10.244.9.9:8080, predicted 10.244.0.3:8080, 10.244.1.2:8080"
    ]
    assert prediction_differences(live_report(masquerade=False)) == ["masquerade no, predicted yes"]
    assert prediction_differences(live_report(prediction=None)) == [
        "the report carries no offline prediction"
    ]


def test_check_is_for_live_traces() -> None:
    from click.testing import CliRunner

    from netemu.cli import main

    default = str(Path(__file__).parents[2] / "controlplane" / "default")
    result = CliRunner().invoke(
        main, ["trace", "--offline", "--check", "-f", default, "client", "node-1:30080"]
    )
    assert result.exit_code == 2
    assert "--check compares a live trace with the offline prediction" in result.stderr
