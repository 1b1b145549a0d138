"""The load-balancer address controller (netemu.controlplane.loadbalancer):
ingress addresses from the Lab's pool, requests, classes, freeing, an
exhausted pool, and the pool's validation."""

from __future__ import annotations

from typing import Any

import pytest

from netemu.api.addresspool import default_pool, parse_entry, parse_pool, range_text
from netemu.api.core import Service
from netemu.api.load import load_text
from netemu.api.validate import validate
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.controlplane.loadbalancer import LOAD_BALANCER_CLASS, LoadBalancerController

LAB = """\
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lbtest}
spec:
  nodes:
    - {name: node-1, underlayIP: 192.168.56.11}
  externalClients:
    - {name: client, ip: 192.168.56.20}
%s
"""


def service(name: str, **spec: Any) -> str:
    body: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}], **spec}
    annotations = body.pop("annotations", None)
    status = body.pop("status", None)
    meta = f"{{name: {name}" + (f", annotations: {annotations}" if annotations else "") + "}"
    text = f"---\napiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {body}\n"
    if status:
        text += f"status: {status}\n"
    return text.replace("'", '"')


class Cluster:
    def __init__(self, pool: str = "", *services: str) -> None:
        loaded, problems = load_text(LAB % pool + "".join(services), "lab.yaml")
        assert not problems, problems
        assert not validate(loaded), validate(loaded)
        self.client = LocalClient(Store())
        self.plane = ControlPlane(self.client)
        apply_objects(self.client, [item.obj for item in loaded])
        self.plane.run_to_fixed_point()

    def ingress(self, name: str) -> list[tuple[str | None, str | None]]:
        svc = self.client.get(Service, "default", name)
        return [(i.ip, i.ip_mode) for i in svc.status.load_balancer.ingress]

    def apply(self, *services: str) -> None:
        loaded, problems = load_text("".join(services), "more.yaml")
        assert not problems
        apply_objects(self.client, [item.obj for item in loaded])
        self.plane.run_to_fixed_point()

    def events(self) -> list[str]:
        controller = next(
            c for c in self.plane.controllers if isinstance(c, LoadBalancerController)
        )
        return [str(e) for e in controller.events]


POOL3 = "  loadBalancer:\n    addresses: [192.168.56.200-192.168.56.202]"


def test_default_pool_is_the_top_of_the_underlay() -> None:
    pool = list(default_pool(["192.168.56.0/24"]).addresses())
    assert (str(pool[0]), str(pool[-1]), len(pool)) == ("192.168.56.200", "192.168.56.239", 40)
    assert str(default_pool(["10.0.0.0/16"]).first_free(())) == "10.0.200.0"
    cluster = Cluster("", service("web"))
    assert cluster.ingress("web") == [("192.168.56.200", "VIP")]


def test_default_ipv6_pool_is_the_ipv4_pools_host_numbers_of_the_first_slash_120() -> None:
    pool = default_pool(["192.168.56.0/24", "fd00:56::/64"], excluded=["fd00:56::c8"])
    six = pool.of_family(6)
    assert [str(r) for r in six.ranges] == ["fd00:56::c8-fd00:56::ef"]
    assert six.size() == 39  # less the excluded address
    assert str(six.first_free(())) == "fd00:56::c9"
    assert str(six.first_free({"fd00:56::c9"})) == "fd00:56::ca"
    assert pool.of_family(4).size() == 40
    # A small underlay: the same share of it, in either family.
    assert [range_text(r) for r in default_pool(["fd00:1::/125", "10.0.0.0/29"]).ranges] == [
        "fd00:1::6",
        "10.0.0.6",
    ]
    assert default_pool(["fd00:1::/127"]).ranges == ()


def test_pool_entries_parse_ranges_and_cidrs() -> None:
    pool = parse_pool(["192.168.56.1-192.168.56.2", "192.168.56.8/30"])
    assert [str(ip) for ip in pool.addresses()] == [
        "192.168.56.1",
        "192.168.56.2",
        "192.168.56.9",
        "192.168.56.10",
    ]
    with pytest.raises(ValueError):
        parse_pool(["192.168.56.9-192.168.56.1"])
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        parse_pool(["192.168.56.9-fd00:56::1"])


