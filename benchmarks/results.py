"""What the benchmarks share: the machine and commit they measured, and
writing one benchmark's section of benchmarks/RESULTS.md without touching
the others."""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")


@functools.cache
def commit() -> str:
    """The commit measured (call it first thing: the first answer is kept),
    marked when netemu/ has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "netemu") else ""
    return f"{git('rev-parse', '--short', 'HEAD') or 'unknown commit'}{dirty}"


def machine() -> str:
    version = " and ".join(
        subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        .stdout.strip()
        .removeprefix("iptables ")
        for tool in ("iptables-nft", "iptables-legacy")
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return (
        f"{datetime.date.today().isoformat()}, netemu {commit()}, {nproc} CPUs (`nproc`), kernel "
        f"{platform.release()}, iptables {version}, Python {platform.python_version()}"
    )


def replace_section(heading: str, lines: list[str]) -> None:
    """Put `lines` (which start with `heading`) in RESULTS.md in place of the
    section under `heading`, or at the end; every other section is kept."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    body = "\n".join(lines).rstrip("\n") + "\n"
    start = text.find(heading + "\n")
    if start < 0:
        RESULTS.write_text(text.rstrip("\n") + "\n\n" + body if text.strip() else body)
        return
    end = text.find("\n## ", start + len(heading))
    rest = text[end + 1 :] if end >= 0 else ""
    RESULTS.write_text(text[:start] + body + ("\n" + rest if rest else ""))
