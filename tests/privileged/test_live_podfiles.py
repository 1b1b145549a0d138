"""kubelet's pod files in a live lab, and the `default/kubernetes` Service.

One lab (controlplane/default's Lab with pods for each dnsPolicy) is up for
the module. Checked inside the pods: /etc/resolv.conf and /etc/hosts as
kubelet writes them, the kernel hostname (spec.hostname, setHostnameAsFQDN),
a hostname/subdomain pod resolvable by its FQDN through a headless Service,
`kubernetes.default.svc.cluster.local` resolving to 10.96.0.1 and
completing TLS with the stand-in API server, a hostNetwork pod's /hostname
answering the node's name, and nodes keeping a plain resolver that knows no
cluster names.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509
from live_helpers import CONTROLPLANE, endpoint_ips, lab_name, running_lab, service

from netemu.kernel import netns
from netemu.lab import LiveLab

DOMAIN = "cluster.local"
API_IP = "10.96.0.1"
NODE_2_IP = "192.168.56.12"
# The underlay's router: the nodes' default gateway and DNS server.
NODE_DNS = "192.168.56.1"
CLUSTER_RESOLV = (
    f"search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\nnameserver 10.96.0.10\noptions ndots:5\n"
)
NODE_RESOLV = f"nameserver {NODE_DNS}\n"
TIMEOUT = 5.0

PODS = """\
apiVersion: v1
kind: Service
metadata: {name: subsvc}
spec:
  clusterIP: None
  selector: {app: sub}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  nodeName: node-1
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: sub-pod, labels: {app: sub}}
spec:
  nodeName: node-2
  hostname: h1
  subdomain: subsvc
  hostAliases: [{ip: 10.1.2.3, hostnames: [foo.remote, bar.remote]}]
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: fqdn}
spec:
  nodeName: node-1
  hostname: f1
  subdomain: subsvc
  setHostnameAsFQDN: true
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: dflt}
spec:
  nodeName: node-1
  dnsPolicy: Default
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: none}
spec:
  nodeName: node-1
  dnsPolicy: None
  dnsConfig:
    nameservers: [10.96.0.10]
    searches: [x.example]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{name: c, image: agnhost, ports: [{containerPort: 18081}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet-cf}
spec:
  nodeName: node-2
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    directory = tmp_path_factory.mktemp("podfiles")
    shutil.copy(CONTROLPLANE / "default" / "lab.yaml", directory / "lab.yaml")
    (directory / "pods.yaml").write_text(PODS)
    with running_lab([directory], lab_name("podfiles")) as up:
        yield up


def cat(lab: LiveLab, target: str, path: str) -> str:
    done = lab.exec(target, ["cat", path])
    assert done.returncode == 0, done.stderr
    return done.stdout


def getent(lab: LiveLab, target: str, name: str) -> list[list[str]]:
    """`getent hosts NAME` in the target: its lines, split; [] when not found."""
    done = lab.exec(target, ["getent", "hosts", name], timeout=20)
    if done.returncode == 2:  # "key could not be found"
        return []
    assert done.returncode == 0, f"getent hosts {name}: rc {done.returncode} {done.stderr}"
    return [line.split() for line in done.stdout.splitlines()]


def pod_ip(lab: LiveLab, pod: str) -> str:
    return str(lab.info()["pods"][f"default/{pod}"]["ip"])


def http_get(netns_name: str, ip: str, port: int, path: str) -> tuple[int, str]:
    """One plain HTTP/1.0 GET from inside `netns_name`: (status, body)."""
    sock = netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(TIMEOUT)
        sock.connect((ip, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_resolv_conf_per_dns_policy(lab: LiveLab) -> None:
    assert cat(lab, "plain", "/etc/resolv.conf") == CLUSTER_RESOLV
    assert cat(lab, "dflt", "/etc/resolv.conf") == NODE_RESOLV
    assert cat(lab, "none", "/etc/resolv.conf") == (
        "search x.example\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"
    )
    # hostNetwork: ClusterFirst falls back to the node's resolver.
    assert cat(lab, "hostnet", "/etc/resolv.conf") == NODE_RESOLV
    assert cat(lab, "hostnet-cf", "/etc/resolv.conf") == CLUSTER_RESOLV


def test_hosts_files(lab: LiveLab) -> None:
    hosts = cat(lab, "sub-pod", "/etc/hosts").splitlines()
    assert hosts[0] == "# Kubernetes-managed hosts file."
    ip = pod_ip(lab, "sub-pod")
    assert hosts[7:] == [
        f"{ip}\th1.subsvc.default.svc.{DOMAIN}\th1",
        "",
        "# Entries added by HostAliases.",
        "10.1.2.3\tfoo.remote\tbar.remote",
    ]
    assert cat(lab, "plain", "/etc/hosts").splitlines()[-1] == f"{pod_ip(lab, 'plain')}\tplain"
    host_net = cat(lab, "hostnet", "/etc/hosts").splitlines()
    assert host_net[0] == "# Kubernetes-managed hosts file (host network)."
    assert f"{NODE_2_IP}\tnode-2" in host_net


def test_kernel_hostnames(lab: LiveLab) -> None:
    assert lab.exec("sub-pod", ["hostname"]).stdout.strip() == "h1"
    assert lab.exec("fqdn", ["hostname"]).stdout.strip() == f"f1.subsvc.default.svc.{DOMAIN}"
    assert lab.exec("plain", ["hostname"]).stdout.strip() == "plain"
    assert lab.exec("hostnet-cf", ["hostname"]).stdout.strip() == "node-2"


def test_subdomain_pod_resolves_by_its_fqdn_through_the_headless_service(lab: LiveLab) -> None:
    ip = pod_ip(lab, "sub-pod")
    assert getent(lab, "plain", f"h1.subsvc.default.svc.{DOMAIN}") == [
        [ip, f"h1.subsvc.default.svc.{DOMAIN}"]
    ]
    # The search path makes the short form work too.
    assert getent(lab, "plain", "h1.subsvc")[0][0] == ip


def test_kubernetes_service_resolves_and_answers_tls(lab: LiveLab) -> None:
    state = lab.state()
    svc = service(state, "kubernetes")
    assert svc["spec"]["clusterIP"] == API_IP
    assert svc["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}
    assert endpoint_ips(state, "kubernetes") == {"192.168.56.11"}
    assert getent(lab, "plain", f"kubernetes.default.svc.{DOMAIN}") == [
        [API_IP, f"kubernetes.default.svc.{DOMAIN}"]
    ]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for pod in ("plain", "sub-pod"):  # node-1 (the endpoint's node) and node-2
        sock = netns.open_socket(
            lab.info()["pods"][f"default/{pod}"]["netns"], socket.AF_INET, socket.SOCK_STREAM
        )
        sock.settimeout(TIMEOUT)
        sock.connect((API_IP, 443))
        with context.wrap_socket(sock, server_hostname="kubernetes.default.svc") as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            alt = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
            assert f"kubernetes.default.svc.{DOMAIN}" in alt.value.get_values_for_type(x509.DNSName)
            assert ipaddress.ip_address(API_IP) in alt.value.get_values_for_type(x509.IPAddress)
            tls.sendall(b"GET /version HTTP/1.0\r\nHost: kubernetes.default.svc\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        head, _, body = data.decode().partition("\r\n\r\n")
        assert head.split()[1] == "200", head
        assert json.loads(body)["major"] == "1"


def test_host_network_pod_hostname_is_the_node_name(lab: LiveLab) -> None:
    plain_netns = lab.info()["pods"]["default/plain"]["netns"]
    assert http_get(plain_netns, NODE_2_IP, 18081, "/hostname") == (200, "node-2")
    sub_ip = pod_ip(lab, "sub-pod")
    assert http_get(plain_netns, sub_ip, 8080, "/hostname") == (200, "h1")
    assert http_get(plain_netns, sub_ip, 8080, "/shell?cmd=id")[0] == 404


def test_nodes_keep_a_plain_resolver(lab: LiveLab) -> None:
    assert cat(lab, "node-1", "/etc/resolv.conf") == NODE_RESOLV
    assert getent(lab, "node-1", f"kubernetes.default.svc.{DOMAIN}") == []
    assert getent(lab, "hostnet", f"kubernetes.default.svc.{DOMAIN}") == []
    assert getent(lab, "hostnet-cf", f"kubernetes.default.svc.{DOMAIN}") == [
        [API_IP, f"kubernetes.default.svc.{DOMAIN}"]
    ]


def test_kubernetes_endpoint_slice_is_put_back_as_the_api_server_does(lab: LiveLab) -> None:
    assert lab.delete([("EndpointSlice", "default", "kubernetes")])
    assert endpoint_ips(lab.state(), "kubernetes") == {"192.168.56.11"}
