"""Render DOT source to SVG or PNG with Graphviz's `dot`, and write the
picture (or the DOT source itself) to a file.

Owns: the `dot` processes it runs and the one file it is asked to write.
Must not touch: anything else on the disk, or any network namespace
(netemu.net.graph builds the source; this module only draws it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from netemu.kernel.owner import OutputPathError, write_file

FORMATS = ("svg", "png", "dot")
DOT_MISSING = "Graphviz's dot is not installed (./setup.sh installs it)"
# A lab of a few hundred pods lays out in seconds; far longer means dot hangs.
DOT_TIMEOUT = 120.0


class GraphvizError(RuntimeError):
    """`dot` is missing or failed to draw the source."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def format_of(path: Path) -> str | None:
    """The format a file name asks for by its suffix (.svg, .png, .dot or .gv)."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "gv":
        return "dot"
    return suffix if suffix in FORMATS else None


def render(source: str, fmt: str) -> bytes:
    """The picture of `source` in `fmt` (svg or png), or the source itself
    for "dot" (no Graphviz needed)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "dot":
        return source.encode()
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizError(DOT_MISSING)
    try:
        done = subprocess.run(
            [dot, f"-T{fmt}"],
            input=source.encode(),
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GraphvizError(f"dot -T{fmt} did not finish in {DOT_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise GraphvizError(f"dot -T{fmt} failed: {message or f'exit code {done.returncode}'}")
    return done.stdout


def write(source: str, path: Path, fmt: str) -> Path:
    """Render `source` and write it to `path`. Rendered first, so a failing
    `dot` leaves no half-written file behind."""
    data = render(source, fmt)
    try:
        write_file(path, data)
    except OutputPathError as exc:
        raise GraphvizError(str(exc)) from None
    return path
