"""Shared pytest set-up: privileged tests say exactly why they cannot run."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netemu.kernel import netns, nfacct
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import NFACCT_INVALID_DROPPED, NFACCT_LOCALHOST_NODEPORTS

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


DEFAULT_LAB = Path(__file__).parents[1] / "controlplane" / "default"
LabVariant = Callable[..., ProxyInput]


@pytest.fixture
def default_lab_variant(tmp_path: Path) -> LabVariant:
    """node-1's proxy input for the default lab with its manifests edited:
    `variant(drop_service="web-local")`, `variant(replicas=2)`."""

    def variant(*, drop_service: str | None = None, replicas: int | None = None) -> ProxyInput:
        docs: list[dict[str, Any]] = []
        for manifest in sorted(DEFAULT_LAB.glob("*.yaml")):
            docs.extend(doc for doc in yaml.safe_load_all(manifest.read_text()) if doc)
        kept = [
            doc
            for doc in docs
            if not (doc["kind"] == "Service" and doc["metadata"]["name"] == drop_service)
        ]
        assert drop_service is None or len(kept) == len(docs) - 1
        if replicas is not None:
            for doc in kept:
                if doc["kind"] == "Deployment":
                    doc["spec"]["replicas"] = replicas
        (tmp_path / "lab.yaml").write_text(yaml.safe_dump_all(kept))
        return proxy_input(load_cluster([tmp_path]), "node-1")

    return variant


@pytest.fixture
def namespace() -> Iterator[str]:
    """(Privileged tests) a fresh network namespace ready for a node's
    kube-proxy rules, with the nfacct objects its `-m nfacct` rules name;
    removed afterwards."""
    name = f"netemu_test_{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        nfacct.ensure(name, [NFACCT_LOCALHOST_NODEPORTS, NFACCT_INVALID_DROPPED])
        yield name
    finally:
        netns.remove(name)
