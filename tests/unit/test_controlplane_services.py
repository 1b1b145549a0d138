"""Service defaulting (as the API server does) and ClusterIP / NodePort /
healthCheckNodePort allocation."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import cast

import pytest
from manifests import build

from netemu.api.base import ObjectMeta
from netemu.api.config import Lab
from netemu.api.core import Service, ServicePort, ServiceSpec
from netemu.api.ipfamilies import IPFamily
from netemu.api.validate import load_and_validate
from netemu.controlplane import ClusterState, ControlPlane, LocalClient, Store, build_cluster_state
from netemu.controlplane.allocator import ServiceAllocatorController
from netemu.controlplane.defaulting import (
    DefaultingController,
    default_namespace,
    default_pod,
    default_service,
)

CONTROLPLANE = Path(__file__).resolve().parents[2] / "controlplane"


def service(state: ClusterState, name: str, namespace: str = "default") -> Service:
    for svc in state.services:
        if svc.metadata.name == name and svc.metadata.namespace == namespace:
            return svc
    raise KeyError(name)


def svc_yaml(name: str, spec: str = "ports: [{port: 80}]", namespace: str = "default") -> str:
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{{spec}}}
"""


def lab_yaml(spec: str = "") -> str:
    return f"""
---
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {{name: lab}}
spec:
  nodes: [{{name: node-1, underlayIP: 192.168.56.11}}]
  {spec}
"""


# ---------------------------------------------------------------- defaulting


def test_clusterip_service_gets_api_server_defaults() -> None:
    svc = service(build(svc_yaml("web", "selector: {app: web}, ports: [{port: 80}]")), "web")
    spec = svc.spec
    assert spec.type == "ClusterIP"
    assert spec.session_affinity == "None"
    assert spec.session_affinity_config is None
    assert spec.internal_traffic_policy == "Cluster"
    assert spec.external_traffic_policy is None
    assert spec.allocate_load_balancer_node_ports is None
    assert spec.ip_families == ["IPv4"]
    assert spec.ip_family_policy == "SingleStack"
    assert spec.cluster_ips == [spec.cluster_ip]
    (port,) = spec.ports
    assert (port.protocol, port.target_port, port.node_port) == ("TCP", 80, None)


def test_named_and_explicit_target_ports_are_kept() -> None:
    spec = "ports: [{name: a, port: 80, targetPort: http}, {name: b, port: 81, targetPort: 8081}]"
    ports = service(build(svc_yaml("web", spec)), "web").spec.ports
    assert [p.target_port for p in ports] == ["http", 8081]


def test_client_ip_affinity_gets_default_timeout_and_keeps_explicit_one() -> None:
    state = build(
        svc_yaml("a", "sessionAffinity: ClientIP, ports: [{port: 80}]")
        + svc_yaml(
            "b",
            "sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}},"
            " ports: [{port: 80}]",
        )
    )
    a, b = service(state, "a").spec, service(state, "b").spec
    assert a.session_affinity_config is not None and a.session_affinity_config.client_ip
    assert a.session_affinity_config.client_ip.timeout_seconds == 10800
    assert b.session_affinity_config is not None and b.session_affinity_config.client_ip
    assert b.session_affinity_config.client_ip.timeout_seconds == 60


def test_nodeport_and_loadbalancer_default_external_traffic_policy_cluster() -> None:
    state = build(
        svc_yaml("np", "type: NodePort, ports: [{port: 80}]")
        + svc_yaml("lb", "type: LoadBalancer, ports: [{port: 80}]")
        + svc_yaml("local", "type: NodePort, externalTrafficPolicy: Local, ports: [{port: 80}]")
    )
    assert service(state, "np").spec.external_traffic_policy == "Cluster"
    assert service(state, "lb").spec.external_traffic_policy == "Cluster"
    assert service(state, "local").spec.external_traffic_policy == "Local"
    assert service(state, "lb").spec.allocate_load_balancer_node_ports is True
    assert service(state, "np").spec.allocate_load_balancer_node_ports is None


