"""The pure network plan of a live lab: names, addresses, routes, overlay
entries and sysctls, computed from every lab in controlplane/."""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from pathlib import Path

import netaddr
import pytest

from netemu.api.config import ExternalClient, KubeProxyConfiguration, LabLoadBalancer
from netemu.api.core import Pod
from netemu.controlplane.state import ClusterState
from netemu.net.plan import (
    IFNAMSIZ,
    NETNS_NAME_MAX,
    POD_BRIDGE,
    SWITCH_BRIDGE,
    VXLAN_DEVICE,
    LabPlan,
    PlanError,
    Route,
    announced_ips,
    check_lab_name,
    client_netns,
    client_routes,
    conntrack_sysctls,
    host_veth,
    hostname,
    load_balancer_ip,
    netns_name,
    node_netns,
    node_sysctls,
    plan_lab,
    plan_pod,
    vtep_mac,
)
from netemu.pipeline import load_cluster
from netemu.trace.topology import Topology

ROOT = Path(__file__).parents[2]
LABS = (
    "default",
    "affinity",
    "internal-local",
    "loadbalancer",
    "no-selector",
    "protocols",
    "statefulset",
)
VETH_RE = re.compile(r"^veth[0-9a-f]{8}$")

IP_FORWARD = ("net.ipv4.ip_forward", "1")
BRIDGE_NF = ("net.bridge.bridge-nf-call-iptables", "1")
ROUTE_LOCALNET = ("net.ipv4.conf.all.route_localnet", "1")


@cache
def state_of(lab: str) -> ClusterState:
    return load_cluster([ROOT / "controlplane" / lab])


def plan_of(lab: str, name: str | None = None) -> LabPlan:
    return plan_lab(state_of(lab), name or lab)


def with_overlay(state: ClusterState, overlay: str) -> ClusterState:
    assert state.lab is not None
    spec = state.lab.spec.model_copy(update={"overlay": overlay})
    return dataclasses.replace(state, lab=state.lab.model_copy(update={"spec": spec}))


def all_namespaces(state: ClusterState, plan: LabPlan) -> list[str]:
    pods = [
        plan_pod(plan.name, plan.node(pod.spec.node_name or ""), pod).netns
        for pod in state.pods
        if not pod.spec.host_network
    ]
    return [*plan.namespaces(), *pods]


def interface_names(state: ClusterState, plan: LabPlan) -> list[str]:
    names = [SWITCH_BRIDGE, POD_BRIDGE, VXLAN_DEVICE, "eth0"]
    names += [n.switch_port for n in plan.nodes]
    names += [c.switch_port for c in plan.clients]
    names += [
        plan_pod(plan.name, plan.node(p.spec.node_name or ""), p).host_veth for p in state.pods
    ]
    for node in plan.nodes:
        names += [r.device for r in node.routes if r.device]
    for client in plan.clients:
        names += [r.device for r in client.routes if r.device]
    return names


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("lab", LABS)
def test_every_interface_name_fits_ifnamsiz(lab: str) -> None:
    state, plan = state_of(lab), plan_of(lab)
    names = interface_names(state, plan)
    assert state.pods or lab == "no-selector"
    too_long = [name for name in names if len(name) > IFNAMSIZ]
    assert IFNAMSIZ == 15
    assert too_long == []


@pytest.mark.parametrize("lab", LABS)
def test_switch_ports_are_unique(lab: str) -> None:
    plan = plan_of(lab)
    ports = [n.switch_port for n in plan.nodes] + [c.switch_port for c in plan.clients]
    assert len(ports) == len(set(ports))


def test_long_node_and_client_names_are_cut_to_15_characters(tmp_path: Path) -> None:
    long_node = "a-very-long-node-name-that-is-much-longer-than-ifnamsiz"
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(
        "apiVersion: netemu/v1alpha1\nkind: Lab\nmetadata:\n  name: long\nspec:\n"
        "  nodes:\n"
        f"    - name: {long_node}-1\n      underlayIP: 192.168.56.11\n"
        f"    - name: {long_node}-2\n      underlayIP: 192.168.56.12\n"
        "  externalClients:\n"
        "    - name: an-external-client-with-a-long-name\n      ip: 192.168.56.20\n"
    )
    state = load_cluster([lab_file])
    plan = plan_lab(state, "long")
    names = interface_names(state, plan)
    assert all(len(name) <= IFNAMSIZ for name in names)
    ports = [n.switch_port for n in plan.nodes] + [c.switch_port for c in plan.clients]
    assert len(set(ports)) == 3
    assert all(port.startswith(("n0-", "n1-", "c0-")) for port in ports)


@pytest.mark.parametrize("lab", LABS)
def test_namespace_names_are_unique_and_prefixed_with_the_lab(lab: str) -> None:
    state, plan = state_of(lab), plan_of(lab)
    names = all_namespaces(state, plan)
    # The underlay switch and the load balancer, then one per node, client and pod.
    assert len(names) == 2 + len(plan.nodes) + len(plan.clients) + len(state.pods)
    assert len(names) == len(set(names))
    assert all(name.startswith(f"netemu_{lab}_") for name in names)


