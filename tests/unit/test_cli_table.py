"""`netemu get`'s tables (netemu.cli_table): the Table a supervisor sends
and the CLI renders is laid out exactly as the rich table `get` printed
before, for every kind and the default lab's objects; empty tables and
namespaces as kubectl shows them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from netemu.cli_table import RESOURCES, in_namespace, items, listing, render, table
from netemu.controlplane.state import ClusterState
from netemu.pipeline import load_cluster

DEFAULT = str(Path(__file__).resolve().parents[2] / "controlplane" / "default")
KINDS = sorted(set(RESOURCES.values()))


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return load_cluster([DEFAULT])


def rich_layout(shown: dict[str, Any]) -> str:
    """The table as `get` printed it with rich (box=None, 3 spaces between
    columns, no wrapping): the layout scripts read."""
    layout = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 3, 0, 0))
    for column in shown["columnDefinitions"]:
        layout.add_column(column["name"], no_wrap=True)
    for row in shown["rows"]:
        layout.add_row(*row["cells"])
    out = io.StringIO()
    Console(file=out, width=10_000, highlight=False).print(layout)
    return out.getvalue()


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_render_lays_out_as_rich_did(state: ClusterState, kind: str, wide: bool) -> None:
    shown = table(kind, state, wide)
    assert shown["rows"], "the default lab has objects of every kind"
    assert render(shown) == rich_layout(shown)


def test_a_table_is_a_meta_v1_table(state: ClusterState) -> None:
    shown = table("nodes", state, wide=False)
    assert shown["apiVersion"] == "meta.k8s.io/v1" and shown["kind"] == "Table"
    assert [c["name"] for c in shown["columnDefinitions"]] == [
        "NAME",
        "STATUS",
        "INTERNAL-IP",
        "POD-CIDR",
    ]
    assert [row["cells"][0] for row in shown["rows"]] == ["node-1", "node-2"]


def test_no_rows_is_no_resources_found(state: ClusterState) -> None:
    assert render(table("pods", in_namespace(state, "nowhere"), wide=False)) == (
        "No resources found.\n"
    )


def test_in_namespace_keeps_nodes_and_that_namespace_only(state: ClusterState) -> None:
    assert state.services and state.pods
    assert in_namespace(state, "default") == state
    elsewhere = in_namespace(state, "elsewhere")
    assert (elsewhere.services, elsewhere.pods, elsewhere.endpoint_slices) == ((), (), ())
    assert elsewhere.nodes == state.nodes


def test_listing_is_a_v1_list_of_the_objects(state: ClusterState) -> None:
    shown = listing(items("services", state))
    assert shown["kind"] == "List"
    assert [i["metadata"]["name"] for i in shown["items"]] == [
        s.metadata.name for s in state.services
    ]
