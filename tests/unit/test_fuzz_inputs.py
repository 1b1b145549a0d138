"""The front door under malformed input: several hundred generated bad
manifests, rules dumps and command-line words through `netemu validate`,
`compile` and `trace --offline` (issue 15's acceptance).

No traceback, no case over 10 s, the worker's peak memory under 500 MB,
and every rejection exit 2 naming file:line. The cases, the rules they are
judged by and the worker are described in tests/fuzzcases.py. A few cases
also go through the real `netemu` command, to show the in-process runner
sees what a user sees.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from fuzzcases import (
    PEAK_RSS_MB,
    Case,
    Result,
    generate,
    judge,
    real_cli,
    report,
    run_cases,
)

MINIMUM_CASES = 500
REAL_CLI_SAMPLE = 10


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Case], list[Result]]:
    root = tmp_path_factory.mktemp("fuzz")
    cases = generate(root / "cases")
    return cases, run_cases(cases, root)


def test_enough_cases_for_every_front_door(fuzz_run: tuple[list[Case], list[Result]]) -> None:
    cases, _ = fuzz_run
    per_command = Counter(c.command for c in cases)
    assert len(cases) >= MINIMUM_CASES, per_command
    for command in ("validate", "compile", "trace", "trace-rules", "trace-words"):
        assert per_command[command] >= 40, per_command
    assert sum(c.expect == "reject" for c in cases) >= MINIMUM_CASES


def test_no_traceback_no_hang_and_every_rejection_located(
    fuzz_run: tuple[list[Case], list[Result]],
) -> None:
    cases, results = fuzz_run
    failures = report(cases, results)
    assert not failures, f"{len(failures)} of {len(cases)} cases fail:\n" + "\n".join(failures)


def test_peak_memory(fuzz_run: tuple[list[Case], list[Result]]) -> None:
    cases, results = fuzz_run
    peak = max(r.rss_mb for r in results)
    # The case during which the peak was first reached is the one to blame.
    culprit = next(c.id for c, r in zip(cases, results, strict=True) if r.rss_mb == peak)
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB, first reached during {culprit}"


def _netemu_command() -> str:
    beside = Path(sys.executable).parent / "netemu"
    found = str(beside) if beside.exists() else shutil.which("netemu")
    assert found, "the netemu console script is not installed"
    return found


def test_real_cli_agrees_with_the_in_process_runner(
    fuzz_run: tuple[list[Case], list[Result]],
) -> None:
    cases, results = fuzz_run
    # Cases that ended cleanly in-process, spread over every command; the real
    # command takes about a second each, so only a few, run side by side.
    clean = [
        (c, r) for c, r in zip(cases, results, strict=True) if not judge(c, r) and r.seconds < 2
    ]
    sample: list[tuple[Case, Result]] = []
    for command in ("validate", "compile", "trace", "trace-rules", "trace-words"):
        of_command = [pair for pair in clean if pair[0].command == command]
        step = max(1, len(of_command) // 2)
        sample += of_command[::step][:2]
    assert len(sample) == REAL_CLI_SAMPLE, [c.id for c, _ in sample]
    outside = real_cli([c for c, _ in sample], _netemu_command())
    for case, result in sample:
        code, stderr = outside[case.id]
        assert "Traceback" not in stderr, f"{case.id}: {stderr[-500:]}"
        assert code == result.exit_code, f"{case.id}: exit {code} outside, {result.exit_code} in"
        assert stderr == result.stderr, (
            f"{case.id}: stderr differs:\n{stderr}\n---\n{result.stderr}"
        )