@pytest.mark.parametrize(
    ("first", "second"),
    [("default", "default-2"), ("a", "a-node"), ("t1", "t1-a"), ("lab", "lab-pod-default")],
)
@pytest.mark.parametrize("lab", LABS)
def test_two_labs_never_share_a_namespace_name(lab: str, first: str, second: str) -> None:
    state = state_of(lab)
    one = all_namespaces(state, plan_lab(state, first))
    two = all_namespaces(state, plan_lab(state, second))
    assert set(one).isdisjoint(two)
    assert all(name.startswith(f"netemu_{first}_") for name in one)
    assert all(name.startswith(f"netemu_{second}_") for name in two)


@pytest.mark.parametrize("name", ["", "A", "-x", "x-", "x_y", "x.y", "a" * 33])
def test_bad_lab_names_are_rejected(name: str) -> None:
    with pytest.raises(PlanError, match="lab name"):
        check_lab_name(name)
    with pytest.raises(PlanError, match="lab name"):
        plan_lab(state_of("default"), name)


@pytest.mark.parametrize("name", ["default", "t1-a", "a", "0", "a" * 32])
def test_good_lab_names_are_accepted(name: str) -> None:
    assert check_lab_name(name) == name
    assert plan_lab(state_of("default"), name).name == name


def test_lab_name_with_a_trailing_newline_is_rejected() -> None:
    # BUG: LAB_NAME_RE ends in `$`, which also matches before a final "\n", so
    # "default\n" passes and would become /run/netemu/default\n and netns names
    # with a newline in them (the pattern needs \Z or re.fullmatch).
    with pytest.raises(PlanError):
        check_lab_name("default\n")


def test_host_veth_is_veth_and_8_hex_digits_and_stable() -> None:
    name = host_veth("default", "web-0")
    assert VETH_RE.match(name)
    assert host_veth("default", "web-0") == name
    assert host_veth("default", "web-1") != name
    assert host_veth("other", "web-0") != name


# ---------------------------------------------------------------- vxlan


def is_local_unicast_mac(mac: str) -> bool:
    octets = mac.split(":")
    return (
        len(octets) == 6
        and all(re.fullmatch(r"[0-9a-f]{2}", o) for o in octets)
        and int(octets[0], 16) & 0x03 == 0x02
    )


@pytest.mark.parametrize("lab", LABS)
def test_vxlan_plan_has_one_peer_per_other_node(lab: str) -> None:
    plan = plan_of(lab)
    assert len(plan.nodes) >= 2
    for node in plan.nodes:
        assert node.overlay == "vxlan"
        assert node.pod_mtu == 1450
        assert node.vtep_ip == str(netaddr.IPNetwork(node.pod_cidr).network)
        assert is_local_unicast_mac(node.vtep_mac)
        others = [n for n in plan.nodes if n.name != node.name]
        assert sorted(p.node for p in node.peers) == sorted(n.name for n in others)
        for other in others:
            (peer,) = [p for p in node.peers if p.node == other.name]
            assert peer.pod_cidr == other.pod_cidr
            assert peer.underlay_ip == other.underlay_ip
            # The MAC a peer writes for this node is the one this node's device has.
            assert peer.vtep_mac == other.vtep_mac == vtep_mac(lab, other.name)
            assert is_local_unicast_mac(peer.vtep_mac)
            assert peer.vtep_ip == str(netaddr.IPNetwork(other.pod_cidr).network)
            assert peer.vtep_ip == other.vtep_ip


def test_vxlan_port_is_flannels_default_or_the_labs_own() -> None:
    assert {n.vxlan_port for n in plan_of("default").nodes} == {8472}
    state = state_of("default")
    assert state.lab is not None
    spec = state.lab.spec.model_copy(update={"vxlan_port": 4789})
    own = dataclasses.replace(state, lab=state.lab.model_copy(update={"spec": spec}))
    plan = plan_lab(own, "default")
    assert {n.vxlan_port for n in plan.nodes} == {4789}
    assert Topology.from_plan(plan, own, "nft").vxlan_port == 4789


@pytest.mark.parametrize("lab", LABS)
def test_vtep_macs_differ_between_nodes_and_labs(lab: str) -> None:
    plan = plan_of(lab)
    macs = [n.vtep_mac for n in plan.nodes]
    assert len(set(macs)) == len(macs)
    other = plan_of(lab, "other-lab")
    assert set(macs).isdisjoint(n.vtep_mac for n in other.nodes)


@pytest.mark.parametrize("lab", LABS)
def test_vxlan_routes_go_via_each_peers_vtep_onlink_on_flannel(lab: str) -> None:
    plan = plan_of(lab)
    for node in plan.nodes:
        expected = {
            Route(other.pod_cidr, via=other.vtep_ip, device="flannel.1", onlink=True)
            for other in plan.nodes
            if other.name != node.name
        }
        pod_routes = {r for r in node.routes if r.dst != "default"}
        assert pod_routes == expected
        assert len(node.routes) == len(expected) + 1


