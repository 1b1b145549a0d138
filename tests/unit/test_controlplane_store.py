"""The object store and LocalClient: resourceVersions, optimistic concurrency,
watch semantics, generated names and thread safety."""

from __future__ import annotations

import threading

import pytest

from netemu.api.base import ObjectMeta
from netemu.api.core import Container, Node, Pod, PodSpec, Service
from netemu.controlplane.client import Client, LocalClient
from netemu.controlplane.errors import AlreadyExists, Conflict, Expired, Invalid, NotFound
from netemu.controlplane.names import ALPHANUMS
from netemu.controlplane.objects import WatchEvent
from netemu.controlplane.store import Store


def pod(name: str, namespace: str | None = "default", **labels: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=PodSpec(containers=[Container(name="c")]),
    )


def relabel(obj: Pod, **labels: str) -> Pod:
    return obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"labels": labels})})


def rv(obj: Pod | Node | Service) -> int:
    assert obj.metadata.resource_version is not None
    return int(obj.metadata.resource_version)


@pytest.fixture
def client() -> Client:
    return LocalClient(Store())


def test_local_client_implements_the_client_protocol() -> None:
    c: Client = LocalClient(Store())  # mypy checks the structural match
    assert c.list(Pod).items == ()


def test_create_stamps_increasing_resource_versions_and_uids(client: Client) -> None:
    a = client.create(pod("a"))
    b = client.create(pod("b"))
    assert rv(b) == rv(a) + 1
    assert a.metadata.uid and b.metadata.uid and a.metadata.uid != b.metadata.uid
    assert client.get(Pod, "default", "a") == a


def test_every_write_takes_the_next_global_version_across_kinds(client: Client) -> None:
    a = client.create(pod("a"))
    node = client.create(Node(metadata=ObjectMeta(name="n1")))
    a2 = client.update(relabel(a, x="1"))
    gone = client.delete(Pod, "default", "a")
    assert [rv(a), rv(node), rv(a2), rv(gone)] == [rv(a) + i for i in range(4)]
    assert client.list(Node).resource_version == str(rv(gone))


def test_update_with_current_version_succeeds_and_bumps_version(client: Client) -> None:
    a = client.create(pod("a"))
    a2 = client.update(relabel(a, app="web"))
    assert rv(a2) > rv(a)
    assert a2.metadata.labels == {"app": "web"}
    assert a2.metadata.uid == a.metadata.uid


def test_update_with_stale_version_is_a_conflict(client: Client) -> None:
    a = client.create(pod("a"))
    client.update(relabel(a, app="first"))
    with pytest.raises(Conflict):
        client.update(relabel(a, app="second"))  # still carries the old version
    assert client.get(Pod, "default", "a").metadata.labels == {"app": "first"}


def test_update_without_version_is_unconditional(client: Client) -> None:
    a = client.create(pod("a"))
    client.update(relabel(a, app="first"))
    unversioned = relabel(pod("a"), app="second")
    assert client.update(unversioned).metadata.labels == {"app": "second"}


def test_update_that_changes_nothing_keeps_version_and_emits_no_event(client: Client) -> None:
    a = client.create(pod("a"))
    assert client.update(a) == a
    events = list(client.watch(Pod, a.metadata.resource_version, timeout=0))
    assert events == []


def test_create_existing_is_already_exists_and_missing_is_not_found(client: Client) -> None:
    client.create(pod("a"))
    with pytest.raises(AlreadyExists):
        client.create(pod("a"))
    with pytest.raises(NotFound):
        client.get(Pod, "default", "nope")
    with pytest.raises(NotFound):
        client.update(pod("nope"))
    with pytest.raises(NotFound):
        client.delete(Pod, "default", "nope")


def test_create_rejects_set_resource_version_and_missing_namespace(client: Client) -> None:
    versioned = pod("a").model_copy(
        update={"metadata": ObjectMeta(name="a", namespace="default", resource_version="7")}
    )
    with pytest.raises(Invalid):
        client.create(versioned)
    with pytest.raises(Invalid):
        client.create(pod("a", namespace=None))


def test_cluster_scoped_objects_lose_their_namespace(client: Client) -> None:
    node = client.create(Node(metadata=ObjectMeta(name="n1", namespace="default")))
    assert node.metadata.namespace is None
    assert client.get(Node, None, "n1") == node


def test_same_name_in_two_namespaces_are_two_objects(client: Client) -> None:
    client.create(pod("a", "one"))
    client.create(pod("a", "two"))
    assert [p.metadata.namespace for p in client.list(Pod).items] == ["one", "two"]
    assert [p.metadata.namespace for p in client.list(Pod, "two").items] == ["two"]


def test_list_is_sorted_and_filters_by_labels(client: Client) -> None:
    client.create(pod("b", app="web"))
    client.create(pod("a", app="web"))
    client.create(pod("c", app="db"))
    listed = client.list(Pod, labels={"app": "web"})
    assert [p.metadata.name for p in listed.items] == ["a", "b"]


