"""Core (v1) and discovery.k8s.io/v1 resource types: Service, Pod, Node,
Namespace, ConfigMap, Secret, Endpoints and EndpointSlice, with the
Kubernetes JSON field names."""

from __future__ import annotations

import base64
from typing import Any, ClassVar, Literal

from pydantic import Field

from netemu.api.base import K8sModel, ObjectMeta

Protocol = Literal["TCP", "UDP", "SCTP"]


# ---------------------------------------------------------------- Pod

# The label tying an EndpointSlice to its Service (discovery.k8s.io/v1).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ContainerPort(K8sModel):
    container_port: int
    name: str | None = None
    protocol: Protocol = "TCP"
    host_port: int | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")


class ExecAction(K8sModel):
    command: list[str] = Field(default_factory=list)


class HTTPHeader(K8sModel):
    name: str
    value: str


class HTTPGetAction(K8sModel):
    path: str | None = None  # defaulted to "/" (SetDefaults_HTTPGetAction)
    port: int | str
    host: str | None = None  # defaulted to the pod IP by the kubelet
    scheme: Literal["HTTP", "HTTPS"] | None = None  # defaulted to HTTP
    http_headers: list[HTTPHeader] = Field(default_factory=list)


class TCPSocketAction(K8sModel):
    port: int | str
    host: str | None = None


class GRPCAction(K8sModel):
    port: int
    service: str | None = None


class Probe(K8sModel):
    """v1.Probe: one handler and its timing. Zero or unset numbers take the
    API server's defaults (SetDefaults_Probe): timeoutSeconds 1,
    periodSeconds 10, successThreshold 1, failureThreshold 3."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int | None = None
    timeout_seconds: int | None = None
    period_seconds: int | None = None
    success_threshold: int | None = None
    failure_threshold: int | None = None
    termination_grace_period_seconds: int | None = None

    def handlers(self) -> list[str]:
        """The JSON names of the handlers set (exactly one in a valid probe)."""
        given = (
            ("exec", self.exec),
            ("httpGet", self.http_get),
            ("tcpSocket", self.tcp_socket),
            ("grpc", self.grpc),
        )
        return [name for name, handler in given if handler is not None]


class Container(K8sModel):
    name: str
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    env: Any = None
    env_from: Any = None
    resources: Any = None
    resize_policy: Any = None
    restart_policy: Any = None
    volume_mounts: Any = None
    volume_devices: Any = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Any = None
    termination_message_path: Any = None
    termination_message_policy: Any = None
    image_pull_policy: Any = None
    security_context: Any = None
    stdin: Any = None
    stdin_once: Any = None
    tty: Any = None


# dnsPolicy values, in the order the API server lists them as "supported
# values" (validateDNSPolicy), and pkg/apis/core/validation's dnsConfig
# limits (MaxDNSNameservers, MaxDNSSearchPaths, MaxDNSSearchListChars), which
# the kubelet applies again when it writes resolv.conf.
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_LIST_CHARS = 2048


class PodSpec(K8sModel):
    omit_false: ClassVar[frozenset[str]] = frozenset({"host_network"})
    containers: list[Container]
    node_name: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    hostname: str | None = None
    subdomain: str | None = None
    host_network: bool = False
    enable_service_links: bool | None = None
    init_containers: list[Container] = Field(default_factory=list)
    ephemeral_containers: Any = None
    volumes: Any = None
    restart_policy: Any = None
    termination_grace_period_seconds: Any = None
    active_deadline_seconds: Any = None
    dns_policy: Any = None
    dns_config: Any = None
    service_account_name: Any = None
    service_account: Any = None
    automount_service_account_token: Any = None
    host_pid: Any = Field(default=None, alias="hostPID")
    host_ipc: Any = Field(default=None, alias="hostIPC")
    host_users: Any = None
    share_process_namespace: Any = None
    security_context: Any = None
    image_pull_secrets: Any = None
    affinity: Any = None
    scheduler_name: Any = None
    tolerations: Any = None
    host_aliases: Any = None
    priority_class_name: Any = None
    priority: Any = None
    readiness_gates: Any = None
    runtime_class_name: Any = None
    preemption_policy: Any = None
    overhead: Any = None
    topology_spread_constraints: Any = None
    set_hostname_as_fqdn: Any = Field(default=None, alias="setHostnameAsFQDN")
    os: Any = None
    scheduling_gates: Any = None
    resource_claims: Any = None
    resources: Any = None


class PodCondition(K8sModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    last_probe_time: Any = None
    last_transition_time: Any = None
    reason: str | None = None
    message: str | None = None


class PodIP(K8sModel):
    ip: str


class ContainerStateWaiting(K8sModel):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(K8sModel):
    started_at: Any = None


class ContainerStateTerminated(K8sModel):
    exit_code: int
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: Any = None
    finished_at: Any = None
    container_id: str | None = Field(default=None, alias="containerID")


class ContainerState(K8sModel):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(K8sModel):
    """v1.ContainerStatus, as a node's kubelet reports it."""

    name: str
    state: ContainerState | None = None
    last_state: ContainerState | None = None
    ready: bool = False
    restart_count: int = 0
    image: str | None = None
    image_id: str | None = Field(default=None, alias="imageID")
    container_id: str | None = Field(default=None, alias="containerID")
    started: bool | None = None
    allocated_resources: Any = None
    allocated_resources_status: Any = None
    resources: Any = None
    volume_mounts: Any = None
    user: Any = None
    stop_signal: Any = None


