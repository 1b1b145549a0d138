"""The scheduler (spread, nodeSelector, cordoned nodes, Pending with a reason)
and pod addressing (host-local IPAM from .2, hostNetwork, status)."""

from __future__ import annotations

from collections import Counter

from manifests import build, objects, running

from netemu.api.core import Pod
from netemu.controlplane import (
    ClusterState,
    apply_objects,
)

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11, labels: {disk: ssd}}
  - {name: node-2, underlayIP: 192.168.56.12}
"""


def deployment(name: str, replicas: int, pod_spec: str = "") -> str:
    return f"""
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{{pod_spec}containers: [{{name: c}}]}}
"""


def bare_pod(name: str, spec: str = "", status: str = "", metadata: str = "") -> str:
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}{metadata}}}
spec: {{{spec}containers: [{{name: c}}]}}
{f"status: {{{status}}}" if status else ""}
"""


def pod(state: ClusterState, name: str) -> Pod:
    for p in state.pods:
        if p.metadata.name == name:
            return p
    raise KeyError(name)


def placement(state: ClusterState, prefix: str) -> Counter[str]:
    return Counter(
        p.spec.node_name or "" for p in state.pods if (p.metadata.name or "").startswith(prefix)
    )


def conditions(p: Pod) -> dict[str, str]:
    return {c.type: c.status for c in p.status.conditions}


# ---------------------------------------------------------------- scheduler


def test_replicas_spread_evenly_over_nodes() -> None:
    assert placement(build(LAB + deployment("web", 4)), "web-") == {"node-1": 2, "node-2": 2}


def test_spread_counts_same_owner_before_total_pods() -> None:
    # node-1 is busier overall, but "web" has none there yet.
    state = build(
        LAB
        + bare_pod("a", "nodeName: node-1, ")
        + bare_pod("b", "nodeName: node-1, ")
        + bare_pod("c", "nodeName: node-1, ")
        + deployment("web", 2)
    )
    assert placement(state, "web-") == {"node-1": 1, "node-2": 1}


def test_ties_on_owner_count_go_to_the_less_loaded_node() -> None:
    state = build(LAB + bare_pod("a", "nodeName: node-1, ") + deployment("web", 1))
    assert placement(state, "web-") == {"node-2": 1}


def test_node_selector_restricts_placement() -> None:
    state = build(LAB + deployment("db", 3, "nodeSelector: {disk: ssd}, "))
    assert placement(state, "db-") == {"node-1": 3}


def test_cordoned_node_gets_no_new_pods_but_keeps_explicitly_bound_ones() -> None:
    cordon = (
        "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {unschedulable: true}\n"
    )
    state = build(LAB + cordon + deployment("web", 3) + bare_pod("pinned", "nodeName: node-2, "))
    assert placement(state, "web-") == {"node-1": 3}
    assert pod(state, "pinned").spec.node_name == "node-2"
    assert pod(state, "pinned").status.phase == "Running"


def test_unschedulable_pod_stays_pending_with_reason_and_message() -> None:
    cordon = (
        "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {unschedulable: true}\n"
    )
    state = build(LAB + cordon + bare_pod("gpu", "nodeSelector: {gpu: 'true'}, "))
    p = pod(state, "gpu")
    assert p.spec.node_name is None
    assert p.status.phase == "Pending"
    assert p.status.pod_ip is None and p.status.pod_ips == []
    (cond,) = p.status.conditions
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert cond.message == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) were unschedulable."
    )


def test_pod_without_any_node_is_pending() -> None:
    p = pod(build(bare_pod("lonely")), "lonely")
    assert p.status.phase == "Pending"
    assert p.status.conditions[0].message == "no nodes available to schedule pods"


def test_pending_pod_is_scheduled_once_a_fitting_node_appears() -> None:
    client, plane = running(LAB + bare_pod("gpu", "nodeSelector: {gpu: 'true'}, "))
    client.create(
        objects("apiVersion: v1\nkind: Node\nmetadata: {name: gpu-1, labels: {gpu: 'true'}}\n")[0]
    )
    plane.run_to_fixed_point()
    p = client.get(Pod, "default", "gpu")
    assert p.spec.node_name == "gpu-1"
    assert p.status.phase == "Running"
    assert conditions(p)["PodScheduled"] == "True"
    assert p.status.pod_ip == "10.244.2.2"


