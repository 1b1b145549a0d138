"""The connectivity matrix of a live lab: which sources reach which
destinations, with the outcome and latency of one real HTTP request each.

The pairs are picked from the lab's own state (`plan_pairs`, pure):

- pod → pod, same node and other node: the first pod of the first node
  with two pods (else the first pod) to the next pod on its node and to
  the first pod on another node;
- pod → Service, from that pod: a ClusterIP Service whose ready endpoints
  all run on the pod's node ("same node"), all on other nodes ("other
  node"), on both ("any node": kube-proxy picks one at random, the row's
  detail names the pod that answered), and one without endpoints ("no
  endpoints": kube-proxy rejects). ClusterIP-type Services are preferred
  over NodePort and LoadBalancer ones, then by namespace/name;
- node → Service: every node to the first ClusterIP Service with endpoints;
- external → NodePort (Cluster) and (Local): every external client to
  the first TCP NodePort of every NodePort/LoadBalancer Service on every
  node, grouped by the Service's externalTrafficPolicy.

Pods and Services in kube-system (a live lab's cluster DNS addon, which
answers DNS, not HTTP) are left out, and so is default/kubernetes (the
stand-in API server answers HTTPS only).

A category without a fitting pair (one node, no Service with Local
policy, ...) has no rows. The requests run concurrently, so expected
drops cost one timeout in all, not one each.

Owns: the pair choice, the rows, and their rendering; sending goes through
netemu.testing.testlab.send_http.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from netemu.controlplane.addons import API_NAMESPACE, API_SERVICE

# The live cluster DNS addon's namespace (netemu.controlplane.addons).
SYSTEM_NAMESPACE = "kube-system"

if TYPE_CHECKING:
    from netemu.api.core import Service
    from netemu.controlplane.state import ClusterState
    from netemu.testing.results import HttpResult
    from netemu.testing.testlab import NetemuLab
    from netemu.trace.topology import PodSite, Topology

MAX_PARALLEL = 16


class Category(StrEnum):
    POD_TO_POD_SAME_NODE = "pod → pod (same node)"
    POD_TO_POD_OTHER_NODE = "pod → pod (other node)"
    POD_TO_SERVICE_SAME_NODE = "pod → Service (same node)"
    POD_TO_SERVICE_OTHER_NODE = "pod → Service (other node)"
    POD_TO_SERVICE_ANY_NODE = "pod → Service (any node)"
    POD_TO_SERVICE_NO_ENDPOINTS = "pod → Service (no endpoints)"
    NODE_TO_SERVICE = "node → Service"
    NODEPORT_CLUSTER = "external → NodePort (Cluster)"
    NODEPORT_LOCAL = "external → NodePort (Local)"


@dataclass(frozen=True)
class Pair:
    """One request to make: FROM/TO words (netemu.trace.flow) and how the
    table shows them."""

    category: Category
    frm: str
    to: str
    port: int | None
    source: str
    destination: str


@dataclass(frozen=True)
class MatrixRow:
    category: Category
    source: str
    destination: str
    outcome: str  # answered | refused | timeout | unreachable | error
    latency_ms: float
    detail: str  # who answered and which client IP it saw, or why it failed
    pod: str | None = None  # the answering pod
    client_ip: str | None = None  # the client address the pod saw

    @property
    def ok(self) -> bool:
        return self.outcome == "answered"


@dataclass(frozen=True)
class Matrix:
    lab: str
    rows: tuple[MatrixRow, ...]

    def __iter__(self) -> Iterator[MatrixRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def failures(self) -> tuple[MatrixRow, ...]:
        """Rows whose request was not answered."""
        return tuple(row for row in self.rows if not row.ok)

    def category(self, category: Category | str) -> tuple[MatrixRow, ...]:
        return tuple(row for row in self.rows if row.category == category)

    def table(self) -> Table:
        """The rows as a rich table, drawn like the CLI's (no box)."""
        table = Table(
            box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 3, 0, 0)
        )
        for column in ("CATEGORY", "FROM", "TO", "OUTCOME", "LATENCY", "DETAIL"):
            right = column == "LATENCY"
            table.add_column(column, no_wrap=True, justify="right" if right else "left")
        for row in self.rows:
            table.add_row(
                str(row.category),
                row.source,
                row.destination,
                row.outcome,
                f"{row.latency_ms:.1f} ms",
                row.detail,
            )
        return table

    def __str__(self) -> str:
        out = io.StringIO()
        # Never wrapped: the table is read in logs and assertion messages.
        Console(file=out, width=10_000, highlight=False, color_system=None).print(self.table())
        return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


