"""Building a lab's datapath from its plan, over netlink (pyroute2).

Every change is a netlink request on a socket opened inside the namespace it
changes (see netemu.kernel.netns): no `ip` process per link, address or
route, so hundreds of pods come up in one process. Veth pairs are created in
the node's namespace with their peer placed straight into the pod's (or
the underlay switch's port into the member's), so nothing ever appears in
the host's root namespace.

pyroute2 gives each thread its own netlink socket, created on the thread's
first request in whatever namespace that thread is in. So every request
runs on one worker thread owned by the Datapath, which opened each handle
while inside the handle's namespace: a request from any other thread could
otherwise reach the host's own namespace.

Owns: namespaces named by the plan and the links, addresses, routes, FDB and
neighbour entries in them. Must not touch: the host's root namespace.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT

from netemu.kernel import netns
from netemu.kernel.journal import Journal
from netemu.net.plan import (
    IPV6_NAMESPACE_SYSCTLS,
    POD_BRIDGE,
    POD_IFNAME,
    VXLAN_DEVICE_V6,
    VXLAN_VNI,
    ClientPlan,
    LoadBalancerPlan,
    NodePlan,
    PodPlan,
    Route,
    UnderlayPlan,
    VxlanPeer,
    host_link_sysctls,
    host_route,
    pod_sysctls,
)

_RTNH_F_ONLINK = 4
_RTPROT_BOOT = 3
# The loopback device is always ifindex 1 in a namespace (LOOPBACK_IFINDEX),
# and a fresh pod namespace has nothing else, so its eth0 can be given 2:
# no lookup round trip for either.
LOOPBACK_IFINDEX = 1
POD_ETH0_IFINDEX = 2
_NTF_SELF = 0x02
# flannel gives flannel-v6.1 20 bytes less than flannel.1: its outer IPv6
# header is 40 bytes, IPv4's 20 (pkg/backend/vxlan, the v6 device's MTU).
_VXLAN6_OVERHEAD = 20


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _host_prefixlen(address: str) -> int:
    return 128 if ":" in address else 32


P = ParamSpec("P")
R = TypeVar("R")


def _on_worker(method: Callable[P, R]) -> Callable[P, R]:
    """Run the method on the Datapath's netlink thread (see the module doc)."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, Datapath)
        if threading.current_thread() is self._thread:
            return method(*args, **kwargs)
        return self._worker.submit(method, *args, **kwargs).result()

    return run


