"""The CLI's side of probes without a live lab: `get pods` shows READY,
STATUS and RESTARTS from containerStatuses as kubectl does, and `netemu
logs` is a live command (root)."""

from __future__ import annotations

import datetime
import os

import pytest
from click.testing import CliRunner

from netemu.api.core import Pod
from netemu.cli import main
from netemu.cli_get import print_resources
from netemu.cli_table import human_duration
from netemu.controlplane.state import ClusterState


def pod(name: str, statuses: list[dict[str, object]], ready: str = "True") -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": statuses,
            },
        }
    )


def ago(seconds: int) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_pods_table_reads_container_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    restarted = pod(
        "restarted",
        [
            {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
            {
                "name": "b",
                "ready": False,
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 143, "finishedAt": ago(5)}},
            },
        ],
        ready="False",
    )
    plain = pod("plain", [])
    stopped = pod(
        "stopped",  # restartPolicy Never after a liveness kill
        [
            {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "state": {"terminated": {"exitCode": 143, "reason": "Error"}}},
        ],
        ready="False",
    )
    print_resources("pods", ClusterState(pods=(restarted, plain, stopped)), None)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1][:5] == ["default", "restarted", "1/2", "CrashLoopBackOff", "2"]
    assert rows[1][5:7] in (["(5s", "ago)"], ["(6s", "ago)"])
    # As kubectl: READY counts ready running containers only, so a pod
    # without containerStatuses shows none ready; no creationTimestamp is
    # an AGE of <unknown>.
    assert rows[2] == ["default", "plain", "0/2", "Running", "0", "<unknown>"]
    assert rows[3] == ["default", "stopped", "1/2", "Error", "0", "<unknown>"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (10 * 86400, "10d"),
    ],
)
def test_human_duration_is_kubectls(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_logs_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(main, ["logs", "web", "--previous"])
    assert result.exit_code == 1
    assert "netemu logs needs root" in result.output