def test_ipv6_pool_entries_are_ranges_not_lists() -> None:
    # A /64 has 2**64 addresses: the pool keeps the range, and picks lazily.
    pool = parse_pool(["fd00:56:0:1::/64", "fd00:56::100-fd00:56::101"])
    assert pool.size() == 2**64 + 2  # an IPv6 CIDR's every address, as MetalLB's
    assert str(pool.first_free({"fd00:56:0:1::", "fd00:56:0:1::1"})) == "fd00:56:0:1::2"
    assert "fd00:56::101" in pool and "fd00:56::102" not in pool
    assert "192.168.56.1" not in pool


def test_assigns_lowest_free_addresses_in_name_order() -> None:
    cluster = Cluster(POOL3, service("b"), service("a"))
    assert cluster.ingress("a") == [("192.168.56.200", "VIP")]
    assert cluster.ingress("b") == [("192.168.56.201", "VIP")]


def test_requested_addresses_are_honoured() -> None:
    cluster = Cluster(
        POOL3,
        service("a"),
        service("legacy", loadBalancerIP="192.168.56.202"),
        service("metallb", annotations={"metallb.universe.tf/loadBalancerIPs": "192.168.56.201"}),
    )
    assert cluster.ingress("legacy") == [("192.168.56.202", "VIP")]
    assert cluster.ingress("metallb") == [("192.168.56.201", "VIP")]
    assert cluster.ingress("a") == [("192.168.56.200", "VIP")]


def test_request_outside_the_pool_or_taken_stays_pending() -> None:
    cluster = Cluster(
        POOL3,
        service("a", loadBalancerIP="192.168.56.200"),
        service("b", loadBalancerIP="192.168.56.200"),
        service("c", loadBalancerIP="192.168.56.99"),
    )
    assert cluster.ingress("a") == [("192.168.56.200", "VIP")]
    assert cluster.ingress("b") == []
    assert cluster.ingress("c") == []
    events = cluster.events()
    assert any("service/b" in e and "192.168.56.200 is in use" in e for e in events)
    assert any("service/c" in e and "not in the lab's load-balancer pool" in e for e in events)


def test_other_classes_are_left_alone() -> None:
    cluster = Cluster(
        POOL3,
        service("theirs", loadBalancerClass="example.com/other-lb"),
        service("ours", loadBalancerClass=LOAD_BALANCER_CLASS),
    )
    assert cluster.ingress("theirs") == []
    assert cluster.ingress("ours") == [("192.168.56.200", "VIP")]
    assert cluster.events() == []


def test_status_written_by_the_manifest_is_kept_and_reserved() -> None:
    cluster = Cluster(
        POOL3,
        service("pre", status={"loadBalancer": {"ingress": [{"ip": "192.168.56.200"}]}}),
        service("new"),
    )
    assert cluster.ingress("pre") == [("192.168.56.200", None)]
    assert cluster.ingress("new") == [("192.168.56.201", "VIP")]


def test_exhausted_pool_leaves_services_pending_until_an_address_is_freed() -> None:
    pool = "  loadBalancer:\n    addresses: [192.168.56.200/32]"
    cluster = Cluster(pool, service("a"), service("b"))
    assert cluster.ingress("a") == [("192.168.56.200", "VIP")]
    assert cluster.ingress("b") == []
    assert any(
        "service/b" in e and "no free IPv4 address in the lab's load-balancer pool" in e
        for e in cluster.events()
    )
    cluster.client.delete(Service, "default", "a")
    cluster.plane.run_to_fixed_point()
    assert cluster.ingress("b") == [("192.168.56.200", "VIP")]


def test_type_change_clears_the_status_and_frees_the_address() -> None:
    pool = "  loadBalancer:\n    addresses: [192.168.56.200/32]"
    cluster = Cluster(pool, service("a"), service("b"))
    cluster.apply(service("a", type="ClusterIP"))
    assert cluster.ingress("a") == []
    assert cluster.ingress("b") == [("192.168.56.200", "VIP")]


