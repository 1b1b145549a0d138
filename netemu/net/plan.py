"""The network plan of a live lab: which namespaces, links, addresses, routes
and overlay entries it has, as pure data computed from the cluster state.

Naming grammar (every name is collision-free between labs and within kernel
limits):

- namespaces: `netemu_<lab>_underlay`, `netemu_<lab>_lb` (the emulated
  cloud load balancer), `netemu_<lab>_node_<node>`,
  `netemu_<lab>_ext_<client>`, `netemu_<lab>_pod_<namespace>_<pod>`.
  Kubernetes names never contain `_`, so the parts can always be told
  apart and two labs never share a name.
  A name longer than NETNS_NAME_MAX (160) bytes takes a short form: its
  first 143 bytes, `_`, and the first 16 hex digits of the SHA-256 of the
  full name (`netemu_<lab>_pod_<namespace>_<pod prefix>_<hash>`). A pod
  name may be 253 characters and its namespace 63, but a namespace is a
  file under /run/netns and a directory under /etc/netns, whose names the
  kernel caps at NAME_MAX (255 bytes); the cap leaves room for the files
  named after a namespace (a trace's `NN-<netns>-<interface>.pcap`). The
  short form is deterministic; it never equals a full name, because the
  cut always falls after the last `_` of the full name (the lab prefix,
  kind and a 63-character namespace end by byte 109), so it has one `_`
  more than any full name of its kind; and two short forms are equal only
  if 64 bits of their hashes are.
- hostnames: a pod's name, cut to 63 characters without a trailing `-` or
  `.` as the kubelet cuts it (HOST_NAME_MAX is 64 with the NUL).
- interfaces exist only inside a lab's own namespaces, so they follow the
  names a real node shows: `eth0` (a node's or pod's underlay/primary
  link), `cni0` (the pod bridge), `flannel.1` (the VXLAN device),
  `veth<8 hex>` (a pod's host-side veth, as the bridge CNI plugin names
  them), and on the underlay switch `br0` plus one port per member,
  `n<i>-<node>` / `c<i>-<client>`, cut to 15 characters, and `lb` for
  the load balancer.

Must not touch: the kernel (netemu.kernel applies this plan).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import netaddr

from netemu.api.addresspool import AddressPool, default_pool, parse_pool
from netemu.api.config import (
    DEFAULT_VXLAN_PORT,
    KubeProxyConfiguration,
    KubeProxyConntrackConfiguration,
    Lab,
    ipv4_first,
    live_ipv6_refusal,
)
from netemu.api.core import Container, Pod, Service
from netemu.api.duration import parse_duration
from netemu.controlplane.addons import (
    BUILTIN_DNS,
    BUILTIN_INGRESS,
    BUILTIN_SERVER,
    BUILTIN_TEST,
)
from netemu.controlplane.state import ClusterState
from netemu.net.addresses import bridge_gateway, overlay_address
from netemu.net.standin import ProgramCheck, stand_in, why_stand_in
from netemu.node.podfiles import (
    PodFilesError,
    dns_policy,
    host_aliases,
    host_network_hosts,
    hostname_and_domain,
    kernel_hostname,
    node_hosts,
    node_resolver,
    pod_hosts,
    pod_resolver,
)
from netemu.rules.portmap import PortMapping, port_mappings

PREFIX = "netemu"
IFNAMSIZ = 15  # the kernel's interface name limit, without the NUL
# The longest namespace name a plan gives (see the module doc for why).
NETNS_NAME_MAX = 160
_NETNS_HASH_HEX = 16
HOSTNAME_MAX = 63
LAB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

# flannel's defaults: VNI 1 on flannel.1, UDP 8472 (the Linux kernel's
# default VXLAN port, which flannel keeps; a Lab may set spec.vxlanPort), and
# an MTU that leaves room for the 50-byte outer headers on a 1500-byte underlay.
VXLAN_VNI = 1
VXLAN_PORT = DEFAULT_VXLAN_PORT
VXLAN_DEVICE = "flannel.1"
# flannel's VXLAN backend with EnableIPv6 runs a second device for the IPv6
# network, flannel-v6.<VNI>, same VNI and port, its VTEP on the node's IPv6
# underlay address (pkg/backend/vxlan/vxlan.go, newVXLANDevice for v6).
VXLAN_DEVICE_V6 = "flannel-v6.1"
VXLAN_MTU = 1450
# flannel gives flannel-v6.1 20 bytes less than flannel.1: its outer IPv6
# header is 40 bytes, IPv4's 20 (pkg/backend/vxlan, the v6 device's MTU).
VXLAN6_OVERHEAD = 20
UNDERLAY_MTU = 1500
POD_BRIDGE = "cni0"
POD_IFNAME = "eth0"
SWITCH_BRIDGE = "br0"
# The CNI network name of flannel's conflist (kube-flannel.yml's cni-conf.json,
# "name": "cbr0"): portmap hashes it into its per-pod chain names.
CNI_NETWORK = "cbr0"
LB_SWITCH_PORT = "lb"
# The load balancer forwards what it receives on eth0 back out of eth0 (to
# the chosen node): it must not tell the client, by an ICMP redirect, to
# send to that node directly, or one flow's choice would stick to every
# later flow. Each connection is placed by a hash of its 5-tuple, as a
# cloud LB's per-connection hash: the custom policy (3) over source and
# destination address and port and the protocol (fields 0x37, see the
# kernel's ip-sysctl.rst). Not the L4 policy (1): it reuses a hash the
# packet already carries, here the sending socket's random txhash (kept
# across veths), which `ip route get` cannot know and TCP re-rolls after a
# retransmission timeout.
LB_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.fib_multipath_hash_policy", "3"),
    ("net.ipv4.fib_multipath_hash_fields", "0x0037"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
)
# The same for IPv6 on a lab with an IPv6 underlay: it forwards IPv6 VIP
# traffic to the nodes' IPv6 addresses, hashing the same fields.
LB_SYSCTLS6 = (
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.fib_multipath_hash_policy", "3"),
    ("net.ipv6.fib_multipath_hash_fields", "0x0037"),
)


class PlanError(ValueError):
    pass


def check_lab_name(name: str) -> str:
    if not LAB_NAME_RE.fullmatch(name):
        raise PlanError(
            f"lab name {name!r}: expected lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 32 characters"
        )
    return name


def lab_prefix(lab: str) -> str:
    return f"{PREFIX}_{lab}_"


def netns_name(full: str) -> str:
    """`full`, or its short form when it is longer than NETNS_NAME_MAX bytes
    (the grammar is in the module doc)."""
    raw = full.encode()
    if len(raw) <= NETNS_NAME_MAX:
        return full
    digest = hashlib.sha256(raw).hexdigest()[:_NETNS_HASH_HEX]
    keep = raw[: NETNS_NAME_MAX - _NETNS_HASH_HEX - 1].decode(errors="ignore")
    return f"{keep}_{digest}"


def switch_netns(lab: str) -> str:
    return netns_name(f"{lab_prefix(lab)}underlay")


def lb_netns(lab: str) -> str:
    return netns_name(f"{lab_prefix(lab)}lb")


def node_netns(lab: str, node: str) -> str:
    return netns_name(f"{lab_prefix(lab)}node_{node}")


def client_netns(lab: str, client: str) -> str:
    return netns_name(f"{lab_prefix(lab)}ext_{client}")


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    return netns_name(f"{lab_prefix(lab)}pod_{namespace}_{pod}")


def hostname(name: str) -> str:
    """The hostname of a pod (or a node) named `name`: the kubelet caps it at
    63 characters and trims a trailing '-' or '.' (pkg/kubelet/kubelet_pods.go,
    truncatePodHostnameIfNeeded); sethostname(2) refuses more than 64 bytes."""
    if len(name) <= HOSTNAME_MAX:
        return name
    return name[:HOSTNAME_MAX].rstrip("-.")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("/".join(parts).encode()).digest()


def host_veth(namespace: str, pod: str) -> str:
    """The node-side veth of a pod, `veth` + 8 hex digits like the bridge CNI's."""
    return "veth" + _digest(namespace, pod).hex()[:8]


