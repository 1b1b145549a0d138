"""The CLI's start-up structure: `netemu --version` and `--help` import only
click (no pydantic, Scapy, rich or control plane), and the table that lists
the commands without importing them says what each command itself says.
Timings are in benchmarks/startup.py, not here."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import netemu
from netemu.cli import COMMANDS, main

# Modules whose import costs tenths of a second, and their parents.
HEAVY = ("pydantic", "scapy", "rich", "yaml", "aiohttp", "pyroute2", "netaddr", "dns")
HEAVY_NETEMU = (
    "netemu.controlplane",
    "netemu.api.base",
    "netemu.lab",
    "netemu.pipeline",
    "netemu.trace",
    "netemu.kernel",
    "netemu.node",
)


def imported_by(*args: str) -> tuple[set[str], str]:
    """The modules `python -m netemu ARGS` imports (python -X importtime),
    and what it printed."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "netemu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = set(re.findall(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)$", done.stderr, re.M))
    return names, done.stdout


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str]) -> None:
    names, out = imported_by(*args)
    assert "click" in names, "-X importtime output not understood"  # the check itself works
    heavy = sorted(
        name
        for name in names
        if name.split(".")[0] in HEAVY
        or any(name == m or name.startswith(m + ".") for m in HEAVY_NETEMU)
    )
    assert heavy == []
    assert out  # it did answer


def test_a_command_imports_what_it_needs_when_it_runs() -> None:
    # The same check sees a heavy import when there is one: `compile --help`
    # loads the compile command's module, which imports the pipeline.
    names, _ = imported_by("compile", "--help")
    assert "netemu.pipeline" in names and "pydantic" in names


def test_version_is_the_packages() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"], prog_name="netemu")
    assert result.exit_code == 0
    assert result.stdout == f"netemu, version {netemu.__version__}\n"
    assert version("netemu") == netemu.__version__


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_listed_summary_is_the_commands_own(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
    stand_in = click.Command(name, help=COMMANDS[name].summary)
    # Every width --help may use: the listing is the same as click's own.
    for limit in range(10, 200):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_help_lists_exactly_the_commands_the_modules_define() -> None:
    defined = set()
    for module_name in {entry.module for entry in COMMANDS.values()}:
        module = importlib.import_module(module_name)
        defined |= {
            value.name for value in vars(module).values() if isinstance(value, click.Command)
        }
    assert defined == set(COMMANDS)
    result = CliRunner().invoke(main, ["--help"])
    listed = re.findall(r"^  (\w+) ", result.stdout.split("Commands:")[1], re.M)
    assert listed == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_commands_help_works(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"], prog_name="netemu")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: netemu {name} ")


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 2
    assert "No such command 'nonsense'" in result.stderr


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        # A live `get` renders the table its lab's supervisor builds: no
        # manifest pipeline, YAML, models, control plane or rich.
        (
            "netemu.cli_get",
            (
                "netemu.pipeline",
                "yaml",
                "scapy",
                "pydantic",
                "rich",
                "netemu.api.base",
                "netemu.controlplane",
                "netemu.net.plan",
            ),
        ),
        # A live trace runs in the lab's supervisor: the command imports no
        # Scapy, models, control plane or manifest pipeline (offline traces
        # and --svg import what they need when they run).
        (
            "netemu.cli_trace",
            (
                "scapy",
                "pydantic",
                "yaml",
                "netemu.pipeline",
                "netemu.api.base",
                "netemu.controlplane",
                "netemu.net.plan",
                "netemu.trace.live",
            ),
        ),
        ("netemu.cli_live", ("scapy",)),
        ("netemu.cli_manifests", ("scapy", "rich")),
        # `up` starts its supervisor before it imports anything heavy.
        ("netemu.cli_up", (*HEAVY, *HEAVY_NETEMU)),
    ],
)
def test_command_modules_leave_out_what_they_do_not_need(
    module: str, absent: tuple[str, ...]
) -> None:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.split()
    assert module in loaded
    assert [m for m in loaded if m.split(".")[0] in absent or m in absent] == []