# ---------------------------------------------------------------- host-gw


@pytest.mark.parametrize("lab", LABS)
def test_host_gw_plan_routes_via_underlay_without_peers(lab: str) -> None:
    plan = plan_lab(with_overlay(state_of(lab), "host-gw"), lab)
    for node in plan.nodes:
        assert node.overlay == "host-gw"
        assert node.peers == ()
        assert node.pod_mtu == 1500
        expected = {
            Route(other.pod_cidr, via=other.underlay_ip, device="eth0")
            for other in plan.nodes
            if other.name != node.name
        }
        pod_routes = {r for r in node.routes if r.dst != "default"}
        assert pod_routes == expected
        assert all(r.device != "flannel.1" and not r.onlink for r in node.routes)


def test_pod_mtu_follows_the_overlay() -> None:
    state = state_of("default")
    vxlan = plan_lab(with_overlay(state, "vxlan"), "default")
    host_gw = plan_lab(with_overlay(state, "host-gw"), "default")
    assert {n.pod_mtu for n in vxlan.nodes} == {1450}
    assert {n.pod_mtu for n in host_gw.nodes} == {1500}
    pod = state.pods[0]
    node = pod.spec.node_name or ""
    assert plan_pod("default", vxlan.node(node), pod).mtu == 1450
    assert plan_pod("default", host_gw.node(node), pod).mtu == 1500


# ---------------------------------------------------------------- default route


@pytest.mark.parametrize("overlay", ["vxlan", "host-gw"])
@pytest.mark.parametrize("lab", LABS)
def test_default_route_via_an_underlay_gateway_no_member_owns(lab: str, overlay: str) -> None:
    state = with_overlay(state_of(lab), overlay)
    plan = plan_lab(state, lab)
    gateway = plan.underlay.gateway_ip
    assert state.lab is not None
    assert netaddr.IPAddress(gateway) in netaddr.IPNetwork(state.lab.spec.underlay_cidr)
    members = {n.underlay_ip for n in plan.nodes} | {c.ip for c in plan.clients}
    assert gateway not in members
    for node in plan.nodes:
        defaults = [r for r in node.routes if r.dst == "default"]
        assert defaults == [Route("default", via=gateway)]


def test_gateway_skips_an_address_a_client_holds() -> None:
    state = state_of("default")
    assert state.lab is not None
    assert plan_lab(state, "default").underlay.gateway_ip == "192.168.56.1"
    clients = [*state.lab.spec.external_clients, ExternalClient(name="router", ip="192.168.56.1")]
    spec = state.lab.spec.model_copy(update={"external_clients": clients})
    moved = dataclasses.replace(state, lab=state.lab.model_copy(update={"spec": spec}))
    plan = plan_lab(moved, "default")
    assert plan.underlay.gateway_ip == "192.168.56.2"
    assert all(r.via == "192.168.56.2" for n in plan.nodes for r in n.routes if r.dst == "default")


# ---------------------------------------------------------------- sysctls


@pytest.mark.parametrize("lab", LABS)
def test_node_sysctls_follow_localhost_node_ports(lab: str) -> None:
    state, plan = state_of(lab), plan_of(lab)
    localhost = state.proxy_config.iptables.localhost_node_ports
    for node in plan.nodes:
        assert IP_FORWARD in node.sysctls
        assert BRIDGE_NF in node.sysctls
        if localhost is False:
            assert all(key != ROUTE_LOCALNET[0] for key, _ in node.sysctls)
        else:
            assert ROUTE_LOCALNET in node.sysctls


def test_protocols_lab_turns_localhost_node_ports_off() -> None:
    assert state_of("protocols").proxy_config.iptables.localhost_node_ports is False
    for node in plan_of("protocols").nodes:
        assert dict(node.sysctls).get(ROUTE_LOCALNET[0]) is None
        assert IP_FORWARD in node.sysctls
    assert state_of("default").proxy_config.iptables.localhost_node_ports is None
    for node in plan_of("default").nodes:
        assert ROUTE_LOCALNET in node.sysctls


def test_node_sysctls_function() -> None:
    on, off = dict(node_sysctls(True)), dict(node_sysctls(False))
    assert on["net.ipv4.ip_forward"] == off["net.ipv4.ip_forward"] == "1"
    assert on["net.bridge.bridge-nf-call-iptables"] == "1"
    assert off["net.bridge.bridge-nf-call-iptables"] == "1"
    assert on["net.ipv4.conf.all.route_localnet"] == "1"
    assert "net.ipv4.conf.all.route_localnet" not in off


# ---------------------------------------------------------------- external clients


