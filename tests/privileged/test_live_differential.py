"""Differential test: the offline simulator's prediction for a flow equals
what the live lab does with real packets.

Each row names a lab under controlplane/, a source (a pod, a node or an
external client), a destination (a Service's ClusterIP, LoadBalancer or
external IP, or a node's NodePort) and a protocol. Addresses and ports are
read from the running lab's state and must equal the offline state's
(the control plane is deterministic). The offline side is what `netemu
trace --offline` runs: compile the rules of the node the packet first
meets, simulate the packet there. The live side sends the packet:

- DNAT to endpoints E: SPREAD_REQUESTS requests, each a new connection
  (or UDP socket), are all answered, by exactly the pods at E (for a
  Service with ClientIP affinity: by a single one of E, every time), and
  each endpoint sees as client the packet's own source when the prediction
  says no masquerade, else the address the deciding node's routing uses
  towards that endpoint (what MASQUERADE writes);
- REJECT: the connection is refused at once (TCP RST / ICMP unreachable);
- DROP: no answer within DROP_TIMEOUT;
- no translation (the rules leave the packet alone): the packet goes to
  its original destination, where nothing listens in these rows: refused;
  except when that destination is another node's address (the walk goes on
  there, with the source the first node's masquerade wrote, if any) or an
  external client's server (it answers, and sees that source).

Every row runs in both of kube-proxy's modes: the lab as written
(iptables) and a copy with `proxyMode: nftables` (live_helpers.mode_copy),
whose offline side compiles the node's `ip kube-proxy` table and its other
iptables rules (kubelet's, flanneld's, portmap's) and walks both with the
nftables simulator.

Every lab under controlplane/ has rows but hostport, whose hostPorts have
their own live-against-offline test in both modes
(test_live_hostport_modes.py); and every lab's live state (Services,
EndpointSlices, pods and nodes, less the live addons) equals its offline one.

SCTP is left out: lab kernels have no sctp module, so SCTP is not served.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from live_helpers import (
    CONTROLPLANE,
    SPREAD_REQUESTS,
    Answer,
    answer_of,
    lab_name,
    mode_copy,
    pods_with,
    probe,
    route_source,
    running_lab,
    service,
    service_port,
)

from netemu.controlplane.addons import (
    API_NAMESPACE,
    API_SERVICE,
    DNS_NAMESPACE,
    DNS_SERVICE,
    INGRESS_NAMESPACE,
)
from netemu.controlplane.state import ClusterState
from netemu.kernel.sockets import bind_pod_sockets
from netemu.lab import LiveLab
from netemu.node.testserver import PodIdentity, TestServers
from netemu.pipeline import load_cluster, proxy_mode, simulate_on_node
from netemu.rules.input import IPFamily
from netemu.rules.simulate import Packet, Simulation

DROP_TIMEOUT = 1.0
STATE_SETTLES = 10.0  # seconds for a lab just up to pass its pods' first probes
REFUSED_WITHIN = 0.5
REFUSED_TRIES = 3
REFUSED_WITHIN_IPV6 = 1.5  # one SYN retransmission (1 s) and the answer
LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"

State = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Flow:
    lab: str  # directory under controlplane/
    source: str  # "pod/<app label>@<node>", "node/<node>" or "client/<client>"
    # "clusterIP", "lb", "externalIP" (with the Service's port),
    # "node/<node>", "loopback" (with its nodePort), or "client/<client>"
    # (its CLIENT_PORT server; `svc` is then empty)
    dst: str
    svc: str  # "<name>" or "<namespace>/<name>"
    proto: str = "tcp"
    note: str = ""
    # The packet's IP family: IPv6 rows use the IPv6 addresses of a
    # dual-stack lab's pods, nodes, clients and Services, and ip6tables.
    family: str = "IPv4"

    @property
    def id(self) -> str:
        six = "/IPv6" if self.family == "IPv6" else ""
        return f"{self.lab}:{self.source}->{self.dst}:{self.svc}/{self.proto}{six}"


FLOWS = [
    # controlplane/default
    Flow("default", "pod/web@node-1", "clusterIP", "web", note="hairpin on itself masqueraded"),
    Flow("default", "node/node-2", "clusterIP", "web", note="node-originated: masqueraded"),
    Flow("default", "client/client", "node/node-1", "web-nodeport", note="ETP Cluster"),
    Flow("default", "client/client", "node/node-2", "web-local", note="ETP Local, 1 local pod"),
    Flow("default", "client/client", "node/node-1", "web-local", note="ETP Local, 2 local pods"),
    Flow("default", "pod/web@node-2", "clusterIP", "empty", note="no endpoints: REJECT"),
    Flow("default", "node/node-1", "loopback", "web-nodeport", note="localhost NodePort"),
    # flanneld's masquerade (FLANNEL-POSTRTG): a pod calling another node's
    # ETP Local NodePort arrives there as its node, so that node's own pod serves it.
    Flow("default", "pod/web@node-1", "node/node-2", "web-local", note="via node-1's masq"),
    Flow("default", "pod/web@node-2", "node/node-1", "web-local", note="via node-2's masq"),
    Flow("default", "pod/web@node-1", "node/node-2", "web-nodeport", note="ETP Cluster"),
    Flow("default", "pod/web@node-2", "client/client", "", note="to outside: node's IP"),
    # controlplane/loadbalancer
    Flow("loadbalancer", "client/allowed", "lb", "shop-lb"),
    Flow("loadbalancer", "client/allowed", "lb", "shop-firewalled", note="in sourceRanges"),
    Flow("loadbalancer", "client/blocked", "lb", "shop-firewalled", note="outside: DROP"),
    Flow("loadbalancer", "client/blocked", "node/node-1", "shop-firewalled", note="NodePort"),
    Flow("loadbalancer", "client/allowed", "lb", "shop-local", note="ETP Local via node-1"),
    Flow("loadbalancer", "client/allowed", "node/node-2", "shop-local", note="no local: DROP"),
    Flow("loadbalancer", "client/allowed", "externalIP", "shop-external"),
    Flow("loadbalancer", "node/node-2", "clusterIP", "shop-local", note="ETP ignores ClusterIP"),
    # controlplane/affinity
    Flow("affinity", "client/client", "node/node-2", "sticky", note="ClientIP affinity"),
    Flow("affinity", "pod/echo@node-2", "clusterIP", "sticky-default", note="ClientIP affinity"),
    # controlplane/internal-local
    Flow("internal-local", "pod/agent@node-1", "clusterIP", "cache-local", note="ITP Local"),
    Flow("internal-local", "pod/agent@node-2", "clusterIP", "cache-local", note="no local: DROP"),
    Flow("internal-local", "node/node-2", "clusterIP", "cache"),
    Flow("internal-local", "pod/agent@node-2", "clusterIP", "agent", note="ITP Local hairpin"),
    Flow("internal-local", "node/node-1", "clusterIP", "agent", note="ITP Local from a node"),
    # controlplane/statefulset
    Flow("statefulset", "node/node-3", "clusterIP", "db-rw"),
    Flow("statefulset", "pod/db@node-1", "clusterIP", "db-rw"),
    # controlplane/no-selector (node-level exporters started by the fixture)
    Flow("no-selector", "node/node-2", "clusterIP", "monitoring/node-exporter"),
    Flow("no-selector", "node/node-1", "clusterIP", "monitoring/node-exporter"),
    # controlplane/protocols
    Flow("protocols", "pod/dns@node-1", "clusterIP", "dns", "udp", note="masqueradeAll"),
    Flow("protocols", "pod/dns@node-1", "clusterIP", "dns", "tcp", note="masqueradeAll"),
    Flow("protocols", "client/client", "node/node-2", "dns", "udp"),
    Flow("protocols", "client/client", "node/node-1", "dns", "tcp"),
    Flow("protocols", "node/node-1", "loopback", "dns", "tcp", note="localhostNodePorts: false"),
    Flow("protocols", "pod/dns@node-2", "clusterIP", "draining", note="terminating fallback"),
    # controlplane/dualstack: each family through its own proxier
    Flow("dualstack", "pod/web@node-1", "clusterIP", "web", note="IPv4 of a dual-stack Service"),
    Flow("dualstack", "client/client", "node/node-1", "web-nodeport", note="IPv4 NodePort"),
    Flow("dualstack", "pod/web@node-1", "clusterIP", "web", family="IPv6"),
    Flow("dualstack", "pod/web@node-2", "clusterIP", "web-v6", family="IPv6", note="IPv6 only"),
    Flow("dualstack", "node/node-2", "clusterIP", "web", family="IPv6", note="node: masqueraded"),
    Flow("dualstack", "client/client", "node/node-1", "web-nodeport", family="IPv6"),
    Flow("dualstack", "client/client", "node/node-2", "web-local", family="IPv6", note="ETP Local"),
    Flow("dualstack", "pod/web@node-1", "node/node-2", "web-nodeport", family="IPv6"),
    Flow("dualstack", "node/node-1", "loopback", "web-nodeport", family="IPv6", note="no ::1"),
    Flow("dualstack", "pod/web@node-2", "clusterIP", "empty", family="IPv6", note="REJECT"),
    Flow("dualstack", "client/client", "node/node-2", "sticky", family="IPv6", note="affinity"),
    Flow("dualstack", "pod/web@node-1", "clusterIP", "sticky", family="IPv6", note="affinity"),
    # The load balancer forwards each family's ingress IP to the nodes'
    # addresses of that family; each proxier checks its own family's ranges.
    Flow("dualstack", "client/client", "lb", "web-lb", note="IPv4 sourceRanges"),
    Flow("dualstack", "client/client", "lb", "web-lb", family="IPv6", note="in sourceRanges"),
    Flow("dualstack", "client/blocked", "lb", "web-lb", family="IPv6", note="outside: DROP"),
    # controlplane/ipv6primary: dual-stack, IPv6 first
    Flow("ipv6primary", "pod/web@node-2", "clusterIP", "web-dual", family="IPv6"),
    Flow("ipv6primary", "pod/web@node-2", "clusterIP", "web-dual", note="its IPv4 side"),
    Flow("ipv6primary", "client/client", "node/node-1", "web-nodeport", family="IPv6"),
    Flow("ipv6primary", "client/client", "node/node-2", "web-local", family="IPv6"),
    # controlplane/ipv6only
    Flow("ipv6only", "pod/web@node-1", "clusterIP", "web", family="IPv6"),
    Flow("ipv6only", "node/node-2", "clusterIP", "web", family="IPv6", note="masqueraded"),
    Flow("ipv6only", "client/client", "node/node-2", "web-nodeport", family="IPv6"),
    Flow("ipv6only", "client/client", "node/node-1", "web-local", family="IPv6", note="ETP Local"),
    # controlplane/probes (endpoints follow the pods' readiness probes)
    Flow("probes", "client/client", "node/node-2", "web-nodeport"),
    Flow("probes", "pod/web@node-1", "clusterIP", "web"),
    # controlplane/ingress (Services behind the ingress controller, reached directly)
    Flow("ingress", "pod/front@node-2", "clusterIP", "api", note="a pod on the other node"),
    Flow("ingress", "pod/cart@node-1", "clusterIP", "cart"),
]

EXPORTER_PORT = 9100
CLIENT_PORT = 8080


# -- the labs: each up once for the module, when a row first needs it ---------


# What listens on a node's own address in a lab, besides pods: (ip, proto) -> port.
NodeServers = dict[tuple[str, str], int]


MODES = ("iptables", "nftables")


class Labs:
    """The labs the rows need, each up once per mode; a mode's labs go
    down when the first row of the other mode needs a lab (the rows run
    mode by mode), so that at most one mode's labs are up at a time."""

    def __init__(self, stack: ExitStack, copies: Path) -> None:
        self.stack = stack
        self.copies = copies
        self.mode: str | None = None
        self.mode_stack = ExitStack()
        # The mode stack of the moment: `get` replaces it at each change of mode.
        stack.callback(lambda: self.mode_stack.close())
        self.up: dict[str, LiveLab] = {}
        self.node_servers: dict[str, NodeServers] = {}

    def get(self, lab: str, mode: str = "iptables") -> LiveLab:
        if mode != self.mode:
            self.mode_stack.close()
            self.mode_stack = ExitStack()
            self.up.clear()
            self.node_servers.clear()
            self.mode = mode
        if lab not in self.up:
            live = self.mode_stack.enter_context(
                running_lab([lab_path(lab, mode)], lab_name(f"diff-{lab}-{mode[:3]}"))
            )
            setup = SETUP.get(lab)
            self.node_servers[lab] = setup(live, self.mode_stack) if setup is not None else {}
            # The rows' predictions are the offline state's, where every pod
            # is ready: a lab just up may still list an endpoint not ready
            # until its pod's first readiness probe (controlplane/probes).
            settled_summaries(lab, live)
            self.up[lab] = live
        return self.up[lab]


