"""Trace one TCP flow in the default lab: client → node-1's NodePort 30080.

Run (as root):  .venv/bin/python benchmarks/trace.py [--write]
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only
that). The lab is brought up once (and down at the end); every kind is
measured ROUNDS times, the kinds interleaved in every round, and the table
gives wall-clock medians, so compare them only within one run.

- "library, pcaps": `LiveLab.trace()` with pcaps and trace.json written.
- "library, no pcaps": the same with pcap=False.
- "CLI": `netemu trace --lab LAB client node-1:30080` (Python start-up and
  text rendering included), pcaps written.
- "request only": the same HTTP request with `netemu.kernel.probe.http_get`,
  no tracing: what the flow itself costs.
Target: a traced TCP flow in ≤ 2 s wall, pcaps included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from results import ROOT, commit, machine, replace_section

from netemu.kernel.probe import http_get
from netemu.lab import LiveLab, down, up

SECTION = "## trace (benchmarks/trace.py)"
NETEMU_CLI = Path(sys.executable).with_name("netemu")
LAB = "nebench-trace"
ROUNDS = 7
FROM, TO = "client", "node-1:30080"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    commit()
    lab = up([str(ROOT / "controlplane" / "default")], LAB)
    try:
        info = lab.info()
        client = info["clients"]["client"]["netns"]
        node_ip = info["nodes"]["node-1"]["ip"]
        with tempfile.TemporaryDirectory() as tmp:
            captures = Path(tmp)
            kinds: dict[str, Callable[[], object]] = {
                "library, pcaps": lambda: checked(lab, captures, pcap=True),
                "library, no pcaps": lambda: checked(lab, captures, pcap=False),
                "CLI": lambda: subprocess.run(
                    [str(NETEMU_CLI), "trace", "--lab", LAB, FROM, TO, "--captures", tmp],
                    check=True,
                    capture_output=True,
                ),
                "request only": lambda: http_get(client, node_ip, 30080),
            }
            for action in kinds.values():
                action()  # warm up: imports, first ARP
            times: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(ROUNDS):
                for kind, action in kinds.items():
                    times[kind].append(timed(action))
    finally:
        down(LAB)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    base = medians["request only"]
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/trace.py --write`; {machine()}.",
        f"One TCP flow, external client → node-1:30080 in controlplane/default; seconds, "
        f"median of {ROUNDS} interleaved rounds. Target: ≤ 2 s wall with pcaps.",
        "",
        "| kind | seconds | × request only | rounds |",
        "|---|---|---|---|",
    ]
    for kind, values in times.items():
        rounds = ", ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {kind} | {medians[kind]:.3f} | {medians[kind] / base:.0f} | {rounds} |")
    print("\n".join(lines))
    if args.write:
        replace_section(SECTION, lines)


def checked(lab: LiveLab, captures: Path, pcap: bool) -> None:
    report = lab.trace(FROM, TO, captures=captures, pcap=pcap)
    if report.outcome != "delivered":
        raise SystemExit(f"benchmark flow was not delivered: {report.summary()}")


if __name__ == "__main__":
    main()