def test_clusterip_with_external_ips_is_externally_accessible() -> None:
    spec = "externalIPs: [192.168.56.200], ports: [{port: 80}]"
    svc = service(build(svc_yaml("ext", spec)), "ext")
    assert svc.spec.external_traffic_policy == "Cluster"


def test_external_name_service_gets_no_ip_fields() -> None:
    svc = service(build(svc_yaml("ext", "type: ExternalName, externalName: example.com")), "ext")
    assert svc.spec.cluster_ip is None and svc.spec.cluster_ips == []
    assert svc.spec.ip_families == [] and svc.spec.ip_family_policy is None
    assert svc.spec.internal_traffic_policy is None


def test_headless_services_keep_none_and_get_family_defaults() -> None:
    state = build(
        svc_yaml("sel", "clusterIP: None, selector: {app: db}, ports: [{port: 5432}]")
        + svc_yaml("nosel", "clusterIP: None, ports: [{port: 5432}]")
    )
    sel, nosel = service(state, "sel").spec, service(state, "nosel").spec
    assert (sel.cluster_ip, sel.cluster_ips) == ("None", ["None"])
    assert (sel.ip_family_policy, sel.ip_families) == ("SingleStack", ["IPv4"])
    # initIPFamilyFields: headless without selector defaults to RequireDualStack.
    assert nosel.cluster_ips == ["None"]
    assert (nosel.ip_family_policy, nosel.ip_families) == ("RequireDualStack", ["IPv4", "IPv6"])


def test_cluster_ips_only_is_mirrored_into_cluster_ip() -> None:
    svc = service(build(svc_yaml("a", "clusterIPs: [10.96.5.5], ports: [{port: 80}]")), "a")
    assert svc.spec.cluster_ip == "10.96.5.5"


# ---------------------------------------------------------------- cluster IPs


def test_explicit_cluster_ip_is_honoured() -> None:
    svc = service(build(svc_yaml("a", "clusterIP: 10.96.0.50, ports: [{port: 80}]")), "a")
    assert (svc.spec.cluster_ip, svc.spec.cluster_ips) == ("10.96.0.50", ["10.96.0.50"])


def test_allocated_ips_are_unique_in_the_default_service_cidr_dynamic_band() -> None:
    state = build("".join(svc_yaml(f"s{i}") for i in range(40)))
    ips = [ipaddress.ip_address(s.spec.cluster_ip or "") for s in state.services]
    cidr = ipaddress.ip_network("10.96.0.0/12")
    assert len(set(ips)) == 40
    assert all(ip in cidr for ip in ips)
    # The lowest 256 addresses are left for explicit requests (static subrange).
    assert all(int(ip) > int(cidr.network_address) + 256 for ip in ips)
    assert cidr.broadcast_address not in ips


def test_allocation_is_stable_when_unrelated_services_are_added() -> None:
    alone = build(svc_yaml("web") + svc_yaml("np", "type: NodePort, ports: [{port: 80}]"))
    crowded = build(
        "".join(svc_yaml(f"other-{i}", "type: NodePort, ports: [{port: 80}]") for i in range(30))
        + svc_yaml("web")
        + svc_yaml("np", "type: NodePort, ports: [{port: 80}]")
        + svc_yaml("web", namespace="other")
    )
    assert service(crowded, "web").spec.cluster_ip == service(alone, "web").spec.cluster_ip
    assert service(crowded, "np").spec.cluster_ip == service(alone, "np").spec.cluster_ip
    assert service(crowded, "np").spec.ports == service(alone, "np").spec.ports


