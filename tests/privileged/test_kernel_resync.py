"""Stale chain deletion in a real kernel: a node given state A's rules, then a
re-sync to state B computed from its own iptables-save, holds exactly what a
fresh node given state B holds, on both iptables backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netemu.kernel import netns, nfacct
from netemu.kernel.iptables import Backend, KernelIptables
from netemu.pipeline import load_cluster, proxy_input
from netemu.rules.input import ProxyInput
from netemu.rules.iptables import (
    NFACCT_INVALID_DROPPED,
    NFACCT_LOCALHOST_NODEPORTS,
    compile_node,
    compile_resync,
    compile_sync,
)
from netemu.rules.model import parse_restore
from netemu.rules.spec import canonical_ruleset

DEFAULT_LAB = Path(__file__).parents[2] / "controlplane" / "default"
NODE = "node-1"


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"netemu_test_resync_{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        nfacct.ensure(name, [NFACCT_LOCALHOST_NODEPORTS, NFACCT_INVALID_DROPPED])
        yield name
    finally:
        netns.remove(name)


def lab_variant(
    tmp_path: Path, *, drop_service: str | None = None, replicas: int | None = None
) -> ProxyInput:
    """node-1's proxy input for the default lab with its manifests edited."""
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
    return proxy_input(load_cluster([tmp_path]), NODE)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize(
    "edit",
    [{"drop_service": "web-local"}, {"replicas": 1}, {"replicas": 0}],
    ids=["drop-web-local", "scale-to-1", "scale-to-0"],
)
def test_resync_leaves_exactly_the_new_state(
    namespace: str, tmp_path: Path, backend: Backend, edit: dict[str, Any]
) -> None:
    state_a = proxy_input(load_cluster([DEFAULT_LAB]), NODE)
    state_b = lab_variant(tmp_path, **edit)
    kernel = KernelIptables(namespace, backend)
    kernel.restore(compile_node(state_a).render(), noflush=True)

    resync = compile_resync(state_b, parse_restore(kernel.save()))
    stale = resync.tables["nat"].deletions
    assert stale, "state B should leave some of state A's chains unused"
    kernel.restore(resync.render())

    saved = parse_restore(kernel.save())
    assert canonical_ruleset(saved) == canonical_ruleset(compile_node(state_b))
    assert not set(stale) & set(saved.tables["nat"].chains)


def test_plain_sync_leaves_stale_chains_behind(namespace: str, tmp_path: Path) -> None:
    """The control: without the deletions the kernel keeps A's unused chains."""
    state_a = proxy_input(load_cluster([DEFAULT_LAB]), NODE)
    state_b = lab_variant(tmp_path, drop_service="web-local")
    kernel = KernelIptables(namespace, "nft")
    kernel.restore(compile_node(state_a).render(), noflush=True)
    stale = compile_resync(state_b, parse_restore(kernel.save())).tables["nat"].deletions
    kernel.restore(compile_sync(state_b).render())
    saved = parse_restore(kernel.save())
    assert set(stale) <= set(saved.tables["nat"].chains)
    assert canonical_ruleset(saved) != canonical_ruleset(compile_node(state_b))
