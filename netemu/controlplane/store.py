"""The in-process object store: the embedded stand-in for etcd plus the API
server's storage layer.

Objects are kept by (kind, namespace, name). Every write takes the next
value of one global revision counter and stamps it into
`metadata.resourceVersion`, like etcd's revision behind a Kubernetes API
server; an update carrying an older resourceVersion fails with `Conflict`.
Every write also appends one event to a bounded history, from which watches
are served: `watch(kind, since_rv)` yields exactly the events after
`since_rv`, and a `since_rv` older than the retained history fails with
`Expired` (HTTP 410), after which a client must list again.

The server-set metadata is stamped here as the API server stamps it:
`creationTimestamp` (RFC 3339, whole seconds, UTC) from the store's clock
when an object is created, kept on every update whatever the update
carries; `uid` on create, kept for the object's life; `generation` 1 on
create for the kinds whose registry strategy tracks it (workloads and
EndpointSlices), raised by one whenever an update changes anything but
metadata and status (PrepareForUpdate of those strategies).

Graceful deletion of Pods, when the store is made with `graceful_pods`
(a live lab, whose kubelets finish what the deletion starts): deleting a
pod that is bound to a node and not Succeeded/Failed stamps
`deletionTimestamp` (now + the grace period) and
`deletionGracePeriodSeconds` and keeps it; the grace period is the
request's, else the pod's terminationGracePeriodSeconds (the pod strategy's
CheckGracefulDelete). Deleting it again can only shorten the period
(BeforeDelete); a grace period of 0 removes it. Its kubelet removes it with
grace 0 once its containers have stopped.

Deliberate simplifications: other deletions are immediate (no finalizers;
a `deletionTimestamp` written by a user is stored as data),
namespaces are not required to exist, and uids are UUIDs derived from the
object's key and how many times that key has been created, so they are
deterministic. The clock is the one thing from outside: pass a fixed one
(`clock=`) for byte-identical output.

Thread-safe: one lock guards the state; watches block on a condition.
Owns: the stored objects, the revision counter and the event history.
Must not touch: anything outside this process.
"""

from __future__ import annotations

import builtins
import datetime
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, cast

from netemu.api.base import K8sModel, ObjectMeta
from netemu.api.core import ConfigMap, Secret
from netemu.controlplane.errors import AlreadyExists, Conflict, Expired, Invalid, NotFound
from netemu.controlplane.names import generate_name
from netemu.controlplane.objects import (
    EventType,
    ObjectList,
    T,
    WatchEvent,
    is_namespaced,
    kind_of,
    meta_of,
)

Key = tuple[str, str, str]

# uuid5 namespace for netemu object uids (any fixed UUID would do).
_UID_NAMESPACE = uuid.UUID("6f1c9a4e-2b1d-5d8e-9c3a-6e6574656d75")

DEFAULT_HISTORY = 10_000
# A pod's terminationGracePeriodSeconds when it has none (SetDefaults_PodSpec).
DEFAULT_GRACE_PERIOD = 30

Clock = Callable[[], datetime.datetime]

# Kinds whose registry strategy sets metadata.generation (1 on create, +1 on
# a spec change): apps/v1 workloads, ReplicationControllers, batch/v1 Jobs
# and CronJobs, and discovery/v1 EndpointSlices. Core Services, Nodes and
# Namespaces have none.
GENERATION_KINDS = frozenset(
    {
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
        "StatefulSet",
        "ReplicationController",
        "Job",
        "CronJob",
        "EndpointSlice",
    }
)


