"""Scaling a Deployment in a live lab: once `scale` returns, the rules of
every node already match the new replica set. Scaled up, every new pod
answers through the ClusterIP at once; scaled down, removed pods get no
more traffic while an established connection to the surviving pod (its
conntrack entry carrying the DNAT) keeps working. Removed pods are deleted
gracefully: they stop (their built-in servers at SIGTERM, at once) and are
gone soon after.

The test runs its own controlplane/default lab: it changes the lab.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from live_helpers import (
    CONTROLPLANE,
    SPREAD_REQUESTS,
    Answer,
    answer_of,
    cluster_ip,
    endpoint_ips,
    lab_name,
    running_lab,
    service_port,
)

from netemu.kernel import netns
from netemu.kernel.probe import HttpSession, http_get
from netemu.lab import LiveLab

# After `scale` returns, the checks must be done within this long.
WITHIN = 1.0
# Keep-alive sessions opened to find one on every endpoint: with 5 equally
# likely endpoints, 150 connections miss one with probability < 1e-13.
SESSION_TRIES = 150
REQUEST_TIMEOUT = 0.5
# Removed pods stop at once (SIGTERM stops a built-in server) and are gone by then.
GONE_WITHIN = 5.0


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("scale")) as lab:
        yield lab


def web_pods(lab: LiveLab) -> dict[str, dict[str, str]]:
    """Running web pods by name, from the lab's info file."""
    return {
        key.split("/", 1)[1]: pod
        for key, pod in lab.info()["pods"].items()
        if key.startswith("default/web-")
    }


def staying_pods(lab: LiveLab) -> dict[str, dict[str, str]]:
    """The running web pods that are not being deleted."""
    return {name: pod for name, pod in web_pods(lab).items() if not pod.get("terminating")}


def spread(source: str, vip: str, port: int, want: set[str], deadline: float) -> list[Answer]:
    """At least SPREAD_REQUESTS requests, and on until every pod in `want`
    has answered (or the deadline passes); every request must be answered."""
    got: list[Answer] = []
    while len(got) < SPREAD_REQUESTS or (
        {a.pod for a in got} < want and time.monotonic() < deadline
    ):
        result = http_get(source, vip, port, timeout=REQUEST_TIMEOUT)
        got.append(answer_of(result, f"request {len(got) + 1} to {vip}:{port}"))
    return got


def test_scale_up_then_down(lab: LiveLab) -> None:
    state = lab.state()
    vip, port = cluster_ip(state, "web"), int(service_port(state, "web", "tcp")["port"])
    source = lab.info()["nodes"]["node-1"]["netns"]
    assert len(web_pods(lab)) == 3

    # -- up to 5: every pod answers through the ClusterIP at once ------------
    lab.scale("Deployment", "default", "web", 5)
    scaled_up = time.monotonic()
    pods = web_pods(lab)
    assert len(pods) == 5, f"scaled to 5, the lab runs {sorted(pods)}"
    got = spread(source, vip, port, set(pods), scaled_up + WITHIN)
    answered = {a.pod for a in got}
    took = time.monotonic() - scaled_up
    assert answered == set(pods), (
        f"{len(got)} requests through {vip}:{port} after scaling to 5 were answered by "
        f"{sorted(answered)}, expected all of {sorted(pods)}"
    )
    assert {a.pod_ip for a in got} == {p["ip"] for p in pods.values()}
    assert took < WITHIN, f"all 5 pods answered only {took:.2f} s after scale returned"
    assert endpoint_ips(lab.state(), "web") == {p["ip"] for p in pods.values()}

    # -- keep-alive connections through the ClusterIP, one on each pod -------
    sessions: dict[str, tuple[HttpSession, Answer]] = {}
    try:
        for _ in range(SESSION_TRIES):
            if len(sessions) == len(pods):
                break
            session = HttpSession(source, vip, port, timeout=REQUEST_TIMEOUT)
            answer = answer_of(session.get("/"), f"keep-alive session to {vip}:{port}")
            if answer.pod in sessions:
                session.close()
            else:
                sessions[answer.pod] = (session, answer)
        assert set(sessions) == set(pods), (
            f"{SESSION_TRIES} connections to {vip}:{port} reached only {sorted(sessions)}"
        )

        # -- down to 1 ---------------------------------------------------------
        lab.scale("Deployment", "default", "web", 1)
        scaled_down = time.monotonic()
        survivors = staying_pods(lab)
        assert len(survivors) == 1, f"scaled to 1, the lab runs {sorted(survivors)}"
        (survivor,) = survivors
        removed = set(pods) - {survivor}
        assert len(removed) == 4

        # The established connection to the survivor still works, on the
        # same connection (same client port) and to the same pod.
        kept, first = sessions[survivor]
        again = answer_of(kept.get("/"), f"established session to {survivor} after scaling to 1")
        assert again.pod == survivor
        assert again.local == first.local

        # New connections only reach the survivor.
        got = spread(source, vip, port, {survivor}, scaled_down + WITHIN)
        took = time.monotonic() - scaled_down
        stray = {a.pod for a in got} - {survivor}
        assert not stray, f"removed pods {sorted(stray)} still received new connections"
        assert took < WITHIN, f"the checks after scaling to 1 took {took:.2f} s"

        # Connections made to removed pods are not answered any more (the
        # client sees them closed or, when the close never reached it, no
        # answer: REQUEST_TIMEOUT each, so checked after the timed part).
        for pod in sorted(removed):
            result = sessions[pod][0].get("/")
            assert result.outcome != "answered", (
                f"{pod} was removed but still answered on an established connection: {result.reply}"
            )
    finally:
        for session, _ in sessions.values():
            session.close()

    # Their kubelets remove them once stopped (CNI DEL last).
    deadline = time.monotonic() + GONE_WITHIN
    for pod in removed:
        ns = pods[pod]["netns"]
        while netns.exists(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not netns.exists(ns), f"removed pod {pod}'s namespace {ns} is still there"
    assert endpoint_ips(lab.state(), "web") == {survivors[survivor]["ip"]}