def test_a_list_sees_every_write_to_its_kind_made_since_the_last_list(client: Client) -> None:
    # Store.list keeps each kind's sorted items between writes: each write
    # of the kind must be seen by the next list, whatever was listed before.
    def names() -> list[str]:
        return [f"{p.metadata.namespace}/{p.metadata.name}" for p in client.list(Pod).items]

    b = client.create(pod("b"))
    assert names() == ["default/b"]
    client.create(pod("a", "other"))
    assert names() == ["default/b", "other/a"]
    client.update(relabel(b, app="web"))
    assert [p.metadata.labels for p in client.list(Pod, "default").items] == [{"app": "web"}]
    assert [p.metadata.name for p in client.list(Pod, "other").items] == ["a"]
    client.delete(Pod, "default", "b")
    assert names() == ["other/a"]
    assert client.list(Pod, "default").items == ()


def test_a_list_of_one_kind_is_not_changed_by_writes_to_another(client: Client) -> None:
    client.create(Node(metadata=ObjectMeta(name="n1")))
    nodes = client.list(Node).items
    client.create(pod("a"))
    client.delete(Pod, "default", "a")
    # The same sorted tuple: other kinds' writes neither show in it nor rebuild it.
    assert client.list(Node).items is nodes


def test_a_list_after_restore_sees_the_restored_objects() -> None:
    store = Store()
    store.create(pod("kept"))
    saved = store.checkpoint()
    store.create(pod("new"))
    assert [p.metadata.name for p in store.list(Pod).items] == ["kept", "new"]
    store.restore(saved)
    assert [p.metadata.name for p in store.list(Pod).items] == ["kept"]


def test_delete_with_stale_version_or_uid_precondition_is_a_conflict(client: Client) -> None:
    a = client.create(pod("a"))
    client.update(relabel(a, x="1"))
    with pytest.raises(Conflict):
        client.delete(Pod, "default", "a", resource_version=a.metadata.resource_version)
    with pytest.raises(Conflict):
        client.delete(Pod, "default", "a", uid="not-the-uid")
    client.delete(Pod, "default", "a", uid=a.metadata.uid)
    assert client.list(Pod).items == ()


def test_recreated_object_gets_a_new_uid(client: Client) -> None:
    first = client.create(pod("a"))
    client.delete(Pod, "default", "a")
    second = client.create(pod("a"))
    assert first.metadata.uid != second.metadata.uid


def test_uids_do_not_depend_on_unrelated_objects() -> None:
    alone = LocalClient(Store())
    crowded = LocalClient(Store())
    crowded.create(pod("other"))
    assert alone.create(pod("a")).metadata.uid == crowded.create(pod("a")).metadata.uid


def test_generate_name_appends_five_safe_characters_and_never_reuses(client: Client) -> None:
    template = Pod(
        metadata=ObjectMeta(generate_name="web-", namespace="default"),
        spec=PodSpec(containers=[Container(name="c")]),
    )
    first = client.create(template)
    name = first.metadata.name or ""
    assert name.startswith("web-") and len(name) == len("web-") + 5
    assert all(ch in ALPHANUMS for ch in name[4:])
    client.delete(Pod, "default", name)
    assert client.create(template).metadata.name != name


def test_generated_names_are_the_same_in_every_fresh_store() -> None:
    template = Pod(
        metadata=ObjectMeta(generate_name="web-", namespace="default"),
        spec=PodSpec(containers=[Container(name="c")]),
    )
    names = [LocalClient(Store()).create(template).metadata.name for _ in range(2)]
    assert names[0] == names[1]


# ---------------------------------------------------------------- watch


def kinds_and_names(events: list[WatchEvent[Pod]]) -> list[tuple[str, str | None]]:
    return [(e.type, e.object.metadata.name) for e in events]


def test_watch_from_a_version_sees_exactly_the_later_events(client: Client) -> None:
    a = client.create(pod("a"))
    mark = client.list(Pod).resource_version
    b = client.create(pod("b"))
    a2 = client.update(relabel(a, app="web"))
    client.delete(Pod, "default", "b")
    events = list(client.watch(Pod, mark, timeout=0))
    assert kinds_and_names(events) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert events[0].object == b
    assert events[1].object == a2
    assert [int(e.resource_version) for e in events] == [int(mark) + i for i in (1, 2, 3)]


def test_watch_delete_event_carries_last_state_at_the_deletion_version(client: Client) -> None:
    a = client.create(pod("a", app="web"))
    client.delete(Pod, "default", "a")
    (event,) = list(client.watch(Pod, a.metadata.resource_version, timeout=0))
    assert event.type == "DELETED"
    assert event.object.metadata.labels == {"app": "web"}
    assert event.object.metadata.resource_version == event.resource_version
    assert int(event.resource_version) == rv(a) + 1


