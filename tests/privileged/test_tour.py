"""The guided tour (docs/tour.md) still runs: every step's command exits 0
in a live default lab and shows what the prose says it shows (each step's
`expect` patterns), and the lab is gone afterwards."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from live_helpers import REPO, lab_name, lab_prefix

from netemu.kernel import netns
from netemu.lab import running_labs
from netemu.tour import run_tour


def test_every_step_of_the_tour_runs_and_shows_what_it_says() -> None:
    name = lab_name("tour")
    try:
        page = run_tour(name)
    finally:
        # The tour's trace writes pcaps where a user's would go.
        shutil.rmtree(REPO / "captures" / name, ignore_errors=True)
        for leftover in ("trace.txt", "lab.svg", "trace.svg"):
            Path(f"/tmp/{name}-{leftover}").unlink(missing_ok=True)
    titles = re.findall(r"^## \d+\. (.+)$", page, flags=re.MULTILINE)
    assert titles[0] == "Bring the lab up" and titles[-1] == "Take it down"
    for concept in (
        "Services and the ClusterIP",
        "Finding a Service by name: cluster DNS",
        "kube-proxy's chains",
        "Load balancing across endpoints",
        "NodePort and the SNAT it causes",
        "externalTrafficPolicy Local and the preserved client IP",
        "The overlay and its encapsulation",
        "The lab as a picture",
        "Opening the trace's pcaps",
        "Scaling and watching the rules change",
    ):
        assert concept in titles
    assert page.count("```") % 2 == 0 and f"lab {name} is down" in page
    assert name not in running_labs()
    assert not [n for n in netns.list_names() if n.startswith(lab_prefix(name))]
