"""Public applications' manifests as their projects publish them
(tests/data/apps/<app>/, each with a SOURCE naming repository, commit,
licence and files) pass `netemu validate` unmodified: exit 0, warnings
allowed, and every Service and pod the manifests make is counted."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from netemu.api.load import MANIFEST_SUFFIXES
from netemu.cli import main

APPS_DIR = Path(__file__).parents[2] / "tests" / "data" / "apps"
APPS = sorted(p.name for p in APPS_DIR.iterdir() if p.is_dir())

# (Services, pods) each app makes in Kubernetes, read off its manifests:
# Deployment/ReplicationController/StatefulSet replicas (1 when unset; an
# HPA's minReplicas is not applied by `kubectl apply`), one pod per Job
# (completions and parallelism unset), and for a DaemonSet one pod per node
# (None here: the count then has to equal the nodes validate reports).
EXPECTED: dict[str, tuple[int, int | None]] = {
    "azure-vote": (2, 2),
    "bookinfo": (4, 6),
    "cassandra": (1, 3),
    "guestbook": (3, 6),
    "guestbook-go": (3, 6),
    "ingress-nginx": (2, 3),
    "microservices-demo": (12, 12),
    "mysql": (2, 3),
    "nginx": (1, 2),
    "node-exporter": (1, None),
    "podinfo": (1, 1),
    "tensorflow-serving": (1, 1),
    "voting-app": (4, 5),
}

SUMMARY = re.compile(r"^valid: (\d+) node\(s\), (\d+) service\(s\), (\d+) pod\(s\)", re.M)
FILE_LINE = re.compile(
    r"^  (\S+)(?: @ ([0-9a-f]{40}))? -> (\S+) \(git blob ([0-9a-f]{40})\)$", re.M
)


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's bytes: comparable with the repository's tree."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def test_at_least_ten_apps_and_each_has_expectations() -> None:
    assert len(APPS) >= 10
    assert set(APPS) == set(EXPECTED)


@pytest.mark.parametrize("app", APPS)
def test_app_files_are_as_published(app: str) -> None:
    """Every manifest file is listed in SOURCE with the git blob id of the
    published file, and its bytes still have that id (no local edit)."""
    source = (APPS_DIR / app / "SOURCE").read_text()
    assert re.search(r"^repository: https://github\.com/[\w.-]+/[\w.-]+$", source, re.M)
    assert re.search(r"^licence: \S+", source, re.M)
    files = FILE_LINE.findall(source)
    # One commit for all files, or each file's own.
    if not re.search(r"^commit: [0-9a-f]{40}", source, re.M):
        assert all(commit for _path, commit, _local, _blob in files)
    listed = {local: blob for _path, _commit, local, blob in files}
    present = {
        p.name for p in (APPS_DIR / app).iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()
    }
    assert present and set(listed) == present
    for local, blob in listed.items():
        assert git_blob_id((APPS_DIR / app / local).read_bytes()) == blob, local


@pytest.mark.parametrize("app", APPS)
def test_app_validates_unmodified(app: str) -> None:
    result = CliRunner().invoke(main, ["validate", "-f", str(APPS_DIR / app)])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert not re.search(r"\berror", result.stderr, re.I), result.stderr
    summary = SUMMARY.search(result.stdout)
    assert summary, result.stdout
    nodes, services, pods = (int(n) for n in summary.groups())
    want_services, want_pods = EXPECTED[app]
    assert services == want_services
    assert pods == (nodes if want_pods is None else want_pods)
