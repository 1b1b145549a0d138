"""Shared pytest set-up: privileged tests say exactly why they cannot run."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED_TOOLS = ("ip", "iptables-nft-restore", "iptables-legacy-restore", "nfacct")


def privileged_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables); run as root or in CI"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (./setup.sh installs them)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = privileged_skip_reason()
    for item in items:
        if "privileged" in str(item.path):
            item.add_marker(pytest.mark.privileged)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
