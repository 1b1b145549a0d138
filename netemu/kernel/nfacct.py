"""nfacct counter objects, which kube-proxy's `-m nfacct` rules need to exist."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable


def ensure(netns: str, names: Iterable[str]) -> None:
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "nfacct", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in names:
        if f"name = {name};" not in listed:
            subprocess.run(
                ["ip", "netns", "exec", netns, "nfacct", "add", name],
                capture_output=True,
                text=True,
                check=True,
            )
