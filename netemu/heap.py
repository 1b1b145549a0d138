"""netemu's Python objects and CPython's cyclic garbage collector: paused
while objects by the million are made and none freed (gc_paused: loading,
the control plane, a compile, a kube-proxy sync; a CLI command as a whole),
and, in a lab's supervisor, what the bring-up made taken out of its sight
for good (freeze_bring_up).

A lab's bring-up makes, by the hundred thousand, objects that live as long
as the lab: the control plane's objects, every node's kube-proxy input
(the converted Services and EndpointSlices) and the rules of its last sync
(about 710,000 objects the collector tracks at 5,000 Services × 5 endpoints
on two nodes). They are made with the collector paused (gc_paused); once it
runs again, its generational bookkeeping (Modules/gcmodule.c,
gc_collect_generations) first walks them to promote them to the oldest
generation, then, as they outnumber a quarter of the objects already there
(long_lived_pending > long_lived_total / 4), walks every object of the
process in a full collection. Both fell on whatever ran next, the first
change after the bring-up: about 1 s of its 2 s at 5,000 Services, the full
collection finding no garbage at all (benchmarks/RESULTS.md, partial sync).
Not a cost a real node pays: kube-proxy and the control plane are separate
Go processes there, with a concurrent collector.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Loading creates millions of small objects and frees none of them; the cyclic
    garbage collector would walk all of them again and again (it doubled the time of
    a large load). Paused while loading, restored after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_bring_up() -> None:
    """Call once the lab is up: every object alive now is moved out of the
    collector's generations (gc.freeze), so that later collections walk
    only what was made since. Reference counting still frees each of them
    when its last reference goes; only a reference cycle among them would
    outlive the lab's need of it, and the full collection this spares found
    none among the 710,000 above."""
    gc.freeze()
