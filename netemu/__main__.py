"""`python -m netemu`: the same as the `netemu` command."""

from netemu.cli import main

main(prog_name="netemu")