class PodStatus(K8sModel):
    phase: str | None = None
    conditions: list[PodCondition] = Field(default_factory=list)
    host_ip: str | None = Field(default=None, alias="hostIP")
    host_ips: list[PodIP] = Field(default_factory=list, alias="hostIPs")
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] = Field(default_factory=list, alias="podIPs")
    start_time: Any = None
    container_statuses: list[ContainerStatus] = Field(default_factory=list)
    init_container_statuses: Any = None
    ephemeral_container_statuses: Any = None
    qos_class: Any = None
    message: Any = None
    reason: Any = None
    nominated_node_name: Any = None
    resize: Any = None
    resource_claim_statuses: Any = None

    def condition(self, kind: str) -> str | None:
        for cond in self.conditions:
            if cond.type == kind:
                return cond.status
        return None


class Pod(K8sModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)


class PodTemplateSpec(K8sModel):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


# ---------------------------------------------------------------- Service


class ServicePort(K8sModel):
    port: int
    name: str | None = None
    protocol: Protocol = "TCP"
    app_protocol: str | None = None
    target_port: int | str | None = None
    node_port: int | None = None


class ClientIPConfig(K8sModel):
    timeout_seconds: int | None = None


class SessionAffinityConfig(K8sModel):
    client_ip: ClientIPConfig | None = Field(default=None, alias="clientIP")


ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
TrafficPolicy = Literal["Cluster", "Local"]


class ServiceSpec(K8sModel):
    ports: list[ServicePort] = Field(default_factory=list)
    selector: dict[str, str] | None = None
    type: ServiceType | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    external_ips: list[str] = Field(default_factory=list, alias="externalIPs")
    session_affinity: Literal["None", "ClientIP"] | None = None
    session_affinity_config: SessionAffinityConfig | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] = Field(default_factory=list)
    load_balancer_class: str | None = None
    allocate_load_balancer_node_ports: bool | None = None
    external_name: str | None = None
    external_traffic_policy: TrafficPolicy | None = None
    internal_traffic_policy: TrafficPolicy | None = None
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool | None = None
    ip_families: list[Literal["IPv4", "IPv6"]] = Field(default_factory=list)
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    traffic_distribution: str | None = None


class PortStatus(K8sModel):
    port: int
    protocol: Protocol
    error: str | None = None


class LoadBalancerIngress(K8sModel):
    ip: str | None = None
    hostname: str | None = None
    ip_mode: Literal["VIP", "Proxy"] | None = None
    ports: list[PortStatus] = Field(default_factory=list)


class LoadBalancerStatus(K8sModel):
    ingress: list[LoadBalancerIngress] = Field(default_factory=list)


class ServiceStatus(K8sModel):
    load_balancer: LoadBalancerStatus = Field(default_factory=LoadBalancerStatus)
    conditions: Any = None


