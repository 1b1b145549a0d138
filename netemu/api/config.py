"""Configuration kinds: kube-proxy's KubeProxyConfiguration
(kubeproxy.config.k8s.io/v1alpha1, its real schema) and netemu's own `Lab`
(netemu/v1alpha1), which adds the topology a live lab needs."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, model_validator

from netemu.api.base import K8sModel, ObjectMeta

# Defaults of a Kubernetes cluster built with kubeadm, which netemu follows.
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_NODE_POD_PREFIX = 24
DEFAULT_NODE_PORT_RANGE = "30000-32767"
DEFAULT_MASQUERADE_BIT = 14
DEFAULT_AFFINITY_TIMEOUT = 10800
# flannel's VXLAN backend on Linux uses the kernel's default port, 8472, unless
# its net-conf.json sets "Port" (Documentation/backends.md), not IANA's 4789.
DEFAULT_VXLAN_PORT = 8472
# The kubelet's default --max-pods (KubeletConfiguration maxPods); kubeadm's
# /24 per node holds it with room for pods being replaced.
DEFAULT_MAX_PODS = 110


class KubeProxyIPTablesConfiguration(K8sModel):
    masquerade_all: bool = False
    masquerade_bit: int | None = None
    # kube-proxy defaults localhostNodePorts to true (pkg/proxy/apis/config/v1alpha1/defaults.go).
    localhost_node_ports: bool | None = None
    sync_period: Any = None
    min_sync_period: Any = None


class KubeProxyNFTablesConfiguration(K8sModel):
    masquerade_all: bool = False
    masquerade_bit: int | None = None
    sync_period: Any = None
    min_sync_period: Any = None


class KubeProxyConntrackConfiguration(K8sModel):
    max_per_core: Any = None
    min: Any = None
    tcp_established_timeout: Any = None
    tcp_close_wait_timeout: Any = None
    tcp_be_liberal: bool = False
    udp_timeout: Any = None
    udp_stream_timeout: Any = None


class DetectLocalConfiguration(K8sModel):
    bridge_interface: str | None = None
    interface_name_prefix: str | None = None


class KubeProxyLinuxConfiguration(K8sModel):
    conntrack: KubeProxyConntrackConfiguration | None = None
    masquerade_all: bool | None = None
    oom_score_adj: Any = None


class KubeProxyConfiguration(K8sModel):
    api_version: Literal["kubeproxy.config.k8s.io/v1alpha1"] = "kubeproxy.config.k8s.io/v1alpha1"
    kind: Literal["KubeProxyConfiguration"] = "KubeProxyConfiguration"
    # Unlike most kinds a KubeProxyConfiguration has no metadata; netemu allows a
    # name so that several labs' files can be told apart in error messages.
    metadata: Any = None
    cluster_cidr: str | None = Field(default=None, alias="clusterCIDR")
    node_port_addresses: list[str] = Field(default_factory=list)
    mode: Literal["", "iptables", "ipvs", "nftables", "kernelspace"] | None = None
    iptables: KubeProxyIPTablesConfiguration = Field(default_factory=KubeProxyIPTablesConfiguration)
    nftables: KubeProxyNFTablesConfiguration = Field(default_factory=KubeProxyNFTablesConfiguration)
    conntrack: KubeProxyConntrackConfiguration = Field(
        default_factory=KubeProxyConntrackConfiguration
    )
    linux: KubeProxyLinuxConfiguration | None = None
    detect_local_mode: (
        Literal["", "ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"] | None
    ) = None
    detect_local: DetectLocalConfiguration | None = None
    feature_gates: Any = None
    client_connection: Any = None
    hostname_override: Any = None
    bind_address: Any = None
    healthz_bind_address: Any = None
    metrics_bind_address: Any = None
    bind_address_hard_fail: Any = None
    enable_profiling: Any = None
    show_hidden_metrics_for_version: Any = None
    ipvs: Any = None
    winkernel: Any = None
    oom_score_adj: Any = None
    config_sync_period: Any = None
    port_range: Any = None
    logging: Any = None


# ---------------------------------------------------------------- Lab


def split_family_list(text: str | None) -> list[str]:
    """The entries of a comma-separated dual-stack value, as kube-apiserver's
    --service-cluster-ip-range, kube-controller-manager's --cluster-cidr and the
    kubelet's --node-ip read them ("10.96.0.0/12,fd00:10:96::/112"): one per IP
    family, the first is the primary. Blank entries are dropped; validation
    reports a bad entry, the wrong count or two of one family."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


