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

from netemu.kernel import netns
from netemu.net.plan import lab_prefix

RUN_ROOT = Path("/run/netemu")
SHARED_DIRS = ".shared-dirs"  # under RUN_ROOT: directories netemu created outside any lab
JOURNAL = "journal.jsonl"
SOCKET = "supervisor.sock"
INFO = "lab.json"
LOG = "supervisor.log"


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


def read_entries(lab: str) -> list[dict[str, Any]]:
    path = run_dir(lab) / JOURNAL
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash names nothing created yet
    return entries


def _kill(pid: int, start: int | None) -> None:
    if start is not None and process_start_time(pid) != start:
        return  # gone, or the pid now belongs to someone else
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: list[tuple[int, int | None]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid, start) for pid, start in pids):
            return
        time.sleep(0.01)


def cleanup(lab: str) -> list[str]:
    """Remove everything lab `lab` created; returns what was removed."""
    entries = read_entries(lab)
    removed: list[str] = []
    processes = [(int(e["pid"]), e.get("start")) for e in entries if "pid" in e]
    names = {e["netns"] for e in entries if "netns" in e}
    names.update(n for n in netns.list_names() if n.startswith(lab_prefix(lab)))
    for name in sorted(names):
        # A process started inside (by `netemu exec`, say) would keep it alive.
        processes.extend((pid, process_start_time(pid)) for pid in netns.pids(name))
    for pid, start in processes:
        _kill(pid, start)
    _wait_gone(processes, timeout=5.0)
    for pid, _ in processes:
        # A supervisor started by this very process (the Python facade) is
        # our child: reap it, or it lingers as a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    for name in sorted(names):
        if netns.exists(name):
            netns.remove(name)
            removed.append(f"netns {name}")
    for entry in entries:
        if "path" in entry:
            path = Path(entry["path"])
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"dir {path}")
            elif path.exists():
                path.unlink()
                removed.append(f"file {path}")
    notes = RUN_ROOT / SHARED_DIRS
    for note in sorted(notes.glob("*")) if notes.is_dir() else []:
        shared = Path(note.read_text())
        with contextlib.suppress(OSError):  # not empty: another lab still uses it
            shared.rmdir()
            note.unlink()
            removed.append(f"dir {shared}")
    shutil.rmtree(run_dir(lab), ignore_errors=True)
    # netemu's own directories, once no lab is left in them.
    for directory in (notes, RUN_ROOT):
        with contextlib.suppress(OSError):
            directory.rmdir()
    return removed
