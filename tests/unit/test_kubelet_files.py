"""The files kubelet gives a pod (netemu.node.podfiles, netemu.net.plan.plan_pod):
hostname, /etc/hosts and /etc/resolv.conf, as pkg/kubelet writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netemu.api.core import Pod
from netemu.net.plan import PlanError, PodPlan, plan_lab, plan_pod
from netemu.node.podfiles import (
    Resolver,
    host_network_hosts,
    kernel_hostname,
    node_hosts,
    pod_hosts,
    pod_resolver,
)
from netemu.pipeline import load_cluster

NODE_DNS = Resolver(nameservers=("192.168.56.1",))
HEADER = [
    "# Kubernetes-managed hosts file.",
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "fe00::0\tip6-mcastprefix",
    "fe00::1\tip6-allnodes",
    "fe00::2\tip6-allrouters",
]


def resolver(policy: str = "ClusterFirst", config: Any = None, **kw: Any) -> Resolver:
    args: dict[str, Any] = {
        "namespace": "default",
        "policy": policy,
        "dns_config": config,
        "host_network": False,
        "node": NODE_DNS,
        "cluster_dns": ("10.96.0.10",),
        "domain": "cluster.local",
    }
    args.update(kw)
    return pod_resolver(**args)


def test_cluster_first_resolv_conf() -> None:
    assert resolver().text() == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )


def test_cluster_first_appends_the_node_search_domains() -> None:
    node = Resolver(nameservers=("192.168.56.1",), searches=("lab.example", "svc.cluster.local"))
    assert resolver(node=node).searches == (
        "default.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
        "lab.example",
    )


def test_host_network_cluster_first_falls_back_to_the_node_resolver() -> None:
    assert resolver(host_network=True) == NODE_DNS
    assert resolver("Default") == NODE_DNS


def test_cluster_first_with_host_net_is_the_cluster_dns_for_every_pod() -> None:
    assert resolver("ClusterFirstWithHostNet", host_network=True) == resolver()
    assert resolver("ClusterFirstWithHostNet") == resolver()


def test_none_has_only_the_dns_config() -> None:
    config = {
        "nameservers": ["1.2.3.4"],
        "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    assert resolver("None", config).text() == (
        "search ns1.svc.cluster-domain.example my.dns.search.suffix\n"
        "nameserver 1.2.3.4\n"
        "options ndots:2 edns0\n"
    )
    assert resolver("None").text() == ""


def test_dns_config_is_merged_into_cluster_first() -> None:
    config = {
        "nameservers": ["10.96.0.10", "1.1.1.1"],
        "searches": ["cluster.local", "extra.example"],
        "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "3"}],
    }
    got = resolver(config=config)
    assert got.nameservers == ("10.96.0.10", "1.1.1.1")
    assert got.searches[-1] == "extra.example"
    assert got.searches.count("cluster.local") == 1
    # The pod's ndots replaces kubelet's ndots:5.
    assert got.options == ("ndots:1", "timeout:3")


def test_limits_three_nameservers_and_32_searches() -> None:
    config = {
        "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"],
        "searches": [f"s{i}.example" for i in range(40)],
    }
    got = resolver(config=config)
    assert got.nameservers == ("10.96.0.10", "1.1.1.1", "2.2.2.2")
    assert len(got.searches) == 32
    assert got.searches[3] == "s0.example"


def test_search_line_is_cut_to_2048_characters() -> None:
    long = ["a" * 60 + f".{i:02d}.example" for i in range(30)]
    got = resolver("None", {"searches": long})
    line = " ".join(got.searches)
    assert len(line) <= 2048
    # Cut from the end, no more than needed.
    assert got.searches == tuple(long[: len(got.searches)])
    assert len(" ".join(long[: len(got.searches) + 1])) > 2048


def test_search_domains_longer_than_253_are_dropped() -> None:
    too_long = "a." * 127 + "b"  # 255 characters
    assert resolver("None", {"searches": ["ok.example", too_long]}).searches == ("ok.example",)


def test_pod_hosts_without_subdomain() -> None:
    assert pod_hosts(["10.244.0.2"], "web-0", "").splitlines() == [*HEADER, "10.244.0.2\tweb-0"]


def test_pod_hosts_with_subdomain_and_aliases() -> None:
    text = pod_hosts(
        ["10.244.1.5"],
        "busybox-1",
        "busybox-subdomain.default.svc.cluster.local",
        [("127.0.0.1", ["foo.local", "bar.local"]), ("10.1.2.3", ["foo.remote"])],
    )
    assert text.splitlines() == [
        *HEADER,
        "10.244.1.5\tbusybox-1.busybox-subdomain.default.svc.cluster.local\tbusybox-1",
        "",
        "# Entries added by HostAliases.",
        "127.0.0.1\tfoo.local\tbar.local",
        "10.1.2.3\tfoo.remote",
    ]


def test_host_network_hosts_is_the_node_file_under_its_header() -> None:
    node = node_hosts("192.168.56.11", "node-1")
    text = host_network_hosts(node, [("10.0.0.9", ["db"])])
    assert text.startswith("# Kubernetes-managed hosts file (host network).\n" + node)
    assert text.endswith("\n# Entries added by HostAliases.\n10.0.0.9\tdb\n")
    assert "192.168.56.11\tnode-1" in node.splitlines()


def test_fqdn_hostname_must_fit_the_kernel() -> None:
    assert kernel_hostname("web", "sub.default.svc.cluster.local", True) == (
        "web.sub.default.svc.cluster.local"
    )
    assert kernel_hostname("web", "sub.default.svc.cluster.local", False) == "web"
    assert kernel_hostname("web", "", True) == "web"
    with pytest.raises(ValueError, match="64 characters is the max, 65 characters requested"):
        kernel_hostname("h" * 35, "sub.default.svc.cluster.local", True)


ROOT = Path(__file__).parents[2]
# node-1 of controlplane/default, whose default route (and so its resolver)
# is the underlay's router, 192.168.56.1.
NODE = plan_lab(load_cluster([ROOT / "controlplane" / "default"]), "t").node("node-1")


def plan(spec: dict[str, Any], name: str = "busybox-1", ip: str = "10.244.1.5") -> PodPlan:
    pod = Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
            "status": {"podIP": ip},
        }
    )
    return plan_pod("t", NODE, pod)


def test_plan_uses_spec_hostname_and_subdomain() -> None:
    got = plan({"hostname": "h1", "subdomain": "sub"})
    assert got.hostname == "h1"
    assert "10.244.1.5\th1.sub.default.svc.cluster.local\th1" in got.hosts.splitlines()
    assert plan({"hostname": "h1", "subdomain": "sub", "setHostnameAsFQDN": True}).hostname == (
        "h1.sub.default.svc.cluster.local"
    )
    assert plan({}).hostname == "busybox-1"


def test_plan_refuses_a_pod_whose_fqdn_is_too_long() -> None:
    with pytest.raises(PlanError, match=r"FQDN \S+ is too long"):
        plan({"hostname": "h" * 40, "subdomain": "sub", "setHostnameAsFQDN": True})


def test_plan_of_a_host_network_pod_has_the_node_files() -> None:
    got = plan({"hostNetwork": True})
    assert got.hostname == "node-1"
    assert got.resolv_conf == "nameserver 192.168.56.1\n"
    assert got.hosts.startswith("# Kubernetes-managed hosts file (host network).\n")
    with_host_net = plan({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"})
    assert with_host_net.resolv_conf.splitlines()[1] == "nameserver 10.96.0.10"


def test_plan_without_dns_policy_is_cluster_first() -> None:
    assert plan({}).resolv_conf == resolver().text()
