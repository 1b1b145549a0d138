"""A lab's run directory, /run/netemu/<lab>/, and the journal of everything
the lab created.

Each namespace, process and file is written to `journal.jsonl` *before* it
is created, so whatever state a crash leaves, `cleanup` finds it: `netemu
down` works after the supervisor was killed with SIGKILL. Cleanup removes
only what the journal names (plus namespaces under the lab's own prefix,
which no other lab can own).

Owns: /run/netemu/<lab>/ and the entries it journals. Must not touch:
anything not journalled by this lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.kernel import netns, processes

RUN_ROOT = Path("/run/netemu")
SHARED_DIRS = ".shared-dirs"  # under RUN_ROOT: directories netemu created outside any lab
JOURNAL = "journal.jsonl"
SOCKET = "supervisor.sock"
INFO = "lab.json"
LOG = "supervisor.log"


def lab_prefix(lab: str) -> str:
    """netemu.net.plan.lab_prefix, imported when a journal is read or cleaned
    up: the plan pulls in the models and the control plane, which commands
    that only list labs or talk to a supervisor do not need."""
    from netemu.net import plan

    return plan.lab_prefix(lab)


def run_dir(lab: str) -> Path:
    return RUN_ROOT / lab


def labs() -> list[str]:
    """Labs with a run directory (up, coming up, or crashed and not yet down)."""
    if not RUN_ROOT.is_dir():
        return []
    return sorted(p.name for p in RUN_ROOT.iterdir() if (p / JOURNAL).exists())


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), which tells a
    process from a later one that reused its pid."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, start: int | None) -> bool:
    """Running (not a zombie waiting for its parent) and still the same process."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


@dataclass
class Journal:
    lab: str
    directory: Path = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.directory = run_dir(self.lab)

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        (self.directory / JOURNAL).touch()

    def _write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        # Written (not fsynced) before the thing is created: a SIGKILL cannot
        # lose it, and /run does not outlive a power loss anyway.
        with self._lock, open(self.directory / JOURNAL, "a") as out:
            out.write(line)

    def netns(self, name: str) -> None:
        self._write({"netns": name})

    def process(self, pid: int) -> None:
        self._write({"pid": pid, "start": process_start_time(pid)})

    def path(self, path: Path) -> None:
        self._write({"path": str(path)})

    def shared_dir(self, path: Path) -> None:
        """A directory netemu created that other labs may use too (/etc/netns):
        noted under /run/netemu (not this lab's run directory), and removed by
        whichever lab's cleanup finds it empty."""
        notes = RUN_ROOT / SHARED_DIRS
        notes.mkdir(parents=True, exist_ok=True)
        (notes / str(path).strip("/").replace("/", "_")).write_text(str(path))


# The longest file name the kernel accepts (NAME_MAX): a namespace is a
# file under /run/netns.
NAME_MAX = 255


@dataclass(frozen=True)
class Cleanup:
    """What `cleanup` did: `removed` things, journal lines it `skipped` (one
    line each, naming nothing it could act on) and things `left` behind
    because removing them failed (one line each)."""

    removed: list[str]
    skipped: list[str]
    left: list[str]


