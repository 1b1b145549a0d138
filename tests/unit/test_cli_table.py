# ruff: noqa: E501  (the expected tables are kubectl's lines, as wide as they are)
"""`netemu get`'s tables (netemu.cli_table) as kubectl prints them: for
every kind, the columns, cells and spacing of kubectl's printers
(pkg/printers/internalversion/printers.go, with kubectl's tabwriter:
3 spaces of padding, cells at least 6 wide, the last column never padded),
AGE as duration.HumanDuration, NAMESPACE only when every namespace is
shown, and -o json|yaml with keys sorted as kubectl prints them."""

from __future__ import annotations

import dataclasses
import datetime
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from manifests import objects

from netemu.api.validate import load_and_validate
from netemu.cli_table import (
    dump_json,
    dump_yaml,
    human_duration,
    in_namespace,
    items,
    listing,
    render,
    table,
)
from netemu.controlplane import build_cluster_state, nodeinfo, nodes
from netemu.controlplane.state import ClusterState
from netemu.net.standin import STAND_IN_ANNOTATION

DEFAULT = str(Path(__file__).resolve().parents[2] / "controlplane" / "default")
CREATED = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
NOW = CREATED + datetime.timedelta(seconds=200)  # every AGE is 3m20s
FACTS = nodeinfo.HostFacts(
    kernel_version="6.1.0-18-amd64",
    os_image="Debian GNU/Linux 12 (bookworm)",
    architecture="amd64",
    cpus=2,
    memory_kib=4_000_000,
    ephemeral_storage_kib=20_000_000,
)


@pytest.fixture(scope="module")
def state() -> ClusterState:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nodes, "host_facts", lambda: FACTS)
        loaded = [item.obj for item in load_and_validate([DEFAULT])]
        return build_cluster_state(loaded, clock=lambda: CREATED)


def shown(kind: str, state: ClusterState, wide: bool = False, namespaced: bool = True) -> str:
    return render(table(kind, state, wide, with_namespace=namespaced, now=NOW))


def expect(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_pods(state: ClusterState) -> None:
    assert shown("pods", state) == expect("""
        NAMESPACE   NAME                   READY   STATUS    RESTARTS   AGE
        default     web-7769d69d5c-65gwp   1/1     Running   0          3m20s
        default     web-7769d69d5c-qxmpz   1/1     Running   0          3m20s
        default     web-7769d69d5c-tpd2k   1/1     Running   0          3m20s
        """)
    wide = (
        "READY   STATUS    RESTARTS   AGE     IP           NODE     NOMINATED NODE   "
        "READINESS GATES   STAND-INS"
    )
    # Offline nothing runs, so no kubelet has put a stand-in in any pod.
    assert shown("pods", state, wide=True).splitlines()[:2] == [
        f"NAMESPACE   NAME                   {wide}",
        "default     web-7769d69d5c-65gwp   1/1     Running   0          3m20s   "
        "10.244.0.2   node-1   <none>           <none>            <none>",
    ]


def test_pods_wide_lists_the_stand_ins_the_kubelet_recorded(state: ClusterState) -> None:
    pod = state.pods[0]
    meta = pod.metadata.model_copy(
        update={"annotations": {**pod.metadata.annotations, STAND_IN_ANNOTATION: "app,sidecar"}}
    )
    marked = dataclasses.replace(state, pods=(pod.model_copy(update={"metadata": meta}),))
    lines = shown("pods", marked, wide=True).splitlines()
    assert lines[0].endswith("READINESS GATES   STAND-INS")
    assert lines[1].endswith("<none>            app,sidecar")


def test_services(state: ClusterState) -> None:
    assert shown("services", state, wide=True) == expect("""
        NAMESPACE   NAME           TYPE        CLUSTER-IP       EXTERNAL-IP   PORT(S)        AGE     SELECTOR
        default     empty          ClusterIP   10.96.236.17     <none>        80/TCP         3m20s   app=nothing
        default     web            ClusterIP   10.96.149.150    <none>        80/TCP         3m20s   app=web
        default     web-local      NodePort    10.96.47.198     <none>        80:30081/TCP   3m20s   app=web
        default     web-nodeport   NodePort    10.107.216.142   <none>        80:30080/TCP   3m20s   app=web
        """)


def test_endpointslices(state: ClusterState) -> None:
    assert shown("endpointslices", state) == expect("""
        NAMESPACE   NAME                 ADDRESSTYPE   PORTS     ENDPOINTS                          AGE
        default     empty-np9kr          IPv4          <unset>   <unset>                            3m20s
        default     web-local-vkmhj      IPv4          8080      10.244.0.2,10.244.0.3,10.244.1.2   3m20s
        default     web-nodeport-nkj94   IPv4          8080      10.244.0.2,10.244.0.3,10.244.1.2   3m20s
        default     web-tq5xk            IPv4          8080      10.244.0.2,10.244.0.3,10.244.1.2   3m20s
        """)


def test_nodes(state: ClusterState) -> None:
    assert shown("nodes", state) == expect("""
        NAME     STATUS   ROLES    AGE     VERSION
        node-1   Ready    <none>   3m20s   v1.31.0
        node-2   Ready    <none>   3m20s   v1.31.0
        """)
    assert shown("nodes", state, wide=True) == expect("""
        NAME     STATUS   ROLES    AGE     VERSION   INTERNAL-IP     EXTERNAL-IP   OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME
        node-1   Ready    <none>   3m20s   v1.31.0   192.168.56.11   <none>        Debian GNU/Linux 12 (bookworm)   6.1.0-18-amd64   netemu://0.1.0
        node-2   Ready    <none>   3m20s   v1.31.0   192.168.56.12   <none>        Debian GNU/Linux 12 (bookworm)   6.1.0-18-amd64   netemu://0.1.0
        """)


def test_namespaces_and_the_namespace_column(state: ClusterState) -> None:
    assert shown("namespaces", state) == expect("""
        NAME              STATUS   AGE
        default           Active   3m20s
        kube-node-lease   Active   3m20s
        kube-public       Active   3m20s
        kube-system       Active   3m20s
        """)
    # -n: one namespace, no NAMESPACE column (kubectl prints it only with -A).
    assert shown("deployments", in_namespace(state, "default"), namespaced=False) == expect("""
        NAME   READY   UP-TO-DATE   AVAILABLE   AGE
        web    3/3     3            3           3m20s
        """)


def test_deployments_and_replicasets(state: ClusterState) -> None:
    image = "registry.k8s.io/e2e-test-images/agnhost:2.52"
    assert shown("deployments", state, wide=True) == expect(f"""
        NAMESPACE   NAME   READY   UP-TO-DATE   AVAILABLE   AGE     CONTAINERS   IMAGES                                         SELECTOR
        default     web    3/3     3            3           3m20s   web          {image}   app=web
        """)
    assert shown("replicasets", state, wide=True) == expect(f"""
        NAMESPACE   NAME             DESIRED   CURRENT   READY   AGE     CONTAINERS   IMAGES                                         SELECTOR
        default     web-7769d69d5c   3         3         3       3m20s   web          {image}   app=web,pod-template-hash=7769d69d5c
        """)


WORKLOADS = """
    apiVersion: netemu/v1alpha1
    kind: Lab
    metadata: {name: sets}
    spec:
      nodes:
      - {name: node-1, underlayIP: 192.168.56.11, labels: {disk: ssd}}
      - {name: node-2, underlayIP: 192.168.56.12}
    ---
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: agent, namespace: kube-system}
    spec:
      selector:
        matchLabels: {app: agent}
        matchExpressions: [{key: tier, operator: In, values: [b, a]}]
      template:
        metadata: {labels: {app: agent, tier: a}}
        spec:
          nodeSelector: {disk: ssd}
          containers: [{name: agent, image: busybox}, {name: log, image: "nginx:1.27"}]
    ---
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec:
      serviceName: db
      replicas: 2
      selector: {matchLabels: {app: db}}
      template:
        metadata: {labels: {app: db}}
        spec:
          containers: [{name: db, image: "postgres:16"}]
    """


def test_daemonsets_and_statefulsets() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nodes, "host_facts", lambda: FACTS)
        state = build_cluster_state(objects(WORKLOADS), clock=lambda: CREATED)
    assert shown("daemonsets", state, wide=True) == expect("""
        NAMESPACE     NAME    DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE     CONTAINERS   IMAGES               SELECTOR
        kube-system   agent   1         1         1       1            1           disk=ssd        3m20s   agent,log    busybox,nginx:1.27   app=agent,tier in (a,b)
        """)
    assert shown("statefulsets", state, wide=True) == expect("""
        NAMESPACE   NAME   READY   AGE     CONTAINERS   IMAGES
        default     db     2/2     3m20s   db           postgres:16
        """)