def test_no_node_ports_when_load_balancer_node_ports_are_off() -> None:
    cluster = Cluster(POOL3, service("a", allocateLoadBalancerNodePorts=False))
    svc = cluster.client.get(Service, "default", "a")
    assert cluster.ingress("a") == [("192.168.56.200", "VIP")]
    assert [p.node_port for p in svc.spec.ports] == [None]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1-10.0.0.2", "10.0.0.1 is outside underlayCIDR 192.168.56.0/24"),
        ("192.168.56.11/32", "192.168.56.11 is the address of node node-1"),
        ("192.168.56.15-192.168.56.25", "192.168.56.20 is the address of external client client"),
        ("192.168.56.9-192.168.56.1", "ends before it starts"),
        ("nonsense", 'expected a range "A-B"'),
        ("192.168.56.255/32", "broadcast address"),
    ],
)
def test_bad_pools_name_file_line_and_field(entry: str, message: str) -> None:
    text = LAB % f"  loadBalancer:\n    addresses:\n      - {entry}"
    loaded, problems = load_text(text, "lab.yaml")
    assert not problems
    found = [str(d) for d in validate(loaded)]
    assert len(found) == 1, found
    assert found[0].startswith("lab.yaml:11: Lab/lbtest: spec.loadBalancer.addresses[0]: ")
    assert message in found[0]


def test_overlapping_pool_entries_are_refused() -> None:
    text = LAB % (
        "  loadBalancer:\n    addresses:\n      - 192.168.56.200-192.168.56.210\n"
        "      - 192.168.56.205/32"
    )
    loaded, _ = load_text(text, "lab.yaml")
    found = [str(d) for d in validate(loaded)]
    assert len(found) == 1
    assert "lab.yaml:12:" in found[0]
    assert "already in spec.loadBalancer.addresses[0]" in found[0]


DUAL_LAB = """\
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lbtest}
spec:
  underlayCIDR: 192.168.56.0/24,fd00:56::/64
  serviceCIDR: 10.96.0.0/12,fd00:10:96::/112
  podCIDR: 10.244.0.0/16,fd00:10:244::/56
  nodes:
    - {name: node-1, underlayIP: "192.168.56.11,fd00:56::11"}
  externalClients:
    - {name: client, ip: "192.168.56.20,fd00:56::c8"}
%s
"""


class DualCluster(Cluster):
    def __init__(self, pool: str = "", *services: str) -> None:
        loaded, problems = load_text(DUAL_LAB % pool + "".join(services), "lab.yaml")
        assert not problems, problems
        assert not validate(loaded), [str(d) for d in validate(loaded)]
        self.client = LocalClient(Store())
        self.plane = ControlPlane(self.client)
        apply_objects(self.client, [item.obj for item in loaded])
        self.plane.run_to_fixed_point()


def test_dual_stack_service_gets_one_address_per_family_in_ip_families_order() -> None:
    cluster = DualCluster(
        "",
        service("both", ipFamilyPolicy="RequireDualStack"),
        service("six-first", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6", "IPv4"]),
        service("six", ipFamilyPolicy="SingleStack", ipFamilies=["IPv6"]),
        service("four"),
    )
    # The default IPv6 pool is ::c8-::ef, less the client's fd00:56::c8.
    assert cluster.ingress("both") == [("192.168.56.200", "VIP"), ("fd00:56::c9", "VIP")]
    assert cluster.ingress("four") == [("192.168.56.201", "VIP")]
    assert cluster.ingress("six") == [("fd00:56::ca", "VIP")]
    assert cluster.ingress("six-first") == [("fd00:56::cb", "VIP"), ("192.168.56.202", "VIP")]
    assert cluster.events() == []


def test_a_family_without_a_pool_stays_pending_and_the_other_is_served() -> None:
    cluster = DualCluster(POOL3, service("both", ipFamilyPolicy="RequireDualStack"))
    assert cluster.ingress("both") == [("192.168.56.200", "VIP")]
    assert any("service/both" in e and "pool has no IPv6 addresses" in e for e in cluster.events())
    # The pool grows an IPv6 range: the missing family is assigned, the other kept.
    cluster.apply(
        DUAL_LAB
        % "  loadBalancer:\n    addresses: [192.168.56.200-192.168.56.202, fd00:56::100/126]"
    )
    assert cluster.ingress("both") == [("192.168.56.200", "VIP"), ("fd00:56::100", "VIP")]


def test_requests_are_honoured_per_family() -> None:
    annotation = {"metallb.universe.tf/loadBalancerIPs": "fd00:56::e0, 192.168.56.230"}
    cluster = DualCluster(
        "",
        service("both", ipFamilyPolicy="RequireDualStack", annotations=annotation),
        service("legacy6", ipFamilyPolicy="RequireDualStack", loadBalancerIP="fd00:56::e1"),
        service("stray", loadBalancerIP="fd00:56::e2"),
        service("outside6", ipFamilies=["IPv6"], loadBalancerIP="fd00:56::1:1"),
    )
    assert cluster.ingress("both") == [("192.168.56.230", "VIP"), ("fd00:56::e0", "VIP")]
    # loadBalancerIP names one family's address; the other is dynamic.
    assert cluster.ingress("legacy6") == [("192.168.56.200", "VIP"), ("fd00:56::e1", "VIP")]
    assert cluster.ingress("stray") == []
    assert cluster.ingress("outside6") == []
    events = cluster.events()
    assert any(
        "service/stray" in e and "not of the Service's ipFamilies (IPv4)" in e for e in events
    )
    assert any(
        "service/outside6" in e and "not in the lab's load-balancer pool" in e for e in events
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("fd00:57::1-fd00:57::2", "fd00:57::1 is outside underlayCIDR fd00:56::/64"),
        ("fd00:56::11/128", "fd00:56::11 is the address of node node-1"),
        ("fd00:56::c0/124", "fd00:56::c8 is the address of external client client"),
    ],
)
def test_bad_ipv6_pools_name_file_line_and_field(entry: str, message: str) -> None:
    text = DUAL_LAB % f"  loadBalancer:\n    addresses:\n      - {entry}"
    loaded, problems = load_text(text, "lab.yaml")
    assert not problems
    found = [str(d) for d in validate(loaded)]
    assert len(found) == 1, found
    assert found[0].startswith("lab.yaml:14: Lab/lbtest: spec.loadBalancer.addresses[0]: ")
    assert message in found[0]