_COPIES: list[Path] = []


def lab_path(lab: str, mode: str) -> Path:
    """controlplane/<lab>, or its copy in nftables mode."""
    if mode == "iptables":
        return CONTROLPLANE / lab
    assert _COPIES, "the labs fixture makes the copies' directory"
    return mode_copy(lab, _COPIES[0], mode)


def start_exporters(lab: LiveLab, stack: ExitStack) -> NodeServers:
    """controlplane/no-selector's EndpointSlice points at the nodes' own
    addresses, port 9100, where a node-level exporter would listen: serve
    the test server's answer there on every node, so a connection shows
    which node it reached (and a wrong one would answer too)."""
    servers = TestServers()
    servers.start()
    stack.callback(servers.close)  # closed before the lab goes down (LIFO)
    serving: NodeServers = {}
    for node, info in lab.info()["nodes"].items():
        tcp, udp = bind_pod_sockets(info["netns"], "0.0.0.0", [(EXPORTER_PORT, "TCP")])
        identity = PodIdentity(
            pod=f"exporter-{node}", namespace="monitoring", pod_ip=info["ip"], node=node
        )
        servers.serve(f"monitoring/exporter-{node}", identity, tcp, udp)
        serving[(str(info["ip"]), "tcp")] = EXPORTER_PORT
    return serving