def test_lab_service_cidr_is_used_and_dns_ip_is_skipped_unless_requested() -> None:
    # A /28 leaves 14 usable addresses; the cluster DNS IP must be left for
    # kube-dns and the first one for default/kubernetes.
    lab = lab_yaml("serviceCIDR: 10.100.0.0/28\n  clusterDNS: 10.100.0.10")
    state = build(lab + "".join(svc_yaml(f"s{i}") for i in range(12)))
    ips = {s.spec.cluster_ip for s in state.services}
    assert len(ips) == 12
    assert "10.100.0.10" not in ips
    assert ips == {f"10.100.0.{i}" for i in range(2, 15)} - {"10.100.0.10"}

    with_dns = build(
        lab
        + svc_yaml("kube-dns", "clusterIP: 10.100.0.10, ports: [{port: 53}]", "kube-system")
        + svc_yaml("web")
    )
    assert service(with_dns, "kube-dns", "kube-system").spec.cluster_ip == "10.100.0.10"
    assert service(with_dns, "web").spec.cluster_ip != "10.100.0.10"


def test_explicit_ip_wins_over_a_hashed_allocation() -> None:
    alone = service(build(svc_yaml("web")), "web").spec.cluster_ip
    state = build(svc_yaml("web") + svc_yaml("zz", f"clusterIP: {alone}, ports: [{{port: 80}}]"))
    assert service(state, "zz").spec.cluster_ip == alone
    assert service(state, "web").spec.cluster_ip not in (alone, None)


# ---------------------------------------------------------------- node ports


def node_ports(svc: Service) -> list[int | None]:
    return [p.node_port for p in svc.spec.ports]


def test_node_ports_allocated_from_default_range_and_explicit_ones_honoured() -> None:
    state = build(
        svc_yaml("np", "type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81}]")
        + svc_yaml("fixed", "type: NodePort, ports: [{port: 80, nodePort: 30080}]")
    )
    ports = node_ports(service(state, "np"))
    assert all(p is not None and 30086 <= p <= 32767 for p in ports)  # dynamic band
    assert len(set(ports)) == 2
    assert node_ports(service(state, "fixed")) == [30080]


def test_explicit_node_port_wins_over_a_hashed_allocation() -> None:
    (taken,) = node_ports(
        service(build(svc_yaml("np", "type: NodePort, ports: [{port: 80}]")), "np")
    )
    state = build(
        svc_yaml("np", "type: NodePort, ports: [{port: 80}]")
        + svc_yaml("zz", f"type: NodePort, ports: [{{port: 80, nodePort: {taken}}}]")
    )
    assert node_ports(service(state, "zz")) == [taken]
    assert node_ports(service(state, "np")) != [taken]


def test_same_port_number_on_tcp_and_udp_shares_one_node_port() -> None:
    spec = (
        "type: NodePort, ports: [{name: dns, port: 53, protocol: UDP},"
        " {name: dns-tcp, port: 53, protocol: TCP}, {name: other, port: 54}]"
    )
    udp, tcp, other = node_ports(service(build(svc_yaml("dns", spec)), "dns"))
    assert udp == tcp
    assert other != udp


def test_lab_node_port_range_is_used() -> None:
    state = build(
        lab_yaml("nodePortRange: 31000-31009")
        + "".join(svc_yaml(f"s{i}", "type: NodePort, ports: [{port: 80}]") for i in range(10))
    )
    ports = sorted(p for s in state.services for p in node_ports(s) if p is not None)
    assert ports == list(range(31000, 31010))


def test_load_balancer_without_node_port_allocation_gets_none() -> None:
    spec = "type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]"
    assert node_ports(service(build(svc_yaml("lb", spec)), "lb")) == [None]


def test_clusterip_service_gets_no_node_ports() -> None:
    assert node_ports(service(build(svc_yaml("web")), "web")) == [None]


def test_health_check_node_port_only_for_load_balancer_with_local_policy() -> None:
    state = build(
        svc_yaml(
            "lb-local", "type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]"
        )
        + svc_yaml("lb-cluster", "type: LoadBalancer, ports: [{port: 80}]")
        + svc_yaml("np-local", "type: NodePort, externalTrafficPolicy: Local, ports: [{port: 80}]")
        + svc_yaml(
            "lb-fixed",
            "type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 32000,"
            " ports: [{port: 80}]",
        )
    )
    hc = service(state, "lb-local").spec.health_check_node_port
    assert hc is not None and 30000 <= hc <= 32767
    assert hc not in node_ports(service(state, "lb-local"))
    assert service(state, "lb-cluster").spec.health_check_node_port is None
    assert service(state, "np-local").spec.health_check_node_port is None
    assert service(state, "lb-fixed").spec.health_check_node_port == 32000