def test_clients_route_ingress_ips_via_the_balancer_and_external_ips_via_a_node() -> None:
    state, plan = state_of("loadbalancer"), plan_of("loadbalancer")
    assert state.lab is not None
    first_node_ip = state.lab.spec.nodes[0].underlay_ip
    assert plan.nodes[0].underlay_ip == first_node_ip == "192.168.56.11"
    ingress: set[str] = set()
    external: set[str] = set()
    for svc in state.services:
        external.update(svc.spec.external_ips)
        ingress.update(i.ip for i in svc.status.load_balancer.ingress if i.ip)
    assert ingress == {"192.168.56.100", "192.168.56.101", "192.168.56.102"}
    assert external == {"192.168.56.110"}
    assert set(announced_ips(state.services)) == ingress | external
    # No address in the lab file: the underlay's highest host address.
    assert plan.load_balancer.ip == "192.168.56.254"
    assert len(plan.clients) == 2
    for client in plan.clients:
        via = {r.dst: r.via for r in client.routes}
        assert via == {
            **{f"{ip}/32": plan.load_balancer.ip for ip in ingress},
            **{f"{ip}/32": first_node_ip for ip in external},
        }


def test_clients_have_no_routes_without_announced_ips() -> None:
    plan = plan_of("default")
    assert plan.clients and all(c.routes == () for c in plan.clients)


def test_load_balancer_namespace_and_address() -> None:
    plan = plan_of("loadbalancer")
    assert plan.load_balancer.netns == "netemu_loadbalancer_lb"
    assert plan.load_balancer.netns in plan.namespaces()
    sysctls = dict(plan.load_balancer.sysctls)
    # The 5-tuple, not a hash the packet may already carry (see LB_SYSCTLS).
    assert sysctls["net.ipv4.fib_multipath_hash_policy"] == "3"
    assert sysctls["net.ipv4.fib_multipath_hash_fields"] == "0x0037"
    assert sysctls["net.ipv4.conf.all.send_redirects"] == "0"
    assert sysctls["net.ipv4.ip_forward"] == "1"


def test_dual_stack_load_balancer_has_an_ipv6_address_and_clients_route_each_family() -> None:
    state, plan = state_of("dualstack"), plan_of("dualstack")
    balancer = plan.load_balancer
    # The top of each underlay CIDR, outside the default pools.
    assert (balancer.ip, balancer.ip6, balancer.prefixlen6) == (
        "192.168.56.254",
        "fd00:56::ffff:ffff:ffff:ffff",
        64,
    )
    sysctls = dict(balancer.sysctls)
    assert sysctls["net.ipv6.conf.all.forwarding"] == "1"
    assert sysctls["net.ipv6.fib_multipath_hash_policy"] == "3"
    assert sysctls["net.ipv6.fib_multipath_hash_fields"] == "0x0037"
    (web_lb,) = [s for s in state.services if s.metadata.name == "web-lb"]
    ingress = [i.ip for i in web_lb.status.load_balancer.ingress]
    assert ingress == ["192.168.56.200", "fd00:56::c8"]
    for client in plan.clients:
        assert {r.dst: r.via for r in client.routes} == {
            "192.168.56.200/32": balancer.ip,
            "fd00:56::c8/128": balancer.ip6,
        }
    # An IPv4 lab's load balancer has no IPv6 side.
    ipv4 = plan_of("loadbalancer").load_balancer
    assert ipv4.ip6 == "" and "net.ipv6.conf.all.forwarding" not in dict(ipv4.sysctls)


def test_ipv6_external_ips_are_routed_via_the_first_nodes_ipv6_address() -> None:
    state = state_of("dualstack")
    (web,) = [s for s in state.services if s.metadata.name == "web-lb"]
    spec = web.spec.model_copy(update={"external_ips": ["fd00:56::99", "192.168.56.99"]})
    state = dataclasses.replace(
        state,
        services=tuple(
            web.model_copy(update={"spec": spec}) if s is web else s for s in state.services
        ),
    )
    routes = client_routes(state, ("192.168.56.11", "fd00:56::11"), ("192.168.56.254",))
    # No IPv6 address of the load balancer given: its IPv6 ingress IP has no route.
    assert {r.dst: r.via for r in routes} == {
        "192.168.56.99/32": "192.168.56.11",
        "192.168.56.200/32": "192.168.56.254",
        "fd00:56::99/128": "fd00:56::11",
    }


def test_load_balancer_address_skips_used_ones_and_honours_the_lab() -> None:
    state = state_of("loadbalancer")
    assert state.lab is not None
    spec = state.lab.spec
    taken = spec.model_copy(
        update={
            "external_clients": [
                *spec.external_clients,
                ExternalClient(name="top", ip="192.168.56.254"),
            ]
        }
    )
    lab = state.lab.model_copy(update={"spec": taken})
    assert load_balancer_ip(lab, state.services) == "192.168.56.253"
    chosen = spec.model_copy(update={"load_balancer": LabLoadBalancer(ip="192.168.56.77")})
    lab = state.lab.model_copy(update={"spec": chosen})
    assert load_balancer_ip(lab, state.services) == "192.168.56.77"
    pool = spec.model_copy(
        update={"load_balancer": LabLoadBalancer(addresses=["192.168.56.250-192.168.56.254"])}
    )
    lab = state.lab.model_copy(update={"spec": pool})
    assert load_balancer_ip(lab, state.services) == "192.168.56.249"
    clash = spec.model_copy(update={"load_balancer": LabLoadBalancer(ip="192.168.56.11")})
    with pytest.raises(PlanError, match=r"loadBalancer\.ip 192\.168\.56\.11"):
        load_balancer_ip(state.lab.model_copy(update={"spec": clash}), state.services)