def start_client_servers(lab: LiveLab, stack: ExitStack) -> NodeServers:
    """A server on every external client's address (CLIENT_PORT), so that a
    pod's request to outside the cluster shows whom the client saw."""
    servers = TestServers()
    servers.start()
    stack.callback(servers.close)
    serving: NodeServers = {}
    for name, info in lab.info()["clients"].items():
        tcp, udp = bind_pod_sockets(info["netns"], str(info["ip"]), [(CLIENT_PORT, "TCP")])
        identity = PodIdentity(pod=name, namespace="", pod_ip=str(info["ip"]), node="")
        servers.serve(f"client/{name}", identity, tcp, udp)
        serving[(str(info["ip"]), "tcp")] = CLIENT_PORT
    return serving


SETUP: dict[str, Callable[[LiveLab, ExitStack], NodeServers]] = {
    "no-selector": start_exporters,
    "default": start_client_servers,
}


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labs]:
    copies = tmp_path_factory.mktemp("modes")
    _COPIES[:] = [copies]
    with ExitStack() as stack:
        yield Labs(stack, copies)


@cache
def offline_state(lab: str, mode: str = "iptables") -> ClusterState:
    return load_cluster([lab_path(lab, mode)])


def node_simulation(
    state: ClusterState, node: str, mode: str, packet: Packet, family: IPFamily = "IPv4"
) -> Simulation:
    """`trace --offline` at `node`: its compiled rules of `family`, simulated
    (the lab's state is loaded in `mode`)."""
    assert proxy_mode(state) == mode
    return simulate_on_node(state, node, packet, family=family)


