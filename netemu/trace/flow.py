"""What `netemu trace FROM TO` means: resolve the user's words into one flow,
a source (pod, node or external client) sending to an address and port
with a protocol, and the node whose rules the packet meets first.

FROM: a pod (`name`, `namespace/name` or `pod/...`), a node (`node/NAME`
or its name), an external client (`client/NAME` or its name).
TO: a Service (`name`, `namespace/name` or `svc/...`: its ClusterIP and
port), a pod (name or IP), `NODE:PORT` (a node's NodePort), or an IP
literal with --port (a ClusterIP, a LoadBalancer or external IP, a pod IP,
a node address), optionally written `IP:PORT`.

Pure: reads the cluster state and the lab's topology only.
"""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from netemu.api.core import Service, ServicePort
from netemu.controlplane.state import ClusterState
from netemu.trace.topology import ClientSite, NodeSite, PodSite, Topology

PROTOCOLS = ("tcp", "udp", "icmp")


class FlowError(ValueError):
    """The FROM/TO words do not name one flow (exit code 2)."""


@dataclass(frozen=True)
class Source:
    kind: str  # "pod", "node" or "client"
    name: str  # namespace/name for pods
    netns: str
    ip: str
    node: str | None  # the node a pod runs on, the node itself; None for clients

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Flow:
    source: Source
    dst: str
    dport: int  # 0 for icmp
    proto: str
    target: str  # how TO was understood, e.g. "Service default/web port 80 (ClusterIP)"
    service: str | None  # namespace/name when the destination is a Service's address
    entry_node: str | None  # the node whose rules the packet meets first
    # The packet starts on the entry node itself (a node, or a hostNetwork
    # pod): it meets OUTPUT, not PREROUTING.
    local_origin: bool

    def describe(self) -> str:
        port = f":{self.dport}" if self.proto != "icmp" else ""
        return (
            f"{self.source.label} ({self.source.ip}) → {self.dst}{port}/{self.proto}: {self.target}"
        )


def _is_ip(text: str) -> bool:
    """An IPv4 or IPv6 address literal (IPv6 without brackets)."""
    try:
        netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False
    return True


def _is_ipv6(text: str) -> bool:
    return _is_ip(text) and ":" in text


def _split_host_port(word: str) -> tuple[str, str] | None:
    """`HOST:PORT`, or for IPv6 `[ADDRESS]:PORT` as curl and URLs write it;
    None when `word` has no port (a bare IPv6 address has colons of its own)."""
    if word.startswith("["):
        host, sep, rest = word[1:].partition("]")
        if not sep:
            return None
        return (host, rest[1:]) if rest.startswith(":") else (host, "")
    if _is_ipv6(word):
        return None
    host, sep, port_text = word.rpartition(":")
    return (host, port_text) if sep else None


def _source_for(source: Source, topology: Topology, dst: str) -> Source:
    """The source with its address of the destination's family: a dual-stack
    pod, node or client sends from its address of that family, whichever
    family is its primary."""
    family = "IPv6" if _is_ipv6(dst) else "IPv4"
    site: PodSite | NodeSite | ClientSite
    if source.kind == "pod":
        site = topology.pods[source.name]
    elif source.kind == "node":
        site = topology.nodes[source.name]
    else:
        site = topology.clients[source.name]
    ip = site.address(family)
    if not ip:
        raise FlowError(f"{source.label} has no {family} address: it cannot send to {dst}")
    return Source(source.kind, source.name, source.netns, ip, source.node)


def _split_kind(word: str) -> tuple[str | None, str]:
    kind, sep, rest = word.partition("/")
    aliases = {
        "pod": "pod",
        "po": "pod",
        "node": "node",
        "no": "node",
        "client": "client",
        "svc": "service",
        "service": "service",
    }
    if sep and kind in aliases:
        return aliases[kind], rest
    return None, word


def _pod_key(name: str) -> str:
    return name if "/" in name else f"default/{name}"


def resolve_source(topology: Topology, word: str) -> Source:
    kind, name = _split_kind(word)
    found: list[Source] = []
    if kind in (None, "node") and name in topology.nodes:
        node = topology.nodes[name]
        found.append(Source("node", name, node.netns, node.ip, name))
    if kind in (None, "client") and name in topology.clients:
        client = topology.clients[name]
        found.append(Source("client", name, client.netns, client.ip, None))
    if kind in (None, "pod") and _pod_key(name) in topology.pods:
        pod = topology.pods[_pod_key(name)]
        found.append(Source("pod", pod.key, pod.netns, pod.ip, pod.node))
    if not found:
        known = sorted([*topology.nodes, *topology.clients, *topology.pods])
        raise FlowError(
            f"FROM {word!r}: no pod, node or external client of that name in lab "
            f"{topology.lab}; known: {', '.join(known)}"
        )
    if len(found) > 1:
        kinds = ", ".join(f"{s.kind}/{name}" for s in found)
        raise FlowError(f"FROM {word!r} names several sources; say which: {kinds}")
    return found[0]