# ---------------------------------------------------------------- pods


@pytest.mark.parametrize("lab", LABS)
def test_plan_pod_addresses(lab: str) -> None:
    state, plan = state_of(lab), plan_of(lab)
    for pod in state.pods:
        node = plan.node(pod.spec.node_name or "")
        pp = plan_pod(lab, node, pod)
        assert pp.ip == pod.status.pod_ip
        assert pp.node == node.name
        assert pp.key == f"{pod.metadata.namespace or 'default'}/{pod.metadata.name}"
        assert netaddr.IPAddress(pp.ip) in netaddr.IPNetwork(node.pod_cidr)
        assert pp.gateway == node.bridge_ip
        assert pp.gateway == str(netaddr.IPNetwork(node.pod_cidr)[1])
        assert pp.gateway.endswith(".1")
        assert pp.prefixlen == netaddr.IPNetwork(node.pod_cidr).prefixlen
        assert VETH_RE.match(pp.host_veth)
        assert pp.netns == f"netemu_{lab}_pod_{pp.namespace}_{pp.name}"


def test_plan_pod_container_without_command_is_the_test_server() -> None:
    state, plan = state_of("default"), plan_of("default")
    pod = state.pods[0]
    pp = plan_pod("default", plan.node(pod.spec.node_name or ""), pod)
    assert [c.name for c in pp.containers] == ["web"]
    (container,) = pp.containers
    assert container.argv == ()
    assert container.ports == ((8080, "TCP"),)


def make_pod(containers: list[dict[str, object]], host_network: bool = False) -> Pod:
    return Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "tool", "namespace": "ops"},
            "spec": {"nodeName": "node-2", "hostNetwork": host_network, "containers": containers},
            "status": {"podIP": "10.244.1.9"},
        }
    )


def test_plan_pod_container_with_command_runs_command_and_args() -> None:
    node = plan_of("default").node("node-2")
    pod = make_pod(
        [
            {"name": "sh", "command": ["sh", "-c"], "args": ["sleep 1"], "env": [{"name": "A"}]},
            {"name": "srv", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
        ]
    )
    pp = plan_pod("default", node, pod)
    sh, srv = pp.containers
    assert sh.argv == ("sh", "-c", "sleep 1")
    assert sh.ports == ()
    assert sh.env == (("A", ""),)
    assert srv.argv == ()
    assert srv.ports == ((53, "UDP"),)
    assert pp.ip == "10.244.1.9"
    assert pp.gateway == "10.244.1.1"
    assert pp.netns == "netemu_default_pod_ops_tool"


def test_plan_pod_container_with_args_but_no_command_is_the_test_server() -> None:
    # BUG: argv is command + args, so a container with `args` and no `command`
    # (agnhost's usual `args: [netexec, --http-port=8080]`) gets argv ("netexec",
    # ...) and kubelet tries to run "netexec" as a program, although a container
    # without a command is meant to be served by the built-in test server
    # (netemu/node/kubelet.py docstring; ContainerPlan.argv "empty: the built-in
    # test server").
    node = plan_of("default").node("node-2")
    pod = make_pod(
        [
            {
                "name": "agnhost",
                "args": ["netexec", "--http-port=8080"],
                "ports": [{"containerPort": 8080}],
            }
        ]
    )
    (container,) = plan_pod("default", node, pod).containers
    assert container.argv == ()


def test_plan_pod_host_network_uses_the_node() -> None:
    node = plan_of("default").node("node-2")
    pp = plan_pod("default", node, make_pod([{"name": "c"}], host_network=True))
    assert pp.host_network
    assert pp.netns == node.netns
    assert pp.ip == node.underlay_ip


def test_plan_pod_without_an_ip_is_an_error() -> None:
    node = plan_of("default").node("node-2")
    pod = make_pod([{"name": "c"}])
    pod = pod.model_copy(update={"status": pod.status.model_copy(update={"pod_ip": None})})
    with pytest.raises(PlanError, match="no pod IP"):
        plan_pod("default", node, pod)


# ---------------------------------------------------------------- long names

# The longest names Kubernetes accepts: a DNS subdomain of 253 characters
# (labels of at most 63) for a pod or node, a DNS label of 63 for a namespace.
LONGEST_LAB = "l" * 32


def subdomain(fill: str, length: int = 253) -> str:
    labels, left = [], length
    while left > 0:
        size = min(63, left)
        labels.append(fill * size)
        left -= size + 1
    name = ".".join(labels)
    assert len(name) == length, len(name)
    return name


def kernel_accepts(name: str) -> bool:
    """A name `ip netns add` can create: a file under /run/netns (and a
    directory under /etc/netns), so at most NAME_MAX bytes and no '/'."""
    return 0 < len(name.encode()) <= 255 and "/" not in name and name not in (".", "..")


def long_pod(name: str, namespace: str, command: bool = False) -> Pod:
    container: dict[str, object] = {"name": "c", "ports": [{"containerPort": 8080}]}
    if command:
        container["command"] = ["sleep", "1"]
    return Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": "node-2", "containers": [container]},
            "status": {"podIP": "10.244.1.9"},
        }
    )