def offline_dicts(lab: str) -> State:
    state = offline_state(lab)
    return {
        "nodes": [o.to_dict() for o in state.nodes],
        "services": [o.to_dict() for o in state.services],
        "pods": [o.to_dict() for o in state.pods],
        "endpointslices": [o.to_dict() for o in state.endpoint_slices],
    }


# -- resolving a row against a lab's state --------------------------------------


@dataclass(frozen=True)
class Resolved:
    source_netns: str
    src: str  # the packet's source address
    dst: str
    dport: int
    node: str  # the node whose rules the packet meets first
    # A LoadBalancer IP: every node the load balancer may give a connection
    # (`node` is the first); otherwise just `node`.
    entry_nodes: tuple[str, ...] = ()


def _svc_ref(flow: Flow) -> tuple[str, str]:
    namespace, _, name = flow.svc.rpartition("/")
    return name, namespace or "default"


def of_family(flow: Flow, ips: Iterable[str]) -> str:
    """The first of `ips` of the flow's family."""
    six = flow.family == "IPv6"
    found = [ip for ip in ips if (":" in ip) == six]
    assert found, f"{flow.id}: no {flow.family} address among {list(ips)}"
    return found[0]


def destination(
    flow: Flow, state: State, node_ips: dict[str, str], client_ips: dict[str, str]
) -> tuple[str, int]:
    if flow.family == "IPv6":
        node_ips = node_ips6(state)
    if flow.dst.startswith("client/"):
        return client_ips[flow.dst.removeprefix("client/")], CLIENT_PORT
    name, namespace = _svc_ref(flow)
    spec = service(state, name, namespace)
    port = service_port(state, name, flow.proto, namespace)
    if flow.dst == "clusterIP":
        ips = spec["spec"].get("clusterIPs") or [spec["spec"]["clusterIP"]]
        return of_family(flow, ips), int(port["port"])
    if flow.dst == "lb":
        # A dual-stack Service has an ingress IP per family.
        ingress = [str(i["ip"]) for i in spec["status"]["loadBalancer"]["ingress"]]
        return of_family(flow, ingress), int(port["port"])
    if flow.dst == "externalIP":
        (ip,) = spec["spec"]["externalIPs"]
        return str(ip), int(port["port"])
    if flow.dst == "loopback":
        return (LOOPBACK6 if flow.family == "IPv6" else LOOPBACK), int(port["nodePort"])
    kind, _, node = flow.dst.partition("/")
    assert kind == "node", flow.dst
    return node_ips[node], int(port["nodePort"])