def read_journal(lab: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The journal's well-formed entries, and one line for each it skips.

    An entry is trusted only as far as it is this lab's: a namespace under
    the lab's own prefix that the kernel could have created, a process id,
    or a path under /etc/netns/<lab prefix>... or the lab's run directory.
    Whatever else a damaged journal holds is skipped, so cleanup never
    removes anything another lab or the host owns."""
    path = run_dir(lab) / JOURNAL
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror}"]
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            entry = _entry(lab, json.loads(raw))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            # (A crash can cut the last line short; it names nothing created yet.)
            shown = raw[:80].decode(errors="replace")
            skipped.append(f"{path}:{number}: skipped ({exc}): {shown!r}")
            continue
        entries.append(entry)
    return entries, skipped


def _entry(lab: str, value: object) -> dict[str, Any]:
    """A journal entry checked for shape and ownership, else ValueError."""
    if not isinstance(value, dict) or len(value.keys() & {"netns", "pid", "path"}) != 1:
        raise ValueError("not a netns, pid or path entry")
    if "netns" in value:
        name = value["netns"]
        if not isinstance(name, str) or not _is_netns_name(name):
            raise ValueError("not a namespace name the kernel accepts")
        if not name.startswith(lab_prefix(lab)):
            raise ValueError(f"not a namespace of lab {lab}")
        return {"netns": name}
    if "pid" in value:
        pid, start = value["pid"], value.get("start")
        if type(pid) is not int or pid <= 1 or not (start is None or type(start) is int):
            raise ValueError("not a process id")
        return {"pid": pid, "start": start}
    where = value["path"]
    if not isinstance(where, str) or not _owned_path(lab, where):
        raise ValueError(f"not a path of lab {lab}")
    return {"path": where}


def _is_netns_name(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name.encode(errors="surrogatepass")) <= NAME_MAX
    )


def _owned_path(lab: str, where: str) -> bool:
    """/etc/netns/<one of the lab's namespaces>, or inside its run directory."""
    path = Path(where)
    if not path.is_absolute() or ".." in path.parts or "\0" in where:
        return False
    if path.parent == processes.ETC_NETNS:
        return _is_netns_name(path.name) and path.name.startswith(lab_prefix(lab))
    return path.is_relative_to(run_dir(lab)) and path != run_dir(lab)


def read_entries(lab: str) -> list[dict[str, Any]]:
    """The journal's well-formed entries (see read_journal)."""
    return read_journal(lab)[0]


def _kill(pid: int, start: int | None) -> None:
    if start is not None and process_start_time(pid) != start:
        return  # gone, or the pid now belongs to someone else
    with contextlib.suppress(ProcessLookupError):
        # A container's process leads its own group (processes.start): the
        # group holds its sandbox, whose PID 1 outlives the leader otherwise.
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: list[tuple[int, int | None]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid, start) for pid, start in pids):
            return
        time.sleep(0.01)


def cleanup(lab: str) -> Cleanup:
    """Remove everything lab `lab` created. Never stops half-way: a journal
    line it cannot use is skipped, a thing it cannot remove is left, and
    both are reported; the run directory (with the journal) is kept only if
    something was left, so `netemu down` can try again."""
    entries, skipped = read_journal(lab)
    removed: list[str] = []
    left: list[str] = []
    procs = [(int(e["pid"]), e.get("start")) for e in entries if "pid" in e]
    names = {e["netns"] for e in entries if "netns" in e}
    names.update(n for n in netns.list_names() if n.startswith(lab_prefix(lab)))
    for name in sorted(names):
        # A process started inside (by `netemu exec`, say) would keep it alive.
        try:
            procs.extend((pid, process_start_time(pid)) for pid in netns.pids(name))
        except OSError as exc:
            left.append(f"netns {name}: cannot list its processes: {exc.strerror or exc}")
    for pid, start in procs:
        try:
            _kill(pid, start)
        except OSError as exc:
            left.append(f"process {pid}: cannot kill: {exc.strerror or exc}")
    _wait_gone(procs, timeout=5.0)
    for pid, _ in procs:
        # A supervisor started by this very process (the Python facade) is
        # our child: reap it, or it lingers as a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    for name in sorted(names):
        try:
            if netns.exists(name):
                netns.remove(name)
                removed.append(f"netns {name}")
        except OSError as exc:
            left.append(f"netns {name}: cannot remove: {exc.strerror or exc}")
    for entry in entries:
        if "path" in entry:
            path = Path(entry["path"])
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                    removed.append(f"dir {path}")
                elif path.exists():
                    path.unlink()
                    removed.append(f"file {path}")
            except OSError as exc:
                left.append(f"{path}: cannot remove: {exc.strerror or exc}")
    notes = RUN_ROOT / SHARED_DIRS
    for note in sorted(notes.glob("*")) if notes.is_dir() else []:
        # Not empty (another lab still uses it), or a note that is not one.
        with contextlib.suppress(OSError, ValueError):
            shared = Path(note.read_text())
            if shared != processes.ETC_NETNS:
                continue
            shared.rmdir()
            note.unlink()
            removed.append(f"dir {shared}")
    if not left:
        shutil.rmtree(run_dir(lab), ignore_errors=True)
    # netemu's own directories, once no lab is left in them.
    for directory in (notes, RUN_ROOT):
        with contextlib.suppress(OSError):
            directory.rmdir()
    return Cleanup(removed, skipped, left)