def test_ipv6_pool_on_an_ipv4_lab_and_overlapping_ipv6_entries_are_refused() -> None:
    text = LAB % "  loadBalancer:\n    addresses: [fd00:56::c8-fd00:56::ef]"
    found = [str(d) for d in validate(load_text(text, "lab.yaml")[0])]
    assert len(found) == 1 and "is IPv6, but underlayCIDR has no IPv6 CIDR" in found[0], found
    text = DUAL_LAB % (
        "  loadBalancer:\n    addresses: [fd00:56::100-fd00:56::1ff, fd00:56::180/121]"
    )
    found = [str(d) for d in validate(load_text(text, "lab.yaml")[0])]
    assert (
        len(found) == 1
        and "fd00:56::180 is already in spec.loadBalancer.addresses[0]" in (found[0])
    ), found


def test_ipv6_only_lab_has_an_ipv6_default_pool() -> None:
    lab = (
        DUAL_LAB.replace("192.168.56.0/24,", "")
        .replace("10.96.0.0/12,", "")
        .replace("10.244.0.0/16,", "")
        .replace('"192.168.56.11,fd00:56::11"', "fd00:56::11")
        .replace('"192.168.56.20,fd00:56::c8"', "fd00:56::20")
    )
    loaded, problems = load_text(lab % "" + service("web"), "lab.yaml")
    assert not problems and not validate(loaded), [str(d) for d in validate(loaded)]
    client = LocalClient(Store())
    plane = ControlPlane(client)
    apply_objects(client, [item.obj for item in loaded])
    plane.run_to_fixed_point()
    svc = client.get(Service, "default", "web")
    assert [(i.ip, i.ip_mode) for i in svc.status.load_balancer.ingress] == [("fd00:56::c8", "VIP")]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("192.168.56.5", "192.168.56.5"),  # a bare address: its own /32
        ("fd00:56::5", "fd00:56::5"),
        ("192.168.56.0/30", "192.168.56.1-192.168.56.2"),  # no network, no broadcast
        ("192.168.56.0/31", "192.168.56.0-192.168.56.1"),
        ("fd00:56::/126", "fd00:56::-fd00:56::3"),  # IPv6: every address
        (" 192.168.56.7 - 192.168.56.9 ", "192.168.56.7-192.168.56.9"),
    ],
)
def test_a_pool_entry_is_a_range_a_cidr_or_an_address(entry: str, expected: str) -> None:
    assert range_text(parse_entry(entry)) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("192.168.56.1/24", "has host bits set"),
        ("fd00:56::1/64", "has host bits set"),
        ("192.168.56.9-192.168.56.1", "ends before it starts"),
        ("192.168.56.1-fd00:56::1", "mixes IPv4 and IPv6"),
        ("pool", "does not appear to be an IP address or network"),
    ],
)
def test_a_bad_pool_entry_says_why(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entry(entry)