def node_ips6(state: State) -> dict[str, str]:
    """Each node's IPv6 InternalIP (a dual-stack lab's)."""
    return {
        str(n["metadata"]["name"]): a["address"]
        for n in state["nodes"]
        for a in n["status"]["addresses"]
        if a["type"] == "InternalIP" and ":" in a["address"]
    }


def pod_ips(pod: dict[str, Any]) -> list[str]:
    status = pod.get("status", {})
    return [p["ip"] for p in status.get("podIPs") or []] or [status.get("podIP", "")]


def resolve(flow: Flow, lab: LiveLab, state: State) -> Resolved:
    info = lab.info()
    node_ips = {name: str(n["ip"]) for name, n in info["nodes"].items()}
    dst, dport = destination(flow, state, node_ips, client_ips(lab, flow))
    if flow.family == "IPv6":
        node_ips = node_ips6(state)
    kind, _, what = flow.source.partition("/")
    if kind == "pod":
        app, _, node = what.partition("@")
        pods = pods_with(state, app, node)
        assert pods, f"no running pod app={app} on {node}"
        meta = pods[0]["metadata"]
        pod = info["pods"][f"{meta.get('namespace', 'default')}/{meta['name']}"]
        return Resolved(pod["netns"], of_family(flow, pod_ips(pods[0])), dst, dport, node)
    if kind == "node":
        src = dst if dst in (LOOPBACK, LOOPBACK6) else node_ips[what]
        return Resolved(info["nodes"][what]["netns"], src, dst, dport, what)
    assert kind == "client", flow.source
    # A client reaches a node's address directly, external IPs through the
    # lab's first node (its routes say so), LoadBalancer IPs through the
    # load balancer, which spreads connections over its healthy nodes.
    by_ip = {ip: name for name, ip in node_ips.items()}
    first = next(iter(info["nodes"]))
    client = info["clients"][what]
    source_ip = client_ips(lab, flow)[what]
    if flow.dst == "lb":
        spread = load_balancer_spread(lab, dst)
        return Resolved(client["netns"], source_ip, dst, dport, spread[0], tuple(spread))
    return Resolved(client["netns"], source_ip, dst, dport, by_ip.get(dst, first))


def load_balancer_spread(lab: LiveLab, ip: str, wait: float = 10.0) -> list[str]:
    """The nodes the load balancer gives new connections to `ip`; a lab
    just brought up may not have health-checked its nodes yet."""
    deadline = time.monotonic() + wait
    while True:
        spread = lab.request("loadbalancer")["loadBalancer"]["spread"]
        if ip in spread or time.monotonic() > deadline:
            return list(spread[ip]["nodes"])
        time.sleep(0.1)


def client_ips(lab: LiveLab, flow: Flow | None = None) -> dict[str, str]:
    """The clients' addresses of the flow's family (IPv6: from the Lab)."""
    if flow is not None and flow.family == "IPv6":
        spec = offline_state(flow.lab).lab
        assert spec is not None
        return {c.name: of_family(flow, c.ips) for c in spec.spec.external_clients}
    return {name: str(c["ip"]) for name, c in lab.info()["clients"].items()}


def predict(
    flow: Flow, resolved: Resolved, lab: LiveLab, mode: str = "iptables"
) -> tuple[Simulation, Resolved]:
    """The prediction at the node the packet first meets; when that node
    leaves it untranslated and it is for another node's address, the
    prediction at that node, for the packet as the first node sent it on
    (its source masqueraded to the address the first node's routing picks
    towards it, if predicted so). Returns the deciding simulation and the
    packet as the deciding node sees it."""
    state = offline_state(flow.lab, mode)
    family: IPFamily = "IPv6" if flow.family == "IPv6" else "IPv4"
    packet = Packet(src=resolved.src, dst=resolved.dst, dport=resolved.dport, proto=flow.proto)
    sim = node_simulation(state, resolved.node, mode, packet, family)
    nodes = lab.info()["nodes"]
    by_ip = {str(n["ip"]): name for name, n in nodes.items()}
    if family == "IPv6":
        by_ip = {ip: name for name, ip in node_ips6(offline_dicts(flow.lab)).items()}
    following = by_ip.get(resolved.dst)
    if sim.verdict not in ("NONE", "ACCEPT") or following in (None, resolved.node):
        return sim, resolved
    assert following is not None
    src = resolved.src
    if sim.masquerade:
        src = route_source(nodes[resolved.node]["netns"], resolved.dst)
    hop = Resolved(resolved.source_netns, src, resolved.dst, resolved.dport, following)
    packet = Packet(src=src, dst=hop.dst, dport=hop.dport, proto=flow.proto)
    return node_simulation(state, following, mode, packet, family), hop