def _service_port(svc: Service, port: int | None, proto: str, what: str) -> ServicePort:
    ports = [p for p in svc.spec.ports if p.protocol.lower() == proto]
    if port is not None:
        ports = [p for p in ports if p.port == port or p.node_port == port]
    if len(ports) == 1:
        return ports[0]
    offered = ", ".join(f"{p.port}/{p.protocol}" for p in svc.spec.ports) or "none"
    if not ports:
        asked = f"port {port}/{proto.upper()}" if port is not None else f"{proto.upper()} port"
        raise FlowError(f"TO {what}: the Service has no {asked}; its ports: {offered}")
    raise FlowError(
        f"TO {what}: the Service has several {proto.upper()} ports ({offered}); "
        "choose one with --port"
    )


def _find_service(state: ClusterState, word: str) -> Service | None:
    namespace, _, name = word.rpartition("/")
    for svc in state.services:
        if svc.metadata.name == name and (svc.metadata.namespace or "default") == (
            namespace or "default"
        ):
            return svc
    return None


def _entry_for(topology: Topology, source: Source, dst: str) -> str | None:
    if source.node is not None:
        return source.node
    # An external client: a node address is reached directly; every other
    # address it can reach (LoadBalancer and external IPs) through the
    # announcing node, as its routes say.
    return topology.node_of_ip(dst) or topology.announcing_node


def resolve_flow(
    state: ClusterState,
    topology: Topology,
    frm: str,
    to: str,
    port: int | None = None,
    proto: str = "tcp",
) -> Flow:
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise FlowError(f"--proto {proto!r}: expected one of {', '.join(PROTOCOLS)}")
    source = resolve_source(topology, frm)
    dst, dport, target, service = _resolve_destination(state, topology, source, to, port, proto)
    if proto == "icmp":
        dport = 0
    source = _source_for(source, topology, dst)
    if source.kind == "client" and service is not None and _is_cluster_ip(state, dst):
        raise FlowError(
            f"TO {to!r}: an external client cannot reach a ClusterIP; trace to a NodePort "
            "(NODE:PORT) or a LoadBalancer/external IP instead"
        )
    if source.kind == "client" and topology.pod_of_ip(dst) is not None:
        raise FlowError(
            f"TO {to!r}: an external client has no route to pod addresses; trace to "
            "NODE:NODEPORT or to a LoadBalancer/external IP instead"
        )
    entry = _entry_for(topology, source, dst)
    local_origin = entry is not None and source.netns == topology.nodes[entry].netns
    return Flow(source, dst, dport, proto, target, service, entry, local_origin)


def _cluster_ips(svc: Service) -> list[str]:
    return svc.spec.cluster_ips or ([svc.spec.cluster_ip] if svc.spec.cluster_ip else [])


def _is_cluster_ip(state: ClusterState, ip: str) -> bool:
    return any(ip in _cluster_ips(s) for s in state.services)


def _resolve_destination(
    state: ClusterState,
    topology: Topology,
    source: Source,
    to: str,
    port: int | None,
    proto: str,
) -> tuple[str, int, str, str | None]:
    kind, word = _split_kind(to)
    split = _split_host_port(word) if kind is None else None
    host, port_text = split or ("", "")
    if split is not None and not port_text and _is_ipv6(host):
        word = host  # [ADDRESS] alone
    if split is not None and port_text.isdigit():
        # NODE:PORT or IP:PORT
        if not 1 <= int(port_text) <= 65535:
            raise FlowError(f"TO {to!r}: port {port_text} is not in 1-65535")
        if port is not None and port != int(port_text):
            raise FlowError(f"TO {to!r} and --port {port} disagree")
        if host in topology.nodes:
            node = topology.nodes[host]
            return _by_address(state, topology, node.ip, int(port_text), proto, f"node {host}")
        if _is_ip(host):
            return _by_address(state, topology, host, int(port_text), proto, None)
        raise FlowError(f"TO {to!r}: {host!r} is neither a node nor an IP address")
    if kind is None and _is_ip(word):
        if port is None and proto != "icmp":
            pod = topology.pod_of_ip(word)
            if pod is None:
                raise FlowError(f"TO {to!r}: give the destination port with --port")
            return _to_pod(state, topology, pod.key, None, proto)
        return _by_address(state, topology, word, port or 0, proto, None)
    if kind in (None, "service"):
        svc = _find_service(state, word)
        if svc is not None:
            return _to_service(svc, source, port, proto, to)
        if kind == "service":
            raise FlowError(f"TO {to!r}: no Service {word!r}")
    if kind in (None, "pod") and _pod_key(word) in topology.pods:
        return _to_pod(state, topology, _pod_key(word), port, proto)
    if kind in (None, "node") and word in topology.nodes:
        if port is None and proto != "icmp":
            raise FlowError(f"TO {to!r}: a node needs a port: {word}:NODEPORT or --port")
        return _by_address(state, topology, topology.nodes[word].ip, port or 0, proto, None)
    services = sorted(
        f"{s.metadata.namespace or 'default'}/{s.metadata.name}" for s in state.services
    )
    raise FlowError(
        f"TO {to!r}: not a Service, pod, node or IP address of lab {topology.lab}; "
        f"Services: {', '.join(services) or 'none'}"
    )