def test_render_pads_as_kubectls_tabwriter() -> None:
    shown = {
        "columnDefinitions": [{"name": n, "type": "string"} for n in ("A", "LONGER", "Z")],
        "rows": [{"cells": ["x", "y", "last"]}, {"cells": ["x", "y", ""]}],
    }
    # "A" is 1 wide: its cells are 6 wide (tabwriter's minwidth), not 1 + 3.
    # An empty last cell leaves no padding behind (kubectl's tabwriter would
    # pad the cell before it; netemu's lines never end in spaces).
    assert render(shown) == "A     LONGER   Z\nx     y        last\nx     y\n"


def test_no_line_ends_in_a_space(state: ClusterState) -> None:
    for kind in ("pods", "services", "endpointslices", "nodes", "deployments", "replicasets"):
        for wide in (False, True):
            for line in shown(kind, state, wide).splitlines():
                assert line == line.rstrip(), (kind, wide, line)


def test_no_rows_is_no_resources_found(state: ClusterState) -> None:
    assert render(table("pods", in_namespace(state, "nowhere"), wide=False)) == (
        "No resources found.\n"
    )


def test_in_namespace_keeps_cluster_scoped_kinds_and_that_namespace_only(
    state: ClusterState,
) -> None:
    assert state.services and state.pods
    assert in_namespace(state, "default") == state
    elsewhere = in_namespace(state, "elsewhere")
    assert (elsewhere.services, elsewhere.pods, elsewhere.deployments) == ((), (), ())
    assert elsewhere.nodes == state.nodes and elsewhere.namespaces == state.namespaces


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400 + 5 * 86400, "3y5d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_age_is_human_duration(seconds: int, age: str) -> None:
    assert human_duration(seconds) == age


def test_json_and_yaml_sort_keys_as_kubectl(state: ClusterState) -> None:
    shown = listing(items("pods", state))
    text = dump_json(shown)
    assert json.loads(text) == shown
    assert text.startswith('{\n    "apiVersion": "v1",\n    "items": [\n        {\n')
    as_yaml = dump_yaml(shown)
    assert yaml.safe_load(as_yaml) == shown
    assert as_yaml.startswith("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n")
    # kubectl's YAML quotes with double quotes: `status: "True"`.
    assert '      status: "True"\n' in as_yaml and "'" not in as_yaml
