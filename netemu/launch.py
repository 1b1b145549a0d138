"""Starting a lab's supervisor (netemu.supervisor) before its lab is known.

`netemu up` starts the supervisor process first thing, so that its imports
(pyroute2, aiohttp, the API models: about half a second) run on another CPU
while the command itself imports and validates the manifests. The process
then waits for its orders on stdin: one JSON line naming the lab and its
manifest paths (`send_orders`, once the lab's journal is open), or the end
of input (`call_off`), on which it exits having created nothing.

Light on purpose: the CLI imports this before anything heavy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def start_supervisor() -> subprocess.Popen[bytes]:
    """A supervisor process, importing while it waits for its orders."""
    return subprocess.Popen(
        [sys.executable, "-m", "netemu.supervisor"],
        stdin=subprocess.PIPE,
        # Until it has orders it has no lab and no log: should it fail to
        # start, the error shows on the caller's stderr. With its orders it
        # writes to the lab's log instead.
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # survives the CLI; `netemu down` ends it
    )


def send_orders(
    proc: subprocess.Popen[bytes],
    lab: str,
    paths: Sequence[str],
    create_namespaces: bool = False,
) -> None:
    """Tell a waiting supervisor to bring up `lab` from `paths`."""
    assert proc.stdin is not None
    orders = {"lab": lab, "paths": list(paths), "createNamespaces": create_namespaces}
    proc.stdin.write(json.dumps(orders).encode() + b"\n")
    proc.stdin.close()


def call_off(proc: subprocess.Popen[bytes]) -> None:
    """Send a waiting supervisor away: it exits without creating anything."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()


@contextmanager
def supervisor_ahead() -> Iterator[subprocess.Popen[bytes]]:
    """A supervisor started now, for the body to give its orders; called off
    if the body ends without (bad input, an error, Ctrl-C)."""
    proc = start_supervisor()
    try:
        yield proc
    finally:
        call_off(proc)  # nothing once it has its orders
