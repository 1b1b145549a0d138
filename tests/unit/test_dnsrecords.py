"""Cluster DNS records (netemu.node.dnsrecords) against the Kubernetes
DNS-Based Service Discovery specification (kubernetes/dns,
docs/specification.md, schema 1.0.1): each test names the section whose
example it checks. Where the spec leaves a value open (SRV priority and
weight, an endpoint's system-assigned hostname) the expected value is
CoreDNS's."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from manifests import build

from netemu.controlplane import ClusterState
from netemu.node.dnsrecords import TTL, Answer, ClusterDns, endpoint_hostname
from netemu.pipeline import load_cluster

REPO = Path(__file__).resolve().parents[2]

# The spec's examples: `kubernetes` at 10.3.0.1 and a headless Service whose
# endpoints are my-pet, my-pet-2 and one without a hostname; plus what the
# spec's other sections need.
SPEC_CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  clusterIP: 10.3.0.1
  ports: [{name: https, port: 443, targetPort: 6443}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  ports: [{name: https, port: 443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: headless-1
  namespace: default
  labels: {kubernetes.io/service-name: headless}
addressType: IPv4
ports: [{name: https, port: 443, protocol: TCP}]
endpoints:
  - {addresses: [10.3.0.100], hostname: my-pet, conditions: {ready: true}}
  - {addresses: [10.3.0.101], hostname: my-pet-2}
  - {addresses: [10.3.0.102], conditions: {ready: true}}
  - {addresses: [10.3.0.103], hostname: not-ready, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: empty-headless, namespace: default}
spec:
  clusterIP: None
  ports: [{name: https, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: foo, namespace: default}
spec:
  type: ExternalName
  externalName: www.example.com
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec:
  type: ExternalName
  externalName: kubernetes.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: other}
spec:
  clusterIP: 10.3.0.20
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns, port: 53, protocol: TCP}
    - {port: 9153}
"""


@pytest.fixture(scope="module")
def spec_dns() -> ClusterDns:
    return ClusterDns.from_state(build(SPEC_CLUSTER))


@pytest.fixture(scope="module")
def sts_state() -> ClusterState:
    return load_cluster([REPO / "controlplane" / "statefulset"])


def texts(answer: Answer) -> list[str]:
    return [r.text() for r in answer.answer]


def data(answer: Answer) -> list[str]:
    return [r.data for r in answer.answer]


def ptr_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


# -- 2.2 schema version ---------------------------------------------------------