class LabNode(K8sModel):
    name: str
    # One address, or a dual-stack pair "IPv4,IPv6" as the kubelet's --node-ip:
    # the node's InternalIP per family, the first is its primary.
    underlay_ip: str = Field(alias="underlayIP")
    labels: dict[str, str] = Field(default_factory=dict)
    # One CIDR, or one per family (the Node's spec.podCIDRs).
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    # The kubelet's --max-pods (KubeletConfiguration maxPods): the node's pod
    # capacity and allocatable, which the scheduler fills and no further.
    max_pods: int = Field(default=DEFAULT_MAX_PODS, alias="maxPods")

    @property
    def underlay_ips(self) -> list[str]:
        return split_family_list(self.underlay_ip)

    @property
    def pod_cidrs(self) -> list[str]:
        return split_family_list(self.pod_cidr)


class ExternalClient(K8sModel):
    name: str
    # One address, or a dual-stack pair "IPv4,IPv6".
    ip: str

    @property
    def ips(self) -> list[str]:
        return split_family_list(self.ip)


class LabDNS(K8sModel):
    """The cluster DNS addon: a `kube-system/coredns` Deployment behind the
    `kube-system/kube-dns` Service at clusterDNS, added to every live lab
    unless `enabled` is false (netemu.controlplane.addons)."""

    enabled: bool = True


class LabHealthCheck(K8sModel):
    """How the emulated cloud load balancer checks each node. The defaults
    are those the GCE cloud provider gives the HTTP health checks of its
    external passthrough load balancers (legacy-cloud-providers/gce,
    gce_loadbalancer_external.go: check every 8 s, 1 s timeout, healthy
    after 1 success, unhealthy after 3 failures)."""

    interval_seconds: float = 8.0
    timeout_seconds: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 1


class LabLoadBalancer(K8sModel):
    """The lab's load-balancer address pool (netemu.controlplane.loadbalancer):
    `addresses` are ranges "A-B" or CIDRs of either family, each inside the
    underlay CIDR of its family; empty means the default pool of each
    underlay CIDR (netemu.api.addresspool.default_range).

    The emulated cloud load balancer (netemu.node.cloudlb) owns those
    addresses from its own namespace on the underlay at `ip` (default: the
    highest free host address of the base underlayCIDR outside the pool;
    on a dual-stack lab also the IPv6 underlay's) and checks the nodes as
    `healthCheck` says."""

    addresses: list[str] = Field(default_factory=list)
    ip: str | None = None
    health_check: LabHealthCheck = Field(default_factory=LabHealthCheck)


class LabSpec(K8sModel):
    """The lab's topology. underlayCIDR, serviceCIDR and podCIDR each take one
    CIDR or a dual-stack pair "IPv4CIDR,IPv6CIDR" (or IPv6 first for an
    IPv6-primary cluster), as kube-apiserver's --service-cluster-ip-range and
    kube-controller-manager's --cluster-cidr do; the first family is the
    cluster's primary one (Services without ipFamilies get it)."""

    nodes: list[LabNode]
    external_clients: list[ExternalClient] = Field(default_factory=list)
    underlay_cidr: str = Field(default="192.168.56.0/24", alias="underlayCIDR")
    service_cidr: str = Field(default=DEFAULT_SERVICE_CIDR, alias="serviceCIDR")
    pod_cidr: str = Field(default=DEFAULT_POD_CIDR, alias="podCIDR")
    node_port_range: str = DEFAULT_NODE_PORT_RANGE
    cluster_dns: str = Field(default="10.96.0.10", alias="clusterDNS")
    cluster_domain: str = "cluster.local"
    dns: LabDNS = Field(default_factory=LabDNS)
    load_balancer: LabLoadBalancer = Field(default_factory=LabLoadBalancer, alias="loadBalancer")
    proxy_mode: Literal["iptables", "nftables"] = "iptables"
    iptables_backend: Literal["nft", "legacy"] = "nft"
    overlay: Literal["vxlan", "host-gw"] = "vxlan"
    # The UDP port of the vxlan overlay (flannel's backend "Port").
    vxlan_port: int = DEFAULT_VXLAN_PORT

    @model_validator(mode="before")
    @classmethod
    def _default_cluster_dns(cls, data: Any) -> Any:
        """clusterDNS left out: the 10th address of the primary service CIDR,
        as kubeadm picks it for either family (cmd/kubeadm/app/constants
        GetDNSIP: GetKubernetesServiceCIDR then GetIndexedIP(cidr, 10))."""
        if not isinstance(data, dict) or "clusterDNS" in data or "cluster_dns" in data:
            return data
        cidrs = data.get("serviceCIDR", data.get("service_cidr", DEFAULT_SERVICE_CIDR))
        dns = default_cluster_dns(cidrs) if isinstance(cidrs, str) else None
        return {**data, "clusterDNS": dns} if dns is not None else data

    @property
    def service_cidrs(self) -> list[str]:
        return split_family_list(self.service_cidr)

    @property
    def pod_cidrs(self) -> list[str]:
        return split_family_list(self.pod_cidr)

    @property
    def underlay_cidrs(self) -> list[str]:
        return split_family_list(self.underlay_cidr)

    @property
    def ipv6_cidrs(self) -> list[str]:
        """Its IPv6 underlay, service and pod CIDRs: what live labs cannot build yet."""
        every = (*self.underlay_cidrs, *self.service_cidrs, *self.pod_cidrs)
        return [text for text in every if ":" in text]


