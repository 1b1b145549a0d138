"""Reading a lab's journal: well-formed entries of the lab's own are used,
anything else is skipped with one line each (no root: /run/netemu is moved
to a temporary directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netemu.kernel import journal, netns


@pytest.fixture
def run_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    monkeypatch.setattr(journal, "RUN_ROOT", root)
    return root


def write_journal(run_root: Path, lab: str, lines: list[bytes]) -> Path:
    directory = run_root / lab
    directory.mkdir()
    path = directory / journal.JOURNAL
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_the_lab_s_own_entries_are_read(run_root: Path) -> None:
    pid, start = os.getpid(), journal.process_start_time(os.getpid())
    write_journal(
        run_root,
        "t1",
        [
            b'{"netns": "netemu_t1_underlay"}',
            b'{"path": "/etc/netns/netemu_t1_pod_default_web"}',
            f'{{"path": "{run_root}/t1/logs"}}'.encode(),
            f'{{"pid": {pid}, "start": {start}}}'.encode(),
        ],
    )
    entries, skipped = journal.read_journal("t1")
    assert skipped == []
    assert entries == [
        {"netns": "netemu_t1_underlay"},
        {"path": "/etc/netns/netemu_t1_pod_default_web"},
        {"path": f"{run_root}/t1/logs"},
        {"pid": pid, "start": start},
    ]


BAD = [
    b'{"netns": "netemu_t1_pod_default_' + b"x" * 300 + b'"}',  # longer than NAME_MAX
    b'{"netns": "netemu_t2_underlay"}',  # another lab's
    b'{"netns": "netemu_t1_a/b"}',
    b'{"netns": ["netemu_t1_underlay"]}',
    b'{"path": "/"}',
    b'{"path": "/etc/netns/netemu_t2_pod_default_web"}',
    b'{"path": "/etc/netns/netemu_t1_x/../../passwd"}',
    b'{"path": "relative/path"}',
    b'{"pid": "1"}',
    b'{"pid": 1}',
    b'{"pid": true}',
    b'{"pid": 5, "netns": "netemu_t1_underlay"}',
    b"[1, 2, 3]",
    b"42",
    b"\xff\xfe binary \x00 junk",
    b"[" * 100_000,
    b'{"netns": "netemu_t1_cut',
]


def test_every_line_it_cannot_use_is_skipped_with_one_line(run_root: Path) -> None:
    path = write_journal(run_root, "t1", [b'{"netns": "netemu_t1_underlay"}', *BAD])
    entries, skipped = journal.read_journal("t1")
    assert entries == [{"netns": "netemu_t1_underlay"}]
    assert len(skipped) == len(BAD)
    for number, note in enumerate(skipped, start=2):
        assert note.startswith(f"{path}:{number}: skipped (")
        assert "\n" not in note and len(note) < 300


def test_a_journal_that_is_not_a_file_is_reported(run_root: Path) -> None:
    (run_root / "t1" / journal.JOURNAL).mkdir(parents=True)
    entries, skipped = journal.read_journal("t1")
    assert entries == []
    assert len(skipped) == 1 and "cannot read" in skipped[0]


def test_cleanup_of_a_damaged_journal_finishes(
    run_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the journal: no real namespace is looked at.
    monkeypatch.setattr(netns, "list_names", lambda: [])
    owned = run_root / "t1" / "logs"
    write_journal(run_root, "t1", [f'{{"path": "{owned}"}}'.encode(), *BAD])
    owned.mkdir()
    (owned / "c.log").write_text("x")
    result = journal.cleanup("t1")
    assert result.left == []
    assert len(result.skipped) == len(BAD)
    assert f"dir {owned}" in result.removed
    assert not (run_root / "t1").exists()