def served_port(state: State, node_servers: NodeServers, ip: str, proto: str) -> int:
    """The one port a pod (or node-level server) at `ip` serves for `proto`:
    the test server listens on the declared containerPorts only."""
    extra = node_servers.get((ip, proto))
    if extra is not None:
        return extra
    owners = [p for p in state["pods"] if ip in pod_ips(p)]
    assert len(owners) == 1, f"{len(owners)} pods have IP {ip}"
    ports = [
        int(port["containerPort"])
        for container in owners[0]["spec"]["containers"]
        for port in container.get("ports") or []
        if port.get("protocol", "TCP").lower() == proto
    ]
    assert len(ports) == 1, (
        f"pod at {ip} declares {proto} ports {ports}: cannot tell which answered"
    )
    return ports[0]


# -- the tests ------------------------------------------------------------------


Summary = dict[str, set[tuple[Any, ...]]]


def _summary(state: State) -> Summary:
    """What the rules depend on: pods' placement and addresses, Services'
    addresses and ports, and EndpointSlices' endpoints."""
    return {
        "pods": {
            (
                p["metadata"].get("namespace", "default"),
                p["metadata"]["name"],
                p["spec"].get("nodeName"),
                p.get("status", {}).get("podIP"),
            )
            for p in state["pods"]
        },
        "services": {
            (
                s["metadata"].get("namespace", "default"),
                s["metadata"]["name"],
                s["spec"].get("clusterIP"),
                tuple(
                    (p.get("protocol"), p["port"], p.get("nodePort")) for p in s["spec"]["ports"]
                ),
            )
            for s in state["services"]
        },
        "endpoints": {
            (
                e["metadata"]["labels"].get("kubernetes.io/service-name"),
                address,
                endpoint.get("nodeName"),
                tuple(sorted(endpoint.get("conditions", {}).items())),
            )
            for e in state["endpointslices"]
            for endpoint in e.get("endpoints") or []
            for address in endpoint["addresses"]
        },
    }


def _without_ingress_controller(state: State) -> State:
    """The state less the ingress controller's namespace (ingress-nginx),
    which a live lab with Ingresses adds (netemu.controlplane.addons)."""
    return {
        kind: [o for o in objects if o["metadata"].get("namespace") != INGRESS_NAMESPACE]
        for kind, objects in state.items()
    }


