"""kube-proxy's conntrack sysctls in a live lab's node namespaces, read back
from the kernel: the KubeProxyConfiguration's values (or kube-proxy's
defaults) in every node, nf_conntrack_max left alone, and the host's own
namespace untouched."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import CONTROLPLANE, lab_name, running_lab

from netemu.kernel import netns
from netemu.lab import LiveLab

PROXY = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
conntrack:
  tcpEstablishedTimeout: 2h0m0s
  tcpBeLiberal: true
  udpTimeout: 45s
  udpStreamTimeout: 3m
"""
KEYS = [
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
    "net.netfilter.nf_conntrack_max",
]


def _host_values() -> dict[str, str]:
    return {k: Path("/proc/sys", *k.split(".")).read_text().strip() for k in KEYS}


@pytest.fixture(scope="module")
def host_before() -> dict[str, str]:
    return _host_values()


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory, host_before: object) -> Iterator[LiveLab]:
    target = tmp_path_factory.mktemp("conntrack") / "lab"
    shutil.copytree(CONTROLPLANE / "default", target)
    (target / "kube-proxy.yaml").write_text(PROXY)
    with running_lab([target], lab_name("ct-set")) as live:
        yield live


@pytest.fixture(scope="module")
def defaults(host_before: object) -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("ct-def")) as live:
        yield live


def _node_values(lab: LiveLab) -> dict[str, dict[str, str]]:
    return {
        name: netns.read_sysctls(node["netns"], KEYS) for name, node in lab.info()["nodes"].items()
    }


def test_configured_conntrack_values_are_in_every_node(configured: LiveLab) -> None:
    values = _node_values(configured)
    assert len(values) == 2
    for node, got in values.items():
        assert got["net.netfilter.nf_conntrack_tcp_timeout_established"] == "7200", node
        # Not set in the file: kube-proxy's default, 1h.
        assert got["net.netfilter.nf_conntrack_tcp_timeout_close_wait"] == "3600", node
        assert got["net.netfilter.nf_conntrack_tcp_be_liberal"] == "1", node
        assert got["net.netfilter.nf_conntrack_udp_timeout"] == "45", node
        assert got["net.netfilter.nf_conntrack_udp_timeout_stream"] == "180", node


def test_kube_proxy_defaults_are_in_every_node(defaults: LiveLab) -> None:
    for node, got in _node_values(defaults).items():
        assert got["net.netfilter.nf_conntrack_tcp_timeout_established"] == "86400", node
        assert got["net.netfilter.nf_conntrack_tcp_timeout_close_wait"] == "3600", node


def test_nf_conntrack_max_and_the_host_are_left_alone(
    configured: LiveLab, defaults: LiveLab, host_before: dict[str, str]
) -> None:
    # nf_conntrack_max is the host's one table limit, read-only in a node
    # namespace: each node shows the host's value.
    for got in [*_node_values(configured).values(), *_node_values(defaults).values()]:
        assert (
            got["net.netfilter.nf_conntrack_max"] == host_before["net.netfilter.nf_conntrack_max"]
        )
    assert _host_values() == host_before