def test_2_2_dns_version_txt(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("dns-version.cluster.local.", "TXT")
    assert texts(answer) == [f'dns-version.cluster.local. {TTL} IN TXT "1.0.1"']


# -- 2.3 Services with a ClusterIP ------------------------------------------------


def test_2_3_1_a_record_is_the_cluster_ip(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("kubernetes.default.svc.cluster.local.", "A")
    assert answer.rcode == "NOERROR" and answer.authoritative
    assert texts(answer) == [f"kubernetes.default.svc.cluster.local. {TTL} IN A 10.3.0.1"]


def test_2_3_2_srv_per_named_port_targets_the_service(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV")
    assert texts(answer) == [
        f"_https._tcp.kubernetes.default.svc.cluster.local. {TTL} IN SRV "
        "0 100 443 kubernetes.default.svc.cluster.local."
    ]
    # "The Additional section of the response may include the Service A record."
    assert [r.text() for r in answer.additional] == [
        f"kubernetes.default.svc.cluster.local. {TTL} IN A 10.3.0.1"
    ]


def test_2_3_2_srv_by_protocol_and_unnamed_ports_have_none(spec_dns: ClusterDns) -> None:
    name = "multi.other.svc.cluster.local."
    assert data(spec_dns.answer(f"_dns._udp.{name}", "SRV")) == [f"0 100 53 {name}"]
    assert data(spec_dns.answer(f"_dns._tcp.{name}", "SRV")) == [f"0 100 53 {name}"]
    # The port with no name (9153): no SRV record, and no such name.
    assert spec_dns.answer(f"_9153._tcp.{name}", "SRV").rcode == "NXDOMAIN"
    assert spec_dns.answer(f"_https._tcp.{name}", "SRV").rcode == "NXDOMAIN"
    assert spec_dns.answer(f"_dns._sctp.{name}", "SRV").rcode == "NXDOMAIN"


def test_2_3_3_ptr_of_the_cluster_ip(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("1.0.3.10.in-addr.arpa.", "PTR")
    assert texts(answer) == [
        f"1.0.3.10.in-addr.arpa. {TTL} IN PTR kubernetes.default.svc.cluster.local."
    ]


# -- 2.4 headless Services --------------------------------------------------------


def test_2_4_1_headless_a_records_are_the_ready_endpoints(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("headless.default.svc.cluster.local.", "A")
    # ready: true and ready unset (nil means ready) count; ready: false does not.
    assert texts(answer) == [
        f"headless.default.svc.cluster.local. {TTL} IN A 10.3.0.{n}" for n in (100, 101, 102)
    ]


def test_2_4_1_headless_without_ready_endpoints_is_nxdomain(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("empty-headless.default.svc.cluster.local.", "A")
    assert answer.rcode == "NXDOMAIN" and not answer.answer


def test_2_4_1_a_record_per_endpoint_hostname(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("my-pet.headless.default.svc.cluster.local.", "A")
    assert texts(answer) == [f"my-pet.headless.default.svc.cluster.local. {TTL} IN A 10.3.0.100"]
    # Without a hostname field the endpoint has CoreDNS's system-assigned one.
    assert data(spec_dns.answer("10-3-0-102.headless.default.svc.cluster.local.", "A")) == [
        "10.3.0.102"
    ]
    # A not-ready endpoint has no name.
    assert spec_dns.answer("not-ready.headless.default.svc.cluster.local.", "A").rcode == (
        "NXDOMAIN"
    )


def test_2_4_2_headless_srv_per_ready_endpoint(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("_https._tcp.headless.default.svc.cluster.local.", "SRV")
    assert data(answer) == [
        "0 33 443 10-3-0-102.headless.default.svc.cluster.local.",
        "0 33 443 my-pet-2.headless.default.svc.cluster.local.",
        "0 33 443 my-pet.headless.default.svc.cluster.local.",
    ]
    assert sorted(r.text() for r in answer.additional) == [
        f"10-3-0-102.headless.default.svc.cluster.local. {TTL} IN A 10.3.0.102",
        f"my-pet-2.headless.default.svc.cluster.local. {TTL} IN A 10.3.0.101",
        f"my-pet.headless.default.svc.cluster.local. {TTL} IN A 10.3.0.100",
    ]


def test_2_4_3_ptr_of_a_ready_endpoint(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("100.0.3.10.in-addr.arpa.", "PTR")
    assert texts(answer) == [
        f"100.0.3.10.in-addr.arpa. {TTL} IN PTR my-pet.headless.default.svc.cluster.local."
    ]
    assert spec_dns.answer(ptr_name("10.3.0.103"), "PTR").rcode == "NXDOMAIN"


# -- 2.5 ExternalName -----------------------------------------------------------


def test_2_5_external_name_is_a_cname(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("foo.default.svc.cluster.local.", "A")
    # The target is outside the cluster: the resolver follows it (the lab has no upstream).
    assert answer.rcode == "NOERROR"
    assert texts(answer) == [f"foo.default.svc.cluster.local. {TTL} IN CNAME www.example.com."]
    assert data(spec_dns.answer("foo.default.svc.cluster.local.", "CNAME")) == ["www.example.com."]


def test_2_5_cname_inside_the_cluster_is_followed(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("alias.default.svc.cluster.local.", "A")
    assert texts(answer) == [
        f"alias.default.svc.cluster.local. {TTL} IN CNAME kubernetes.default.svc.cluster.local.",
        f"kubernetes.default.svc.cluster.local. {TTL} IN A 10.3.0.1",
    ]


# -- 2.6 pod records -------------------------------------------------------------


def test_2_6_pod_a_record_for_any_address_in_an_existing_namespace(spec_dns: ClusterDns) -> None:
    answer = spec_dns.answer("1-2-3-4.default.pod.cluster.local.", "A")
    assert texts(answer) == [f"1-2-3-4.default.pod.cluster.local. {TTL} IN A 1.2.3.4"]
    assert spec_dns.answer("1-2-3-4.nowhere.pod.cluster.local.", "A").rcode == "NXDOMAIN"
    assert spec_dns.answer("1-2-3.default.pod.cluster.local.", "A").rcode == "NXDOMAIN"
    # IPv6 with dashes for colons, as CoreDNS parses it; NODATA for A.
    v6 = spec_dns.answer("fd00--1.default.pod.cluster.local.", "AAAA")
    assert data(v6) == ["fd00::1"]
    assert spec_dns.answer("fd00--1.default.pod.cluster.local.", "A").rcode == "NOERROR"


# -- StatefulSet pods under their headless Service --------------------------------


def test_statefulset_pods_are_named_under_the_headless_service(sts_state: ClusterState) -> None:
    dns = ClusterDns.from_state(sts_state)
    ips = {p.metadata.name: p.status.pod_ip for p in sts_state.pods}
    for pod in ("db-0", "db-1", "db-2"):
        assert data(dns.answer(f"{pod}.db.default.svc.cluster.local.", "A")) == [ips[pod]]
    assert sorted(data(dns.answer("db.default.svc.cluster.local.", "A"))) == sorted(
        str(ip) for ip in ips.values()
    )
    srv = dns.answer("_pg._tcp.db.default.svc.cluster.local.", "SRV")
    assert data(srv) == [f"0 33 5432 db-{n}.db.default.svc.cluster.local." for n in range(3)]
    # The pod's PTR names it under both Services it backs, in Service name
    # order: the headless one by its hostname, db-rw by the system-assigned one.
    dashed = str(ips["db-0"]).replace(".", "-")
    assert data(dns.answer(ptr_name(str(ips["db-0"])), "PTR")) == [
        "db-0.db.default.svc.cluster.local.",
        f"{dashed}.db-rw.default.svc.cluster.local.",
    ]
    # db-rw has a ClusterIP: its name is that, not the pods'.
    rw = next(s for s in sts_state.services if s.metadata.name == "db-rw")
    assert data(dns.answer("db-rw.default.svc.cluster.local.", "A")) == [rw.spec.cluster_ip]


HOSTNAME_SUBDOMAIN = """
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.0.0/24}
---
apiVersion: v1
kind: Service
metadata: {name: sub}
spec:
  clusterIP: None
  selector: {app: sub}
  publishNotReadyAddresses: true
---
apiVersion: v1
kind: Pod
metadata: {name: busybox-1, labels: {app: sub}}
spec:
  hostname: busybox-1
  subdomain: sub
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: sub}}
spec:
  hostname: other
  subdomain: elsewhere
  containers: [{name: c, image: busybox}]
"""


def test_pod_hostname_and_subdomain() -> None:
    state = build(HOSTNAME_SUBDOMAIN)
    dns = ClusterDns.from_state(state)
    ips = {p.metadata.name: str(p.status.pod_ip) for p in state.pods}
    # The pod's hostname counts only under the Service its subdomain names.
    assert data(dns.answer("busybox-1.sub.default.svc.cluster.local.", "A")) == [ips["busybox-1"]]
    assert dns.answer("other.sub.default.svc.cluster.local.", "A").rcode == "NXDOMAIN"
    dashed = endpoint_hostname(ips["other"], None)
    assert data(dns.answer(f"{dashed}.sub.default.svc.cluster.local.", "A")) == [ips["other"]]


# -- what the spec leaves to the DNS: NODATA, NXDOMAIN, REFUSED -------------------


@pytest.mark.parametrize(
    "name",
    [
        "cluster.local.",
        "svc.cluster.local.",
        "default.svc.cluster.local.",
        "pod.cluster.local.",
        "default.pod.cluster.local.",
        # Empty non-terminals above SRV and PTR names (RFC 8020).
        "_tcp.kubernetes.default.svc.cluster.local.",
        "0.3.10.in-addr.arpa.",
        "10.in-addr.arpa.",
        "in-addr.arpa.",
    ],
)
def test_names_that_exist_without_records_of_the_type_are_nodata(
    spec_dns: ClusterDns, name: str
) -> None:
    answer = spec_dns.answer(name, "A")
    assert (answer.rcode, answer.answer) == ("NOERROR", ())
    # The SOA for negative caching (RFC 2308).
    assert [r.rtype for r in answer.authority] == ["SOA"]


def test_other_types_of_a_service_name_are_nodata(spec_dns: ClusterDns) -> None:
    for qtype in ("AAAA", "MX", "TXT", "SRV", "TYPE65"):
        answer = spec_dns.answer("kubernetes.default.svc.cluster.local.", qtype)
        assert (answer.rcode, answer.answer) == ("NOERROR", ()), qtype


@pytest.mark.parametrize(
    "name",
    [
        "missing.default.svc.cluster.local.",
        "kubernetes.nowhere.svc.cluster.local.",
        "nowhere.svc.cluster.local.",
        "kubernetes.default.cluster.local.",
        "web.cluster.local.",
        "a.b.kubernetes.default.svc.cluster.local.",
        "x._https._tcp.kubernetes.default.svc.cluster.local.",
        "_udp.kubernetes.default.svc.cluster.local.",
        "kubernetes.default.svc.cluster.local.default.svc.cluster.local.",
        "2.0.3.10.in-addr.arpa.",
        "11.in-addr.arpa.",
    ],
)
def test_names_that_do_not_exist_are_nxdomain(spec_dns: ClusterDns, name: str) -> None:
    answer = spec_dns.answer(name, "A")
    assert answer.rcode == "NXDOMAIN" and answer.authoritative and not answer.answer
    assert [r.rtype for r in answer.authority] == ["SOA"]


def test_names_outside_the_zones_are_refused(spec_dns: ClusterDns) -> None:
    for name in ("example.com.", "local.", "web.", "cluster.local.example.com."):
        answer = spec_dns.answer(name, "A")
        assert answer.rcode == "REFUSED" and not answer.authoritative and not answer.authority


def test_comparisons_ignore_case_and_answers_keep_the_question_spelling(
    spec_dns: ClusterDns,
) -> None:
    answer = spec_dns.answer("KuberNetes.Default.SVC.cluster.LOCAL", "a")
    assert texts(answer) == [f"KuberNetes.Default.SVC.cluster.LOCAL. {TTL} IN A 10.3.0.1"]


def test_zone_apex_soa_ns_and_the_name_server(spec_dns: ClusterDns) -> None:
    soa = spec_dns.answer("cluster.local.", "SOA")
    mname, rname, serial, *timers = soa.answer[0].data.split()
    assert (mname, rname, timers) == (
        "ns.dns.cluster.local.",
        "hostmaster.cluster.local.",
        ["7200", "1800", "86400", str(TTL)],
    )
    assert int(serial) > 0
    assert data(spec_dns.answer("cluster.local.", "NS")) == ["ns.dns.cluster.local."]
    # Without a Lab there is no clusterDNS: the name exists, with no address.
    assert spec_dns.answer("ns.dns.cluster.local.", "A").rcode == "NOERROR"
    assert data(ClusterDns(dns_ips=("10.96.0.10",)).answer("ns.dns.cluster.local.", "A")) == [
        "10.96.0.10"
    ]


def test_any_returns_every_record_of_the_name(spec_dns: ClusterDns) -> None:
    assert sorted(r.rtype for r in spec_dns.answer("cluster.local.", "ANY").answer) == [
        "NS",
        "SOA",
    ]


def test_the_cluster_domain_comes_from_the_lab() -> None:
    text = (REPO / "controlplane" / "default" / "lab.yaml").read_text()
    text = text.replace("spec:\n", "spec:\n  clusterDomain: example.lab\n", 1)
    text += "\n---\n" + (REPO / "controlplane" / "default" / "web.yaml").read_text()
    state = build(text)
    dns = ClusterDns.from_state(state)
    web = next(s for s in state.services if s.metadata.name == "web")
    assert dns.zone == "example.lab."
    assert data(dns.answer("web.default.svc.example.lab.", "A")) == [web.spec.cluster_ip]
    assert dns.answer("web.default.svc.cluster.local.", "A").rcode == "REFUSED"
    assert data(dns.answer("ns.dns.example.lab.", "A")) == ["10.96.0.10"]


def test_default_lab_service_names_and_pod_ptrs() -> None:
    state = load_cluster([REPO / "controlplane" / "default"])
    dns = ClusterDns.from_state(state)
    for svc in state.services:
        name = f"{svc.metadata.name}.default.svc.cluster.local."
        assert data(dns.answer(name, "A")) == [svc.spec.cluster_ip]
        assert data(dns.answer(ptr_name(str(svc.spec.cluster_ip)), "PTR")) == [name]
    # A web pod backs web, web-local and web-nodeport: one PTR for each.
    pod = state.pods[0]
    dashed = str(pod.status.pod_ip).replace(".", "-")
    assert data(dns.answer(ptr_name(str(pod.status.pod_ip)), "PTR")) == [
        f"{dashed}.{svc}.default.svc.cluster.local." for svc in ("web", "web-local", "web-nodeport")
    ]
    # `empty` has no endpoints, but has a ClusterIP: its name resolves.
    assert dns.answer("empty.default.svc.cluster.local.", "A").rcode == "NOERROR"


def test_serial_grows_with_the_state() -> None:
    first = ClusterDns.from_state(build(SPEC_CLUSTER))
    more = build(
        SPEC_CLUSTER + "\n---\napiVersion: v1\nkind: Service\n"
        "metadata: {name: later}\nspec: {ports: [{port: 80}]}\n"
    )
    assert ClusterDns.from_state(more).serial > first.serial


IPV6 = """
apiVersion: v1
kind: Service
metadata: {name: six, namespace: default}
spec:
  clusterIP: fd00:10:96::a
  clusterIPs: [fd00:10:96::a]
  ipFamilies: [IPv6]
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: byip, namespace: default}
spec:
  type: ExternalName
  externalName: 192.0.2.1
"""


def test_ipv6_cluster_ip_is_aaaa_with_an_ip6_arpa_ptr() -> None:
    dns = ClusterDns.from_state(build(IPV6))
    name = "six.default.svc.cluster.local."
    assert data(dns.answer(name, "AAAA")) == ["fd00:10:96::a"]
    assert dns.answer(name, "A").rcode == "NOERROR" and not dns.answer(name, "A").answer
    assert data(dns.answer(ptr_name("fd00:10:96::a"), "PTR")) == [name]
    # The nibble labels above it are empty non-terminals.
    assert dns.answer("0.0.d.f.ip6.arpa.", "PTR").rcode == "NOERROR"
    assert dns.answer("1.0.0.d.f.ip6.arpa.", "PTR").rcode == "NXDOMAIN"


def test_external_name_that_is_an_address_has_no_record() -> None:
    # CoreDNS answers only external names that are host names.
    dns = ClusterDns.from_state(build(IPV6))
    assert dns.answer("byip.default.svc.cluster.local.", "A").rcode == "NXDOMAIN"


# ---------------------------------------------------------------- dual-stack


DUAL_HEADLESS = """
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"""


@pytest.fixture(scope="module")
def dual_dns() -> tuple[ClusterState, ClusterDns]:
    lab = (REPO / "controlplane" / "dualstack").glob("*.yaml")
    text = "\n---\n".join(p.read_text() for p in sorted(lab)) + DUAL_HEADLESS
    state = build(text)
    return state, ClusterDns.from_state(state)


def test_a_dual_stack_service_has_an_a_and_an_aaaa_record(
    dual_dns: tuple[ClusterState, ClusterDns],
) -> None:
    # CoreDNS answers each clusterIP under the record type of its family.
    state, dns = dual_dns
    web = next(s for s in state.services if s.metadata.name == "web")
    v4, v6 = web.spec.cluster_ips
    name = "web.default.svc.cluster.local."
    assert data(dns.answer(name, "A")) == [v4]
    assert data(dns.answer(name, "AAAA")) == [v6]
    assert data(dns.answer(ptr_name(v6), "PTR")) == [name]
    assert data(dns.answer(ptr_name(v4), "PTR")) == [name]


def test_an_ipv6_single_stack_service_has_only_an_aaaa_record(
    dual_dns: tuple[ClusterState, ClusterDns],
) -> None:
    _, dns = dual_dns
    name = "web-v6.default.svc.cluster.local."
    (six,) = data(dns.answer(name, "AAAA"))
    assert ipaddress.ip_address(six).version == 6
    nodata = dns.answer(name, "A")
    assert nodata.rcode == "NOERROR" and not nodata.answer


def test_a_dual_stack_headless_service_answers_both_families_of_its_pods(
    dual_dns: tuple[ClusterState, ClusterDns],
) -> None:
    # Both EndpointSlices (IPv4 and IPv6) feed the headless Service's records.
    state, dns = dual_dns
    pods = [p for p in state.pods if p.metadata.labels.get("app") == "web"]
    v4 = sorted(p.status.pod_ips[0].ip for p in pods)
    v6 = sorted(p.status.pod_ips[1].ip for p in pods)
    name = "db.default.svc.cluster.local."
    assert sorted(data(dns.answer(name, "A"))) == v4
    assert sorted(data(dns.answer(name, "AAAA"))) == v6
    # An IPv6 pod address: its ip6.arpa PTR names the endpoint, dashed.
    dashed = endpoint_hostname(v6[0], None)
    assert f"{dashed}.{name}" in data(dns.answer(ptr_name(v6[0]), "PTR"))
    assert data(dns.answer(f"{dashed}.{name}", "AAAA")) == [v6[0]]
