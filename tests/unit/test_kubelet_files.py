"""The files kubelet writes into a pod's /etc: resolv.conf and hosts."""

from __future__ import annotations

from netemu.node.kubelet import hosts_file, resolv_conf


def test_resolv_conf_for_cluster_first() -> None:
    assert resolv_conf("default", "10.96.0.10", "cluster.local") == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )


def test_resolv_conf_follows_namespace_dns_and_domain() -> None:
    text = resolv_conf("kube-system", "10.100.0.10", "example.test")
    assert text.splitlines() == [
        "search kube-system.svc.example.test svc.example.test example.test",
        "nameserver 10.100.0.10",
        "options ndots:5",
    ]


def test_hosts_file_has_localhost_and_the_pod() -> None:
    text = hosts_file("10.244.0.2", "web-0")
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.244.0.2\tweb-0" in lines
    assert lines[-1] == "10.244.0.2\tweb-0"
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert "::1\tlocalhost ip6-localhost ip6-loopback" in lines
