"""FROM/TO resolution and TRACE scoping: the words a user types become one
flow with the right addresses, ports and entry node, or a clear error."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from netemu.controlplane.state import ClusterState
from netemu.net.plan import plan_lab
from netemu.pipeline import load_cluster
from netemu.trace import scope
from netemu.trace.flow import Flow, FlowError, resolve_flow, to_family
from netemu.trace.topology import Topology

CONTROLPLANE = Path(__file__).parents[2] / "controlplane"


@cache
def lab(name: str) -> tuple[ClusterState, Topology]:
    state = load_cluster([CONTROLPLANE / name])
    assert state.lab is not None
    topology = Topology.from_plan(plan_lab(state, name), state, state.lab.spec.iptables_backend)
    return state, topology


def flow(name: str, frm: str, to: str, port: int | None = None, proto: str = "tcp") -> Flow:
    state, topology = lab(name)
    return resolve_flow(state, topology, frm, to, port, proto)


def service(name: str, svc: str) -> dict[str, object]:
    state, _ = lab(name)
    (found,) = [s for s in state.services if s.metadata.name == svc]
    return found.to_dict()


def pod_on(name: str, node: str) -> str:
    _, topology = lab(name)
    return next(p.key for p in topology.pods.values() if p.node == node)


def test_pod_to_service_name_is_its_cluster_ip_and_port() -> None:
    pod = pod_on("default", "node-1")
    f = flow("default", pod, "web")
    spec = service("default", "web")["spec"]
    assert isinstance(spec, dict)
    assert (f.dst, f.dport, f.proto) == (spec["clusterIP"], 80, "tcp")
    assert f.source.kind == "pod" and f.source.netns.startswith("netemu_default_pod_default_")
    assert f.entry_node == "node-1" and not f.local_origin
    assert f.service == "default/web"
    # namespace/name and svc/ prefixes name the same Service
    assert flow("default", pod, "default/web") == f
    assert flow("default", pod, "svc/web") == f


def test_client_to_node_port_enters_at_that_node() -> None:
    f = flow("default", "client", "node-2:30080")
    _, topology = lab("default")
    assert (f.dst, f.dport) == (topology.nodes["node-2"].ip, 30080)
    assert f.entry_node == "node-2"
    assert f.service == "default/web-nodeport"
    assert "NodePort 30080" in f.target
    assert f.source.ip == topology.clients["client"].ip


def test_node_source_is_local_origin() -> None:
    f = flow("default", "node/node-2", "empty")
    assert f.entry_node == "node-2" and f.local_origin
    assert f.source.netns == "netemu_default_node_node-2"


def test_pod_by_name_uses_its_only_container_port() -> None:
    _, topology = lab("default")
    target = pod_on("default", "node-2")
    f = flow("default", "node-1", target.split("/")[1])
    assert (f.dst, f.dport) == (topology.pods[target].ip, 8080)
    assert f.target == f"pod {target}"


def test_ip_with_port_names_what_it_is() -> None:
    spec = service("default", "web")["spec"]
    assert isinstance(spec, dict)
    f = flow("default", "node-1", f"{spec['clusterIP']}:80")
    assert f.service == "default/web" and "ClusterIP" in f.target
    g = flow("default", "node-1", str(spec["clusterIP"]), port=80)
    assert g == f


def test_load_balancer_ip_enters_at_the_announcing_node() -> None:
    svc = service("loadbalancer", "shop-lb")
    status = svc["status"]
    assert isinstance(status, dict)
    ip = status["loadBalancer"]["ingress"][0]["ip"]
    f = flow("loadbalancer", "allowed", ip, port=80)
    _, topology = lab("loadbalancer")
    assert f.entry_node == next(iter(topology.nodes))
    assert "LoadBalancer IP" in f.target and f.service == "default/shop-lb"


def test_udp_service_port_is_chosen_by_protocol() -> None:
    _, topology = lab("protocols")
    pod = next(p.key for p in topology.pods.values() if "dns" in p.key)
    f = flow("protocols", pod, "dns", proto="udp")
    assert f.proto == "udp" and f.dport == 53


@pytest.mark.parametrize(
    ("frm", "to", "port", "proto", "message"),
    [
        ("nobody", "web", None, "tcp", "FROM 'nobody': no pod, node or external client"),
        ("client", "web", None, "tcp", "external client cannot reach Service default/web"),
        ("node-1", "nothing", None, "tcp", "TO 'nothing': not a Service, pod, node"),
        ("node-1", "web", 81, "tcp", "the Service has no port 81/TCP; its ports: 80/TCP"),
        ("node-1", "web", None, "udp", "the Service has no UDP port"),
        ("node-1", "node-2", None, "tcp", "a node needs a port"),
        ("node-1", "10.96.0.99", None, "tcp", "give the destination port with --port"),
        ("node-1", "web", None, "gre", "--proto 'gre': expected one of tcp, udp, icmp"),
        ("node-1", "node-3:30080", None, "tcp", "'node-3' is neither a node nor an IP address"),
        ("client", "10.244.1.2:8080", None, "tcp", "an external client has no route to pod"),
        ("client", "node-1:0", None, "tcp", "TO 'node-1:0': port 0 is not in 1-65535"),
        ("client", "node-1:65536", None, "tcp", "port 65536 is not in 1-65535"),
        ("node-1", "10.96.0.1:99999", None, "tcp", "port 99999 is not in 1-65535"),
    ],
)
def test_bad_words_say_what_is_wrong(
    frm: str, to: str, port: int | None, proto: str, message: str
) -> None:
    with pytest.raises(FlowError, match=message.replace("(", r"\(")):
        flow("default", frm, to, port, proto)


def test_trace_rules_cover_every_form_of_the_flow() -> None:
    f = flow("default", "client", "node-1:30080")
    matches = scope.trace_matches(f, 41522, ["10.244.1.2:8080"])
    src = f.source.ip
    assert matches == [
        f"-s {src}/32 -p tcp -m tcp --sport 41522",
        f"-d {src}/32 -p tcp -m tcp --dport 41522",
        f"-d {src}/32 -p icmp",
        "-d 10.244.1.2/32 -p tcp -m tcp --dport 8080",
        "-s 10.244.1.2/32 -p tcp -m tcp --sport 8080",
        f"-d {f.dst}/32 -p tcp -m tcp --dport 30080",
        f"-s {f.dst}/32 -p tcp -m tcp --sport 30080",
    ]
    chain = scope.chain_name("20261126-170000-client-tcp-a1b2c3")
    assert chain == "NETEMU-TRACE-a1b2c3" and len(chain) <= 28
    install = scope.install_text(chain, matches[:1])
    assert install.splitlines() == [
        "*raw",
        f":{chain} - [0:0]",
        f"-A {chain} {matches[0]} -j TRACE",
        f"-I PREROUTING 1 -j {chain}",
        f"-I OUTPUT 1 -j {chain}",
        "COMMIT",
    ]
    assert scope.remove_text(chain).splitlines() == [
        "*raw",
        f"-D PREROUTING -j {chain}",
        f"-D OUTPUT -j {chain}",
        f"-F {chain}",
        f"-X {chain}",
        "COMMIT",
    ]


def test_icmp_trace_rules_match_addresses_only() -> None:
    target = pod_on("default", "node-2")
    f = flow("default", "node-1", target.split("/")[1], proto="icmp")
    assert f.dport == 0
    matches = scope.trace_matches(f, 77, [])
    assert matches == [
        f"-s {f.source.ip}/32 -p icmp",
        f"-d {f.source.ip}/32 -p icmp",
        f"-d {f.dst}/32 -p icmp",
        f"-s {f.dst}/32 -p icmp",
    ]


# -- IPv6 (controlplane/dualstack) ---------------------------------------------


def _v6_cluster_ip(svc: str) -> str:
    spec = service("dualstack", svc)["spec"]
    assert isinstance(spec, dict)
    return str(next(ip for ip in spec["clusterIPs"] if ":" in ip))


def test_pod_to_an_ipv6_cluster_ip_in_brackets_sends_from_its_ipv6_address() -> None:
    _, topology = lab("dualstack")
    pod = pod_on("dualstack", "node-1")
    ip = _v6_cluster_ip("web-v6")
    f = flow("dualstack", pod, f"[{ip}]:80")
    assert (f.dst, f.dport, f.service, f.entry_node) == (ip, 80, "default/web-v6", "node-1")
    assert f.source.ip == topology.pods[pod].address("IPv6") and ":" in f.source.ip
    assert f.target == "Service default/web-v6 port 80/TCP (ClusterIP)"
    # A bare address with --port means the same.
    assert flow("dualstack", pod, ip, port=80) == f


def test_client_to_an_ipv6_node_port_enters_at_that_node() -> None:
    f = flow("dualstack", "client", "[fd00:56::12]:30080")
    assert (f.entry_node, f.source.ip, f.service) == (
        "node-2",
        "fd00:56::20",
        "default/web-nodeport",
    )
    assert f.target == "NodePort 30080 of Service default/web-nodeport on node node-2"


def test_bracketed_words_that_are_not_addresses_are_refused() -> None:
    with pytest.raises(FlowError, match="neither a node nor an IP address"):
        flow("dualstack", "client", "[node-9]:30080")


def test_ipv6_trace_rules_are_ip6tables_rules() -> None:
    pod = pod_on("dualstack", "node-1")
    ip = _v6_cluster_ip("web-v6")
    f = flow("dualstack", pod, f"[{ip}]:80")
    matches = scope.trace_matches(f, 40000, ["[fd00:10:244:1::2]:8080"])
    src = f.source.ip
    assert f"-s {src}/128 -p tcp -m tcp --sport 40000" in matches
    assert f"-d {src}/128 -p icmpv6" in matches
    assert "-d fd00:10:244:1::2/128 -p tcp -m tcp --dport 8080" in matches
    assert f"-d {ip}/128 -p tcp -m tcp --dport 80" in matches
    assert not any("/32" in m for m in matches)


def test_family_ipv6_names_a_services_ipv6_cluster_ip_and_a_nodes_ipv6_address() -> None:
    state, topology = lab("dualstack")
    web = service("dualstack", "web")["spec"]
    assert isinstance(web, dict)
    v4, v6 = web["clusterIPs"]
    assert to_family(state, topology, "web", "IPv6", None, "tcp") == f"[{v6}]:80"
    assert to_family(state, topology, "svc/web", "IPv4", None, "tcp") == f"{v4}:80"
    assert to_family(state, topology, "web", "IPv6", None, "icmp") == v6
    assert to_family(state, topology, "node-2:30080", "IPv6", None, "tcp") == "[fd00:56::12]:30080"
    pod = pod_on("dualstack", "node-1")
    assert to_family(state, topology, pod, "IPv6", 8080, "tcp") == (
        f"[{topology.pods[pod].address('IPv6')}]:8080"
    )


def test_family_refuses_what_has_no_address_of_that_family() -> None:
    state, topology = lab("dualstack")
    with pytest.raises(FlowError, match="Service default/web-v6 has no IPv4 clusterIP"):
        to_family(state, topology, "web-v6", "IPv4", None, "tcp")
    with pytest.raises(FlowError, match="is not an IPv6 address"):
        to_family(state, topology, "10.96.0.1:443", "IPv6", None, "tcp")
    state4, topology4 = lab("default")
    with pytest.raises(FlowError, match="node node-1 has no IPv6 address"):
        to_family(state4, topology4, "node-1:30080", "IPv6", None, "tcp")


def _pod_ips(name: str, key: str) -> list[str]:
    """status.podIPs of pod `key` in lab `name`, primary first."""
    state, _ = lab(name)
    (pod,) = [p for p in state.pods if f"default/{p.metadata.name}" == key]
    return [p.ip for p in pod.status.pod_ips]


@pytest.mark.parametrize(
    ("name", "node_ips", "client_ips", "devices"),
    [
        ("default", ("192.168.56.11", ""), ("192.168.56.20", ""), ("flannel.1",)),
        (
            "dualstack",
            ("192.168.56.11", "fd00:56::11"),
            ("192.168.56.20", "fd00:56::20"),
            ("flannel.1", "flannel-v6.1"),
        ),
        (
            "ipv6primary",
            ("fd00:56::11", "192.168.56.11"),
            ("fd00:56::20", "192.168.56.20"),
            ("flannel.1", "flannel-v6.1"),
        ),
        ("ipv6only", ("fd00:56::11", ""), ("fd00:56::20", ""), ("flannel-v6.1",)),
    ],
)
def test_each_sites_address_is_its_primary_familys(
    name: str, node_ips: tuple[str, str], client_ips: tuple[str, str], devices: tuple[str, ...]
) -> None:
    # The Lab's underlayIP and client ip lists, first entry first (the
    # kubelet's --node-ip order), whichever family the datapath builds as
    # its base; pods as status.podIPs lists them.
    _, topology = lab(name)
    node = topology.nodes["node-1"]
    assert (node.ip, node.other_ip) == node_ips
    client = topology.clients["client"]
    assert (client.ip, client.other_ip) == client_ips
    for key, pod in topology.pods.items():
        ips = _pod_ips(name, key)
        assert [pod.ip, pod.other_ip] == [*ips, ""][:2]
        for ip in ips:
            assert pod.address("IPv6" if ":" in ip else "IPv4") == ip
    assert topology.overlay_devices == devices
    for family in ("IPv4", "IPv6"):
        expected = next((ip for ip in node_ips if ip and (":" in ip) == (family == "IPv6")), "")
        assert node.address(family) == expected


def test_names_resolve_to_the_primary_family_on_an_ipv6_primary_lab() -> None:
    state, topology = lab("ipv6primary")
    f = flow("ipv6primary", "client", "node-1:30080")
    assert (f.source.ip, f.dst, f.entry_node) == ("fd00:56::20", "fd00:56::11", "node-1")
    source, target = pod_on("ipv6primary", "node-1"), pod_on("ipv6primary", "node-2")
    source_ips, target_ips = _pod_ips("ipv6primary", source), _pod_ips("ipv6primary", target)
    f = flow("ipv6primary", source, target.split("/")[1])
    assert (f.source.ip, f.dst, f.dport) == (source_ips[0], target_ips[0], 8080)
    v6, v4 = service("ipv6primary", "web-dual")["spec"]["clusterIPs"]  # type: ignore[index]
    assert flow("ipv6primary", source, "web-dual").dst == v6
    # --family IPv4: the other family's address, sent from the source's IPv4 one.
    to = to_family(state, topology, "web-dual", "IPv4", None, "tcp")
    assert to == f"{v4}:80"
    f = flow("ipv6primary", source, to)
    assert (f.source.ip, f.dst, f.service) == (source_ips[1], v4, "default/web-dual")
    assert to_family(state, topology, "node-1:30080", "IPv4", None, "tcp") == "192.168.56.11:30080"
    assert to_family(state, topology, target, "IPv4", 8080, "tcp") == f"{target_ips[1]}:8080"
    assert to_family(state, topology, target, "IPv6", 8080, "tcp") == f"[{target_ips[0]}]:8080"


def test_an_ipv6_only_lab_has_no_ipv4_to_send_from_or_to() -> None:
    state, topology = lab("ipv6only")
    with pytest.raises(FlowError, match="client client has no IPv4 address: it cannot send"):
        flow("ipv6only", "client", "192.168.56.11:30080")
    with pytest.raises(FlowError, match="node node-1 has no IPv4 address"):
        to_family(state, topology, "node-1:30080", "IPv4", None, "tcp")
    f = flow("ipv6only", "client", "node-2:30080")
    assert (f.source.ip, f.dst, f.entry_node) == ("fd00:56::20", "fd00:56::12", "node-2")


def test_lab_json_sites_read_primary_first_and_old_files_as_they_were() -> None:
    site = {"netns": "n1", "ip": "192.168.56.11", "hostNetwork": False, "node": "node-1"}
    info = {
        "name": "six",
        "backend": "nft",
        "overlay": "vxlan",
        "underlay": "u",
        "nodes": {"node-1": {**site, "ips": ["fd00:56::11", "192.168.56.11"]}},
        "clients": {"client": {**site, "ips": ["fd00:56::20", "192.168.56.20"]}},
        "pods": {"default/p": {**site, "ips": ["fd00:10:244::2", "10.244.0.2"]}},
    }
    topology = Topology.from_info(info)
    assert (topology.nodes["node-1"].ip, topology.nodes["node-1"].other_ip) == (
        "fd00:56::11",
        "192.168.56.11",
    )
    assert topology.clients["client"].ip == "fd00:56::20"
    assert topology.pods["default/p"].ip == "fd00:10:244::2"
    assert topology.overlay_devices == ("flannel.1", "flannel-v6.1")
    # A lab.json without "ips" recorded the base address and the IPv6 side's.
    old = {**info, "nodes": {"node-1": {**site, "ip6": "fd00:56::11"}}}
    node = Topology.from_info(old).nodes["node-1"]
    assert (node.ip, node.other_ip) == ("192.168.56.11", "fd00:56::11")
    six = {**info, "nodes": {"node-1": {**site, "ip": "fd00:56::11", "ip6": ""}}}
    assert Topology.from_info(six).overlay_devices == ("flannel-v6.1",)