def _svc_key(svc: Service) -> str:
    return f"{svc.metadata.namespace or 'default'}/{svc.metadata.name}"


def _to_service(
    svc: Service, source: Source, port: int | None, proto: str, to: str
) -> tuple[str, int, str, str | None]:
    key = _svc_key(svc)
    cluster_ip = svc.spec.cluster_ip
    if proto == "icmp":
        if not cluster_ip or cluster_ip == "None":
            raise FlowError(f"TO {to!r}: Service {key} is headless: it has no ClusterIP")
        return cluster_ip, 0, f"Service {key} (ClusterIP)", key
    if source.kind == "client":
        raise FlowError(
            f"TO {to!r}: an external client cannot reach Service {key}'s ClusterIP; "
            "trace to NODE:NODEPORT or to its LoadBalancer/external IP"
        )
    if not cluster_ip or cluster_ip == "None":
        raise FlowError(
            f"TO {to!r}: Service {key} is headless (no ClusterIP); trace to one of its pods"
        )
    service_port = _service_port(svc, port, proto, repr(to))
    return (
        cluster_ip,
        service_port.port,
        f"Service {key} port {service_port.port}/{service_port.protocol} (ClusterIP)",
        key,
    )


def _to_pod(
    state: ClusterState, topology: Topology, key: str, port: int | None, proto: str
) -> tuple[str, int, str, str | None]:
    pod = topology.pods[key]
    if port is None and proto != "icmp":
        declared = [
            cp.container_port
            for p in state.pods
            if f"{p.metadata.namespace or 'default'}/{p.metadata.name}" == key and p.spec
            for c in p.spec.containers
            for cp in c.ports
            if cp.protocol.lower() == proto
        ]
        if len(declared) != 1:
            raise FlowError(
                f"TO pod {key}: it declares {len(declared)} {proto.upper()} container ports; "
                "choose one with --port"
            )
        port = declared[0]
    return pod.ip, port or 0, f"pod {key}", None


def _by_address(
    state: ClusterState,
    topology: Topology,
    ip: str,
    port: int,
    proto: str,
    node_label: str | None,
) -> tuple[str, int, str, str | None]:
    """An address and port: name what it is (a Service's ClusterIP, NodePort,
    LoadBalancer or external IP, a pod, a node), as kube-proxy would see it."""
    node = topology.node_of_ip(ip)
    for svc in state.services:
        spec = svc.spec
        key = _svc_key(svc)
        for sp in spec.ports:
            if sp.protocol.lower() != proto and proto != "icmp":
                continue
            if node is not None and sp.node_port and sp.node_port == port:
                return ip, port, f"NodePort {port} of Service {key} on node {node}", key
            if ip in _cluster_ips(svc) and sp.port == port:
                return ip, port, f"Service {key} port {port}/{sp.protocol} (ClusterIP)", key
            ingress = [i.ip for i in svc.status.load_balancer.ingress if i.ip]
            if ip in ingress and sp.port == port:
                return ip, port, f"Service {key} port {port} (LoadBalancer IP)", key
            if ip in spec.external_ips and sp.port == port:
                return ip, port, f"Service {key} port {port} (external IP)", key
    pod = topology.pod_of_ip(ip)
    if pod is not None:
        return ip, port, f"pod {pod.key}", None
    if node is not None:
        return ip, port, node_label or f"node {node}", None
    return ip, port, f"address {ip}", None