# -- choosing the pairs (pure) ---------------------------------------------------


def _key(namespace: str | None, name: str | None) -> str:
    return f"{namespace or 'default'}/{name}"


def _tcp_port(state: ClusterState, pod_key: str) -> int | None:
    for pod in state.pods:
        if _key(pod.metadata.namespace, pod.metadata.name) == pod_key:
            for container in pod.spec.containers:
                for port in container.ports:
                    if port.protocol == "TCP":
                        return port.container_port
    return None


def _endpoint_nodes(state: ClusterState, topology: Topology, svc: Service) -> list[str]:
    """The node of each ready endpoint of `svc`."""
    from netemu.api.core import SERVICE_NAME_LABEL

    nodes = []
    namespace = svc.metadata.namespace or "default"
    for eps in state.endpoint_slices:
        if (eps.metadata.namespace or "default") != namespace or eps.metadata.labels.get(
            SERVICE_NAME_LABEL
        ) != svc.metadata.name:
            continue
        for endpoint in eps.endpoints:
            if endpoint.conditions.ready is False:
                continue
            for ip in endpoint.addresses:
                pod = topology.pod_of_ip(ip)
                node = endpoint.node_name or (pod.node if pod else None)
                nodes.append(node or "?")
    return nodes


def _first_tcp_port(svc: Service) -> tuple[int, int | None] | None:
    """(port, nodePort) of the Service's first TCP port."""
    for port in svc.spec.ports:
        if port.protocol == "TCP":
            return port.port, port.node_port
    return None


def _where(nodes: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node] = counts.get(node, 0) + 1
    return ", ".join(f"{n} ×{c}" if c > 1 else n for n, c in sorted(counts.items()))


def _pod_label(pod: PodSite, port: int | None = None) -> str:
    where = f":{port}" if port is not None else ""
    return f"pod {pod.key}{where} ({pod.node})"