def required_affinity(*terms: str) -> str:
    """A pod spec prefix with required node affinity: one nodeSelectorTerm per argument."""
    listed = ", ".join(terms)
    return (
        "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        f"{{nodeSelectorTerms: [{listed}]}}}}}}, "
    )


THREE_NODES = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11, labels: {disk: ssd, gen: "3"}}
  - {name: node-2, underlayIP: 192.168.56.12, labels: {disk: hdd, gen: "5"}}
  - {name: node-3, underlayIP: 192.168.56.13, labels: {gen: x}}
"""


def test_required_node_affinity_places_pods_only_on_matching_nodes() -> None:
    cases = {
        "{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}": {"node-1"},
        "{matchExpressions: [{key: disk, operator: NotIn, values: [ssd]}]}": {"node-2", "node-3"},
        "{matchExpressions: [{key: disk, operator: Exists}]}": {"node-1", "node-2"},
        "{matchExpressions: [{key: disk, operator: DoesNotExist}]}": {"node-3"},
        # Gt/Lt read the label as an integer; "x" is none, so node-3 never matches.
        "{matchExpressions: [{key: gen, operator: Gt, values: ['4']}]}": {"node-2"},
        "{matchExpressions: [{key: gen, operator: Lt, values: ['4']}]}": {"node-1"},
        "{matchFields: [{key: metadata.name, operator: In, values: [node-3]}]}": {"node-3"},
        "{matchFields: [{key: metadata.name, operator: NotIn, values: [node-3]}]}": {
            "node-1",
            "node-2",
        },
        # Requirements of one term are ANDed, fields included.
        "{matchExpressions: [{key: disk, operator: Exists}], "
        "matchFields: [{key: metadata.name, operator: In, values: [node-2]}]}": {"node-2"},
        # The kubelet's own labels.
        "{matchExpressions: [{key: kubernetes.io/os, operator: In, values: [linux]}]}": {
            "node-1",
            "node-2",
            "node-3",
        },
    }
    for term, nodes in cases.items():
        state = build(THREE_NODES + deployment("web", 6, required_affinity(term)))
        assert set(placement(state, "web-")) == nodes, term


def test_node_selector_terms_are_ored_and_an_empty_term_matches_nothing() -> None:
    ored = required_affinity(
        "{matchFields: [{key: metadata.name, operator: In, values: [node-1]}]}",
        "{matchExpressions: [{key: gen, operator: In, values: ['5']}]}",
    )
    state = build(THREE_NODES + deployment("web", 4, ored))
    assert placement(state, "web-") == {"node-1": 2, "node-2": 2}
    state = build(THREE_NODES + bare_pod("a", required_affinity("{}")))
    (cond,) = pod(state, "a").status.conditions
    assert cond.message == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )


def test_node_selector_and_node_affinity_must_both_hold() -> None:
    spec = "nodeSelector: {disk: ssd}, " + required_affinity(
        "{matchExpressions: [{key: gen, operator: In, values: ['5']}]}"
    )
    p = pod(build(THREE_NODES + bare_pod("a", spec)), "a")
    assert p.spec.node_name is None
    assert p.status.conditions[0].message == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )


def test_daemon_set_runs_on_the_nodes_its_required_affinity_allows() -> None:
    affinity = required_affinity("{matchExpressions: [{key: disk, operator: Exists}]}")
    state = build(
        THREE_NODES
        + f"""
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec: {{{affinity}containers: [{{name: c}}]}}
"""
    )
    assert placement(state, "agent-") == {"node-1": 1, "node-2": 1}
    (ds,) = state.daemon_sets
    assert ds.status["desiredNumberScheduled"] == 2


def pod_affinity(kind: str, *terms: str) -> str:
    """A pod spec prefix with required podAffinity or podAntiAffinity terms."""
    listed = ", ".join(terms)
    return f"affinity: {{{kind}: {{requiredDuringSchedulingIgnoredDuringExecution: [{listed}]}}}}, "


ONE_PER_NODE = "{labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}"


def test_required_anti_affinity_puts_one_replica_per_node_and_leaves_the_rest_pending() -> None:
    state = build(THREE_NODES + deployment("web", 4, pod_affinity("podAntiAffinity", ONE_PER_NODE)))
    assert placement(state, "web-") == {"node-1": 1, "node-2": 1, "node-3": 1, "": 1}
    (pending,) = [p for p in state.pods if not p.spec.node_name]
    assert pending.status.conditions[0].message == (
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    )


def test_anti_affinity_over_a_wider_topology_key() -> None:
    # node-1 and node-2 share zone a: one replica there, one on node-3 (zone b).
    lab = (
        THREE_NODES.replace("disk: ssd,", "zone: a, disk: ssd,")
        .replace("disk: hdd,", "zone: a, disk: hdd,")
        .replace("labels: {gen: x}", "labels: {gen: x, zone: b}")
    )
    zones = "{labelSelector: {matchLabels: {app: web}}, topologyKey: zone}"
    state = build(lab + deployment("web", 3, pod_affinity("podAntiAffinity", zones)))
    placed = placement(state, "web-")
    assert placed[""] == 1 and placed["node-3"] == 1
    assert placed["node-1"] + placed["node-2"] == 1


def test_existing_pods_anti_affinity_keeps_matching_pods_away() -> None:
    # "db" refuses to share a node with app=web pods; web has no rule of its own,
    # yet it may not go where db runs (the existing pod's anti-affinity).
    db_rule = pod_affinity("podAntiAffinity", ONE_PER_NODE)
    state = build(
        THREE_NODES
        + bare_pod("db", "nodeName: node-1, " + db_rule)
        + deployment("web", 2)
        + bare_pod("late", "nodeSelector: {disk: ssd}, ", metadata=", labels: {app: web}")
    )
    assert placement(state, "web-") == {"node-2": 1, "node-3": 1}
    late = pod(state, "late")
    assert late.spec.node_name is None
    assert late.status.conditions[0].message == (
        "0/3 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, "
        "2 node(s) didn't match Pod's node affinity/selector."
    )


def test_required_affinity_follows_the_pods_it_selects() -> None:
    near_cache = "{labelSelector: {matchLabels: {app: cache}}, topologyKey: kubernetes.io/hostname}"
    state = build(
        THREE_NODES
        + bare_pod("cache", "nodeName: node-2, ", metadata=", labels: {app: cache}")
        + deployment("web", 3, pod_affinity("podAffinity", near_cache))
    )
    assert placement(state, "web-") == {"node-2": 3}
    # Nothing selected anywhere, and the pod does not select itself: Pending.
    state = build(THREE_NODES + deployment("web", 1, pod_affinity("podAffinity", near_cache)))
    (lonely,) = state.pods
    assert lonely.status.conditions[0].message == (
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
    )


def test_the_first_of_a_group_with_affinity_to_itself_may_go_anywhere() -> None:
    together = "{labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}"
    state = build(THREE_NODES + deployment("web", 4, pod_affinity("podAffinity", together)))
    assert list(placement(state, "web-").values()) == [4]


def test_pod_affinity_terms_look_in_the_pods_namespace_unless_told_otherwise() -> None:
    other_ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {team: x}}\n"
    cache = bare_pod(
        "cache", "nodeName: node-3, ", metadata=", namespace: other, labels: {app: cache}"
    )
    term = (
        "{{labelSelector: {{matchLabels: {{app: cache}}}}, topologyKey: kubernetes.io/hostname{}}}"
    )
    cases = {
        "": None,  # default namespace only: no cache pod there
        ", namespaces: [other]": "node-3",
        ", namespaceSelector: {matchLabels: {team: x}}": "node-3",
        ", namespaceSelector: {}": "node-3",
    }
    for extra, node in cases.items():
        rule = pod_affinity("podAffinity", term.format(extra))
        state = build(THREE_NODES + other_ns + cache + bare_pod("web", rule))
        assert pod(state, "web").spec.node_name == node, extra


def test_match_label_keys_narrow_anti_affinity_to_the_pods_own_revision() -> None:
    # One replica per node among pods of the same pod-template-hash: a new
    # revision may share nodes with the old one.
    rule = pod_affinity(
        "podAntiAffinity",
        "{labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname, "
        "matchLabelKeys: [rev]}",
    )
    old = "".join(
        bare_pod(
            f"old-{n}", f"nodeName: node-{n}, " + rule, metadata=", labels: {app: web, rev: a}"
        )
        for n in (1, 2, 3)
    )
    new = bare_pod("new", rule, metadata=", labels: {app: web, rev: b}")
    assert pod(build(THREE_NODES + old + new), "new").spec.node_name is not None
    same = bare_pod("same", rule, metadata=", labels: {app: web, rev: a}")
    assert pod(build(THREE_NODES + old + same), "same").spec.node_name is None


def small_nodes(max_pods: int) -> str:
    return f"""
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {{name: lab}}
spec:
  nodes:
  - {{name: node-1, underlayIP: 192.168.56.11, maxPods: {max_pods}}}
  - {{name: node-2, underlayIP: 192.168.56.12, maxPods: {max_pods}}}
