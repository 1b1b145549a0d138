"""Shared pytest set-up: everything under tests/privileged is marked
`privileged`, which netemu's own pytest plugin (netemu.testing.plugin)
skips with the reason naming exactly what is missing."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from netemu.kernel import netns, nfacct
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import NFACCT_INVALID_DROPPED, NFACCT_LOCALHOST_NODEPORTS
from netemu.testing.requirements import privileged_skip_reason

if TYPE_CHECKING:
    from netemu.node.testserver import TestServers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    privileged = [item for item in items if "privileged" in str(item.path)]
    for item in privileged:
        item.add_marker(pytest.mark.privileged)
    # The plugin skips marked tests; without it (-p no:netemu) do it here.
    reason = privileged_skip_reason() if privileged else None
    if reason and not config.pluginmanager.has_plugin("netemu"):
        for item in privileged:
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


@pytest.fixture
def servers() -> Iterator[TestServers]:
    """(Unit tests) the built-in servers' event loop, running for the test,
    serving loopback sockets the test binds: no namespace, no root."""
    # Imported here: aiohttp need not load for every test session.
    from netemu.node.testserver import TestServers

    servers = TestServers()
    servers.start()
    try:
        yield servers
    finally:
        servers.close()