class Service(K8sModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: ServiceStatus = Field(default_factory=ServiceStatus)


# ---------------------------------------------------------------- Node / Namespace


class NodeAddress(K8sModel):
    type: str
    address: str


class NodeSpec(K8sModel):
    omit_false: ClassVar[frozenset[str]] = frozenset({"unschedulable"})
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pod_cidrs: list[str] = Field(default_factory=list, alias="podCIDRs")
    provider_id: str | None = Field(default=None, alias="providerID")
    unschedulable: bool = False
    taints: Any = None
    config_source: Any = None
    external_id: Any = Field(default=None, alias="externalID")


class NodeStatus(K8sModel):
    addresses: list[NodeAddress] = Field(default_factory=list)
    capacity: Any = None
    allocatable: Any = None
    conditions: Any = None
    daemon_endpoints: Any = None
    node_info: Any = None
    images: Any = None
    volumes_in_use: Any = None
    volumes_attached: Any = None
    config: Any = None
    phase: Any = None
    runtime_handlers: Any = None
    features: Any = None
    declared_features: Any = None


class Node(K8sModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)

    def internal_ips(self) -> list[str]:
        return [a.address for a in self.status.addresses if a.type == "InternalIP"]


class NamespaceSpec(K8sModel):
    finalizers: list[str] = Field(default_factory=list)


class Namespace(K8sModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)
    status: Any = None


# ---------------------------------------------------------------- EndpointSlice


class EndpointConditions(K8sModel):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ObjectReference(K8sModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class EndpointHints(K8sModel):
    for_zones: Any = None
    for_nodes: Any = None


class Endpoint(K8sModel):
    addresses: list[str]
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: str | None = None
    target_ref: ObjectReference | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: EndpointHints | None = None
    deprecated_topology: Any = None


class EndpointPort(K8sModel):
    name: str | None = None
    protocol: Protocol | None = None
    port: int | None = None
    app_protocol: str | None = None


class EndpointAddress(K8sModel):
    ip: str
    hostname: str | None = None
    node_name: str | None = None
    target_ref: ObjectReference | None = None


class EndpointsPort(K8sModel):
    """core/v1 EndpointPort (the v1 Endpoints kind's, not discovery's)."""

    port: int
    name: str | None = None
    protocol: Protocol | None = None
    app_protocol: str | None = None


class EndpointSubset(K8sModel):
    addresses: list[EndpointAddress] = Field(default_factory=list)
    not_ready_addresses: list[EndpointAddress] = Field(default_factory=list)
    ports: list[EndpointsPort] = Field(default_factory=list)


class Endpoints(K8sModel):
    """v1 Endpoints: the endpoints of a Service before EndpointSlices; users
    still write them for Services without selectors (see
    netemu.controlplane.endpointsmirror)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Endpoints"] = "Endpoints"
    metadata: ObjectMeta
    subsets: list[EndpointSubset] = Field(default_factory=list)


class EndpointSlice(K8sModel):
    api_version: Literal["discovery.k8s.io/v1"] = "discovery.k8s.io/v1"
    kind: Literal["EndpointSlice"] = "EndpointSlice"
    # `endpoints` has no omitempty in discovery/v1: an empty slice is `[]`.
    keep_empty: ClassVar[frozenset[str]] = frozenset({"endpoints"})
    metadata: ObjectMeta
    address_type: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: list[Endpoint] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


# ---------------------------------------------------------------- ConfigMap / Secret


class ConfigMap(K8sModel):
    """v1.ConfigMap. `binaryData` values are base64 text (as in JSON); the
    validator checks them as the API server decodes them."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)
    binary_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None

    def files(self) -> dict[str, bytes]:
        """Every key with its bytes (data as UTF-8, binaryData decoded), as a
        configMap volume or an env reference sees them."""
        out = {key: value.encode() for key, value in self.data.items()}
        for key, value in self.binary_data.items():
            out[key] = decode_base64(value)
        return out


# The Secret types with required keys (core.SecretType*), and the default type.
SECRET_TYPE_OPAQUE = "Opaque"
SECRET_TYPE_TLS = "kubernetes.io/tls"


class Secret(K8sModel):
    """v1.Secret. `data` values are base64 text (as in JSON); `stringData` is
    write-only: the API server merges it into `data` (stringData wins) and
    never stores it, which `with_string_data_merged` does."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    type: str | None = None
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None

    def with_string_data_merged(self) -> Secret:
        """The Secret as the API server stores it (Convert_v1_Secret_To_core_Secret):
        stringData folded into data, type defaulted to Opaque."""
        if not self.string_data and self.type is not None:
            return self
        data = dict(self.data)
        for key, value in self.string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
        return self.model_copy(
            update={"data": data, "string_data": {}, "type": self.type or SECRET_TYPE_OPAQUE}
        )

    def files(self) -> dict[str, bytes]:
        """Every key with its decoded bytes (stringData included)."""
        merged = self.with_string_data_merged()
        return {key: decode_base64(value) for key, value in merged.data.items()}


def decode_base64(text: str) -> bytes:
    """Standard base64 as Go's encoding/json decodes a []byte: padding
    required, CR and LF ignored. Raises ValueError (see base64_error)."""
    return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def base64_error(text: str) -> str | None:
    """None if `text` is valid standard base64, else Go's message
    (base64.CorruptInputError: "illegal base64 data at input byte N")."""
    stripped = text.replace("\r", "").replace("\n", "")
    body = stripped.rstrip("=")
    for index, char in enumerate(body):
        if char not in _B64_ALPHABET:
            return f"illegal base64 data at input byte {index}"
    padding = len(stripped) - len(body)
    if len(stripped) % 4 or padding > 2 or (padding and len(body) % 4 == 1):
        # Go reports the position where the quantum fell short.
        return f"illegal base64 data at input byte {len(body) - len(body) % 4}"
    if len(body) % 4 == 1:
        return f"illegal base64 data at input byte {len(body) - 1}"
    return None
