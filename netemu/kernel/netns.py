"""Network namespaces (via pyroute2's netns helpers, as `ip netns` names them)."""

from __future__ import annotations

from pyroute2 import netns


def create(name: str) -> None:
    netns.create(name)


def remove(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)


def exists(name: str) -> bool:
    return name in netns.listnetns()