def default_cluster_dns(service_cidrs: str) -> str | None:
    """kubeadm's DNS address for `service_cidrs` ("A" or "A,B"): the 10th of
    the first; None when that is no CIDR with ten addresses (validation
    then reports the CIDR)."""
    primary = split_family_list(service_cidrs)[:1]
    try:
        network = ipaddress.ip_network(primary[0], strict=False) if primary else None
    except ValueError:
        return None
    if network is None or network.num_addresses <= 10:
        return None
    return str(network.network_address + 10)


def ipv4_first(values: list[str]) -> list[str]:
    """`values` (addresses or CIDRs) with the IPv4 ones first, order kept
    within a family. A live lab's datapath builds its IPv4 side as the base
    and its IPv6 side beside it whichever family is primary: the primary
    family matters to the control plane (clusterIP, podIP, clusterDNS), not
    to the links and routes."""
    return sorted(values, key=lambda text: ":" in text)


def _families(values: list[str]) -> str:
    """ "4", "6" or "46": the IP families of addresses or CIDRs, in no order."""
    return "".join(sorted({"6" if ":" in text else "4" for text in values}))


def live_ipv6_refusal(lab_name: str, lab: Lab) -> str | None:
    """Why a live lab cannot be built from `lab`, or None. A live lab is of
    one shape throughout: IPv4, IPv6-only, or dual-stack with either family
    first (every CIDR a pair of one IPv4 and one IPv6, every node an
    underlay address of each family)."""
    spec = lab.spec
    if not spec.ipv6_cidrs:
        return None
    shapes = {
        "underlayCIDR": _families(spec.underlay_cidrs),
        "serviceCIDR": _families(spec.service_cidrs),
        "podCIDR": _families(spec.pod_cidrs),
    }
    shapes |= {f"node {n.name} underlayIP": _families(n.underlay_ips) for n in spec.nodes}
    shapes |= {f"client {c.name} ip": _families(c.ips) for c in spec.external_clients}
    wanted = "6" if shapes["underlayCIDR"] == "6" else "46"
    if all(shape == wanted for shape in shapes.values()) and all(
        len(cidrs) == len(wanted)
        for cidrs in (spec.underlay_cidrs, spec.service_cidrs, spec.pod_cidrs)
    ):
        return None
    kind = "IPv6" if wanted == "6" else "an IPv4/IPv6 pair"
    odd = [name for name, shape in shapes.items() if shape != wanted]
    return (
        f"lab {lab_name}: a live lab is IPv4, IPv6-only or dual-stack throughout; "
        f"{', '.join(odd) or 'a CIDR'} not {kind} as the underlayCIDR is; "
        "netemu validate, compile, get and trace --offline --src/--dst handle such labs offline"
    )


class Lab(K8sModel):
    api_version: Literal["netemu/v1alpha1"] = "netemu/v1alpha1"
    kind: Literal["Lab"] = "Lab"
    metadata: ObjectMeta
    spec: LabSpec


# The Lab used when the input has none (and no Node objects either): the shape of
# controlplane/default/lab.yaml, two nodes and one external client on one underlay.
# A live lab on it takes its name from the manifests (netemu.cli_live.bring_up).
DEFAULT_LAB = {
    "apiVersion": "netemu/v1alpha1",
    "kind": "Lab",
    "metadata": {"name": "default"},
    "spec": {
        "underlayCIDR": "192.168.56.0/24",
        "nodes": [
            {"name": "node-1", "underlayIP": "192.168.56.11"},
            {"name": "node-2", "underlayIP": "192.168.56.12"},
        ],
        "externalClients": [{"name": "client", "ip": "192.168.56.20"}],
    },
}
DEFAULT_LAB_NOTICE = (
    "notice: no Lab in the input: using the built-in lab (nodes node-1 192.168.56.11 and "
    "node-2 192.168.56.12, external client 'client' 192.168.56.20)"
)


def default_lab() -> Lab:
    return Lab.model_validate(DEFAULT_LAB)