def _without_addons(state: State) -> State:
    """The state less what a live lab adds and offline states leave out
    (netemu.controlplane.addons): the cluster DNS addon (kube-system's
    kube-dns Service, its EndpointSlice and the coredns pod), the API
    server's default/kubernetes Service with its EndpointSlice, and, in a
    lab with Ingresses, the ingress controller."""
    state = _without_ingress_controller(state)

    def addon(kind: str, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        labels = meta.get("labels", {})
        key = (meta.get("namespace"), meta.get("name"))
        if kind == "services":
            return key in ((DNS_NAMESPACE, DNS_SERVICE), (API_NAMESPACE, API_SERVICE))
        if kind == "endpointslices":
            owner = (meta.get("namespace"), labels.get("kubernetes.io/service-name"))
            return owner in ((DNS_NAMESPACE, DNS_SERVICE), (API_NAMESPACE, API_SERVICE))
        return bool(meta.get("namespace") == DNS_NAMESPACE and labels.get("k8s-app") == "kube-dns")

    found = {kind: [o for o in objects if addon(kind, o)] for kind, objects in state.items()}
    assert [len(found[k]) for k in ("services", "pods", "endpointslices")] == [2, 1, 2], found
    return {kind: [o for o in objects if not addon(kind, o)] for kind, objects in state.items()}


def settled_summaries(lab: str, live_lab: LiveLab) -> tuple[Summary, Summary]:
    """The live and offline summaries of a lab, once they agree or
    STATE_SETTLES has passed. The supervisor answers a state request
    between its passes, so the nodes' rules already follow what it shows."""
    offline = _summary(_without_ingress_controller(offline_dicts(lab)))
    deadline = time.monotonic() + STATE_SETTLES
    while True:
        live = _summary(_without_addons(live_lab.state()))
        if live == offline or time.monotonic() > deadline:
            return live, offline
        time.sleep(0.2)


@pytest.mark.parametrize("lab", sorted({f.lab for f in FLOWS}))
def test_live_state_equals_offline_state(labs: Labs, lab: str) -> None:
    """Once the pods' first readiness probes have run (a lab just up may
    still list an endpoint not ready), live and offline agree."""
    live, offline = settled_summaries(lab, labs.get(lab, "iptables"))
    for kind in live:
        assert live[kind] == offline[kind], (
            f"{lab}: live {kind} differ from offline: only live {live[kind] - offline[kind]}, "
            f"only offline {offline[kind] - live[kind]}"
        )


# Mode by mode (the outer parameter varies slowest), so Labs keeps one
# mode's labs up at a time.
@pytest.mark.parametrize("flow", FLOWS, ids=[f.id for f in FLOWS])
@pytest.mark.parametrize("mode", MODES)
def test_live_outcome_matches_offline_prediction(labs: Labs, mode: str, flow: Flow) -> None:
    lab = labs.get(flow.lab, mode)
    state = lab.state()
    resolved = resolve(flow, lab, state)
    node_ips = {name: str(n["ip"]) for name, n in lab.info()["nodes"].items()}
    # The live control plane computed what the offline one did.
    assert destination(flow, offline_dicts(flow.lab), node_ips, client_ips(lab, flow)) == (
        resolved.dst,
        resolved.dport,
    )
    sim, hop = predict(flow, resolved, lab, mode)
    for other in resolved.entry_nodes[1:]:
        # Whichever node the load balancer picks, its rules decide alike.
        again, _ = predict(flow, replace(resolved, node=other), lab, mode)
        assert (again.verdict, sorted(again.endpoints), again.masquerade) == (
            sim.verdict,
            sorted(sim.endpoints),
            sim.masquerade,
        ), f"{flow.id}: the rules of {resolved.node} and {other} decide differently"
    where = (
        f"[{mode}] {flow.id} ({flow.note}): "
        f"{resolved.src} -> {resolved.dst}:{resolved.dport}/{flow.proto}, "
        + (f"as {hop.src} from {resolved.node}, " if hop != resolved else "")
        + f"rules of {hop.node}; predicted {sim.verdict} {sim.endpoints} "
        f"masquerade={sim.masquerade}"
    )

    if sim.verdict == "DNAT":
        check_dnat(flow, lab, labs.node_servers[flow.lab], state, resolved, hop, sim, where)
    elif flow.dst.startswith("client/"):
        # Untranslated by kube-proxy, out of the cluster to the client's
        # server, which sees the source as the node's masquerade left it.
        assert sim.verdict in ("NONE", "ACCEPT") and not sim.endpoints, where
        expected = (
            route_source(lab.info()["nodes"][hop.node]["netns"], hop.dst)
            if sim.masquerade
            else hop.src
        )
        for i in range(SPREAD_REQUESTS):
            result = probe(resolved.source_netns, resolved.dst, resolved.dport, flow.proto)
            got = answer_of(result, f"{where}; live request {i + 1}/{SPREAD_REQUESTS}")
            assert got.pod_ip == resolved.dst and got.client_ip == expected, (
                f"{where}; the client saw {got.client_ip}, expected {expected}"
            )
    elif sim.verdict == "REJECT":
        # Over IPv6 the client may act only on the retransmitted SYN's refusal,
        # a second later: within one machine the first SYN's ICMPv6 port
        # unreachable comes back while the client's connect() still holds its
        # socket (nstat's TcpExtLockDroppedIcmps counts it), and Linux's IPv6
        # TCP keeps it as a soft error only (seen with tcpdump: the error sent
        # 26 us after the SYN, connect() refused after 1.0 s; IPv4 refuses at
        # once). Allow that one retransmission. Whatever the time, only a
        # REJECT refuses (a DROP times out).
        within = REFUSED_WITHIN_IPV6 if flow.family == "IPv6" else REFUSED_WITHIN
        for _ in range(REFUSED_TRIES):
            result = probe(resolved.source_netns, resolved.dst, resolved.dport, flow.proto)
            assert result.outcome == "refused", f"{where}; live: {result.outcome} {result.detail}"
            assert result.elapsed < within, f"{where}; refused after {result.elapsed:.3f} s"
    elif sim.verdict == "DROP":
        result = probe(
            resolved.source_netns, resolved.dst, resolved.dport, flow.proto, DROP_TIMEOUT
        )
        assert result.outcome == "timeout", (
            f"{where}; live: {result.outcome} {result.reply or result.detail}"
        )
    else:
        assert sim.verdict in ("NONE", "ACCEPT"), where
        assert not sim.endpoints, where
        # Untranslated, the packet reaches its original destination, where
        # nothing listens in these rows.
        result = probe(resolved.source_netns, resolved.dst, resolved.dport, flow.proto)
        assert result.outcome == "refused", f"{where}; live: {result.outcome} {result.reply}"


def check_dnat(
    flow: Flow,
    lab: LiveLab,
    node_servers: NodeServers,
    state: State,
    resolved: Resolved,
    hop: Resolved,
    sim: Simulation,
    where: str,
) -> None:
    predicted = set(sim.endpoints)
    assert predicted, where
    # Every endpoint the rules send traffic to must be running in the lab.
    running = {str(p["ip"]) for p in lab.info()["pods"].values()}
    # A dual-stack pod runs with both of its addresses.
    live_pods = {key.split("/", 1)[1] for key in lab.info()["pods"]}
    running.update(
        ip for p in state["pods"] if p["metadata"]["name"] in live_pods for ip in pod_ips(p)
    )
    running.update(ip for ip, _ in node_servers)
    for endpoint in sorted(predicted):
        ip = endpoint.rsplit(":", 1)[0].strip("[]")
        owners = [p for p in state["pods"] if ip in pod_ips(p)]
        described = ", ".join(
            f"pod {p['metadata']['name']}"
            + (" (terminating)" if p["metadata"].get("deletionTimestamp") else "")
            for p in owners
        )
        assert ip in running, (
            f"{where}; the endpoint {endpoint} ({described or 'no pod'}) is in the lab's "
            "EndpointSlices and rules but not running in the live lab"
        )
    # What each endpoint may see as client: the source as the deciding node
    # got it, or the masqueraded source its routing picks towards it (any of
    # the nodes a load balancer may give the connection).
    deciding = resolved.entry_nodes or (hop.node,)
    expected_client: dict[str, set[str]] = {}
    for path in sim.paths:
        if path.verdict != "DNAT" or path.endpoint is None:
            continue
        ip = path.endpoint.rsplit(":", 1)[0].strip("[]")
        clients = {
            route_source(lab.info()["nodes"][node]["netns"], ip) if path.masquerade else hop.src
            for node in deciding
        }
        assert expected_client.setdefault(path.endpoint, clients) == clients, where

    got: list[Answer] = []
    for i in range(SPREAD_REQUESTS):
        result = probe(resolved.source_netns, resolved.dst, resolved.dport, flow.proto)
        got.append(answer_of(result, f"{where}; live request {i + 1}/{SPREAD_REQUESTS}"))
    assert {a.local[0] for a in got} == {resolved.src}, where

    live: dict[str, set[str]] = {}
    for answer in got:
        pod_ip = answer.pod_ip
        if (":" in pod_ip) != (flow.family == "IPv6"):
            # The test server names the pod's primary address (status.podIP):
            # the endpoint is the answering pod's address of the flow's family.
            (pod,) = [p for p in state["pods"] if p["metadata"]["name"] == answer.pod]
            pod_ip = of_family(flow, pod_ips(pod))
        port = served_port(state, node_servers, pod_ip, flow.proto)
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        live.setdefault(f"{host}:{port}", set()).add(answer.client_ip)

    name, namespace = _svc_ref(flow)
    if service(state, name, namespace)["spec"].get("sessionAffinity") == "ClientIP":
        # Affinity: the first connection picks among the predicted
        # endpoints, every later one from the same client sticks to it.
        assert len(live) == 1 and set(live) <= predicted, (
            f"{where}; live (ClientIP affinity) answered by {sorted(live)}: expected one "
            "endpoint, always the same, among the predicted ones"
        )
    else:
        assert set(live) == predicted, (
            f"{where}; live: {SPREAD_REQUESTS} requests answered by {sorted(live)}"
        )
    for endpoint, clients in sorted(live.items()):
        expected = expected_client[endpoint]
        assert clients <= expected, (
            f"{where}; {endpoint} saw clients {sorted(clients)}, expected {sorted(expected)} "
            + ("(masqueraded)" if expected != {hop.src} else "(not NATed)")
        )