def plan_pairs(state: ClusterState, topology: Topology) -> list[Pair]:
    """The requests of the matrix for this state and topology, in table order."""
    pairs: list[Pair] = []
    node_order = list(topology.nodes)
    # Pods a request can be sent to: own namespace, and a TCP port to ask.
    reachable: dict[str, list[tuple[PodSite, int]]] = {n: [] for n in node_order}
    for pod in topology.pods.values():
        if pod.key.startswith(f"{SYSTEM_NAMESPACE}/"):
            continue
        port = _tcp_port(state, pod.key)
        if not pod.host_network and port is not None and pod.node in reachable:
            reachable[pod.node].append((pod, port))
    crowded = [n for n in node_order if len(reachable[n]) >= 2]
    populated = [n for n in node_order if reachable[n]]
    homes = crowded or populated
    source = reachable[homes[0]][0][0] if homes else None

    if source is not None:
        same = reachable[source.node][1:2]
        other = next((reachable[n][:1] for n in populated if n != source.node), [])
        for category, found in (
            (Category.POD_TO_POD_SAME_NODE, same),
            (Category.POD_TO_POD_OTHER_NODE, other),
        ):
            for pod, port in found:
                pairs.append(
                    Pair(
                        category,
                        f"pod/{source.key}",
                        f"pod/{pod.key}",
                        port,
                        _pod_label(source),
                        _pod_label(pod, port),
                    )
                )

    services = [
        s
        for s in state.services
        if s.spec.cluster_ip not in (None, "None")
        and _first_tcp_port(s) is not None
        and s.metadata.namespace != SYSTEM_NAMESPACE
        and (s.metadata.namespace, s.metadata.name) != (API_NAMESPACE, API_SERVICE)
    ]
    # ClusterIP Services first: a NodePort Service's ClusterIP is the same
    # kind of destination, but a plain one is what a reader expects here.
    services.sort(key=lambda s: (s.spec.type not in (None, "ClusterIP"),))
    if source is not None:
        chosen: dict[Category, tuple[Service, list[str]]] = {}
        for svc in services:
            nodes = _endpoint_nodes(state, topology, svc)
            if not nodes:
                category = Category.POD_TO_SERVICE_NO_ENDPOINTS
            elif all(n == source.node for n in nodes):
                category = Category.POD_TO_SERVICE_SAME_NODE
            elif all(n != source.node for n in nodes):
                category = Category.POD_TO_SERVICE_OTHER_NODE
            else:
                category = Category.POD_TO_SERVICE_ANY_NODE
            chosen.setdefault(category, (svc, nodes))
        for category in (
            Category.POD_TO_SERVICE_SAME_NODE,
            Category.POD_TO_SERVICE_OTHER_NODE,
            Category.POD_TO_SERVICE_ANY_NODE,
            Category.POD_TO_SERVICE_NO_ENDPOINTS,
        ):
            if category in chosen:
                svc, nodes = chosen[category]
                frm, label = f"pod/{source.key}", _pod_label(source)
                pairs.append(_service_pair(category, frm, label, svc, nodes))

    with_endpoints = [
        (s, nodes) for s in services if (nodes := _endpoint_nodes(state, topology, s))
    ]
    if with_endpoints:
        svc, nodes = with_endpoints[0]
        for node in node_order:
            frm, label = f"node/{node}", f"node {node}"
            pairs.append(_service_pair(Category.NODE_TO_SERVICE, frm, label, svc, nodes))

    node_ports: list[tuple[Service, int]] = []
    for svc in state.services:
        ports = _first_tcp_port(svc)
        if svc.spec.type in ("NodePort", "LoadBalancer") and ports and ports[1]:
            node_ports.append((svc, ports[1]))
    for policy, category in (
        ("Cluster", Category.NODEPORT_CLUSTER),
        ("Local", Category.NODEPORT_LOCAL),
    ):
        for svc, node_port in node_ports:
            if (svc.spec.external_traffic_policy or "Cluster") != policy:
                continue
            where = _where(_endpoint_nodes(state, topology, svc)) or "none"
            key = _key(svc.metadata.namespace, svc.metadata.name)
            for client in topology.clients:
                for node in node_order:
                    pairs.append(
                        Pair(
                            category,
                            f"client/{client}",
                            f"{node}:{node_port}",
                            None,
                            f"client {client}",
                            f"{node}:{node_port} ({key}; endpoints: {where})",
                        )
                    )
    return pairs


def _service_pair(
    category: Category, frm: str, source: str, svc: Service, nodes: list[str]
) -> Pair:
    key = _key(svc.metadata.namespace, svc.metadata.name)
    ports = _first_tcp_port(svc)
    assert ports is not None
    where = _where(nodes) or "none"
    return Pair(
        category, frm, f"svc/{key}", ports[0], source, f"svc {key}:{ports[0]} (endpoints: {where})"
    )


# -- running it ---------------------------------------------------------------


def _detail(result: HttpResult) -> str:
    if result.outcome != "answered":
        return result.detail
    if result.pod is None:
        return f"HTTP {result.status}; {result.detail}"
    snat = " (SNAT)" if result.masqueraded else ""
    status = "" if result.ok else f"HTTP {result.status}, "
    return f"{status}{result.pod} on {result.node} saw {result.client_ip}{snat}"


def connectivity_matrix(lab: NetemuLab, *, timeout: float = 1.0) -> Matrix:
    """One request per pair of `plan_pairs`, `timeout` seconds each at most."""
    from netemu.testing.testlab import send_http
    from netemu.trace.flow import FlowError, resolve_flow

    state = lab.state()
    topology = lab.topology()
    pairs = plan_pairs(state, topology)

    def run(pair: Pair) -> MatrixRow:
        try:
            flow = resolve_flow(state, topology, pair.frm, pair.to, pair.port, "tcp")
        except FlowError as exc:
            return MatrixRow(pair.category, pair.source, pair.destination, "error", 0.0, str(exc))
        result = send_http(flow, timeout=timeout)
        return MatrixRow(
            pair.category,
            pair.source,
            pair.destination,
            result.outcome,
            result.latency_ms,
            _detail(result),
            result.pod,
            result.client_ip,
        )

    if not pairs:
        return Matrix(lab.name, ())
    with ThreadPoolExecutor(max_workers=min(len(pairs), MAX_PARALLEL)) as pool:
        rows = tuple(pool.map(run, pairs))
    return Matrix(lab.name, rows)
