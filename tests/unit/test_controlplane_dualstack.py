"""Dual-stack and IPv6 labs in the control plane: a Service's IP family fields
as the API server settles them (initIPFamilyFields in
pkg/registry/core/service/storage/alloc.go, ValidateServiceClusterIPsRelatedFields
in pkg/apis/core/validation), cluster IPs per family, Node InternalIPs and
podCIDRs per family (the kubelet's --node-ip, nodeipam's range allocator),
pod podIPs of both families and EndpointSlices one per family."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest
from manifests import build

from netemu.api.core import Service
from netemu.api.errors import InputError
from netemu.api.ipfamilies import IPFamily, IPFamilyPolicy, settle_ip_families
from netemu.api.validate import load_and_validate

DUAL_LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  underlayCIDR: 192.168.56.0/24,fd00:56::/64
  serviceCIDR: 10.96.0.0/12,fd00:10:96::/112
  podCIDR: 10.244.0.0/16,fd00:10:244::/56
  nodes:
  - {name: node-1, underlayIP: "192.168.56.11,fd00:56::11"}
  - {name: node-2, underlayIP: "192.168.56.12,fd00:56::12"}
"""

V6_LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  underlayCIDR: fd00:56::/64
  serviceCIDR: fd00:10:96::/112
  podCIDR: fd00:10:244::/56
  clusterDNS: fd00:10:96::a
  nodes:
  - {name: node-1, underlayIP: "fd00:56::11"}
"""


def service(name: str, spec: str) -> str:
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}], {spec}}}
"""


POD = """
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c}]}
"""


def svc_of(state_services: Sequence[Service], name: str) -> Service:
    return next(s for s in state_services if s.metadata.name == name)


def families(ip: str) -> str:
    return f"IPv{ipaddress.ip_address(ip).version}"


# ---------------------------------------------------------------- family defaulting (pure)


@pytest.mark.parametrize(
    ("policy", "given", "cluster", "expected"),
    [
        # No policy: SingleStack with the cluster's primary family.
        (None, [], ["IPv4", "IPv6"], ("SingleStack", ["IPv4"])),
        (None, [], ["IPv6", "IPv4"], ("SingleStack", ["IPv6"])),
        # PreferDualStack: both families on a dual-stack cluster, primary first ...
        ("PreferDualStack", [], ["IPv4", "IPv6"], ("PreferDualStack", ["IPv4", "IPv6"])),
        # ... the requested family first when one is given ...
        ("PreferDualStack", ["IPv6"], ["IPv4", "IPv6"], ("PreferDualStack", ["IPv6", "IPv4"])),
        # ... and one family on a single-stack cluster, without an error.
        ("PreferDualStack", [], ["IPv4"], ("PreferDualStack", ["IPv4"])),
        ("RequireDualStack", [], ["IPv4", "IPv6"], ("RequireDualStack", ["IPv4", "IPv6"])),
        ("SingleStack", ["IPv6"], ["IPv4", "IPv6"], ("SingleStack", ["IPv6"])),
    ],
)
def test_ip_families_are_defaulted_as_init_ip_family_fields_does(
    policy: IPFamilyPolicy | None,
    given: list[IPFamily],
    cluster: list[IPFamily],
    expected: tuple[str, list[str]],
) -> None:
    settled = settle_ip_families(
        cluster_ip=None,
        cluster_ips=[],
        families=given,
        policy=policy,
        has_selector=True,
        cluster=cluster,
    )
    assert (settled.policy, settled.families, settled.errors) == (*expected, [])


def test_families_are_inferred_from_given_cluster_ips() -> None:
    settled = settle_ip_families(
        cluster_ip="fd00:10:96::50",
        cluster_ips=["fd00:10:96::50", "10.96.0.50"],
        families=[],
        policy="PreferDualStack",
        has_selector=True,
        cluster=["IPv4", "IPv6"],
    )
    assert settled.families == ["IPv6", "IPv4"]
    assert settled.errors == []


def test_headless_selectorless_service_requires_dual_stack_even_on_a_single_stack_cluster() -> None:
    settled = settle_ip_families(
        cluster_ip="None",
        cluster_ips=["None"],
        families=[],
        policy=None,
        has_selector=False,
        cluster=["IPv4"],
    )
    assert (settled.policy, settled.families, settled.errors) == (
        "RequireDualStack",
        ["IPv4", "IPv6"],
        [],
    )


