"""Creation order of objects, learned the way an informer learns state: one
list, then watch events. Controllers that must treat objects "in creation
order" (the scheduler's queue, host-local IPAM) use it; objects that
existed before the first list are ordered by (namespace, name)."""

from __future__ import annotations

from typing import Generic

from netemu.controlplane.client import Client
from netemu.controlplane.errors import Expired
from netemu.controlplane.objects import T, meta_of


class CreationOrder(Generic[T]):
    """Sequence numbers by uid, in the order objects of one kind were created."""

    def __init__(self, client: Client, kind: type[T]) -> None:
        self._client = client
        self._kind = kind
        self._seq: dict[str, int] = {}
        self._next = 0
        self._rv: str | None = None
        self.sync()

    def sync(self) -> None:
        """Catch up with everything created or deleted since the last sync."""
        if self._rv is None:
            self._relist()
            return
        try:
            stream = self._client.watch(self._kind, self._rv, timeout=0)
            for event in stream:
                uid = meta_of(event.object).uid or ""
                if event.type == "ADDED" and uid not in self._seq:
                    self._seq[uid] = self._next
                    self._next += 1
                elif event.type == "DELETED":
                    self._seq.pop(uid, None)
            self._rv = stream.resource_version
        except Expired:
            self._relist()

    def _relist(self) -> None:
        listed = self._client.list(self._kind)
        present = set()
        for obj in listed.items:
            uid = meta_of(obj).uid or ""
            present.add(uid)
            if uid not in self._seq:
                self._seq[uid] = self._next
                self._next += 1
        for uid in [u for u in self._seq if u not in present]:
            del self._seq[uid]
        self._rv = listed.resource_version

    def key(self, obj: T) -> tuple[int, str, str]:
        """Sort key: creation order, then namespace and name for unknown objects."""
        meta = meta_of(obj)
        return (
            self._seq.get(meta.uid or "", self._next),
            meta.namespace or "",
            meta.name or "",
        )