class Datapath:
    """Netlink handles per namespace, opened once and reused."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._handles: dict[str, IPRoute] = {}
        self._pod_bridges: dict[str, int] = {}  # node namespace → cni0's ifindex
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._thread: threading.Thread | None = None
        self._worker.submit(self._claim).result()

    def _claim(self) -> None:
        self._thread = threading.current_thread()

    # -- namespaces -------------------------------------------------------

    def _new_netns(self, name: str) -> IPRoute:
        self.journal.netns(name)
        netns.create(name)
        ipr = self._open(name)
        ipr.link("set", index=LOOPBACK_IFINDEX, state="up")
        return ipr

    # _open and _drop run on the netlink thread only, so the handles need no lock.
    def _open(self, name: str) -> IPRoute:
        if name not in self._handles:
            with netns.entered(name):
                self._handles[name] = IPRoute()
        return self._handles[name]

    def _drop(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.close()

    @staticmethod
    def _index(ipr: IPRoute, ifname: str) -> int:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"no link {ifname}")
        return int(found[0])

    def close(self) -> None:
        self._worker.submit(self._close_all).result()
        self._worker.shutdown()

    def _close_all(self) -> None:
        for name in list(self._handles):
            self._drop(name)

    # -- underlay ---------------------------------------------------------

    @_on_worker
    def build_underlay(self, plan: UnderlayPlan) -> None:
        ipr = self._new_netns(plan.netns)
        if plan.gateway_ip6 or ":" in plan.gateway_ip:
            netns.write_sysctls(plan.netns, dict(IPV6_NAMESPACE_SYSCTLS))
        ipr.link("add", ifname=plan.bridge, kind="bridge", address=plan.bridge_mac)
        bridge = self._index(ipr, plan.bridge)
        ipr.addr("add", index=bridge, address=plan.gateway_ip, prefixlen=plan.prefixlen)
        if plan.gateway_ip6:
            ipr.addr("add", index=bridge, address=plan.gateway_ip6, prefixlen=plan.prefixlen6)
        ipr.link("set", index=bridge, state="up")

    def _attach_to_underlay(
        self, underlay: UnderlayPlan, member_netns: str, port: str
    ) -> tuple[IPRoute, int]:
        """A veth from the switch bridge into the member, named eth0 there."""
        switch = self._open(underlay.netns)
        switch.link(
            "add",
            ifname=port,
            kind="veth",
            peer={"ifname": "eth0", "net_ns_fd": str(netns.path(member_netns))},
        )
        index = self._index(switch, port)
        switch.link("set", index=index, master=self._index(switch, underlay.bridge), state="up")
        member = self._open(member_netns)
        return member, self._index(member, "eth0")

    # -- nodes ------------------------------------------------------------

    @_on_worker
    def build_node(self, plan: NodePlan, underlay: UnderlayPlan) -> None:
        ipr = self._new_netns(plan.netns)
        netns.write_sysctls(plan.netns, dict(plan.sysctls))
        _, eth0 = self._attach_to_underlay(underlay, plan.netns, plan.switch_port)
        ipr.addr("add", index=eth0, address=plan.underlay_ip, prefixlen=plan.underlay_prefixlen)
        ipr.link("set", index=eth0, state="up")

        ipr.link("add", ifname=POD_BRIDGE, kind="bridge", mtu=plan.pod_mtu, address=plan.bridge_mac)
        bridge = self._index(ipr, POD_BRIDGE)
        self._pod_bridges[plan.netns] = bridge
        netns.write_sysctls(plan.netns, dict(host_link_sysctls(POD_BRIDGE)), ignore_missing=True)
        ipr.addr("add", index=bridge, address=plan.bridge_ip, prefixlen=plan.pod_prefixlen)
        ipr.link("set", index=bridge, state="up")

        if plan.overlay == "vxlan":
            # An IPv6-only node's one device is flannel-v6.1 (plan.vxlan_device).
            self._add_vxlan_device(
                ipr,
                plan.netns,
                eth0,
                name=plan.vxlan_device,
                port=plan.vxlan_port,
                local_ip=plan.underlay_ip,
                mac=plan.vtep_mac,
                vtep_ip=plan.vtep_ip,
                mtu=plan.pod_mtu,
                peers=plan.peers,
            )
        self._add_routes(ipr, plan.routes)
        if plan.ipv6 is not None:
            self._build_node_ipv6(ipr, plan, eth0, bridge)

    def _build_node_ipv6(self, ipr: IPRoute, plan: NodePlan, eth0: int, bridge: int) -> None:
        """A dual-stack node's IPv6 side: its underlay address, cni0's IPv6
        gateway, and with vxlan flannel-v6.1 with every peer's neighbour and
        FDB entries, as flannel's dual-stack VXLAN backend writes them."""
        v6 = plan.ipv6
        assert v6 is not None
        ipr.addr("add", index=eth0, address=v6.underlay_ip, prefixlen=v6.underlay_prefixlen)
        ipr.addr("add", index=bridge, address=v6.bridge_ip, prefixlen=v6.pod_prefixlen)
        if plan.overlay == "vxlan":
            self._add_vxlan_device(
                ipr,
                plan.netns,
                eth0,
                name=VXLAN_DEVICE_V6,
                port=plan.vxlan_port,
                local_ip=v6.underlay_ip,
                mac=v6.vtep_mac,
                vtep_ip=v6.vtep_ip,
                mtu=plan.pod_mtu - _VXLAN6_OVERHEAD,
                peers=v6.peers,
            )
        self._add_routes(ipr, v6.routes)

    def _add_vxlan_device(
        self,
        ipr: IPRoute,
        netns_name: str,
        eth0: int,
        *,
        name: str,
        port: int,
        local_ip: str,
        mac: str,
        vtep_ip: str,
        mtu: int,
        peers: Iterable[VxlanPeer],
    ) -> None:
        """One of flannel's VXLAN devices (flannel.1 over the IPv4 underlay,
        flannel-v6.1 over the IPv6 one) with its VTEP address, and flannel's
        entries per remote node: the peer VTEP's MAC for its address
        (neighbour) and where that MAC lives on the underlay (FDB); the
        route to its pod CIDR is the plan's."""
        six = _family(local_ip) == socket.AF_INET6
        ipr.link(
            "add",
            ifname=name,
            kind="vxlan",
            vxlan_id=VXLAN_VNI,
            vxlan_link=eth0,
            vxlan_port=port,
            vxlan_learning=0,  # flannel writes every peer's entries itself
            address=mac,
            mtu=mtu,
            **{"vxlan_local6" if six else "vxlan_local": local_ip},
        )
        vxlan = self._index(ipr, name)
        if six:
            netns.write_sysctls(netns_name, dict(host_link_sysctls(name)), ignore_missing=True)
        ipr.addr("add", index=vxlan, address=vtep_ip, prefixlen=128 if six else 32)
        ipr.link("set", index=vxlan, state="up")
        for peer in peers:
            ipr.neigh(
                "add",
                family=_family(peer.vtep_ip),
                dst=peer.vtep_ip,
                lladdr=peer.vtep_mac,
                ifindex=vxlan,
                state=NUD_PERMANENT,
            )
            ipr.fdb(
                "append",
                ifindex=vxlan,
                lladdr=peer.vtep_mac,
                dst=peer.underlay_ip,
                state=NUD_PERMANENT,
                flags=_NTF_SELF,
            )

    def _add_routes(self, ipr: IPRoute, routes: Iterable[Route]) -> None:
        for route in routes:
            family = _family(route.via or route.dst)
            default = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
            args: dict[str, object] = {
                "dst": default if route.dst == "default" else route.dst,
                "family": family,
            }
            if route.via:
                args["gateway"] = route.via
            if route.device:
                args["oif"] = self._index(ipr, route.device)
            if route.onlink:
                args["flags"] = _RTNH_F_ONLINK
            ipr.route("replace", **args)

    # -- external clients -------------------------------------------------

    @_on_worker
    def build_client(self, plan: ClientPlan, underlay: UnderlayPlan) -> None:
        ipr = self._new_netns(plan.netns)
        if plan.ip6 or ":" in plan.ip:
            netns.write_sysctls(plan.netns, dict(IPV6_NAMESPACE_SYSCTLS))
        _, eth0 = self._attach_to_underlay(underlay, plan.netns, plan.switch_port)
        ipr.addr("add", index=eth0, address=plan.ip, prefixlen=plan.prefixlen)
        if plan.ip6:
            ipr.addr("add", index=eth0, address=plan.ip6, prefixlen=plan.prefixlen6)
        ipr.link("set", index=eth0, state="up")
        self._add_routes(ipr, plan.routes)

    @_on_worker
    def set_host_routes(self, netns_name: str, old: Iterable[Route], new: Iterable[Route]) -> None:
        """Replace a member's /32 routes `old` by `new` (announced IPs change
        as Services come and go)."""
        ipr = self._open(netns_name)
        new_set = set(new)
        for route in set(old) - new_set:
            ipr.route(
                "del", dst=route.dst, gateway=route.via, family=_family(route.via or route.dst)
            )
        self._add_routes(ipr, sorted(new_set, key=lambda r: r.dst))

    # -- the emulated cloud load balancer ----------------------------------

    @_on_worker
    def build_load_balancer(self, plan: LoadBalancerPlan, underlay: UnderlayPlan) -> None:
        ipr = self._new_netns(plan.netns)
        if plan.ip6 or ":" in plan.ip:
            # No router advertisements or DAD first, then its forwarding.
            netns.write_sysctls(plan.netns, dict(IPV6_NAMESPACE_SYSCTLS))
        netns.write_sysctls(plan.netns, dict(plan.sysctls))
        _, eth0 = self._attach_to_underlay(underlay, plan.netns, plan.switch_port)
        ipr.addr("add", index=eth0, address=plan.ip, prefixlen=plan.prefixlen)
        if plan.ip6:
            ipr.addr("add", index=eth0, address=plan.ip6, prefixlen=plan.prefixlen6)
        ipr.link("set", index=eth0, state="up")

    @_on_worker
    def set_spread_routes(
        self, netns_name: str, old: dict[str, tuple[str, ...]], new: dict[str, tuple[str, ...]]
    ) -> None:
        """Make each ingress IP's host route (/32, /128) in the load balancer
        a multipath route over the underlay IPs `new[ip]` (one nexthop each,
        of the IP's family), and remove the routes of IPs no longer in `new`.
        Each route is replaced in one netlink request, so a flow never meets
        a missing route."""
        ipr = self._open(netns_name)
        eth0 = self._index(ipr, "eth0")
        for ip in sorted(set(old) - set(new)):
            ipr.route("del", dst=host_route(ip), family=_family(ip))
        for ip, gateways in sorted(new.items()):
            if old.get(ip) == gateways:
                continue
            family = _family(ip)
            if len(gateways) == 1:
                ipr.route(
                    "replace", dst=host_route(ip), family=family, gateway=gateways[0], oif=eth0
                )
            else:
                hops = [{"gateway": gw, "oif": eth0} for gw in gateways]
                ipr.route("replace", dst=host_route(ip), family=family, multipath=hops)

    @_on_worker
    def set_local_addresses(self, netns_name: str, old: set[str], new: set[str]) -> None:
        """Give the namespace's loopback the /32 addresses `new` and take away
        those of `old` not in it: proxy-mode ingress IPs the load balancer
        answers itself."""
        ipr = self._open(netns_name)
        for ip in sorted(old - new):
            ipr.addr("del", index=LOOPBACK_IFINDEX, address=ip, prefixlen=_host_prefixlen(ip))
        for ip in sorted(new - old):
            ipr.addr("replace", index=LOOPBACK_IFINDEX, address=ip, prefixlen=_host_prefixlen(ip))

    # -- pods (the bridge CNI's ADD and DEL) -------------------------------

    @_on_worker
    def add_pod(self, pod: PodPlan, node: NodePlan) -> None:
        """The bridge CNI's ADD: all or nothing. If a step fails, what the
        earlier ones made is removed before the error is raised (a namespace
        that already existed was not made here and is left alone)."""
        if pod.host_network:
            return  # a hostNetwork pod uses the node's own namespace as is
        ipr = self._new_netns(pod.netns)
        try:
            self._plug_pod(ipr, pod, node)
        except BaseException:
            self._unplug_pod(pod, node)
            raise

    def _plug_pod(self, ipr: IPRoute, pod: PodPlan, node: NodePlan) -> None:
        """The bridge plugin's ADD as flannel's conflist configures it
        (plugins/main/bridge/bridge.go): the veth pair, the host side up on
        cni0 with hairpin mode, the pod's sysctls, its address and routes."""
        host = self._open(node.netns)
        # One request: the pair, the node side on the pod bridge and up, the
        # pod side named eth0 in the pod's namespace. Both ends keep the MACs
        # the kernel gives them, as the plugin leaves them when no MAC is asked for.
        host.link(
            "add",
            ifname=pod.host_veth,
            kind="veth",
            mtu=pod.mtu,
            master=self._pod_bridges[node.netns],
            state="up",
            peer={
                "ifname": POD_IFNAME,
                "index": POD_ETH0_IFINDEX,
                "net_ns_fd": str(netns.path(pod.netns)),
                "mtu": pod.mtu,
            },
        )
        netns.write_sysctls(node.netns, dict(host_link_sysctls(pod.host_veth)), ignore_missing=True)
        # hairpinMode, as flannel's bridge CNI config sets it: a pod reaching
        # itself through its Service may be bridged back out its own port.
        host.brport("set", index=self._index(host, pod.host_veth), mode=1)  # IFLA_BRPORT_MODE
        # Before the address, as the plugin: arp_notify then announces it when eth0 comes up.
        netns.write_sysctls(pod.netns, dict(pod_sysctls()), ignore_missing=True)
        ipr.addr("add", index=POD_ETH0_IFINDEX, address=pod.ip, prefixlen=pod.prefixlen)
        if pod.ip6:
            ipr.addr("add", index=POD_ETH0_IFINDEX, address=pod.ip6, prefixlen=pod.prefixlen6)
        ipr.link("set", index=POD_ETH0_IFINDEX, state="up")
        for route in (*pod.routes, *pod.routes6):
            # proto boot, as a netlink route add without a protocol (the plugin's) has.
            family = _family(route.via or route.dst)
            default = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
            ipr.route(
                "add",
                family=family,
                dst=default if route.dst == "default" else route.dst,
                gateway=route.via,
                oif=POD_ETH0_IFINDEX,
                proto=_RTPROT_BOOT,
            )

    @_on_worker
    def remove_pod(self, pod: PodPlan, node: NodePlan) -> None:
        if pod.host_network:
            return
        self._unplug_pod(pod, node)

    def _unplug_pod(self, pod: PodPlan, node: NodePlan) -> None:
        host = self._open(node.netns)
        found = host.link_lookup(ifname=pod.host_veth)
        if found:
            # Deleting one end deletes the pair now, whoever still holds the pod's namespace.
            host.link("del", index=found[0])
        self._drop(pod.netns)
        netns.remove(pod.netns)