def _mac(*parts: str) -> str:
    """A stable, locally administered unicast MAC."""
    raw = bytearray(_digest(*parts)[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def vtep_mac(lab: str, node: str, *device: str) -> str:
    """A node's VXLAN device MAC (`device` "v6": flannel-v6.1's), fixed so
    every peer's FDB and neighbour entries can be written up front."""
    return _mac(lab, node, *device)


def bridge_mac(lab: str, *owner: str) -> str:
    """A bridge's own MAC, fixed: a Linux bridge without one takes the lowest
    MAC of its ports and changes it when that port leaves, and every pod's
    neighbour entry for its gateway would then point nowhere (the bridge CNI
    plugin fixes its bridge's MAC for the same reason)."""
    return _mac(lab, "bridge", *owner)


def switch_port(kind: str, index: int, name: str) -> str:
    return f"{kind}{index}-{name}"[:IFNAMSIZ]


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR, or "default"
    via: str | None = None
    device: str | None = None
    onlink: bool = False


@dataclass(frozen=True)
class VxlanPeer:
    node: str
    underlay_ip: str
    vtep_mac: str
    vtep_ip: str  # the peer's flannel.1 address (its pod CIDR's network address)
    pod_cidr: str


@dataclass(frozen=True)
class NodeIPv6:
    """A dual-stack node's IPv6 side (IPv4 is the primary family): its
    underlay address, IPv6 pod CIDR on cni0 and, with vxlan, flannel-v6.1."""

    underlay_ip: str
    underlay_prefixlen: int
    pod_cidr: str
    bridge_ip: str
    pod_prefixlen: int
    vtep_mac: str
    vtep_ip: str
    cluster_cidr: str
    peers: tuple[VxlanPeer, ...] = ()
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class NodePlan:
    name: str
    netns: str
    underlay_ip: str
    underlay_prefixlen: int
    switch_port: str
    pod_cidr: str
    bridge_ip: str
    pod_prefixlen: int
    overlay: str  # "vxlan" or "host-gw"
    vxlan_port: int  # flannel.1's UDP port (with the vxlan overlay)
    vtep_mac: str
    vtep_ip: str
    bridge_mac: str
    pod_mtu: int
    peers: tuple[VxlanPeer, ...]
    routes: tuple[Route, ...]
    sysctls: tuple[tuple[str, str], ...]
    # The whole cluster's pod CIDR (flannel's FLANNEL_NETWORK).
    cluster_cidr: str = ""
    # Its IPv6 side on a dual-stack lab.
    ipv6: NodeIPv6 | None = None

    @property
    def ipv6_only(self) -> bool:
        """An IPv6-only node: its base addresses above are IPv6."""
        return ":" in self.underlay_ip

    @property
    def vxlan_device(self) -> str:
        """The device of its base family: flannel's IPv6-only VXLAN backend
        runs flannel-v6.1 alone, with no IPv4 device (pkg/backend/vxlan)."""
        return VXLAN_DEVICE_V6 if self.ipv6_only else VXLAN_DEVICE


@dataclass(frozen=True)
class ClientPlan:
    name: str
    netns: str
    ip: str
    prefixlen: int
    switch_port: str
    routes: tuple[Route, ...]
    # Its IPv6 underlay address on a dual-stack lab ("" if none).
    ip6: str = ""
    prefixlen6: int = 0


@dataclass(frozen=True)
class UnderlayPlan:
    netns: str
    bridge: str
    bridge_mac: str
    gateway_ip: str
    prefixlen: int
    # The lab's IPv6 router address on a dual-stack underlay ("" if none):
    # the nodes' IPv6 default route, as gateway_ip is their IPv4 one.
    gateway_ip6: str = ""
    prefixlen6: int = 0


@dataclass(frozen=True)
class LoadBalancerPlan:
    """The emulated cloud load balancer's namespace: an underlay address of
    its own per family; the ingress IPs it owns are routed to it by the
    clients and from it to the healthy nodes' addresses of the ingress IP's
    family (netemu.node.cloudlb)."""

    netns: str
    ip: str  # of the datapath's base family (IPv6 on an IPv6-only lab)
    prefixlen: int
    switch_port: str
    sysctls: tuple[tuple[str, str], ...] = LB_SYSCTLS
    # Its IPv6 underlay address on a dual-stack lab ("" if none).
    ip6: str = ""
    prefixlen6: int = 0

    @property
    def addresses(self) -> tuple[str, ...]:
        """Its own addresses, base family first."""
        return (self.ip, *((self.ip6,) if self.ip6 else ()))


@dataclass(frozen=True)
class LabPlan:
    name: str
    underlay: UnderlayPlan
    nodes: tuple[NodePlan, ...]
    clients: tuple[ClientPlan, ...]
    load_balancer: LoadBalancerPlan

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def namespaces(self) -> list[str]:
        return [
            self.underlay.netns,
            self.load_balancer.netns,
            *(n.netns for n in self.nodes),
            *(c.netns for c in self.clients),
        ]


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    argv: tuple[str, ...]  # empty: the built-in test server
    env: tuple[tuple[str, str], ...]
    ports: tuple[tuple[int, str], ...]  # (containerPort, protocol)
    # Without argv, which built-in server runs on the ports: "test" (the
    # test server), or "dns" (the cluster DNS server, netemu.node.dnsserver)
    # in a pod annotated netemu/builtin-server: dns, as the DNS addon's is.
    builtin: str = BUILTIN_TEST
    # Why the built-in test server stands in for the container's own
    # program ("": it runs its command, or is the built-in DNS server); see
    # netemu.net.standin. A stand-in also listens on its probes' ports.
    stand_in: str = ""
    tls_ports: tuple[int, ...] = ()  # TCP ports served with TLS
    # httpGet probe paths, each with the fail switches that fail it.
    probe_paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # grpc probe ports (the gRPC health service there), with their fail switches.
    grpc_ports: tuple[tuple[int, tuple[str, ...]], ...] = ()
    # An init container with restartPolicy Always: a sidecar, started
    # before the next init container and left running.
    sidecar: bool = False
    # The user and group its processes run as (securityContext runAsUser /
    # runAsGroup, the container's over the pod's; None: the sandbox's
    # default, nobody) and its workingDir (None: /).
    run_as_user: int | None = None
    run_as_group: int | None = None
    working_dir: str | None = None


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    netns: str  # the node's namespace for hostNetwork pods
    host_network: bool
    ip: str
    prefixlen: int
    gateway: str
    mtu: int
    host_veth: str
    containers: tuple[ContainerPlan, ...] = field(default=())
    # The hostname its containers see: the node's for hostNetwork pods,
    # else spec.hostname or the pod's name (the FQDN with setHostnameAsFQDN).
    hostname: str = ""
    # kubelet's /etc/hosts and /etc/resolv.conf for it (netemu.node.podfiles).
    hosts: str = ""
    resolv_conf: str = ""
    # spec.enableServiceLinks; unset is true: the API server fills in
    # v1.DefaultEnableServiceLinks, and kubelet refuses a pod without it
    # (pkg/kubelet/kubelet_pods.go, makeEnvironmentVariables).
    enable_service_links: bool = True
    # eth0's routes, in the order the bridge plugin adds them (see pod_routes).
    routes: tuple[Route, ...] = ()
    # The sandbox's container ID (CNI_CONTAINERID), which portmap hashes
    # into the pod's CNI-DN- chain name.
    sandbox_id: str = ""
    # The pod's hostPorts, as kubelet hands them to CNI (runtimeConfig.portMappings).
    host_ports: tuple[PortMapping, ...] = ()
    # Its init containers, run in order before `containers` start.
    init_containers: tuple[ContainerPlan, ...] = ()
    # Its IPv6 address, prefix, gateway and routes on a dual-stack lab
    # (host-local's second range; "" if none).
    ip6: str = ""
    prefixlen6: int = 0
    gateway6: str = ""
    routes6: tuple[Route, ...] = ()
    # status.podIP, the primary family's address: `ip6` on an IPv6-primary
    # lab ("" means `ip`). The kubelet probes it and agnhost reports it.
    primary_ip: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def status_ip(self) -> str:
        return self.primary_ip or self.ip


# What the bridge CNI plugin writes for each pod (plugins/main/bridge/bridge.go,
# cmdAdd and ensureBridge; pkg/ip/link_linux.go, SetupVethWithName), as
# (sysctl, value); it ignores a failed write (no IPv6 in the kernel), and so
# does netemu. In the pod, before its address is added: IPv6 duplicate
# address detection off (hairpin mode echoes the pod's own neighbour
# solicitations back, which would fail DAD) and arp_notify on (a gratuitous
# ARP when eth0 comes up, so the gateway learns its MAC at once). On the
# node, router advertisements are ignored on cni0 and on each host veth
# ("we want to own the routes for this interface").
def pod_sysctls(ifname: str = POD_IFNAME) -> tuple[tuple[str, str], ...]:
    return (
        (f"net.ipv6.conf.{ifname}.accept_dad", "0"),
        (f"net.ipv4.conf.{ifname}.arp_notify", "1"),
    )


def host_link_sysctls(ifname: str) -> tuple[tuple[str, str], ...]:
    return ((f"net.ipv6.conf.{ifname}.accept_ra", "0"),)


# Every namespace of a dual-stack lab, before its links exist (new links take
# the `default` values): no router advertisements, no address
# autoconfiguration, and no duplicate address detection, so an address is
# usable at once (the bridge CNI plugin turns DAD off in pods for the same
# reason). Nothing here reaches beyond the lab's namespaces.
IPV6_NAMESPACE_SYSCTLS = tuple(
    (f"net.ipv6.conf.{scope}.{key}", "0")
    for scope in ("all", "default")
    for key in ("accept_ra", "autoconf", "accept_dad")
)
# A dual-stack node routes IPv6 and passes bridged IPv6 through ip6tables,
# as kube-proxy's IPv6 proxier needs.
IPV6_NODE_SYSCTLS = (
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
)


def pod_routes(gateway: str, cluster_cidr: str) -> tuple[Route, ...]:
    """eth0's routes as flannel's CNI plugin has the bridge plugin add them:
    host-local returns flannel's network (FLANNEL_NETWORK, the whole pod
    CIDR) as a route without a gateway, which ConfigureIface sends via the
    pod's gateway (flannel-io/cni-plugin flannel_linux.go, getDelegateIPAM);
    then, as kube-flannel.yml's conflist sets isDefaultGateway, the bridge
    plugin appends the default route (calcGateways). The pod subnet's own
    route is the kernel's, from eth0's address."""
    routes = [Route(cluster_cidr, via=gateway, device=POD_IFNAME)] if cluster_cidr else []
    routes.append(Route("default", via=gateway, device=POD_IFNAME))
    return tuple(routes)


def pod_routes6(gateway: str, cluster_cidr: str) -> tuple[Route, ...]:
    """The same for the IPv6 range of a dual-stack pod."""
    return (
        Route(cluster_cidr, via=gateway, device=POD_IFNAME),
        Route("default", via=gateway, device=POD_IFNAME),
    )


def sandbox_id(namespace: str, pod: str) -> str:
    """A stable stand-in for the runtime's sandbox ID: 64 hex digits, as
    containerd's are. Independent of the lab's name, so the portmap chain
    names of a live lab are those of its rules goldens."""
    return hashlib.sha256(f"sandbox/{namespace}/{pod}".encode()).hexdigest()


# kube-proxy's conntrack defaults (pkg/proxy/apis/config/v1alpha1/defaults.go).
DEFAULT_CONNTRACK_TCP_ESTABLISHED = "24h0m0s"
DEFAULT_CONNTRACK_TCP_CLOSE_WAIT = "1h0m0s"


def _whole_seconds(value: object) -> int:
    """A validated Go duration in whole seconds, truncated toward zero as
    kube-proxy's `Duration / time.Second`."""
    return int(parse_duration(value))


def conntrack_config(config: KubeProxyConfiguration | None) -> KubeProxyConntrackConfiguration:
    """The conntrack section kube-proxy runs with: `linux.conntrack` when
    set, else the top-level `conntrack` (as netemu.rules.input reads it)."""
    cfg = config or KubeProxyConfiguration()
    return cfg.linux.conntrack if cfg.linux and cfg.linux.conntrack else cfg.conntrack


def conntrack_sysctls(config: KubeProxyConfiguration | None) -> tuple[tuple[str, str], ...]:
    """The conntrack sysctls kube-proxy writes at start-up
    (pkg/proxy/conntrack/sysctls.go, setSysctls) that a node namespace can
    hold: each is per network namespace, and each is written only when its
    value is positive (tcpBeLiberal: when true), as kube-proxy does.

    nf_conntrack_max (maxPerCore x CPUs, at least `min`; by default
    32768 x CPUs, at least 131072) is not among them: the kernel keeps one
    table limit for the whole host and makes the sysctl read-only (0444)
    outside the initial namespace (net/netfilter/nf_conntrack_standalone.c),
    so a kube-proxy in a node namespace could not write it, and a lab never
    changes the host. kind runs kube-proxy with maxPerCore 0 for the same
    reason. Durations are validated beforehand (netemu.api.validate)."""
    ct = conntrack_config(config)
    established = _whole_seconds(
        ct.tcp_established_timeout
        if ct.tcp_established_timeout is not None
        else DEFAULT_CONNTRACK_TCP_ESTABLISHED
    )
    close_wait = _whole_seconds(
        ct.tcp_close_wait_timeout
        if ct.tcp_close_wait_timeout is not None
        else DEFAULT_CONNTRACK_TCP_CLOSE_WAIT
    )
    values: list[tuple[str, str]] = []
    for key, seconds in (
        ("nf_conntrack_tcp_timeout_established", established),
        ("nf_conntrack_tcp_timeout_close_wait", close_wait),
    ):
        if seconds > 0:
            values.append((f"net.netfilter.{key}", str(seconds)))
    if ct.tcp_be_liberal:
        values.append(("net.netfilter.nf_conntrack_tcp_be_liberal", "1"))
    for key, value in (
        ("nf_conntrack_udp_timeout", ct.udp_timeout),
        ("nf_conntrack_udp_timeout_stream", ct.udp_stream_timeout),
    ):
        if value is not None and (timeout := _whole_seconds(value)) > 0:
            values.append((f"net.netfilter.{key}", str(timeout)))
    return tuple(values)


# Sysctls a node's datapath needs, as kube-proxy and the bridge CNI set them.
def node_sysctls(
    localhost_node_ports: bool, conntrack: tuple[tuple[str, str], ...] = ()
) -> tuple[tuple[str, str], ...]:
    values = [
        ("net.ipv4.ip_forward", "1"),
        # Bridged pod traffic must traverse iptables, or same-node Service
        # replies would skip un-DNAT (kube-proxy checks this sysctl).
        ("net.bridge.bridge-nf-call-iptables", "1"),
        # Overlay and NodePort replies take paths the strict check rejects;
        # flannel and Calico hosts run with it off or loose.
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ]
    if localhost_node_ports:
        # kube-proxy sets this for NodePorts on 127.0.0.1 (pkg/proxy/iptables, localhostNodePorts).
        values.append(("net.ipv4.conf.all.route_localnet", "1"))
    return tuple(values) + conntrack


def _underlay_used(lab: Lab, services: Sequence[Service]) -> set[str]:
    used = {ip for n in lab.spec.nodes for ip in n.underlay_ips}
    used |= {ip for c in lab.spec.external_clients for ip in c.ips}
    used.update(announced_ips(services))
    return used


def _underlay_gateway(lab: Lab, services: Sequence[Service]) -> str:
    """The underlay's first free host address: the lab's router for node
    default routes (as a Vagrant host-only network's .1); it forwards nothing."""
    used = _underlay_used(lab, services)
    if lab.spec.load_balancer.ip:
        used.add(lab.spec.load_balancer.ip)
    underlay = ipv4_first(lab.spec.underlay_cidrs)[0]
    for ip in netaddr.IPNetwork(underlay).iter_hosts():
        if str(ip) not in used:
            return str(ip)
    raise PlanError(f"underlayCIDR {underlay} has no free address for the gateway")


def _underlay_gateway6(lab: Lab, underlay6: netaddr.IPNetwork) -> str:
    """The IPv6 underlay's first free host address: the lab's IPv6 router,
    like the IPv4 one it forwards nothing."""
    used = {ip for n in lab.spec.nodes for ip in n.underlay_ips}
    used |= {ip for c in lab.spec.external_clients for ip in c.ips}
    for ip in underlay6.iter_hosts():
        if str(ip) not in used:
            return str(ip)
    raise PlanError(f"underlayCIDR {underlay6} has no free address for the IPv6 gateway")


def load_balancer_ip(lab: Lab, services: Sequence[Service], underlay: str = "") -> str:
    """The load balancer's own address on `underlay` (default: the
    datapath's base family's CIDR): spec.loadBalancer.ip for the base
    family, else the underlay's highest free host address outside the
    load-balancer pool (whose addresses go to Services): the gateway takes
    the lowest, and nodes and clients are usually written from the bottom
    up, so the top is the least likely to collide."""
    used = _underlay_used(lab, services)
    base = ipv4_first(lab.spec.underlay_cidrs)[0]
    underlay = underlay or base
    given = lab.spec.load_balancer.ip if underlay == base else None
    pool = AddressPool()
    # A pool that does not parse is refused by validation.
    with contextlib.suppress(ValueError):
        addresses = lab.spec.load_balancer.addresses
        pool = parse_pool(addresses) if addresses else default_pool(lab.spec.underlay_cidrs)
    if given:
        if given in used or given in pool:
            raise PlanError(
                f"spec.loadBalancer.ip {given} is also a node's, a client's "
                "or a Service's ingress address, or in the load-balancer pool"
            )
        return given
    network = netaddr.IPNetwork(underlay)
    # From the top down, without listing the hosts (an IPv6 /64 has 2**64):
    # IPv4's broadcast address is no host, IPv6 has none. A pool range at
    # the top is stepped over whole.
    value = network.last - (1 if network.version == 4 else 0)
    for _ in range(len(used) + len(pool.ranges) + 2):
        if value <= network.first:
            break
        ip = str(netaddr.IPAddress(value, network.version))
        inside = next((r for r in pool.ranges if ip in r), None)
        if inside is not None:
            value = int(inside.first) - 1
        elif ip in used:
            value -= 1
        else:
            return ip
    raise PlanError(f"underlayCIDR {underlay} has no free address for the load balancer")


def announced_ips(services: Sequence[Service]) -> list[str]:
    """LoadBalancer ingress IPs and externalIPs: addresses clients reach the lab at."""
    return _sorted_ips({*external_ips(services), *ingress_ips(services)})


def external_ips(services: Sequence[Service]) -> list[str]:
    ips: set[str] = set()
    for svc in services:
        ips.update(svc.spec.external_ips if svc.spec else [])
    return _sorted_ips(ips)


def ingress_ips(services: Sequence[Service]) -> list[str]:
    """The LoadBalancer ingress IPs of LoadBalancer Services: the load balancer's."""
    ips: set[str] = set()
    for svc in services:
        if svc.spec is None or svc.spec.type != "LoadBalancer" or svc.status is None:
            continue
        ips.update(i.ip for i in svc.status.load_balancer.ingress if i.ip)
    return _sorted_ips(ips)


def _sorted_ips(ips: set[str]) -> list[str]:
    return sorted(ips, key=lambda ip: netaddr.IPAddress(ip))


def plan_lab(state: ClusterState, lab_name: str) -> LabPlan:
    lab = state.lab
    if lab is None:
        raise PlanError("a live lab needs a Lab object (kind: Lab) describing its nodes")
    check_lab_name(lab_name)
    refusal = live_ipv6_refusal(lab_name, lab)
    if refusal is not None:
        # Refused here rather than half-building the lab.
        raise PlanError(refusal)
    # The IPv4 side is the datapath's base, the IPv6 side of a dual-stack
    # lab is built beside it, whichever family the Lab lists first
    # (ipv4_first; live labs have IPv4: live_ipv6_refusal).
    # An IPv6-only lab's base is IPv6, with no second side.
    underlay = netaddr.IPNetwork(ipv4_first(lab.spec.underlay_cidrs)[0])
    ipv6_only = underlay.version == 6
    underlay6 = (
        None
        if ipv6_only
        else next((netaddr.IPNetwork(c) for c in lab.spec.underlay_cidrs if ":" in c), None)
    )
    cluster_cidr4 = ipv4_first(lab.spec.pod_cidrs)[0]
    cluster_cidr6 = "" if ipv6_only else next((c for c in lab.spec.pod_cidrs if ":" in c), "")
    gateway6 = _underlay_gateway6(lab, underlay6) if underlay6 is not None else ""
    mtu = VXLAN_MTU if lab.spec.overlay == "vxlan" else UNDERLAY_MTU
    if ipv6_only and lab.spec.overlay == "vxlan":
        mtu -= VXLAN6_OVERHEAD  # flannel-v6.1's outer header is IPv6's
    localhost_node_ports = _localhost_node_ports(state)
    gateway = _underlay_gateway(lab, state.services)
    has_ipv6 = ipv6_only or underlay6 is not None
    balancer = LoadBalancerPlan(
        netns=lb_netns(lab_name),
        ip=load_balancer_ip(lab, state.services),
        prefixlen=underlay.prefixlen,
        switch_port=LB_SWITCH_PORT,
        sysctls=(*LB_SYSCTLS, *(LB_SYSCTLS6 if has_ipv6 else ())),
        ip6=load_balancer_ip(lab, state.services, str(underlay6)) if underlay6 is not None else "",
        prefixlen6=underlay6.prefixlen if underlay6 is not None else 0,
    )

    node_info = []
    v6_info: dict[str, tuple[str, str]] = {}  # node → (IPv6 underlay IP, IPv6 pod CIDR)
    for node in state.nodes:
        name = node.metadata.name or ""
        # The node's IPv4 pod CIDR and InternalIP, first or second.
        pod_cidr = (ipv4_first(node.spec.pod_cidrs or [node.spec.pod_cidr or ""])[0]) or None
        internal = ipv4_first(node.internal_ips())
        base_v6 = (":" in (pod_cidr or ""), ":" in (internal[0] if internal else ""))
        if not pod_cidr or not internal or base_v6 != (ipv6_only, ipv6_only):
            raise PlanError(f"node {name}: no pod CIDR or underlay IP")
        node_info.append((name, internal[0], pod_cidr))
        if underlay6 is not None:
            ip6 = next((ip for ip in internal if ":" in ip), None)
            cidr6 = next((c for c in node.spec.pod_cidrs if ":" in c), None)
            if ip6 is None or cidr6 is None:
                raise PlanError(f"node {name}: no IPv6 pod CIDR or underlay IP")
            v6_info[name] = (ip6, cidr6)

    nodes = []
    for index, (name, ip, pod_cidr) in enumerate(node_info):
        peers = tuple(
            VxlanPeer(
                node=other,
                underlay_ip=other_ip,
                vtep_mac=vtep_mac(lab_name, other),
                vtep_ip=overlay_address(other_cidr),
                pod_cidr=other_cidr,
            )
            for other, other_ip, other_cidr in node_info
            if other != name
        )
        routes: list[Route] = [Route("default", via=gateway)]
        for peer in peers:
            if lab.spec.overlay == "vxlan":
                # flannel: the peer's pod CIDR via its VTEP address, on-link on flannel.1.
                routes.append(
                    Route(
                        peer.pod_cidr,
                        via=peer.vtep_ip,
                        device=VXLAN_DEVICE_V6 if ipv6_only else VXLAN_DEVICE,
                        onlink=True,
                    )
                )
            else:
                routes.append(Route(peer.pod_cidr, via=peer.underlay_ip, device="eth0"))
        nodes.append(
            NodePlan(
                name=name,
                netns=node_netns(lab_name, name),
                underlay_ip=ip,
                underlay_prefixlen=underlay.prefixlen,
                switch_port=switch_port("n", index, name),
                pod_cidr=pod_cidr,
                bridge_ip=bridge_gateway(pod_cidr),
                pod_prefixlen=netaddr.IPNetwork(pod_cidr).prefixlen,
                overlay=lab.spec.overlay,
                vxlan_port=lab.spec.vxlan_port,
                vtep_mac=vtep_mac(lab_name, name),
                vtep_ip=overlay_address(pod_cidr),
                bridge_mac=bridge_mac(lab_name, name),
                pod_mtu=mtu,
                peers=peers if lab.spec.overlay == "vxlan" else (),
                routes=tuple(routes),
                sysctls=node_sysctls(localhost_node_ports, conntrack_sysctls(state.proxy_config))
                + (
                    (*IPV6_NAMESPACE_SYSCTLS, *IPV6_NODE_SYSCTLS)
                    if underlay6 is not None or ipv6_only
                    else ()
                ),
                cluster_cidr=cluster_cidr4,
                ipv6=(
                    _node_ipv6(
                        lab_name,
                        name,
                        v6_info,
                        underlay6,
                        cluster_cidr6,
                        lab.spec.overlay,
                        gateway6,
                    )
                    if underlay6 is not None
                    else None
                ),
            )
        )

    clients = tuple(
        ClientPlan(
            name=client.name,
            netns=client_netns(lab_name, client.name),
            ip=ipv4_first(client.ips)[0],
            prefixlen=underlay.prefixlen,
            switch_port=switch_port("c", index, client.name),
            routes=client_routes(
                state, node_addresses(nodes[0]) if nodes else (), balancer.addresses
            ),
            ip6="" if ipv6_only else next((ip for ip in client.ips if ":" in ip), ""),
            prefixlen6=underlay6.prefixlen if underlay6 is not None else 0,
        )
        for index, client in enumerate(lab.spec.external_clients)
    )
    return LabPlan(
        name=lab_name,
        underlay=UnderlayPlan(
            netns=switch_netns(lab_name),
            bridge=SWITCH_BRIDGE,
            bridge_mac=bridge_mac(lab_name),
            gateway_ip=gateway,
            prefixlen=underlay.prefixlen,
            gateway_ip6=gateway6,
            prefixlen6=underlay6.prefixlen if underlay6 is not None else 0,
        ),
        nodes=tuple(nodes),
        clients=clients,
        load_balancer=balancer,
    )


def _node_ipv6(
    lab_name: str,
    name: str,
    v6_info: dict[str, tuple[str, str]],
    underlay6: netaddr.IPNetwork,
    cluster_cidr6: str,
    overlay: str,
    gateway6: str,
) -> NodeIPv6:
    """A dual-stack node's IPv6 side: a default route via the underlay's IPv6
    router (a node's own connections to IPv6 Service IPs need a route before
    kube-proxy's OUTPUT rules can DNAT them, as with IPv4), and flannel's
    IPv6 routes to every peer's IPv6 pod CIDR, via its flannel-v6.1 VTEP
    on-link (vxlan) or via its IPv6 underlay address (host-gw)."""
    ip6, cidr6 = v6_info[name]
    peers = tuple(
        VxlanPeer(
            node=other,
            underlay_ip=other_ip,
            vtep_mac=vtep_mac(lab_name, other, "v6"),
            vtep_ip=overlay_address(other_cidr),
            pod_cidr=other_cidr,
        )
        for other, (other_ip, other_cidr) in v6_info.items()
        if other != name
    )
    routes = [Route("default", via=gateway6)]
    for peer in peers:
        if overlay == "vxlan":
            routes.append(
                Route(peer.pod_cidr, via=peer.vtep_ip, device=VXLAN_DEVICE_V6, onlink=True)
            )
        else:
            routes.append(Route(peer.pod_cidr, via=peer.underlay_ip, device="eth0"))
    return NodeIPv6(
        underlay_ip=ip6,
        underlay_prefixlen=underlay6.prefixlen,
        pod_cidr=cidr6,
        bridge_ip=bridge_gateway(cidr6),
        pod_prefixlen=netaddr.IPNetwork(cidr6).prefixlen,
        vtep_mac=vtep_mac(lab_name, name, "v6"),
        vtep_ip=overlay_address(cidr6),
        cluster_cidr=cluster_cidr6,
        peers=peers if overlay == "vxlan" else (),
        routes=tuple(routes),
    )


def node_addresses(node: NodePlan) -> tuple[str, ...]:
    """A node's underlay addresses, base family first."""
    return (node.underlay_ip, *((node.ipv6.underlay_ip,) if node.ipv6 else ()))


def of_family_of(ip: str, addresses: Sequence[str]) -> str | None:
    """The first of `addresses` of `ip`'s family."""
    six = ":" in ip
    return next((a for a in addresses if (":" in a) == six), None)


def host_route(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def client_routes(
    state: ClusterState, announcing_node_ips: Sequence[str], balancer_ips: Sequence[str]
) -> tuple[Route, ...]:
    """An external client reaches LoadBalancer ingress IPs through the lab's
    load balancer, which owns them (netemu.node.cloudlb), and external IPs
    through the lab's first node, as if that node announced them (MetalLB
    in BGP mode with a single peer): kube-proxy DNATs them in PREROUTING
    without putting them on any interface. Each address goes via the
    load balancer's or the node's address of its own family (none: no
    route). An address that is both goes to the load balancer."""
    ingress = ingress_ips(state.services)
    routes = [
        Route(host_route(ip), via=via)
        for ip in ingress
        if (via := of_family_of(ip, balancer_ips)) is not None
    ]
    routes.extend(
        Route(host_route(ip), via=via)
        for ip in external_ips(state.services)
        if ip not in ingress and (via := of_family_of(ip, announcing_node_ips)) is not None
    )
    return tuple(sorted(routes, key=lambda r: netaddr.IPNetwork(r.dst).sort_key()))


def _localhost_node_ports(state: ClusterState) -> bool:
    config = state.proxy_config
    if config is None or config.iptables.localhost_node_ports is None:
        return True
    return config.iptables.localhost_node_ports


def node_upstream(node: NodePlan) -> str:
    """The DNS server a node's own resolv.conf names: its default gateway."""
    return next((r.via for r in node.routes if r.dst == "default" and r.via), "127.0.0.1")


def plan_pod(
    lab_name: str,
    node: NodePlan,
    pod: Pod,
    *,
    cluster_dns: Sequence[str] = ("10.96.0.10",),
    domain: str = "cluster.local",
    check_program: ProgramCheck | None = None,
) -> PodPlan:
    """A pod's plan; `cluster_dns` and `domain` are kubelet's clusterDNS and
    clusterDomain, for its resolv.conf and hostname; `check_program` tells
    whether a container's program can run on this machine (None: every
    command is taken to run)."""
    meta, spec = pod.metadata, pod.spec
    namespace, name = meta.namespace or "default", meta.name or ""
    if spec is None:
        raise PlanError(f"pod {namespace}/{name}: no spec")
    host_network = spec.host_network
    ip = node.underlay_ip if host_network else _pod_base_ip(pod, node)
    if not ip:
        raise PlanError(f"pod {namespace}/{name}: no pod IP assigned yet")
    asked = meta.annotations.get(BUILTIN_SERVER)
    builtin = asked if asked in (BUILTIN_DNS, BUILTIN_INGRESS) else BUILTIN_TEST
    containers: list[ContainerPlan] = []
    for c in spec.containers:
        # The TCP ports the pod's other containers declare, and those an
        # earlier stand-in opened for its probes: a stand-in leaves them be.
        taken = {
            p.container_port
            for other in spec.containers
            if other is not c
            for p in other.ports
            if p.protocol == "TCP"
        }
        taken.update(port for done in containers for port, proto in done.ports if proto == "TCP")
        planned = _container_plan(c, builtin, check_program, taken)
        containers.append(
            replace(
                planned,
                run_as_user=_security_id(c.security_context, spec.security_context, "runAsUser"),
                run_as_group=_security_id(c.security_context, spec.security_context, "runAsGroup"),
                working_dir=c.working_dir or None,
            )
        )
    aliases = host_aliases(spec.host_aliases)
    if host_network:
        kernel = hostname(node.name)
        hosts = host_network_hosts(node_hosts(node.underlay_ip, kernel), aliases)
    else:
        short, pod_domain = hostname_and_domain(
            name, namespace, spec.hostname, spec.subdomain, domain
        )
        try:
            kernel = kernel_hostname(short, pod_domain, spec.set_hostname_as_fqdn is True)
        except PodFilesError as exc:
            raise PlanError(f"pod {namespace}/{name}: {exc}") from None
        # The pod's IPs (status.podIPs: one per family on a dual-stack lab).
        hosts = pod_hosts([ip, *_pod_ip6(pod, node)], short, pod_domain, aliases)
    resolver = pod_resolver(
        namespace=namespace,
        policy=dns_policy(spec.dns_policy),
        dns_config=spec.dns_config,
        host_network=host_network,
        node=node_resolver(node_upstream(node)),
        cluster_dns=cluster_dns,
        domain=domain,
    )
    init_containers = tuple(
        ContainerPlan(
            name=c.name,
            argv=(*c.command, *c.args) if c.command else (),
            env=_plain_env(c.env),
            ports=tuple((p.container_port, p.protocol) for p in c.ports),
            sidecar=c.restart_policy == "Always",
        )
        for c in spec.init_containers
    )
    pod_plan = PodPlan(
        namespace=namespace,
        name=name,
        node=node.name,
        netns=node.netns if host_network else pod_netns(lab_name, namespace, name),
        host_network=host_network,
        ip=ip,
        prefixlen=node.pod_prefixlen,
        gateway=node.bridge_ip,
        mtu=node.pod_mtu,
        host_veth=host_veth(namespace, name),
        containers=tuple(containers),
        hostname=kernel,
        hosts=hosts,
        resolv_conf=resolver.text(),
        enable_service_links=spec.enable_service_links is not False,
        routes=() if host_network else pod_routes(node.bridge_ip, node.cluster_cidr),
        sandbox_id=sandbox_id(namespace, name),
        # A hostNetwork pod's hostPorts are its own sockets on the node: the
        # runtime does not call CNI for it, so portmap never sees them.
        host_ports=() if host_network else port_mappings(pod),
        init_containers=init_containers,
    )
    return _with_ipv6(pod_plan, pod, node)


def _pod_base_ip(pod: Pod, node: NodePlan) -> str | None:
    """The pod's address of the datapath's base family: IPv4, or IPv6 on an
    IPv6-only node (status.podIP is the primary family's: IPv6 on an
    IPv6-primary lab too)."""
    if pod.status is None:
        return None
    ips = [p.ip for p in pod.status.pod_ips] or [pod.status.pod_ip or ""]
    return next((ip for ip in ips if ip and (":" in ip) == node.ipv6_only), None)


def _pod_ip6(pod: Pod, node: NodePlan) -> list[str]:
    """The pod's IPv6 address on a dual-stack node (host-local's second range)."""
    if node.ipv6 is None or pod.status is None:
        return []
    return [p.ip for p in pod.status.pod_ips if ":" in p.ip][:1]


def _with_ipv6(plan: PodPlan, pod: Pod, node: NodePlan) -> PodPlan:
    """`plan` with the pod's IPv6 address, gateway and routes on a dual-stack node."""
    found = _pod_ip6(pod, node)
    if plan.host_network or not found or node.ipv6 is None:
        return plan
    v6 = node.ipv6
    return replace(
        plan,
        ip6=found[0],
        prefixlen6=v6.pod_prefixlen,
        gateway6=v6.bridge_ip,
        routes6=pod_routes6(v6.bridge_ip, v6.cluster_cidr),
        primary_ip=found[0] if pod.status is not None and pod.status.pod_ip == found[0] else "",
    )


def _security_id(container: object, pod: object, key: str) -> int | None:
    """A securityContext id: the container's setting wins over the pod's
    (SecurityContext overrides PodSecurityContext, as kubelet merges them)."""
    for context in (container, pod):
        if isinstance(context, dict):
            value = context.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def _container_plan(
    c: Container, builtin: str, check: ProgramCheck | None, taken: set[int]
) -> ContainerPlan:
    env = _plain_env(c.env)
    ports = tuple((p.container_port, p.protocol) for p in c.ports)
    if not c.command and builtin in (BUILTIN_DNS, BUILTIN_INGRESS):
        # netemu's own DNS server is the program of the DNS addon's pod, and
        # Debian's nginx (netemu.node.ingress) that of the ingress addon's.
        return ContainerPlan(c.name, (), env, ports, builtin=builtin)
    reason = why_stand_in(c, env, check)
    if reason is None:
        return ContainerPlan(c.name, (*c.command, *c.args), env, ports)
    # The image's entrypoint (agnhost's netexec, with `args` as its flags),
    # or a program this machine does not have: the built-in test server
    # stands in for it, whatever the args.
    served = stand_in(c, reason, taken)
    return ContainerPlan(
        name=c.name,
        argv=(),
        env=env,
        ports=served.ports,
        stand_in=served.reason,
        tls_ports=served.tls_ports,
        probe_paths=served.probe_paths,
        grpc_ports=served.grpc_ports,
    )


def _plain_env(env: object) -> tuple[tuple[str, str], ...]:
    """`env` entries with a literal `value` (valueFrom needs a kubelet that
    resolves references, which a lab does not run)."""
    if not isinstance(env, list):
        return ()
    pairs = []
    for item in env:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            value = item.get("value", "")
            pairs.append((item["name"], str(value)))
    return tuple(pairs)
