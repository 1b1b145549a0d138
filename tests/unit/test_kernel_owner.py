"""Output directories and files for captures (netemu.kernel.owner): every
attack a user sharing the directory could plant is refused, never followed,
and what is written is private to the invoking user."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu.kernel.owner import (
    DIRECTORY_MODE,
    FILE_MODE,
    OutputDirectory,
    OutputPathError,
    check_name,
    invoking_user,
    write_file,
)


@pytest.fixture(autouse=True)
def _no_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    # The invoking user is this process's own unless a test says otherwise.
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    # A permissive umask must not make captures readable by others.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_creates_every_missing_directory_private_and_files_0600(
    tmp_path: Path, loose_umask: None
) -> None:
    root = tmp_path / "captures"
    with OutputDirectory(root, "lab", "trace-1", fresh=True) as out:
        written = out.write("trace.json", b"{}\n")
        with out.create("01-a-eth0.pcap") as pcap:
            pcap.write(b"pcap")
    assert written == root / "lab" / "trace-1" / "trace.json"
    assert written.read_bytes() == b"{}\n"
    for directory in (root, root / "lab", root / "lab" / "trace-1"):
        assert mode(directory) == DIRECTORY_MODE
    for name in ("trace.json", "01-a-eth0.pcap"):
        path = root / "lab" / "trace-1" / name
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert mode(path) == FILE_MODE == 0o600


def test_existing_directories_are_reused_and_keep_their_mode(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    (root / "lab").mkdir(parents=True)
    root.chmod(0o755)
    with OutputDirectory(root, "lab", "trace-1", fresh=True) as out:
        out.write("trace.json", b"{}")
    assert mode(root) == 0o755
    assert (root / "lab" / "trace-1" / "trace.json").exists()


@pytest.mark.parametrize("level", ["captures", "lab", "trace"])
def test_a_symlinked_directory_at_any_level_is_refused_not_followed(
    tmp_path: Path, level: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "captures"
    planted = {"captures": root, "lab": root / "lab", "trace": root / "lab" / "trace-1"}[level]
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputPathError, match="is a symbolic link: refusing to follow it"):
        OutputDirectory(root, "lab", "trace-1", fresh=level != "trace")
    assert list(elsewhere.iterdir()) == []


def test_a_symlink_planted_at_a_file_name_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    with OutputDirectory(tmp_path / "captures", "lab", "t") as out:
        (out.path / "merged.pcapng").symlink_to(victim)
        with pytest.raises(OutputPathError, match=r"merged\.pcapng: already exists"):
            out.create("merged.pcapng")
    assert victim.read_text() == "precious\n"
    assert os.path.islink(tmp_path / "captures" / "lab" / "t" / "merged.pcapng")


def test_a_dangling_symlink_at_a_file_name_creates_nothing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "would-be-created"
    with OutputDirectory(tmp_path / "captures", "lab", "t") as out:
        (out.path / "trace.json").symlink_to(target)
        with pytest.raises(OutputPathError, match="already exists"):
            out.write("trace.json", b"{}")
    assert not target.exists()


def test_a_pre_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    with OutputDirectory(tmp_path / "captures", "lab", "t") as out:
        (out.path / "trace.json").write_text("theirs")
        with pytest.raises(OutputPathError, match="refusing to overwrite it"):
            out.write("trace.json", b"ours")
    assert (tmp_path / "captures" / "lab" / "t" / "trace.json").read_text() == "theirs"


def test_a_fresh_trace_directory_that_exists_already_is_refused(tmp_path: Path) -> None:
    (tmp_path / "captures" / "lab" / "t").mkdir(parents=True)
    with pytest.raises(OutputPathError, match="t: already exists: refusing to reuse it"):
        OutputDirectory(tmp_path / "captures", "lab", "t", fresh=True)


def test_a_file_where_a_directory_belongs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "captures").mkdir()
    (tmp_path / "captures" / "lab").write_text("")
    with pytest.raises(OutputPathError, match="lab: is not a directory"):
        OutputDirectory(tmp_path / "captures", "lab", "t")


@pytest.mark.parametrize("bad", ["..", ".", "", "../../etc", "a/b", "x\0y", "n" * 256])
def test_a_lab_name_or_trace_id_never_leads_out_of_the_root(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "captures"
    for names in ((bad, "t"), ("lab", bad)):
        with pytest.raises(OutputPathError, match="refusing to write there"):
            OutputDirectory(root, *names)
    # Refused before anything was created.
    assert not root.exists()
    with OutputDirectory(root, "lab", "t") as out, pytest.raises(OutputPathError):
        out.create(bad)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["captures", "lab", "t"]


def test_the_root_s_parent_must_exist(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="missing: cannot open the directory: No such file"):
        OutputDirectory(tmp_path / "missing" / "captures", "lab", "t")
    assert list(tmp_path.iterdir()) == []


def test_check_name_accepts_plain_names() -> None:
    for name in ("default", "20260101-120000-default-client-tcp-a1b2c3", "..x", "n" * 255):
        check_name(name, Path("captures"))


def test_discard_removes_only_what_it_created(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    (root / "lab").mkdir(parents=True)
    out = OutputDirectory(root, "lab", "t", fresh=True)
    out.write("a.pcap", b"x")
    out.discard()
    out.close()
    assert not (root / "lab" / "t").exists()
    assert (root / "lab").is_dir()


def test_discard_keeps_a_directory_something_else_was_put_in(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    out = OutputDirectory(root, "lab", "t", fresh=True)
    out.write("a.pcap", b"x")
    (root / "lab" / "t" / "other").write_text("")
    out.discard()
    out.close()
    assert sorted(p.name for p in (root / "lab" / "t").iterdir()) == ["other"]


def test_root_can_be_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with OutputDirectory(Path("."), "lab", "t") as out:
        out.write("trace.json", b"{}")
    assert (tmp_path / "lab" / "t" / "trace.json").exists()


def test_invoking_user_is_the_sudo_user_only_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_UID", "4321")
    monkeypatch.setenv("SUDO_GID", "4322")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert invoking_user() == (4321, 4322)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    assert invoking_user() == (1000, 1000)
    monkeypatch.setenv("SUDO_UID", "not-a-number")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "getegid", lambda: 0)
    assert invoking_user() == (0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_under_sudo_everything_created_goes_to_the_sudo_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_UID", "4321")
    monkeypatch.setenv("SUDO_GID", "4322")
    (tmp_path / "captures").mkdir()
    with OutputDirectory(tmp_path / "captures", "lab", "t", fresh=True) as out:
        out.write("trace.json", b"{}")
    for path in (tmp_path / "captures" / "lab", out.path, out.path / "trace.json"):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (4321, 4322), path
    # captures/ was already there: it keeps its owner.
    assert os.lstat(tmp_path / "captures").st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "captures" / "lab").mkdir(parents=True)
    os.chown(tmp_path / "captures" / "lab", 54321, 54321)
    with pytest.raises(OutputPathError, match="owned by uid 54321, not by root"):
        OutputDirectory(tmp_path / "captures", "lab", "t")
    assert list((tmp_path / "captures" / "lab").iterdir()) == []


# -- a file the user names (pictures) ---------------------------------------------------


def test_write_file_creates_a_private_file(tmp_path: Path, loose_umask: None) -> None:
    write_file(tmp_path / "lab.svg", b"<svg/>")
    assert (tmp_path / "lab.svg").read_bytes() == b"<svg/>"
    assert mode(tmp_path / "lab.svg") == FILE_MODE


def test_write_file_replaces_the_user_s_own_file_keeping_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "lab.svg"
    path.write_bytes(b"an older, longer picture")
    path.chmod(0o644)
    write_file(path, b"<svg/>")
    assert path.read_bytes() == b"<svg/>"
    assert mode(path) == 0o644


def test_write_file_refuses_a_symlink_and_leaves_its_target_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "lab.svg").symlink_to(victim)
    with pytest.raises(OutputPathError, match=r"lab\.svg: is a symbolic link: refusing to follow"):
        write_file(tmp_path / "lab.svg", b"<svg/>")
    assert victim.read_text() == "precious\n"


def test_write_file_refuses_a_hard_link_to_another_file(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.link(victim, tmp_path / "lab.svg")
    with pytest.raises(OutputPathError, match=r"has other names \(hard links\)"):
        write_file(tmp_path / "lab.svg", b"<svg/>")
    assert victim.read_text() == "precious\n"


def test_write_file_refuses_a_fifo_without_waiting_for_a_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "lab.svg")
    with pytest.raises(OutputPathError, match=r"lab\.svg: cannot write"):
        write_file(tmp_path / "lab.svg", b"<svg/>")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_write_file_refuses_another_user_s_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.svg"
    path.write_text("theirs")
    os.chown(path, 54321, 54321)
    with pytest.raises(OutputPathError, match="owned by uid 54321, not by root"):
        write_file(path, b"<svg/>")
    assert path.read_text() == "theirs"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_write_file_gives_a_new_file_to_the_sudo_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_UID", "4321")
    monkeypatch.setenv("SUDO_GID", "4322")
    write_file(tmp_path / "lab.svg", b"<svg/>")
    info = os.lstat(tmp_path / "lab.svg")
    assert (info.st_uid, info.st_gid) == (4321, 4322)


def test_netemu_graph_refuses_to_write_through_a_symlink(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from netemu.cli import main

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "lab.dot").symlink_to(victim)
    default = Path(__file__).resolve().parents[2] / "controlplane" / "default"
    result = CliRunner().invoke(
        main, ["graph", "-f", str(default), "-o", str(tmp_path / "lab.dot")]
    )
    assert result.exit_code == 1, result.output
    assert "lab.dot: is a symbolic link: refusing to follow it" in result.output
    assert victim.read_text() == "precious\n"