"""


def test_nodes_report_their_max_pods_as_pod_capacity() -> None:
    assert {n.status.allocatable["pods"] for n in build(LAB).nodes} == {"110"}
    small = build(small_nodes(7))
    assert {n.status.capacity["pods"] for n in small.nodes} == {"7"}
    assert {n.status.allocatable["pods"] for n in small.nodes} == {"7"}


def test_a_full_node_takes_no_more_pods_and_the_rest_stay_pending() -> None:
    # kube-scheduler's NodeResourcesFit: pods on the node + 1 must not exceed
    # its allocatable pods.
    state = build(small_nodes(3) + deployment("web", 8))
    assert placement(state, "web-") == {"node-1": 3, "node-2": 3, "": 2}
    pending = [p for p in state.pods if not p.spec.node_name]
    assert len(pending) == 2
    for p in pending:
        assert p.status.phase == "Pending"
        (cond,) = p.status.conditions
        assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
        assert cond.message == "0/2 nodes are available: 2 Too many pods."


def test_pods_bound_by_name_count_against_a_node_s_pods() -> None:
    state = build(
        small_nodes(2)
        + bare_pod("a", "nodeName: node-1, ")
        + bare_pod("b", "nodeName: node-1, ")
        + deployment("web", 3)
    )
    assert placement(state, "web-") == {"node-2": 2, "": 1}


def test_ports_are_checked_before_pod_count() -> None:
    # A node fails on its first failing filter: NodePorts before NodeResourcesFit.
    host_port = "containers: [{name: c, ports: [{containerPort: 80, hostPort: 80}]}]"
    state = build(
        small_nodes(1)
        + bare_pod("a", "nodeName: node-1, ")
        + bare_pod("b", "nodeName: node-2, ").replace("containers: [{name: c}]", host_port)
        + bare_pod("c").replace("containers: [{name: c}]", host_port)
    )
    (cond,) = pod(state, "c").status.conditions
    assert cond.message == (
        "0/2 nodes are available: 1 Too many pods, "
        "1 node(s) didn't have free ports for the requested pod ports."
    )


def test_a_pending_pod_is_placed_once_a_full_node_has_room() -> None:
    client, plane = running(small_nodes(1) + bare_pod("a") + bare_pod("b") + bare_pod("c"))
    assert client.get(Pod, "default", "c").spec.node_name is None
    client.delete(Pod, "default", "a")
    plane.run_to_fixed_point()
    assert client.get(Pod, "default", "c").spec.node_name is not None


def test_a_node_from_a_manifest_without_allocatable_is_not_limited() -> None:
    node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"
    state = build(node + deployment("web", 120))
    assert placement(state, "web-") == {"n1": 120}


# ---------------------------------------------------------------- IPAM and status


def test_pods_get_addresses_from_dot_two_in_creation_order() -> None:
    state = build(
        LAB
        + bare_pod("zeta", "nodeName: node-1, ")
        + bare_pod("alpha", "nodeName: node-1, ")
        + bare_pod("mid", "nodeName: node-1, ")
        + bare_pod("other", "nodeName: node-2, ")
    )
    assert [pod(state, n).status.pod_ip for n in ("zeta", "alpha", "mid")] == [
        "10.244.0.2",
        "10.244.0.3",
        "10.244.0.4",
    ]
    assert pod(state, "other").status.pod_ip == "10.244.1.2"
    gateway = {"10.244.0.1", "10.244.1.1"}
    assert not gateway & {p.status.pod_ip for p in state.pods}


def test_running_pod_status_has_ips_and_conditions() -> None:
    p = pod(build(LAB + bare_pod("a", "nodeName: node-2, ")), "a")
    assert p.status.phase == "Running"
    assert (p.status.pod_ip, [i.ip for i in p.status.pod_ips]) == ("10.244.1.2", ["10.244.1.2"])
    assert (p.status.host_ip, [i.ip for i in p.status.host_ips]) == (
        "192.168.56.12",
        ["192.168.56.12"],
    )
    assert conditions(p) == {
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }


def test_host_network_pod_gets_the_node_ip_and_uses_no_pod_cidr_address() -> None:
    state = build(
        LAB
        + bare_pod("host", "nodeName: node-1, hostNetwork: true, ")
        + bare_pod("a", "nodeName: node-1, ")
    )
    assert pod(state, "host").status.pod_ip == "192.168.56.11"
    assert pod(state, "a").status.pod_ip == "10.244.0.2"


def test_freed_address_is_not_reused_before_the_range_comes_round() -> None:
    client, plane = running(LAB + "".join(bare_pod(n, "nodeName: node-1, ") for n in "abc"))
    assert client.get(Pod, "default", "b").status.pod_ip == "10.244.0.3"
    client.delete(Pod, "default", "b")
    apply_objects(client, objects(bare_pod("d", "nodeName: node-1, ")))
    plane.run_to_fixed_point()
    assert client.get(Pod, "default", "d").status.pod_ip == "10.244.0.5"


def test_freed_address_is_reused_when_the_range_wraps() -> None:
    # A /29 node range: .1 is the gateway, .7 broadcast, so pods get .2-.6.
    lab = LAB.replace(
        "{name: node-1, underlayIP: 192.168.56.11, labels: {disk: ssd}}",
        "{name: node-1, underlayIP: 192.168.56.11, podCIDR: 10.244.9.0/29}",
    )
    pods = "".join(bare_pod(f"p{i}", "nodeName: node-1, ") for i in range(5))
    client, plane = running(lab + pods)
    ips = [client.get(Pod, "default", f"p{i}").status.pod_ip for i in range(5)]
    assert ips == [f"10.244.9.{i}" for i in range(2, 7)]

    apply_objects(client, objects(bare_pod("full", "nodeName: node-1, ")))
    plane.run_to_fixed_point()
    full = client.get(Pod, "default", "full")
    assert full.status.pod_ip is None and full.status.phase == "Pending"

    client.delete(Pod, "default", "p1")
    plane.run_to_fixed_point()
    assert client.get(Pod, "default", "full").status.pod_ip == "10.244.9.3"


def test_user_written_status_is_kept_and_completed_only() -> None:
    state = build(
        LAB
        + bare_pod("unready", "nodeName: node-1, ", "conditions: [{type: Ready, status: 'False'}]")
        + bare_pod(
            "leaving",
            "nodeName: node-1, ",
            metadata=", deletionTimestamp: '2024-01-01T00:00:00Z'",
        )
        + bare_pod("fixed-ip", "nodeName: node-2, ", "podIP: 10.244.1.77")
    )
    unready = pod(state, "unready")
    assert conditions(unready)["Ready"] == "False"
    assert conditions(unready)["ContainersReady"] == "False"
    assert unready.status.pod_ip == "10.244.0.2"
    leaving = pod(state, "leaving")
    assert leaving.metadata.deletion_timestamp == "2024-01-01T00:00:00Z"
    assert leaving.status.pod_ip == "10.244.0.3"
    assert pod(state, "fixed-ip").status.pod_ip == "10.244.1.77"


def test_pod_on_unknown_node_stays_pending_without_ip() -> None:
    p = pod(build(LAB + bare_pod("lost", "nodeName: node-9, ")), "lost")
    assert p.status.phase == "Pending"
    assert p.status.pod_ip is None


def test_completed_pod_gets_no_address() -> None:
    p = pod(build(LAB + bare_pod("done", "nodeName: node-1, ", "phase: Succeeded")), "done")
    assert p.status.phase == "Succeeded"
    assert p.status.pod_ip is None