# ---------------------------------------------------------------- a control plane kept running


def test_a_running_control_plane_defaults_and_allocates_every_later_change() -> None:
    """The defaulting and allocator controllers skip objects they found
    settled on an earlier pass: a Service added, changed back to needing
    defaults, or a Lab whose service CIDR changes must still be seen."""
    client = LocalClient(Store())
    lab = Lab.model_validate(
        {
            "apiVersion": "netemu/v1alpha1",
            "kind": "Lab",
            "metadata": {"name": "lab"},
            "spec": {"nodes": [{"name": "node-1", "underlayIP": "192.168.56.11"}]},
        }
    )
    client.create(lab)
    plane = ControlPlane(client, [DefaultingController(client), ServiceAllocatorController(client)])

    def new_service(name: str) -> Service:
        return Service(
            metadata=ObjectMeta(name=name, namespace="default"),
            spec=ServiceSpec(ports=[ServicePort(port=80)]),
        )

    client.create(new_service("a"))
    plane.run_to_fixed_point()
    a = client.get(Service, "default", "a")
    assert a.spec.type == "ClusterIP" and a.spec.cluster_ip
    assert not plane.run_round()  # settled

    client.create(new_service("b"))  # added after a settled pass
    plane.run_to_fixed_point()
    b = client.get(Service, "default", "b")
    assert b.spec.type == "ClusterIP" and b.spec.cluster_ip not in (None, a.spec.cluster_ip)

    # A's defaults taken away by an update: defaulted again.
    client.update(a.model_copy(update={"spec": a.spec.model_copy(update={"type": None})}))
    plane.run_to_fixed_point()
    assert client.get(Service, "default", "a").spec.type == "ClusterIP"

    # A's address taken away: allocated again, from the current service CIDR.
    a = client.get(Service, "default", "a")
    gone: dict[str, object] = {"cluster_ip": None, "cluster_ips": []}
    client.update(a.model_copy(update={"spec": a.spec.model_copy(update=gone)}))
    stored = client.get(Lab, None, "lab")
    spec = stored.spec.model_copy(update={"service_cidr": "10.100.0.0/16"})
    client.update(stored.model_copy(update={"spec": spec}))
    plane.run_to_fixed_point()
    new_ip = client.get(Service, "default", "a").spec.cluster_ip
    assert new_ip is not None
    assert ipaddress.ip_address(new_ip) in ipaddress.ip_network("10.100.0.0/16")


# The defaulting controller takes what it wrote as settled (no second look
# at an object it just defaulted): that holds only if defaulting is
# idempotent, checked here on every lab's Services, Namespaces and Pods.
@pytest.mark.parametrize("lab", sorted(p.name for p in CONTROLPLANE.iterdir() if p.is_dir()))
def test_defaulting_what_was_defaulted_changes_nothing(lab: str) -> None:
    loaded = [item.obj for item in load_and_validate([CONTROLPLANE / lab], default_lab=True)]
    state = build_cluster_state(loaded)
    assert state.lab is not None
    families = cast(
        list[IPFamily],
        ["IPv6" if ":" in cidr else "IPv4" for cidr in state.lab.spec.service_cidrs],
    )
    raw_services = [o for o in loaded if isinstance(o, Service)]
    assert raw_services or state.pods
    for svc in raw_services:
        once = default_service(svc, families)
        assert default_service(once, families) == once, svc.metadata.name
    for svc in state.services:
        assert default_service(svc, families) == svc, svc.metadata.name
    for pod in state.pods:
        assert default_pod(pod) == pod, pod.metadata.name
    for ns in state.namespaces:
        assert default_namespace(ns) == ns, ns.metadata.name