def in_namespace(topology: Topology, word: str, namespace: str | None, *, source: bool) -> str:
    """FROM or TO as `-n NAMESPACE` means it (kubectl's habit): a pod or Service
    named without `NAMESPACE/` is looked up in `namespace`; nodes, external
    clients (as FROM), addresses, NODE:PORT and names with a namespace stay."""
    if namespace is None:
        return word
    kind, name = _split_kind(word)
    prefix = word[: len(word) - len(name)]  # "svc/", "pod/" or ""
    if "/" in name or ":" in name or _is_ip(name) or kind in ("node", "client"):
        return word
    if kind is None and (name in topology.nodes or (source and name in topology.clients)):
        return word
    return f"{prefix}{namespace}/{name}"


def named_port(state: ClusterState, topology: Topology, to: str, name: str, proto: str) -> int:
    """The number of port `name` of TO: the Service's port of that name (its
    `port`), or for a pod its container port of that name, as `--port NAME`
    means it (kubectl port-forward takes names the same way)."""
    kind, word = _split_kind(to)
    if kind in (None, "service"):
        svc = _find_service(state, word)
        if svc is not None:
            ports = [p for p in svc.spec.ports if p.name == name and p.protocol.lower() == proto]
            if ports:
                return ports[0].port
            named = ", ".join(p.name for p in svc.spec.ports if p.name) or "none"
            raise FlowError(
                f"--port {name!r}: Service {_svc_key(svc)} has no {proto.upper()} port of that "
                f"name; its port names: {named}"
            )
    if kind in (None, "pod") and _pod_key(word) in topology.pods:
        key = _pod_key(word)
        declared = [
            cp
            for p in state.pods
            if f"{p.metadata.namespace or 'default'}/{p.metadata.name}" == key
            for c in p.spec.containers
            for cp in c.ports
        ]
        found = [cp for cp in declared if cp.name == name and cp.protocol.lower() == proto]
        if found:
            return found[0].container_port
        named = ", ".join(cp.name for cp in declared if cp.name) or "none"
        raise FlowError(
            f"--port {name!r}: pod {key} has no {proto.upper()} container port of that name; "
            f"its port names: {named}"
        )
    raise FlowError(f"--port {name!r}: a port name needs a Service or pod as TO, got {to!r}")


FAMILIES = ("IPv4", "IPv6")


def to_family(
    state: ClusterState, topology: Topology, to: str, family: str, port: int | None, proto: str
) -> str:
    """TO as an address of `family` (`--family IPv6`, `-6`): a Service's
    clusterIP of that family (`spec.clusterIPs`, as kube-proxy's proxier of
    that family programs it), a node's or a pod's address of that family;
    `[ADDRESS]:PORT` for IPv6. An address literal must already be of that
    family."""
    if family not in FAMILIES:
        raise FlowError(f"--family {family!r}: expected one of {', '.join(FAMILIES)}")
    v6 = family == "IPv6"

    def written(ip: str, port_number: int | None) -> str:
        if port_number is None:
            return ip
        return f"[{ip}]:{port_number}" if v6 else f"{ip}:{port_number}"

    kind, word = _split_kind(to)
    split = _split_host_port(word) if kind is None else None
    host, port_text = split or (word, "")
    if _is_ip(host):
        if _is_ipv6(host) != v6:
            raise FlowError(f"TO {to!r} is not an {family} address (--family {family})")
        return to
    if split is not None and port_text.isdigit() and host in topology.nodes:
        return written(_node_address(topology, host, family, to), int(port_text))
    if kind in (None, "service"):
        svc = _find_service(state, word)
        if svc is not None:
            ips = [ip for ip in _cluster_ips(svc) if ip != "None" and _is_ipv6(ip) == v6]
            if not ips:
                raise FlowError(
                    f"TO {to!r}: Service {_svc_key(svc)} has no {family} clusterIP "
                    f"(its clusterIPs: {', '.join(_cluster_ips(svc)) or 'none'})"
                )
            if proto == "icmp":
                return ips[0]
            return written(ips[0], _service_port(svc, port, proto, repr(to)).port)
    if kind in (None, "pod") and _pod_key(word) in topology.pods:
        pod = topology.pods[_pod_key(word)]
        ip = pod.address(family)
        if not ip:
            raise FlowError(f"TO {to!r}: pod {pod.key} has no {family} address")
        return written(ip, port) if port is not None else ip
    if kind in (None, "node") and word in topology.nodes:
        return _node_address(topology, word, family, to)
    return to  # not a name a family applies to: resolve_flow says what is wrong


def _node_address(topology: Topology, name: str, family: str, to: str) -> str:
    ip = topology.nodes[name].address(family)
    if not ip:
        raise FlowError(f"TO {to!r}: node {name} has no {family} address")
    return ip
