"""freeze_bring_up: what is alive at the end of a lab's bring-up is left
out of the cyclic collector's later collections, and still freed when its
last reference goes; what is made later is collected as before."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from netemu.heap import freeze_bring_up


class Kept:
    """A tracked, weakly referenceable object."""

    other: Kept | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The test process's objects go back to the collector after each test."""
    yield
    gc.unfreeze()


def in_a_generation(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_objects_alive_at_bring_up_are_out_of_later_collections() -> None:
    kept = Kept()
    assert gc.is_tracked(kept) and in_a_generation(kept)
    frozen_before = gc.get_freeze_count()
    freeze_bring_up()
    assert not in_a_generation(kept)
    assert gc.get_freeze_count() > frozen_before
    gc.collect()
    assert not in_a_generation(kept)  # a full collection did not walk it


def test_frozen_objects_are_still_freed_by_their_last_reference() -> None:
    kept = Kept()
    freeze_bring_up()
    gone = weakref.ref(kept)
    del kept
    assert gone() is None


def test_cycles_made_after_bring_up_are_collected() -> None:
    freeze_bring_up()
    first, second = Kept(), Kept()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    assert gone() is not None  # only the collector frees a cycle
    gc.collect()
    assert gone() is None