def wall_clock() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(when: datetime.datetime) -> str:
    """metav1.Time's JSON form: RFC 3339 in UTC with whole seconds."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Checkpoint:
    """The objects of a `Store` at one moment (see `Store.checkpoint`)."""

    objects: Mapping[Key, K8sModel]


@dataclass(frozen=True)
class _Event:
    rv: int
    type: EventType
    kind: str
    namespace: str
    obj: K8sModel


class Store:
    """Objects keyed by (kind, namespace, name) with resourceVersions and watch."""

    def __init__(
        self, history: int = DEFAULT_HISTORY, clock: Clock = wall_clock, graceful_pods: bool = False
    ) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self._clock = clock
        self.graceful_pods = graceful_pods
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[Key, K8sModel] = {}
        # The same objects per kind, and each kind's items (with their
        # namespaces) sorted by key as `list` returns them (dropped on any
        # write to the kind): a list of
        # one kind reads only that kind, and an unchanged kind is not sorted
        # again. Controllers and node agents list every kind they watch on
        # every pass, most of them unchanged (at 5,000 Services, scanning
        # every object for each list took half of a one-endpoint change).
        self._by_kind: dict[str, dict[Key, K8sModel]] = {}
        self._sorted: dict[str, tuple[tuple[str, ...], tuple[K8sModel, ...]]] = {}
        # etcd starts at revision 1; the first write is revision 2. This keeps
        # "0" free to mean "any version" in watch, as in Kubernetes.
        self._rv = 1
        self._events: deque[_Event] = deque(maxlen=history)
        self._incarnations: dict[Key, int] = {}
        self._generated: dict[tuple[str, str, str], int] = {}

    # ------------------------------------------------------------ reads

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def get(self, kind: type[T], namespace: str | None, name: str) -> T:
        key = self._key(kind_of(kind), namespace, name)
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise NotFound(_describe(key) + " not found")
        return cast(T, obj)

    def list(
        self,
        kind: type[T],
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> ObjectList[T]:
        """Items of one kind (optionally one namespace, optionally matching all
        `labels`), sorted by (namespace, name), and the current resourceVersion."""
        kind_name = kind_of(kind)
        with self._lock:
            pairs = self._sorted.get(kind_name)
            if pairs is None:
                # A stored object's namespace and name are its key's (see
                # create), so sorting by key is sorting by (namespace, name),
                # without reading every object's metadata.
                found = sorted(self._by_kind.get(kind_name, {}).items(), key=_first)
                pairs = self._sorted[kind_name] = (
                    tuple(key[1] for key, _ in found),
                    tuple(obj for _, obj in found),
                )
            rv = str(self._rv)
        namespaces, items = pairs
        if namespace is not None:
            items = tuple(o for ns, o in zip(namespaces, items, strict=True) if ns == namespace)
        if labels:
            items = tuple(o for o in items if _has_labels(o, labels))
        return ObjectList(cast(tuple[T, ...], items), rv)

    # ------------------------------------------------------------ writes

    def create(self, obj: T) -> T:
        obj = _stored_form(obj)
        kind = kind_of(type(obj))
        meta = meta_of(obj)
        if meta.resource_version:
            raise Invalid(f"{kind}: resourceVersion should not be set on objects to be created")
        namespace = self._namespace(kind, meta.namespace)
        with self._lock:
            name = meta.name
            if not name:
                if not meta.generate_name:
                    raise Invalid(f"{kind}: name or generateName is required")
                name = self._generate(kind, namespace, meta.generate_name)
            key = (kind, namespace, name)
            if key in self._objects:
                raise AlreadyExists(_describe(key) + " already exists")
            incarnation = self._incarnations.get(key, 0) + 1
            self._incarnations[key] = incarnation
            self._rv += 1
            uid = str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace}/{name}#{incarnation}"))
            stored = _with_meta(
                obj,
                meta.model_copy(
                    update={
                        "name": name,
                        "namespace": namespace or None,
                        "uid": uid,
                        "resource_version": str(self._rv),
                        "creation_timestamp": rfc3339(self._clock()),
                        "generation": 1 if kind in GENERATION_KINDS else None,
                    }
                ),
            )
            self._set(key, stored)
            self._record("ADDED", key, stored)
            return stored

    def update(self, obj: T) -> T:
        """Replace an object. A resourceVersion in the new object must equal the
        stored one (else Conflict); without one the update is unconditional.
        An update that changes nothing keeps the resourceVersion and emits no
        event, as the API server does."""
        obj = _stored_form(obj)
        kind = kind_of(type(obj))
        meta = meta_of(obj)
        key = self._key(kind, meta.namespace, meta.name or "")
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise NotFound(_describe(key) + " not found")
            _check_immutable(key, current, obj)
            current_meta = meta_of(current)
            if meta.resource_version and meta.resource_version != current_meta.resource_version:
                raise Conflict(
                    f"Operation cannot be fulfilled on {_describe(key)}: the object has been "
                    "modified; please apply your changes to the latest version and try again"
                )
            if meta.uid and meta.uid != current_meta.uid:
                raise Conflict(
                    f"Precondition failed for {_describe(key)}: UID in precondition: "
                    f"{meta.uid}, UID in object meta: {current_meta.uid}"
                )
            fixed = {
                "namespace": key[1] or None,
                "uid": current_meta.uid,
                "resource_version": current_meta.resource_version,
                "creation_timestamp": current_meta.creation_timestamp,
                "generation": _next_generation(kind, current, obj),
            }
            candidate = _with_meta(obj, meta.model_copy(update=fixed))
            if candidate == current:
                return candidate
            self._rv += 1
            stored = _with_meta(
                candidate, meta_of(candidate).model_copy(update={"resource_version": str(self._rv)})
            )
            self._set(key, stored)
            self._record("MODIFIED", key, stored)
            return stored

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
        """Remove an object, optionally only if it still has the given
        resourceVersion / uid. Returns its last state stamped with the
        deletion's resourceVersion; for a pod deleted gracefully (see the
        module), the pod as it stays, being deleted."""
        key = self._key(kind_of(kind), namespace, name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise NotFound(_describe(key) + " not found")
            current_meta = meta_of(current)
            if resource_version and resource_version != current_meta.resource_version:
                raise Conflict(
                    f"Precondition failed for {_describe(key)}: resourceVersion in "
                    f"precondition: {resource_version}, in object meta: "
                    f"{current_meta.resource_version}"
                )
            if uid and uid != current_meta.uid:
                raise Conflict(
                    f"Precondition failed for {_describe(key)}: UID in precondition: {uid}, "
                    f"UID in object meta: {current_meta.uid}"
                )
            grace = self._grace(current, grace_period_seconds)
            if grace:
                return cast(T, self._delete_gracefully(key, current, grace))
            self._unset(key)
            self._rv += 1
            last = _with_meta(
                current, current_meta.model_copy(update={"resource_version": str(self._rv)})
            )
            self._record("DELETED", key, last)
            return cast(T, last)

    def _grace(self, obj: K8sModel, requested: int | None) -> int:
        """The grace period a deletion gets: 0 deletes at once."""
        if not self.graceful_pods or kind_of(type(obj)) != "Pod":
            return 0
        spec: Any = getattr(obj, "spec", None)
        status: Any = getattr(obj, "status", None)
        # CheckGracefulDelete: a pod no kubelet runs, or one that has
        # finished, has nothing to stop.
        if spec is None or not spec.node_name or status.phase in ("Succeeded", "Failed"):
            return 0
        if requested is None:
            requested = spec.termination_grace_period_seconds
            if not isinstance(requested, int) or isinstance(requested, bool):
                requested = DEFAULT_GRACE_PERIOD
        return max(requested, 0)

    def _delete_gracefully(self, key: Key, current: K8sModel, grace: int) -> K8sModel:
        """Mark a pod as being deleted, or shorten a deletion under way
        (BeforeDelete: a later deadline is never taken)."""
        meta = meta_of(current)
        start = self._clock()
        was = meta.deletion_grace_period_seconds
        if meta.deletion_timestamp is not None and was is not None:
            if was <= grace:
                return current
            # The deadline moves as if the shorter period had been asked
            # for when the deletion began.
            try:
                began = datetime.datetime.fromisoformat(str(meta.deletion_timestamp))
                start = began - datetime.timedelta(seconds=was)
            except ValueError:
                pass
        deadline = start + datetime.timedelta(seconds=grace)
        self._rv += 1
        stamped = meta.model_copy(
            update={
                "deletion_timestamp": rfc3339(deadline),
                "deletion_grace_period_seconds": grace,
                "resource_version": str(self._rv),
            }
        )
        stored = _with_meta(current, stamped)
        self._set(key, stored)
        self._record("MODIFIED", key, stored)
        return stored

    # ------------------------------------------------------------ transactions

    def checkpoint(self) -> Checkpoint:
        """Every object as it is now, for `restore`."""
        with self._lock:
            return Checkpoint(dict(self._objects))

    def restore(self, saved: Checkpoint) -> int:
        """Put every object back as it was at `saved`: objects created since
        are deleted, changed ones get their old content back, deleted ones
        come back with their old uid. Each is an ordinary write with a new
        resourceVersion and a watch event (watchers see the way back as
        changes, as after any write; revisions never go backwards). Returns
        the number of writes."""
        writes = 0
        with self._lock:
            for key in [k for k in self._objects if k not in saved.objects]:
                writes += self._write_back(key, None)
            for key, old in saved.objects.items():
                if self._objects.get(key) != old:
                    writes += self._write_back(key, old)
        return writes

    def _write_back(self, key: Key, old: K8sModel | None) -> int:
        """Make `key` hold `old` (None: nothing). Caller holds the lock."""
        writes = 0
        current = self._objects.get(key)
        if current is not None and (old is None or meta_of(current).uid != meta_of(old).uid):
            self._unset(key)
            self._rv += 1
            last = _with_meta(
                current, meta_of(current).model_copy(update={"resource_version": str(self._rv)})
            )
            self._record("DELETED", key, last)
            writes += 1
            current = None
        if old is not None:
            self._rv += 1
            stored = _with_meta(
                old, meta_of(old).model_copy(update={"resource_version": str(self._rv)})
            )
            self._set(key, stored)
            self._record("ADDED" if current is None else "MODIFIED", key, stored)
            writes += 1
        return writes

    # ------------------------------------------------------------ watch

    def watch(
        self,
        kind: type[T],
        since_rv: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Watch[T]:
        """Changes to objects of `kind` after `since_rv`.

        `since_rv` None or "0" means "from any version", as in Kubernetes: the
        watch starts with a synthetic ADDED event per existing object, then
        continues with live events. Otherwise exactly the events with a
        larger resourceVersion are delivered, in order. `timeout` None blocks
        until `stop()`; 0 delivers what is already there and ends; a positive
        value ends the watch after that many seconds.
        """
        kind_name = kind_of(kind)
        with self._lock:
            initial: builtins.list[WatchEvent[T]] = []
            if since_rv in (None, "", "0"):
                cursor = self._rv
                current = self.list(kind, namespace)
                initial = [
                    WatchEvent("ADDED", obj, meta_of(obj).resource_version or "")
                    for obj in current.items
                ]
            else:
                assert since_rv is not None
                try:
                    cursor = int(since_rv)
                except ValueError:
                    raise Invalid(f"invalid resourceVersion {since_rv!r}") from None
                if cursor < self._oldest():
                    raise Expired(f"too old resource version: {since_rv} ({self._oldest()})")
        return Watch(self, kind_name, namespace, cursor, initial, timeout)

    # ------------------------------------------------------------ internals

    def _set(self, key: Key, obj: K8sModel) -> None:
        """Store `obj` under `key`. Caller holds the lock."""
        self._objects[key] = obj
        self._by_kind.setdefault(key[0], {})[key] = obj
        self._sorted.pop(key[0], None)

    def _unset(self, key: Key) -> None:
        """Remove the object under `key`. Caller holds the lock."""
        del self._objects[key]
        del self._by_kind[key[0]][key]
        self._sorted.pop(key[0], None)

    def _oldest(self) -> int:
        """The oldest revision a watch can start from (events after it are retained)."""
        return self._events[0].rv - 1 if self._events else self._rv

    def _record(self, type_: EventType, key: Key, obj: K8sModel) -> None:
        self._events.append(_Event(self._rv, type_, key[0], key[1], obj))
        self._changed.notify_all()

    def _events_after(self, cursor: int) -> builtins.list[_Event]:
        """Events with rv > cursor. Revisions are contiguous (one event per
        write), so the start index is a subtraction. Caller holds the lock."""
        if not self._events:
            return []
        if cursor < self._oldest():
            raise Expired(f"too old resource version: {cursor} ({self._oldest()})")
        start = cursor + 1 - self._events[0].rv
        if start >= len(self._events):
            return []
        return [self._events[i] for i in range(max(start, 0), len(self._events))]

    def _generate(self, kind: str, namespace: str, base: str) -> str:
        """A name for generateName: deterministic, never reusing an earlier
        suffix for the same base (so a replacement pod gets a new name)."""
        counter_key = (kind, namespace, base)
        n = self._generated.get(counter_key, 0)
        while True:
            name = generate_name(base, f"{kind}/{namespace}/{base}#{n}")
            n += 1
            if (kind, namespace, name) not in self._objects:
                self._generated[counter_key] = n
                return name

    @staticmethod
    def _namespace(kind: str, namespace: str | None) -> str:
        if not is_namespaced(kind):
            # The API server clears the namespace of cluster-scoped objects.
            return ""
        if not namespace:
            raise Invalid(f"{kind}: metadata.namespace is required")
        return namespace

    @classmethod
    def _key(cls, kind: str, namespace: str | None, name: str) -> Key:
        ns = (namespace or "") if is_namespaced(kind) else ""
        return kind, ns, name


class Watch(Generic[T]):
    """An open watch on a `Store`. Iterate it for `WatchEvent`s; `stop()` (from
    any thread) or the timeout ends the iteration. Usable as a context manager."""

    def __init__(
        self,
        store: Store,
        kind: str,
        namespace: str | None,
        cursor: int,
        initial: list[WatchEvent[T]],
        timeout: float | None,
    ) -> None:
        self._store = store
        self._kind = kind
        self._namespace = namespace
        self._cursor = cursor
        self._pending = initial
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stopped = False

    @property
    def resource_version(self) -> str:
        return str(self._cursor)

    def stop(self) -> None:
        with self._store._changed:
            self._stopped = True
            self._store._changed.notify_all()

    def __enter__(self) -> Watch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[WatchEvent[T]]:
        yield from self._pending
        self._pending = []
        while True:
            batch: list[WatchEvent[T]] = []
            with self._store._changed:
                while not self._stopped:
                    events = self._store._events_after(self._cursor)
                    if events:
                        self._cursor = events[-1].rv
                        batch = [
                            WatchEvent(e.type, cast(T, e.obj), str(e.rv))
                            for e in events
                            if e.kind == self._kind
                            and (self._namespace is None or e.namespace == self._namespace)
                        ]
                        if batch:
                            break
                        continue
                    remaining = None
                    if self._deadline is not None:
                        remaining = self._deadline - time.monotonic()
                        if remaining <= 0:
                            return
                    self._store._changed.wait(remaining)
                if self._stopped:
                    return
            yield from batch


def _next_generation(kind: str, current: K8sModel, new: K8sModel) -> int | None:
    """The generation after an update: +1 when anything but metadata and
    status changed, for the kinds that track it."""
    old = meta_of(current).generation
    if kind not in GENERATION_KINDS:
        return old
    old = old or 1
    ignored = {"metadata", "status"}
    before = {n: getattr(current, n) for n in type(current).model_fields if n not in ignored}
    after = {n: getattr(new, n) for n in type(new).model_fields if n not in ignored}
    return old + 1 if before != after else old


def _stored_form(obj: T) -> T:
    """What the API server stores for `obj`: a Secret's write-only stringData
    is merged into data and its type defaulted (Convert_v1_Secret_To_core_Secret,
    SetDefaults_Secret)."""
    if isinstance(obj, Secret):
        return cast(T, obj.with_string_data_merged())
    return obj


def _check_immutable(key: Key, current: K8sModel, new: K8sModel) -> None:
    """ValidateConfigMapUpdate / ValidateSecretUpdate: once `immutable` is
    true, the data and the flag itself stay as they are."""
    if not isinstance(current, ConfigMap | Secret) or not current.immutable:
        return
    assert isinstance(new, ConfigMap | Secret)
    fields = ("data", "binary_data") if isinstance(current, ConfigMap) else ("data",)
    problems = [
        f"{'binaryData' if f == 'binary_data' else f}: Forbidden: field is immutable when "
        "`immutable` is set"
        for f in fields
        if getattr(current, f) != getattr(new, f)
    ]
    if not new.immutable:
        problems.append("immutable: Forbidden: field is immutable when `immutable` is set")
    if problems:
        raise Invalid(f"{_describe(key)} is invalid: " + ", ".join(problems))


def _with_meta(obj: T, meta: ObjectMeta) -> T:
    return obj.model_copy(update={"metadata": meta})


def _has_labels(obj: K8sModel, labels: Mapping[str, str]) -> bool:
    own = meta_of(obj).labels
    return all(own.get(k) == v for k, v in labels.items())


def _first(pair: tuple[Key, K8sModel]) -> Key:
    return pair[0]


def _describe(key: Key) -> str:
    kind, namespace, name = key
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
