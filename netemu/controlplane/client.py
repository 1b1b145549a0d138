"""The client interface every controller and node agent uses to reach the
API, and `LocalClient`, its implementation over the in-process `Store`.

Kinds are passed as the resource types themselves (`client.list(Pod)`), so
results are typed. A later HTTP or etcd-backed API server implements the
same Protocol (mapping a type to its apiVersion/kind with
`netemu.api.load.KINDS`), and agent code does not change.

Owns: the shape of API access. Must not touch: controller logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from netemu.controlplane.objects import ObjectList, T, WatchStream
from netemu.controlplane.store import Store


class Client(Protocol):
    """Kubernetes-style API access. Errors are `netemu.controlplane.errors.ApiError`s:
    NotFound, AlreadyExists, Conflict (stale resourceVersion), Invalid, Expired."""

    def get(self, kind: type[T], namespace: str | None, name: str) -> T: ...

    def list(
        self,
        kind: type[T],
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> ObjectList[T]: ...

    def create(self, obj: T) -> T: ...

    def update(self, obj: T) -> T: ...

    def delete(
        self,
        kind: type[T],
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> T: ...

    def watch(
        self,
        kind: type[T],
        since_rv: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> WatchStream[T]: ...


class LocalClient:
    """A `Client` backed by an in-process `Store` (the embedded default)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, kind: type[T], namespace: str | None, name: str) -> T:
        return self.store.get(kind, namespace, name)

    def list(
        self,
        kind: type[T],
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> ObjectList[T]:
        return self.store.list(kind, namespace, labels=labels)

    def create(self, obj: T) -> T:
        return self.store.create(obj)

    def update(self, obj: T) -> T:
        return self.store.update(obj)

    def delete(
        self,
        kind: type[T],
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> T:
        return self.store.delete(
            kind,
            namespace,
            name,
            resource_version=resource_version,
            uid=uid,
            grace_period_seconds=grace_period_seconds,
        )

    def watch(
        self,
        kind: type[T],
        since_rv: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> WatchStream[T]:
        return self.store.watch(kind, since_rv, namespace=namespace, timeout=timeout)
