"""The kubelet's probe and restart state machine (netemu.node.probes) on a
fake clock: defaults, thresholds, initial delay, startup gating, the
readiness trigger after a status sync, liveness restarts and the
crash-loop back-off, each as pkg/kubelet/prober and kuberuntime do it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from netemu.api.core import Probe
from netemu.node.probes import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    Backoff,
    ContainerLife,
    ExecHandler,
    HttpHandler,
    Kill,
    Kind,
    ProbeSpec,
    Result,
    TcpHandler,
    probes_of,
)

S, F = Result.SUCCESS, Result.FAILURE
STEP = 0.05  # the fake clock's resolution


def spec(
    period: int = 1,
    failure: int = 2,
    success: int = 1,
    delay: int = 0,
) -> ProbeSpec:
    return ProbeSpec(
        handler=HttpHandler(port=8080, path="/readyz"),
        initial_delay=delay,
        period=period,
        success_threshold=success,
        failure_threshold=failure,
    )


Outcomes = Callable[[Kind, float], Result]


class Run:
    """A container driven on a fake clock: probes answer from `outcomes`,
    status syncs happen whenever readiness or started changes (as the
    prober writes the pod's status then), kills restart as the prober does."""

    def __init__(self, life: ContainerLife, outcomes: Outcomes, start: float = 0.0) -> None:
        self.life = life
        self.outcomes = outcomes
        self.now = start
        self.probed: list[tuple[float, Kind, Result]] = []
        self.kills: list[tuple[float, Kill]] = []
        self.starts: list[float] = []
        self.shown = (life.ready, life.started, life.running)
        life.status_synced()

    def until(self, end: float, wall: float = 1_000_000.0) -> Run:
        while self.now <= end + 1e-9:
            life = self.life
            for kind in life.due(self.now):
                outcome = self.outcomes(kind, self.now)
                self.probed.append((round(self.now, 2), kind, outcome))
                kill = life.record(kind, life.instance, outcome)
                if kill is not None:
                    self.kills.append((round(self.now, 2), kill))
                    life.killed(self.now, wall + self.now, 143, kill.message)
            if life.restart_due(self.now):
                life.start(self.now, wall + self.now)
                self.starts.append(round(self.now, 2))
            shown = (life.ready, life.started, life.running)
            if shown != self.shown:
                self.shown = shown
                life.status_synced()
                continue  # a sync may trigger a probe at this same instant
            self.now = round(self.now + STEP, 6)
        return self

    def times(self, kind: Kind) -> list[float]:
        return [t for t, k, _ in self.probed if k == kind]


def always(result: Result) -> Outcomes:
    return lambda kind, now: result


def life_with(
    startup: ProbeSpec | None = None,
    liveness: ProbeSpec | None = None,
    readiness: ProbeSpec | None = None,
) -> ContainerLife:
    given: dict[Kind, ProbeSpec | None] = {
        "startup": startup,
        "liveness": liveness,
        "readiness": readiness,
    }
    probes = {kind: probe for kind, probe in given.items() if probe is not None}
    return ContainerLife("web", probes, now=0.0, wall=1_000_000.0)


# ---------------------------------------------------------------- specs


def test_probe_defaults_are_the_api_servers() -> None:
    probe = Probe.model_validate({"httpGet": {"port": "http"}})
    got = ProbeSpec.from_api(probe)
    assert got == ProbeSpec(
        handler=HttpHandler(port="http", path="/", host=None, scheme="HTTP"),
        initial_delay=0,
        timeout=1,
        period=10,
        success_threshold=1,
        failure_threshold=3,
    )
    # Zero is "unset" too (SetDefaults_Probe).
    zero = Probe.model_validate(
        {
            "tcpSocket": {"port": 5432},
            "periodSeconds": 0,
            "timeoutSeconds": 0,
            "successThreshold": 0,
            "failureThreshold": 0,
        }
    )
    assert ProbeSpec.from_api(zero) == ProbeSpec(handler=TcpHandler(port=5432))
    exec_probe = Probe.model_validate({"exec": {"command": ["cat", "/tmp/ok"]}, "periodSeconds": 2})
    assert ProbeSpec.from_api(exec_probe).handler == ExecHandler(("cat", "/tmp/ok"))
    assert probes_of(probe, None, exec_probe).keys() == {"liveness", "startup"}


def test_describe_is_kubectls() -> None:
    assert spec().describe() == (
        "http-get http://:8080/readyz delay=0s timeout=1s period=1s #success=1 #failure=2"
    )


# ---------------------------------------------------------------- readiness


def test_readiness_starts_as_failure_and_is_probed_at_once() -> None:
    life = life_with(readiness=spec(period=10))
    assert life.running and life.started and not life.ready
    run = Run(life, always(S)).until(0.0)
    # The status sync at start triggers the first readiness probe at once,
    # not one period later.
    assert run.times("readiness") == [0.0]
    assert life.ready


def test_a_container_without_probes_is_ready_at_once() -> None:
    life = life_with()
    assert life.ready and life.started
    assert life.due(100.0) == []


def test_readiness_failure_threshold() -> None:
    failing_from = 2.5
    run = Run(
        life_with(readiness=spec(period=1, failure=3)),
        lambda kind, now: F if now >= failing_from else S,
    )
    run.until(4.9)
    assert run.life.ready, "two failures in a row are below failureThreshold 3"
    run.until(5.0)
    assert not run.life.ready
    # Failures at 3, 4, 5: the third one (5.0) crosses the threshold, and
    # the status sync that follows probes once more at once.
    assert [t for t, _, r in run.probed if r == F] == [3.0, 4.0, 5.0, 5.0]


def test_a_success_between_failures_resets_the_count() -> None:
    results = {1.0: F, 2.0: S, 3.0: F, 4.0: F}
    run = Run(life_with(readiness=spec(period=1, failure=2)), lambda kind, now: results.get(now, S))
    run.until(3.5)
    assert run.life.ready
    run.until(4.0)
    assert not run.life.ready


def test_readiness_success_threshold() -> None:
    run = Run(life_with(readiness=spec(period=1, success=3)), always(S))
    run.until(1.9)
    assert not run.life.ready, "two successes are below successThreshold 3"
    run.until(2.0)
    assert run.life.ready
    assert run.times("readiness") == [0.0, 1.0, 2.0]


def test_readiness_returns_after_successes_again() -> None:
    run = Run(
        life_with(readiness=spec(period=1, failure=2, success=2)),
        lambda kind, now: F if 1 <= now < 3 else S,
    )
    run.until(2.0)
    assert not run.life.ready
    run.until(3.9)
    assert not run.life.ready
    run.until(4.0)
    assert run.life.ready


def test_initial_delay() -> None:
    run = Run(life_with(readiness=spec(period=2, delay=5)), always(S)).until(8.0)
    # Ticks at 2, 4, 6, 8; those before the delay (and the trigger at 0) are skipped.
    assert run.times("readiness") == [6.0, 8.0]


def test_ticks_missed_by_a_slow_probe_collapse_into_one() -> None:
    life = life_with(liveness=spec(period=1))
    assert life.due(1.0) == ["liveness"]
    assert life.due(2.0) == [], "still in flight"
    assert life.due(3.4) == []
    life.record("liveness", life.instance, S)
    # Go's ticker keeps one tick: the next probe starts as soon as the slow
    # one ended, and the one after on the ticker's own phase.
    assert life.due(3.5) == ["liveness"]
    life.record("liveness", life.instance, S)
    assert life.due(3.9) == []
    assert life.due(4.0) == ["liveness"]


def test_outcomes_of_an_earlier_instance_or_unknown_are_thrown_away() -> None:
    life = life_with(liveness=spec(period=1, failure=1))
    assert life.due(1.0) == ["liveness"]
    assert life.record("liveness", life.instance, Result.UNKNOWN) is None
    assert life.due(2.0) == ["liveness"]
    life.killed(2.1, 0.0, 143)
    life.start(2.1, 0.0)
    assert life.record("liveness", life.instance - 1, F) is None
    assert life.workers["liveness"].result == S


# ---------------------------------------------------------------- liveness


def test_liveness_failure_kills_and_restarts_the_container() -> None:
    run = Run(
        life_with(liveness=spec(period=1, failure=2), readiness=spec(period=1)),
        lambda kind, now: F if kind == "liveness" and now < 2.5 else S,
    )
    run.until(1.9)
    assert run.kills == [] and run.life.restart_count == 0
    run.until(2.0)
    assert [t for t, _ in run.kills] == [2.0]
    assert run.kills[0][1].message == "Container web failed liveness probe, will be restarted"
    # The first restart is immediate.
    assert run.starts == [2.0]
    assert run.life.restart_count == 1
    assert run.life.last_exit is not None and run.life.last_exit.exit_code == 143
    assert run.life.last_exit.reason == "Error"
    # The new instance is ready again once its readiness probe passes: at
    # once, by the status sync's trigger.
    assert run.life.ready
    run.until(6.0)
    assert run.life.restart_count == 1


def test_liveness_is_on_hold_until_the_new_instance() -> None:
    life = life_with(liveness=spec(period=1, failure=1))
    assert life.due(1.0) == ["liveness"]
    assert life.record("liveness", life.instance, F) is not None
    # Not restarted yet (say, back-off): no liveness probe meanwhile.
    assert life.due(2.0) == []
    life.killed(2.0, 0.0, 143)
    life.start(2.0, 0.0)
    assert life.due(3.0) == ["liveness"]


def test_restart_policy_never_does_not_restart() -> None:
    life = ContainerLife("web", {"liveness": spec(failure=1)}, 0.0, 0.0, restart_policy="Never")
    assert life.due(1.0) == ["liveness"]
    kill = life.record("liveness", life.instance, F)
    assert kill is not None and kill.message.endswith("will not be restarted")
    life.killed(1.0, 0.0, 143)
    assert not life.restart_due(100.0)
    assert not life.running and not life.ready and not life.waiting


def test_exited_container_restarts_per_policy() -> None:
    always_ = ContainerLife("c", {}, 0.0, 0.0, "Always")
    always_.exited(1.0, 1.0, 0)
    assert always_.restart_due(1.0)
    on_failure = ContainerLife("c", {}, 0.0, 0.0, "OnFailure")
    on_failure.exited(1.0, 1.0, 0)
    assert not on_failure.restart_due(100.0)
    on_failure.start(0.0, 0.0)
    on_failure.exited(2.0, 2.0, 1)
    assert on_failure.restart_due(2.0)


def test_crash_loop_backoff_after_repeated_liveness_failures() -> None:
    run = Run(
        life_with(liveness=spec(period=1, failure=2)),
        lambda kind, now: F,
    )
    run.until(60.0)
    # Kills at 2 (restart at once), 4 (at once: the back-off starts), 6
    # (the instance before it ended 2 s ago, within 10 s: wait until 16),
    # then 18 (wait 20 s, until 38), 40 (wait 40 s, until 80).
    assert [t for t, _ in run.kills] == [2.0, 4.0, 6.0, 18.0, 40.0]
    assert run.starts == [2.0, 4.0, 16.0, 38.0]
    assert run.life.waiting
    assert run.life.backoff_delay() == 40.0
    assert run.life.restart_count == 4


def test_backoff_doubles_to_a_maximum_and_is_forgotten() -> None:
    backoff = Backoff()
    assert not backoff.in_backoff_since(0.0, 1.0)
    backoff.next(0.0, 0.0)
    assert backoff.delay == BACKOFF_INITIAL
    assert backoff.in_backoff_since(0.0, 9.9)
    assert not backoff.in_backoff_since(0.0, 10.0)
    for _ in range(10):
        backoff.next(1.0, 1.0)
    assert backoff.delay == BACKOFF_MAX
    # An exit more than twice the maximum after the last update starts over.
    later = 1.0 + 2 * BACKOFF_MAX + 1
    assert not backoff.in_backoff_since(later, later)
    backoff.next(later, later)
    assert backoff.delay == BACKOFF_INITIAL


# ---------------------------------------------------------------- startup


def test_startup_probe_gates_liveness_and_readiness() -> None:
    started_at = 3.5
    run = Run(
        life_with(
            startup=spec(period=1, failure=10),
            liveness=spec(period=1, failure=1),
            readiness=spec(period=1),
        ),
        lambda kind, now: F if kind == "startup" and now < started_at else S,
    )
    assert not run.life.started and not run.life.ready
    run.until(3.9)
    assert run.times("startup") == [1.0, 2.0, 3.0]
    assert run.times("liveness") == [] and run.times("readiness") == []
    assert not run.life.started
    run.until(6.0)
    assert run.life.started and run.life.ready
    # Started at 4: the startup probe stops, readiness runs at once (the
    # sync's trigger), liveness from its next tick.
    assert run.times("startup") == [1.0, 2.0, 3.0, 4.0]
    assert run.times("readiness")[0] == 4.0
    assert run.times("liveness") == [5.0, 6.0]
    assert run.kills == []


def test_startup_failure_restarts_and_resets_started() -> None:
    run = Run(life_with(startup=spec(period=1, failure=3)), always(F)).until(3.0)
    assert [t for t, _ in run.kills] == [3.0]
    assert run.kills[0][1].message == "Container web failed startup probe, will be restarted"
    assert run.starts == [3.0]
    assert not run.life.started, "a new instance has to pass its startup probe again"


def test_a_long_startup_window_delays_liveness() -> None:
    # The acceptance: with a startupProbe of failureThreshold 30 and
    # period 1, a liveness probe that fails at once cannot restart the
    # container during the first 30 s, however it fails.
    run = Run(
        life_with(startup=spec(period=1, failure=30), liveness=spec(period=1, failure=1)),
        lambda kind, now: S if kind == "startup" and now >= 20 else F,
    )
    run.until(19.9)
    assert run.times("liveness") == [] and run.kills == []
    run.until(21.0)
    assert [t for t, _ in run.kills] == [21.0]


def test_terminating_pods_run_no_liveness_or_startup_probe() -> None:
    life = life_with(liveness=spec(period=1, failure=1), readiness=spec(period=1))
    assert sorted(life.due(1.0, terminating=True)) == ["readiness"]
    assert life.workers["liveness"].result == S


@pytest.mark.parametrize("kind", ["liveness", "startup"])
def test_kill_message_names_the_probe(kind: Kind) -> None:
    life = ContainerLife("web", {kind: spec(failure=1)}, now=0.0, wall=0.0)
    assert life.due(1.0) == [kind]
    kill = life.record(kind, life.instance, F)
    assert kill == Kill("web", f"Container web failed {kind} probe, will be restarted")