def test_a_253_character_pod_name_gives_a_namespace_name_the_kernel_accepts() -> None:
    node = plan_of("default").node("node-2")
    namespace = "n" * 63
    pp = plan_pod(LONGEST_LAB, node, long_pod(subdomain("p"), namespace))
    full = f"netemu_{LONGEST_LAB}_pod_{namespace}_{subdomain('p')}"
    assert len(full) > 255  # what the plan used to give, which `ip netns add` refuses
    assert kernel_accepts(pp.netns)
    assert len(pp.netns) <= NETNS_NAME_MAX
    # A trace names its pcaps NN-<netns>-<interface>.pcap: still a file name.
    assert len(f"01-{pp.netns}-{'x' * IFNAMSIZ}.pcap") <= 255
    # Readable: the lab, the kind, the namespace and the start of the name.
    assert pp.netns.startswith(f"netemu_{LONGEST_LAB}_pod_{namespace}_ppp")
    assert re.fullmatch(r".*_[0-9a-f]{16}", pp.netns)
    assert len(pp.hostname) <= 63
    assert VETH_RE.match(pp.host_veth)


def test_long_names_are_deterministic_and_distinct() -> None:
    node = plan_of("default").node("node-2")
    names = [subdomain("p"), subdomain("p", 252), subdomain("p")[:-1] + "q"]
    netns = [plan_pod("lab", node, long_pod(n, "default")).netns for n in names]
    assert len(set(netns)) == len(names)
    assert netns == [plan_pod("lab", node, long_pod(n, "default")).netns for n in names]
    # The same pod name in another namespace, or lab, is another namespace.
    other_ns = plan_pod("lab", node, long_pod(names[0], "other")).netns
    other_lab = plan_pod("lab2", node, long_pod(names[0], "default")).netns
    assert len({netns[0], other_ns, other_lab}) == 3


def test_a_short_form_never_equals_a_full_name() -> None:
    # A full name of the same prefix as a short form would need a pod whose
    # name is the hash and whose namespace holds the pod's '_': impossible.
    node = plan_of("default").node("node-2")
    pp = plan_pod("lab", node, long_pod(subdomain("p"), "default"))
    tail = pp.netns.removeprefix("netemu_lab_pod_")
    assert tail.count("_") == 2  # a full name's tail has exactly one


def test_names_that_fit_keep_their_full_form() -> None:
    assert netns_name("netemu_x_pod_default_web") == "netemu_x_pod_default_web"
    fits = "netemu_x_pod_default_" + "w" * (NETNS_NAME_MAX - 21)
    assert netns_name(fits) == fits
    assert netns_name(fits + "w") != fits + "w"
    assert len(netns_name(fits + "w")) == NETNS_NAME_MAX


def test_long_node_and_client_names_give_kernel_valid_namespaces() -> None:
    for name in (node_netns(LONGEST_LAB, subdomain("n")), client_netns(LONGEST_LAB, "c" * 63)):
        assert kernel_accepts(name)
        assert len(name) <= NETNS_NAME_MAX


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web", "web"),
        ("a" * 63, "a" * 63),
        ("a" * 64, "a" * 63),
        # The kubelet trims what the cut leaves at the end: '-' and '.'.
        ("a" * 61 + "-.b", "a" * 61),
        (subdomain("p"), "p" * 63),
    ],
)
def test_hostnames_are_cut_as_the_kubelet_cuts_them(name: str, expected: str) -> None:
    assert hostname(name) == expected


def test_a_host_network_pod_has_the_node_hostname() -> None:
    node = plan_of("default").node("node-2")
    pod = make_pod([{"name": "c", "ports": [{"containerPort": 80}]}], host_network=True)
    assert plan_pod("default", node, pod).hostname == "node-2"
    assert plan_pod("default", node, make_pod([{"name": "c"}])).hostname == "tool"


def _conntrack(yaml_conntrack: dict[str, object] | None) -> dict[str, str]:
    config = KubeProxyConfiguration.model_validate(
        {"conntrack": yaml_conntrack} if yaml_conntrack is not None else {}
    )
    return dict(conntrack_sysctls(config))


