"""A live lab under malformed `netemu apply` (issue 15's acceptance, live part).

controlplane/default is up once for the module. Over a hundred generated
bad inputs (tests/fuzzcases.py: mutants of the lab's own web.yaml, hostile
files, a FIFO, /dev/zero; not huge replica counts, see fuzzcases._safe_live)
go through `netemu apply --lab LAB -f FILE`, in-process in one worker.
Each must be refused without a traceback or a hang, exit 2 with file:line;
the lab's supervisor must answer after each (else the rest are reported as
not run), and afterwards the lab must be exactly as before (same objects,
same specs, same namespaces) and still serve its NodePort to the external
client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzzcases import PEAK_RSS_MB, live_cases, report, run_cases
from live_helpers import CONTROLPLANE, answers, lab_name, lab_prefix, running_lab

from netemu.kernel import netns
from netemu.lab import LiveLab

MINIMUM_LIVE_CASES = 100
NODE_IP = "192.168.56.11"
NODEPORT = 30080
STABLE_WITHIN = 15.0  # seconds for a fresh lab's state to stop changing
STATE_WITHIN = 10.0  # seconds the lab has to answer a state request


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("fuzz")) as live:
        yield live


def snapshot(lab: LiveLab) -> dict[str, Any]:
    """What an apply could change: every object's identity and spec, each
    pod's phase and IP, and the lab's namespaces."""
    objects: dict[str, Any] = {}
    # A bounded wait: a lab wedged by a bad apply must fail the test, not stall it.
    state: dict[str, list[dict[str, Any]]] = lab.request("state", timeout=STATE_WITHIN)["state"]
    for kind, items in state.items():
        for item in items:
            meta = item.get("metadata", {})
            key = f"{kind}/{meta.get('namespace', '')}/{meta.get('name')}"
            status = item.get("status") or {}
            objects[key] = {
                "uid": meta.get("uid"),
                "spec": json.dumps(item.get("spec"), sort_keys=True),
                "endpoints": json.dumps(item.get("endpoints"), sort_keys=True),
                "phase": status.get("phase"),
                "podIP": status.get("podIP"),
            }
    prefix = lab_prefix(lab.name)
    namespaces = sorted(n for n in netns.list_names() if n.startswith(prefix))
    return {"objects": objects, "namespaces": namespaces}


def settled(lab: LiveLab) -> dict[str, Any]:
    """The lab's snapshot once two taken half a second apart agree."""
    deadline = time.monotonic() + STABLE_WITHIN
    before = snapshot(lab)
    while True:
        time.sleep(0.5)
        now = snapshot(lab)
        if now == before:
            return now
        assert time.monotonic() < deadline, "the fresh lab's state never settled"
        before = now


def test_bad_applies_are_refused_and_leave_the_lab_as_it_was(lab: LiveLab, tmp_path: Path) -> None:
    before = settled(lab)
    cases = live_cases(tmp_path / "cases", lab.name)
    assert len(cases) >= MINIMUM_LIVE_CASES, len(cases)
    results = run_cases(cases, tmp_path)

    # Every verdict is gathered before asserting: one run shows them all.
    problems = report(cases, results)
    peak = max(r.rss_mb for r in results)
    if peak >= PEAK_RSS_MB:
        problems.append(f"peak RSS {peak:.0f} MB")

    if any(r.extra.get("lab_answers") is False for r in results):
        # Its state cannot be read; the wedge is already among the problems.
        raise AssertionError(f"{len(cases)} applies:\n" + "\n".join(problems))

    after = snapshot(lab)
    changed = sorted(
        key
        for key in before["objects"].keys() | after["objects"].keys()
        if before["objects"].get(key) != after["objects"].get(key)
    )
    if changed:
        problems.append(f"refused applies changed the lab: {changed}")
    if after["namespaces"] != before["namespaces"]:
        added = sorted(set(after["namespaces"]) - set(before["namespaces"]))
        gone = sorted(set(before["namespaces"]) - set(after["namespaces"]))
        problems.append(f"the lab's namespaces changed: added {added}, gone {gone}")

    client = lab.info()["clients"]["client"]["netns"]
    try:
        served = answers(client, NODE_IP, NODEPORT, count=6)
    except AssertionError as exc:
        problems.append(f"the lab no longer serves {NODE_IP}:{NODEPORT}: {exc}")
    else:
        pods = {key.rsplit("/", 1)[1] for key in after["objects"] if key.startswith("pods/")}
        strangers = sorted({a.pod for a in served} - pods)
        if strangers:
            problems.append(f"{NODE_IP}:{NODEPORT} answered from unknown pods {strangers}")
    assert not problems, f"{len(cases)} applies:\n" + "\n".join(problems)
