"""The errors the `netemu` command turns into exit codes (netemu.cli.run), in
a module of their own so the command can catch them without importing the
stages that raise them: `netemu --version` must not load the control plane.

Exit codes: a UsageError or LabUsageError is bad input (2); a LabError is a
live-lab operation that failed (1).
"""

from __future__ import annotations

import os


class UsageError(Exception):
    """A command-line request that cannot be met as asked (exit code 2)."""


class LabError(RuntimeError):
    """A live-lab operation failed (exit code 1)."""


class LabUsageError(ValueError):
    """A live-lab request that cannot be met as asked (exit code 2)."""


def needs_root(command: str) -> str | None:
    """The one line a live command prints without root, or None as root."""
    if os.geteuid() != 0:
        return f"netemu {command} needs root (it works in network namespaces); run it with sudo"
    return None