def test_kube_proxy_conntrack_defaults_in_every_node() -> None:
    # kube-proxy's defaults: 24h established, 1h close-wait; the rest unset.
    expected = {
        "net.netfilter.nf_conntrack_tcp_timeout_established": "86400",
        "net.netfilter.nf_conntrack_tcp_timeout_close_wait": "3600",
    }
    assert _conntrack(None) == expected
    for node in plan_of("default").nodes:
        assert {k: v for k, v in node.sysctls if k.startswith("net.netfilter.")} == expected


def test_kube_proxy_conntrack_settings_become_sysctls() -> None:
    assert _conntrack(
        {
            "tcpEstablishedTimeout": "1h30m",
            "tcpCloseWaitTimeout": "90s",
            "tcpBeLiberal": True,
            "udpTimeout": "45s",
            "udpStreamTimeout": "2m0s",
            "maxPerCore": 65536,
        }
    ) == {
        "net.netfilter.nf_conntrack_tcp_timeout_established": "5400",
        "net.netfilter.nf_conntrack_tcp_timeout_close_wait": "90",
        "net.netfilter.nf_conntrack_tcp_be_liberal": "1",
        "net.netfilter.nf_conntrack_udp_timeout": "45",
        "net.netfilter.nf_conntrack_udp_timeout_stream": "120",
    }
    # Zero leaves the kernel's value (kube-proxy writes only positive ones);
    # nf_conntrack_max is never written (read-only outside the host's namespace).
    assert _conntrack({"tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0"}) == {}
    linux = KubeProxyConfiguration.model_validate(
        {"linux": {"conntrack": {"tcpCloseWaitTimeout": "2h"}}}
    )
    assert dict(conntrack_sysctls(linux))["net.netfilter.nf_conntrack_tcp_timeout_close_wait"] == (
        "7200"
    )


# ---------------------------------------------------------------- IPv6


V6_ONLY_LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: six}
spec:
  underlayCIDR: fd00:56::/64
  serviceCIDR: fd00:10:96::/112
  podCIDR: fd00:10:244::/56
  clusterDNS: fd00:10:96::a
  nodes:
  - {name: node-1, underlayIP: "fd00:56::11"}