def test_headless_service_with_a_selector_is_single_stack_by_default() -> None:
    settled = settle_ip_families(
        cluster_ip="None",
        cluster_ips=["None"],
        families=[],
        policy=None,
        has_selector=True,
        cluster=["IPv4", "IPv6"],
    )
    assert (settled.policy, settled.families) == ("SingleStack", ["IPv4"])


# ---------------------------------------------------------------- validation


def errors(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(InputError) as caught:
        load_and_validate([tmp_path / "x.yaml"])
    prefix = f"{tmp_path}/"
    return [str(d).removeprefix(prefix) for d in caught.value.diagnostics]


def test_a_dual_stack_lab_with_dual_stack_services_validates(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        DUAL_LAB
        + service("dual", "ipFamilyPolicy: RequireDualStack")
        + service("six", "ipFamilies: [IPv6]")
        + service(
            "pinned", "clusterIPs: [fd00:10:96::20, 10.96.0.20], ipFamilyPolicy: PreferDualStack"
        )
    )
    assert len(load_and_validate([tmp_path / "x.yaml"])) == 4


def test_single_stack_policy_with_two_cluster_ips_is_refused(tmp_path: Path) -> None:
    text = DUAL_LAB + service(
        "web", "clusterIPs: [10.96.0.20, fd00:10:96::20], ipFamilyPolicy: SingleStack"
    )
    assert errors(tmp_path, text) == [
        'x.yaml:17: Service/web: spec.ipFamilyPolicy: Invalid value: "SingleStack": must be '
        "'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"
    ]


def test_two_cluster_ips_of_one_family_are_refused(tmp_path: Path) -> None:
    text = DUAL_LAB + service(
        "web", "clusterIPs: [10.96.0.20, 10.96.0.21], ipFamilyPolicy: PreferDualStack"
    )
    assert errors(tmp_path, text) == [
        'x.yaml:17: Service/web: spec.clusterIPs: Invalid value: []string{"10.96.0.20", '
        '"10.96.0.21"}: may specify no more than one IP for each IP family'
    ]


def test_cluster_ip_must_match_its_ip_family(tmp_path: Path) -> None:
    text = DUAL_LAB + service("web", "clusterIPs: [10.96.0.20], ipFamilies: [IPv6]")
    assert errors(tmp_path, text) == [
        'x.yaml:17: Service/web: spec.clusterIPs[0]: Invalid value: "10.96.0.20": expected an '
        "IPv6 value as indicated by `ipFamilies[0]`"
    ]


def test_cluster_ip_outside_its_familys_service_cidr_is_refused(tmp_path: Path) -> None:
    text = DUAL_LAB + service("web", "clusterIPs: [fd00:99::1]")
    assert errors(tmp_path, text) == [
        "x.yaml:17: Service/web: spec.clusterIPs[0]: must be inside the Lab's serviceCIDR "
        "fd00:10:96::/112"
    ]


def test_lab_cidrs_need_one_cidr_per_family(tmp_path: Path) -> None:
    text = DUAL_LAB.replace(
        "serviceCIDR: 10.96.0.0/12,fd00:10:96::/112", "serviceCIDR: 10.96.0.0/12,10.112.0.0/12"
    )
    assert errors(tmp_path, text) == [
        'x.yaml:7: Lab/lab: spec.serviceCIDR: "10.96.0.0/12,10.112.0.0/12": a dual-stack pair '
        "needs one IPv4 and one IPv6 CIDR, not two IPv4"
    ]


def test_node_address_of_a_family_the_underlay_lacks_is_refused(tmp_path: Path) -> None:
    text = DUAL_LAB.replace(
        "underlayCIDR: 192.168.56.0/24,fd00:56::/64", "underlayCIDR: 192.168.56.0/24"
    )
    found = errors(tmp_path, text)
    assert found[0].startswith(
        "x.yaml:10: Lab/lab: spec.nodes[0].underlayIP: fd00:56::11 is IPv6, but underlayCIDR "
        "has no IPv6 CIDR"
    )
    assert len(found) == 2  # both nodes


# ---------------------------------------------------------------- the controllers


def test_dual_stack_services_get_a_cluster_ip_per_family() -> None:
    state = build(
        DUAL_LAB
        + service("dual", "ipFamilyPolicy: PreferDualStack")
        + service("six", "ipFamilies: [IPv6]")
        + service("four", "type: NodePort")
    )
    dual = svc_of(state.services, "dual")
    assert dual.spec.ip_families == ["IPv4", "IPv6"]
    assert [families(ip) for ip in dual.spec.cluster_ips] == ["IPv4", "IPv6"]
    assert dual.spec.cluster_ip == dual.spec.cluster_ips[0]
    assert ipaddress.ip_address(dual.spec.cluster_ips[1]) in ipaddress.ip_network(
        "fd00:10:96::/112"
    )
    six = svc_of(state.services, "six")
    assert (six.spec.ip_family_policy, six.spec.ip_families) == ("SingleStack", ["IPv6"])
    assert [families(ip) for ip in six.spec.cluster_ips] == ["IPv6"]
    four = svc_of(state.services, "four")
    assert [families(ip) for ip in four.spec.cluster_ips] == ["IPv4"]
    assert four.spec.ports[0].node_port is not None


def test_a_nodeport_is_shared_by_both_families() -> None:
    # One nodePort per port, whatever the families: kube-proxy opens it on each.
    state = build(DUAL_LAB + service("np", "type: NodePort, ipFamilyPolicy: RequireDualStack"))
    np = svc_of(state.services, "np")
    assert len(np.spec.cluster_ips) == 2
    assert len({p.node_port for p in np.spec.ports}) == 1


def test_ipv6_only_lab_gives_services_ipv6_cluster_ips() -> None:
    state = build(V6_LAB + service("web", ""))
    web = svc_of(state.services, "web")
    assert web.spec.ip_families == ["IPv6"]
    assert ipaddress.ip_address(web.spec.cluster_ip or "") in ipaddress.ip_network(
        "fd00:10:96::/112"
    )


def test_nodes_get_an_internal_ip_and_a_pod_cidr_per_family() -> None:
    state = build(DUAL_LAB)
    node = next(n for n in state.nodes if n.metadata.name == "node-2")
    assert node.internal_ips() == ["192.168.56.12", "fd00:56::12"]
    # range allocator: a /24 of the IPv4 cluster CIDR, a /64 of the IPv6 one,
    # in the --cluster-cidr order; node-1 took the first blocks.
    assert node.spec.pod_cidrs == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert node.spec.pod_cidr == "10.244.1.0/24"


def test_pods_get_an_ip_of_each_family_primary_first() -> None:
    state = build(DUAL_LAB + POD)
    pod = next(p for p in state.pods if p.metadata.name == "web-1")
    ips = [p.ip for p in pod.status.pod_ips]
    assert [families(ip) for ip in ips] == ["IPv4", "IPv6"]
    assert pod.status.pod_ip == ips[0]
    assert ipaddress.ip_address(ips[1]) in ipaddress.ip_network("fd00:10:244:1::/64")
    assert [h.ip for h in pod.status.host_ips] == ["192.168.56.12", "fd00:56::12"]


def test_a_dual_stack_service_gets_an_endpointslice_per_family() -> None:
    state = build(DUAL_LAB + service("web", "ipFamilyPolicy: PreferDualStack") + POD)
    slices = [
        s
        for s in state.endpoint_slices
        if s.metadata.labels.get("kubernetes.io/service-name") == "web"
    ]
    by_type = {s.address_type: s for s in slices}
    assert sorted(by_type) == ["IPv4", "IPv6"]
    pod = next(p for p in state.pods if p.metadata.name == "web-1")
    assert by_type["IPv4"].endpoints[0].addresses == [pod.status.pod_ips[0].ip]
    assert by_type["IPv6"].endpoints[0].addresses == [pod.status.pod_ips[1].ip]
    # generateName "<service>-": both slices carry the service's name prefix.
    assert all((s.metadata.name or "").startswith("web-") for s in slices)


def test_a_single_stack_ipv6_service_gets_only_an_ipv6_slice() -> None:
    state = build(DUAL_LAB + service("web", "ipFamilies: [IPv6]") + POD)
    types = [
        s.address_type
        for s in state.endpoint_slices
        if s.metadata.labels.get("kubernetes.io/service-name") == "web"
    ]
    assert types == ["IPv6"]


def test_v1_endpoints_hold_the_primary_family_only() -> None:
    # podToEndpointAddressForService: the pod IP of the Service's ipFamilies[0].
    state = build(
        DUAL_LAB
        + service("web", "ipFamilyPolicy: PreferDualStack")
        + service("six", "ipFamilies: [IPv6], ipFamilyPolicy: PreferDualStack")
        + POD
    )
    pod = next(p for p in state.pods if p.metadata.name == "web-1")
    v4, v6 = (p.ip for p in pod.status.pod_ips)
    addresses = {
        e.metadata.name: [a.ip for s in e.subsets for a in s.addresses] for e in state.endpoints
    }
    assert addresses["web"] == [v4]
    assert addresses["six"] == [v6]