def test_watch_filters_by_kind_and_namespace(client: Client) -> None:
    mark = client.list(Pod).resource_version
    client.create(pod("a", "one"))
    client.create(Node(metadata=ObjectMeta(name="n1")))
    client.create(pod("b", "two"))
    events = list(client.watch(Pod, mark, namespace="two", timeout=0))
    assert kinds_and_names(events) == [("ADDED", "b")]


def test_watch_from_zero_starts_with_the_current_state(client: Client) -> None:
    client.create(pod("b"))
    a = client.create(pod("a"))
    client.delete(Pod, "default", "b")
    events = list(client.watch(Pod, "0", timeout=0))
    assert kinds_and_names(events) == [("ADDED", "a")]
    assert events[0].object == a


def test_watch_resource_version_resumes_without_gaps_or_repeats(client: Client) -> None:
    mark = client.list(Pod).resource_version
    client.create(pod("a"))
    first = client.watch(Pod, mark, timeout=0)
    assert kinds_and_names(list(first)) == [("ADDED", "a")]
    client.create(pod("b"))
    second = client.watch(Pod, first.resource_version, timeout=0)
    assert kinds_and_names(list(second)) == [("ADDED", "b")]


def test_watch_older_than_history_is_expired() -> None:
    client = LocalClient(Store(history=2))
    mark = client.list(Pod).resource_version
    for name in "abc":
        client.create(pod(name))
    with pytest.raises(Expired):
        client.watch(Pod, mark)
    recent = str(int(mark) + 1)
    assert kinds_and_names(list(client.watch(Pod, recent, timeout=0))) == [
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]


def test_blocking_watch_receives_events_from_another_thread(client: Client) -> None:
    mark = client.list(Pod).resource_version
    stream = client.watch(Pod, mark, timeout=10)
    received: list[str | None] = []

    def consume() -> None:
        for event in stream:
            received.append(event.object.metadata.name)
            if len(received) == 2:
                stream.stop()

    reader = threading.Thread(target=consume)
    reader.start()
    client.create(pod("a"))
    client.create(pod("b"))
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert received == ["a", "b"]


def test_stop_ends_a_watch_that_is_waiting(client: Client) -> None:
    stream = client.watch(Pod, client.list(Pod).resource_version)
    done = threading.Event()

    def consume() -> None:
        for _ in stream:
            pass
        done.set()

    reader = threading.Thread(target=consume)
    reader.start()
    stream.stop()
    reader.join(timeout=10)
    assert done.is_set()


def test_concurrent_updates_lose_no_write(client: Client) -> None:
    """Read-modify-write with retry on Conflict from many threads: every
    increment lands exactly once."""
    client.create(pod("counter", n="0"))

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                current = client.get(Pod, "default", "counter")
                n = int(current.metadata.labels["n"])
                try:
                    client.update(relabel(current, n=str(n + 1)))
                    break
                except Conflict:
                    continue

    threads = [threading.Thread(target=bump, args=(50,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.get(Pod, "default", "counter").metadata.labels["n"] == "400"


# ---------------------------------------------------------------- checkpoint and restore


def test_restore_puts_back_created_changed_and_deleted_objects() -> None:
    store = Store()
    kept = store.create(pod("kept"))
    changed = store.create(pod("changed", app="a"))
    gone = store.create(pod("gone"))
    saved = store.checkpoint()
    store.create(pod("new"))
    store.update(relabel(changed, app="b"))
    store.delete(Pod, "default", "gone")
    cursor = store.resource_version

    assert store.restore(saved) == 3
    items = {p.metadata.name or "": p for p in store.list(Pod).items}
    assert sorted(items) == ["changed", "gone", "kept"]
    assert items["kept"] == kept  # untouched: same object, same version
    assert items["changed"].metadata.labels == {"app": "a"}
    assert items["gone"].metadata.uid == gone.metadata.uid
    # Every way back is a write watchers see, with versions moving forward.
    events = list(store.watch(Pod, cursor, timeout=0))
    assert sorted((e.type, e.object.metadata.name or "") for e in events) == [
        ("ADDED", "gone"),
        ("DELETED", "new"),
        ("MODIFIED", "changed"),
    ]
    assert all(int(e.resource_version) > int(cursor) for e in events)
    assert store.restore(store.checkpoint()) == 0


def test_restore_of_an_object_recreated_under_its_name_brings_back_the_old_one() -> None:
    store = Store()
    old = store.create(pod("web"))
    saved = store.checkpoint()
    store.delete(Pod, "default", "web")
    store.create(pod("web"))
    cursor = store.resource_version
    store.restore(saved)
    assert store.get(Pod, "default", "web").metadata.uid == old.metadata.uid
    events = list(store.watch(Pod, cursor, timeout=0))
    assert [e.type for e in events] == ["DELETED", "ADDED"]