"""


def test_an_ipv6_only_lab_plans_ipv6_as_its_base_with_flannel_v6_alone(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(V6_ONLY_LAB)
    plan = plan_lab(load_cluster([tmp_path]), "six")
    node = plan.node("node-1")
    assert node.ipv6_only and node.ipv6 is None
    assert (node.underlay_ip, node.pod_cidr, node.bridge_ip, node.vtep_ip) == (
        "fd00:56::11",
        "fd00:10:244::/64",
        "fd00:10:244::1",
        "fd00:10:244::",
    )
    # flannel's IPv6-only VXLAN backend: flannel-v6.1 and no flannel.1, its
    # MTU 20 bytes under flannel.1's (an IPv6 outer header).
    assert node.vxlan_device == "flannel-v6.1"
    assert node.pod_mtu == 1430
    assert plan.underlay.gateway_ip == "fd00:56::1" and not plan.underlay.gateway_ip6
    assert ("net.ipv6.conf.all.forwarding", "1") in node.sysctls
    # The load balancer's address: the top of the /64, found without listing it.
    assert plan.load_balancer.ip == "fd00:56::ffff:ffff:ffff:ffff"
    assert ("net.ipv6.fib_multipath_hash_policy", "3") in plan.load_balancer.sysctls


def test_load_balancer_address_steps_over_a_pool_at_the_top_of_an_ipv6_underlay(
    tmp_path: Path,
) -> None:
    (tmp_path / "lab.yaml").write_text(
        V6_ONLY_LAB + "  loadBalancer:\n    addresses: [fd00:56::ffff:ffff:ffff:0/112]\n"
    )
    plan = plan_lab(load_cluster([tmp_path]), "six")
    assert plan.load_balancer.ip == "fd00:56::ffff:ffff:fffe:ffff"


def test_a_lab_mixing_single_and_dual_stack_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    # An IPv6-only underlay with a dual-stack service CIDR is neither shape:
    # it must fail up front, naming what is wrong, not half-build the lab.
    (tmp_path / "lab.yaml").write_text(
        V6_ONLY_LAB.replace(
            "serviceCIDR: fd00:10:96::/112", "serviceCIDR: fd00:10:96::/112,10.96.0.0/12"
        )
    )
    with pytest.raises(PlanError, match=r"serviceCIDR not IPv6 as the underlayCIDR is"):
        plan_lab(load_cluster([tmp_path]), "six")


def test_an_ipv6_primary_lab_builds_its_ipv4_side_as_the_base() -> None:
    # controlplane/ipv6primary lists IPv6 first: the datapath still builds
    # IPv4 as the base and IPv6 beside it, with the same addresses as the
    # IPv4-first lab, the family order matters to the control plane only.
    plan = plan_of("ipv6primary")
    node = plan.node("node-1")
    assert (node.underlay_ip, node.pod_cidr, node.cluster_cidr) == (
        "192.168.56.11",
        "10.244.0.0/24",
        "10.244.0.0/16",
    )
    assert node.ipv6 is not None
    assert (node.ipv6.underlay_ip, node.ipv6.pod_cidr, node.ipv6.cluster_cidr) == (
        "fd00:56::11",
        "fd00:10:244::/64",
        "fd00:10:244::/56",
    )
    (client,) = plan.clients
    assert (client.ip, client.ip6) == ("192.168.56.20", "fd00:56::20")
    assert ":" not in plan.load_balancer.ip and ":" not in plan.underlay.gateway_ip


def test_an_ipv6_primary_pod_reports_its_ipv6_address_as_its_status_ip() -> None:
    state = state_of("ipv6primary")
    plan = plan_lab(state, "ipv6primary")
    pod = next(p for p in state.pods if p.spec and p.spec.node_name == "node-1")
    assert pod.status is not None and pod.status.pod_ip is not None
    assert ":" in pod.status.pod_ip  # the primary family's
    pod_plan = plan_pod("ipv6primary", plan.node("node-1"), pod)
    assert ":" not in pod_plan.ip and pod_plan.ip6 == pod.status.pod_ip
    # The kubelet probes status.podIP, and agnhost reports it.
    assert pod_plan.status_ip == pod.status.pod_ip


def test_an_ipv4_primary_pod_reports_its_ipv4_address_as_its_status_ip() -> None:
    state = state_of("dualstack")
    plan = plan_lab(state, "dualstack")
    pod = next(p for p in state.pods if p.spec and p.spec.node_name == "node-1")
    pod_plan = plan_pod("dualstack", plan.node("node-1"), pod)
    assert pod_plan.ip6 and pod_plan.status_ip == pod_plan.ip == pod.status.pod_ip


def test_a_dual_stack_node_plan_has_its_ipv6_side() -> None:
    plan = plan_of("dualstack")
    node = plan.node("node-1")
    assert node.underlay_ip == "192.168.56.11"  # IPv4 stays the primary
    assert node.ipv6 is not None
    v6 = node.ipv6
    assert (v6.underlay_ip, v6.underlay_prefixlen) == ("fd00:56::11", 64)
    assert (v6.pod_cidr, v6.bridge_ip, v6.vtep_ip) == (
        "fd00:10:244::/64",
        "fd00:10:244::1",
        "fd00:10:244::",
    )
    assert v6.cluster_cidr == "fd00:10:244::/56"
    # flannel-v6.1: the peer's IPv6 pod CIDR via its VTEP, on-link, and the
    # peer's FDB entry on its IPv6 underlay address.
    (peer,) = v6.peers
    assert (peer.node, peer.underlay_ip, peer.vtep_ip) == (
        "node-2",
        "fd00:56::12",
        "fd00:10:244:1::",
    )
    assert v6.routes == (
        # The IPv6 default route via the underlay's IPv6 router (its first host).
        Route("default", via="fd00:56::1"),
        Route("fd00:10:244:1::/64", via="fd00:10:244:1::", device="flannel-v6.1", onlink=True),
    )
    assert plan.underlay.gateway_ip6 == "fd00:56::1"
    assert v6.vtep_mac != node.vtep_mac
    sysctls = dict(node.sysctls)
    assert sysctls["net.ipv6.conf.all.forwarding"] == "1"
    assert sysctls["net.bridge.bridge-nf-call-ip6tables"] == "1"
    assert sysctls["net.ipv6.conf.default.accept_ra"] == "0"
    assert sysctls["net.ipv6.conf.default.accept_dad"] == "0"
    assert [(c.name, c.ip, c.ip6) for c in plan.clients] == [
        ("client", "192.168.56.20", "fd00:56::20"),
        ("blocked", "192.168.56.40", "fd00:56::40"),
    ]


def test_a_dual_stack_pod_plan_has_an_ipv6_address_and_routes() -> None:
    state = state_of("dualstack")
    plan = plan_of("dualstack")
    pod = next(p for p in state.pods if p.metadata.labels.get("app") == "web")
    node = plan.node(pod.spec.node_name or "")
    planned = plan_pod(plan.name, node, pod)
    ip6 = next(p.ip for p in pod.status.pod_ips if ":" in p.ip)
    assert node.ipv6 is not None
    assert (planned.ip6, planned.prefixlen6, planned.gateway6) == (ip6, 64, node.ipv6.bridge_ip)
    assert planned.routes6 == (
        Route("fd00:10:244::/56", via=node.ipv6.bridge_ip, device="eth0"),
        Route("default", via=node.ipv6.bridge_ip, device="eth0"),
    )
    # /etc/hosts names both of the pod's addresses.
    assert ip6 in planned.hosts


def test_an_ipv4_lab_plans_no_ipv6() -> None:
    plan = plan_of("default")
    assert all(n.ipv6 is None for n in plan.nodes)
    assert all(not c.ip6 for c in plan.clients)
    assert not any("ipv6" in key for n in plan.nodes for key, _ in n.sysctls if "forwarding" in key)
