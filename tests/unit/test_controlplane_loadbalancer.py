"""The load-balancer address controller (netemu.controlplane.loadbalancer):
ingress addresses from the Lab's pool, requests, classes, freeing, an
exhausted pool, and the pool's validation."""

from __future__ import annotations

from typing import Any

import pytest

from netemu.api.addresspool import default_pool, parse_pool
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
    pool = default_pool("192.168.56.0/24")
    assert (str(pool[0]), str(pool[-1]), len(pool)) == ("192.168.56.200", "192.168.56.239", 40)
    assert str(default_pool("10.0.0.0/16")[0]) == "10.0.200.0"
    cluster = Cluster("", service("web"))
    assert cluster.ingress("web") == [("192.168.56.200", "VIP")]


def test_pool_entries_parse_ranges_and_cidrs() -> None:
    assert [str(ip) for ip in parse_pool(["192.168.56.1-192.168.56.2", "192.168.56.8/30"])] == [
        "192.168.56.1",
        "192.168.56.2",
        "192.168.56.9",
        "192.168.56.10",
    ]
    with pytest.raises(ValueError):
        parse_pool(["192.168.56.9-192.168.56.1"])


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
        "service/b" in e and "no free address in the lab's load-balancer pool" in e
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
        ("nonsense", 'expected an IPv4 range "A-B"'),
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
