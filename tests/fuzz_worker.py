"""Runs fuzz cases through the `netemu` CLI in this one process.

    python tests/fuzz_worker.py CASES.json RESULTS.jsonl [START]

CASES.json is a list of tests/fuzzcases.Case as dicts. For each case from
index START on, the CLI (netemu.cli.main) runs in-process under click's
CliRunner, with an alarm after CASE_SECONDS (the case is a hang) and the
whole process under an address-space limit (a bomb ends in MemoryError
instead of taking the machine's memory). One JSON line per case goes to
RESULTS.jsonl as soon as the case ends, so the caller can tell which case
a dying worker was in. A case naming a live `lab` is followed by a status
request to that lab: if it no longer answers, the remaining cases are
reported as not run. Imports netemu first: every case then pays only for
its own work, as it would in a warm CLI.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from click.testing import CliRunner

import netemu.cli
from netemu.cli import main as netemu_main

CASE_SECONDS = 10
MEMORY_LIMIT_BYTES = 1536 * 1024 * 1024
LAB_ANSWERS_WITHIN = 2.0  # seconds a live lab's supervisor has to answer after a case


class Hang(BaseException):
    """Raised by the alarm: the case ran longer than CASE_SECONDS. A
    BaseException so that no `except Exception` in netemu can swallow it."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def _peak_rss_mb() -> float:
    # VmHWM, the peak resident set of this process's own memory since its
    # exec. Not getrusage's ru_maxrss: Linux carries that over fork and exec,
    # so it would count the test runner's own size before this worker started.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # in kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> int:
    cases = json.loads(Path(argv[1]).read_text())
    out = Path(argv[2])
    start = int(argv[3]) if len(argv) > 3 else 0
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    signal.signal(signal.SIGALRM, _alarm)
    runner = CliRunner()
    assert netemu.cli is not None
    with out.open("a") as results:
        for index, case in enumerate(cases[start:], start=start):
            began = time.monotonic()
            signal.alarm(CASE_SECONDS)
            hang = False
            trace: str | None = None
            code: int | None = None
            stderr = ""
            try:
                result = runner.invoke(netemu_main, list(case["argv"]), catch_exceptions=True)
                code = result.exit_code
                stderr = result.stderr
                exc = result.exception
                if exc is not None and not isinstance(exc, SystemExit):
                    if isinstance(exc, Hang):
                        hang = True
                    elif result.exc_info is not None:
                        trace = "".join(traceback.format_exception(*result.exc_info))
                    else:
                        trace = repr(exc)
            except Hang:
                hang = True
            except BaseException as exc:  # the runner itself failed
                trace = "".join(traceback.format_exception(exc))
            finally:
                signal.alarm(0)
            record = {
                "id": case["id"],
                "exit_code": code,
                "stderr": stderr[:200_000],
                "seconds": round(time.monotonic() - began, 3),
                "rss_mb": round(_peak_rss_mb(), 1),
                "traceback": trace[-20_000:] if trace else None,
                "hang": hang,
            }
            lab = case.get("lab")
            if lab and not _answers(lab):
                # One bad object wedged the lab: the cases after it would only
                # measure the wedge.
                record["extra"] = {"lab_answers": False}
                results.write(json.dumps(record) + "\n")
                for later in cases[index + 1 :]:
                    skipped = {
                        **record,
                        "id": later["id"],
                        "exit_code": None,
                        "stderr": "",
                        "seconds": 0.0,
                        "traceback": None,
                        "hang": False,
                        "extra": {"not_run": f"the lab stopped answering after {case['id']}"},
                    }
                    results.write(json.dumps(skipped) + "\n")
                return 0
            results.write(json.dumps(record) + "\n")
            results.flush()
    return 0


def _answers(lab: str) -> bool:
    """Whether the live lab's supervisor still answers a status request."""
    from netemu.lab import LabError, LiveLab

    try:
        LiveLab(lab).request("status", timeout=LAB_ANSWERS_WITHIN)
    except (LabError, OSError, ValueError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv))
