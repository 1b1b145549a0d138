"""A lab whose supervisor stopped answering (SIGSTOP): the real `netemu get`
fails within seconds with one line saying which supervisor and what to do,
and works again once the supervisor runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from live_helpers import CONTROLPLANE, lab_name, running_lab


def netemu(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "netemu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def test_get_reports_a_stopped_supervisor_and_recovers_when_it_continues() -> None:
    name = lab_name("stopped")
    with running_lab([CONTROLPLANE / "default"], name) as lab:
        pid = int(lab.info()["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped, elapsed = netemu("get", "pods", "--lab", name)
        finally:
            os.kill(pid, signal.SIGCONT)
        # 2 s of silence, plus the command's own start-up on a busy machine.
        assert elapsed < 5, stopped
        assert stopped.returncode == 1, stopped
        assert stopped.stdout == ""
        lines = stopped.stderr.splitlines()
        assert len(lines) == 1, stopped.stderr
        assert f"lab {name}: its supervisor (pid {pid}) is not answering" in lines[0]
        assert f"netemu down {name}" in lines[0]

        again, _ = netemu("get", "pods", "--lab", name)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("NAMESPACE")
        assert "web-" in again.stdout
