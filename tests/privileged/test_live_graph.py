"""`netemu graph` and `netemu trace --svg` on a live default lab: the
picture comes from the lab's own info file and state, and a traced flow's
capture points are drawn in the highlight colours on it.

One lab for the module, taken down afterwards; the SVGs go to a temporary
directory.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.cli import main
from netemu.lab import LiveLab
from netemu.net.graph import REPLY_COLOR, REQUEST_COLOR

SVG = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot is missing (./setup.sh installs it)"
)


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("graph")) as live:
        yield live


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def elements(path: Path) -> dict[str, ET.Element]:
    """The SVG's groups by id: Graphviz writes each graph object's id there."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return {g.attrib["id"]: g for g in root.iter(f"{SVG}g") if "id" in g.attrib}


def strokes(element: ET.Element) -> set[str]:
    return {e.attrib["stroke"] for e in element.iter() if "stroke" in e.attrib}


def texts(path: Path) -> str:
    return " ".join(t.text or "" for t in ET.parse(path).getroot().iter(f"{SVG}text"))


def hop_id(info: dict[str, Any], hop: dict[str, Any]) -> str:
    """The graph id of a hop's capture point, from the lab's info file."""
    if hop["namespace"] == info["underlay"]:
        return f"switch/{hop['interface']}"
    for kind in ("nodes", "clients", "pods"):
        for name, site in info[kind].items():
            if site["netns"] == hop["namespace"]:
                return f"{kind[:-1]}/{name}/{hop['interface']}"
    raise AssertionError(f"no owner for {hop['namespace']}")


def test_graph_of_a_live_lab(lab: LiveLab, tmp_path: Path) -> None:
    out = tmp_path / "lab.svg"
    result = invoke("graph", "--lab", lab.name, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    info = lab.info()
    found = elements(out)
    text = texts(out)
    for key, pod in info["pods"].items():
        assert f"pod/{key}/eth0" in found
        assert key.split("/", 1)[1] in text and pod["ip"] in text
    for name, node in info["nodes"].items():
        for interface in ("eth0", "cni0", "flannel.1", "stack"):
            assert f"node/{name}/{interface}" in found
        assert node["ip"] in text
    for name in ("web", "web-nodeport", "web-local", "empty"):
        assert f"service/default/{name}" in found
    assert "client/client/eth0" in found and "switch/br0" in found
    assert "tunnel/node-1/node-2" in found
    # No trace, nothing highlighted.
    assert not any(REQUEST_COLOR in strokes(g) for g in found.values())


def test_trace_svg_draws_the_path(lab: LiveLab, tmp_path: Path) -> None:
    out = tmp_path / "trace.svg"
    result = invoke(
        "trace", "--lab", lab.name, "client", "node-1:30080", "--svg", str(out), "--no-pcap",
        "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"graph: {out}"
    report = json.loads(result.stdout)
    assert report["outcome"] == "delivered"
    info = lab.info()
    found = elements(out)
    hops = report["hops"]
    request = {hop_id(info, h) for h in hops if h["leg"] == "request" and h["interface"]}
    reply = {hop_id(info, h) for h in hops if h["leg"] == "reply" and h["interface"]} - request
    assert {"client/client/eth0", "switch/c0-client", "node/node-1/eth0"} <= request
    for ident in request:
        assert REQUEST_COLOR in strokes(found[ident]), ident
    for ident in reply:
        assert REPLY_COLOR in strokes(found[ident]), ident
    # The NodePort's DNAT is noted on node-1, where netfilter took it.
    assert REQUEST_COLOR in strokes(found["node/node-1/stack"])
    assert "node/node-1/netfilter/request" in found
    assert "DNAT → " in texts(out)
    # Every request hop after the first has its numbered edge.
    numbered = [n for n, h in enumerate(hops, start=1) if h["leg"] == "request" and h["interface"]]
    for number in numbered[1:]:
        assert REQUEST_COLOR in strokes(found[f"path/{number}"])
    # The interfaces the flow did not cross stay plain.
    plain = set(found) - request - reply
    for ident in plain:
        if ident.startswith(("pod/", "client/", "switch/")):
            assert REQUEST_COLOR not in strokes(found[ident]), ident
