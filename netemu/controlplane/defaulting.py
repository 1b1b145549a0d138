"""API-server defaulting for Services and Namespaces, run as a controller.

Services follow SetDefaults_Service (pkg/apis/core/v1/defaults.go), the IP
family initialisation of the service registry (initIPFamilyFields) and the
clusterIP/clusterIPs normalisation, and drop type-dependent fields the way
the registry does when a Service's type changes (dropTypeDependentFields).
Cluster IPs and node ports themselves are allocated by `allocator`.

Namespaces get the `kubernetes.io/metadata.name` label and phase Active.

Pods get SetDefaults_PodSpec / SetDefaults_Container (restartPolicy Always,
dnsPolicy ClusterFirst, schedulerName default-scheduler,
terminationGracePeriodSeconds 30, securityContext {}, enableServiceLinks
true; per container terminationMessagePath/Policy, imagePullPolicy Always
for an image tagged `latest` or untagged and IfNotPresent otherwise,
resources {} with requests copied from limits) and what admission adds to
every pod of a kubeadm cluster: priority 0 with preemptionPolicy
PreemptLowerPriority (Priority) and the two NoExecute tolerations of
DefaultTolerationSeconds (not-ready and unreachable, 300 s) unless the pod
tolerates those taints already. Left out: the ServiceAccount admission
plugin (no ServiceAccounts or token volumes in a lab), the hostPort
defaulting of hostNetwork pods, and defaulting inside workload templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from netemu.api.config import DEFAULT_AFFINITY_TIMEOUT
from netemu.api.core import (
    ClientIPConfig,
    Container,
    Namespace,
    Pod,
    Service,
    ServicePort,
    ServiceSpec,
    SessionAffinityConfig,
)
from netemu.api.ipfamilies import IPFamily, settle_ip_families
from netemu.controlplane.client import Client
from netemu.controlplane.common import sorted_map
from netemu.controlplane.podstatus import qos_class
from netemu.controlplane.settings import read_settings

LABEL_NAMESPACE_NAME = "kubernetes.io/metadata.name"


class DefaultingController:
    """Fills in what the API server would have defaulted on create."""

    name = "defaulting"

    def __init__(self, client: Client) -> None:
        self.client = client
        # The objects found fully defaulted on the last pass, by key: the very
        # same stored object (a write replaces it) needs no second look. A
        # pass over 5,000 Services otherwise defaults every one of them again
        # after any change anywhere. Services are defaulted for the cluster's
        # IP families: settled objects are forgotten when those change.
        self._settled: dict[tuple[str, str, str], Any] = {}
        self._families: list[IPFamily] | None = None

    def reconcile(self) -> bool:
        changed = False
        families = cast(list[IPFamily], read_settings(self.client).ip_families)
        if families != self._families:
            self._settled = {}
            self._families = families
        settled: dict[tuple[str, str, str], Any] = {}

        def default(kind: str, obj: Any, defaulted: Any) -> bool:
            key = (kind, obj.metadata.namespace or "", obj.metadata.name or "")
            if self._settled.get(key) is obj:
                settled[key] = obj
                return False
            new = defaulted(obj)
            if new == obj:
                settled[key] = obj
                return False
            # Defaulting is idempotent: what it wrote needs no second look
            # either, unless another controller writes the object first.
            settled[key] = self.client.update(new)
            return True

        for svc in self.client.list(Service).items:
            changed |= default("Service", svc, lambda o: default_service(o, families))
        for ns in self.client.list(Namespace).items:
            changed |= default("Namespace", ns, default_namespace)
        for pod in self.client.list(Pod).items:
            changed |= default("Pod", pod, default_pod)
        self._settled = settled
        return changed


def externally_accessible(svc_type: str | None, external_ips: Sequence[str]) -> bool:
    """service.ExternallyAccessible: reachable from outside via node ports,
    a load balancer, or externalIPs."""
    return svc_type in ("NodePort", "LoadBalancer") or (
        svc_type == "ClusterIP" and bool(external_ips)
    )


def default_service(svc: Service, cluster: Sequence[IPFamily] = ("IPv4",)) -> Service:
    """`cluster`: the service IP families of the cluster, primary first."""
    spec = svc.spec
    update: dict[str, Any] = {}
    svc_type = spec.type or "ClusterIP"
    update["type"] = svc_type

    affinity = spec.session_affinity or "None"
    update["session_affinity"] = affinity
    if affinity == "None":
        update["session_affinity_config"] = None
    else:
        config = spec.session_affinity_config
        if config is None or config.client_ip is None or config.client_ip.timeout_seconds is None:
            update["session_affinity_config"] = SessionAffinityConfig(
                client_ip=ClientIPConfig(timeout_seconds=DEFAULT_AFFINITY_TIMEOUT)
            )

    update["ports"] = [_default_port(p, svc_type) for p in spec.ports]

    if externally_accessible(svc_type, spec.external_ips):
        update["external_traffic_policy"] = spec.external_traffic_policy or "Cluster"
    else:
        update["external_traffic_policy"] = None
    if svc_type == "ExternalName":
        update["internal_traffic_policy"] = None
    else:
        update["internal_traffic_policy"] = spec.internal_traffic_policy or "Cluster"
    if svc_type == "LoadBalancer":
        if spec.allocate_load_balancer_node_ports is None:
            update["allocate_load_balancer_node_ports"] = True
    else:
        update["allocate_load_balancer_node_ports"] = None
    if not (svc_type == "LoadBalancer" and update["external_traffic_policy"] == "Local"):
        update["health_check_node_port"] = None

    if svc_type != "ExternalName":
        update.update(_ip_fields(spec, cluster))

    new_spec = spec.model_copy(update=update)
    if new_spec == spec:
        return svc
    return svc.model_copy(update={"spec": new_spec})


def _default_port(port: ServicePort, svc_type: str) -> ServicePort:
    update: dict[str, Any] = {}
    if port.target_port is None or port.target_port in (0, ""):
        update["target_port"] = port.port
    if svc_type not in ("NodePort", "LoadBalancer") and port.node_port is not None:
        # The registry releases node ports when a Service stops needing them.
        update["node_port"] = None
    return port.model_copy(update=update) if update else port


def _ip_fields(spec: ServiceSpec, cluster: Sequence[IPFamily]) -> dict[str, Any]:
    """clusterIP/clusterIPs mirroring and the IP family defaults of the registry
    (initIPFamilyFields, netemu.api.ipfamilies). A Service the API server would
    refuse keeps what could be settled; validation reports why."""
    update: dict[str, Any] = {}
    cluster_ip, cluster_ips = spec.cluster_ip, list(spec.cluster_ips)
    if cluster_ip and not cluster_ips:
        cluster_ips = [cluster_ip]
    elif cluster_ips and not cluster_ip:
        cluster_ip = cluster_ips[0]
    update["cluster_ip"] = cluster_ip
    update["cluster_ips"] = cluster_ips
    settled = settle_ip_families(
        cluster_ip=cluster_ip,
        cluster_ips=cluster_ips,
        families=spec.ip_families,
        policy=spec.ip_family_policy,
        has_selector=bool(spec.selector),
        cluster=cluster,
    )
    update["ip_family_policy"] = settled.policy
    update["ip_families"] = settled.families
    return update


def default_namespace(ns: Namespace) -> Namespace:
    name = ns.metadata.name or ""
    labels = ns.metadata.labels
    if name and labels.get(LABEL_NAMESPACE_NAME) != name:
        labels = sorted_map({**labels, LABEL_NAMESPACE_NAME: name})
    status = ns.status
    if status is None:
        status = {"phase": "Active"}
    elif isinstance(status, dict) and not status.get("phase"):
        status = {**status, "phase": "Active"}
    if labels is ns.metadata.labels and status is ns.status:
        return ns
    return ns.model_copy(
        update={"metadata": ns.metadata.model_copy(update={"labels": labels}), "status": status}
    )


# DefaultTolerationSeconds (plugin/pkg/admission/defaulttolerationseconds):
# both taints are tolerated for 300 s unless the pod already tolerates them.
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
DEFAULT_TOLERATION_SECONDS = 300


def default_pod(pod: Pod) -> Pod:
    spec = pod.spec
    update: dict[str, Any] = {
        "containers": [_default_container(c) for c in spec.containers],
        "init_containers": [_default_container(c) for c in spec.init_containers],
    }
    defaults: dict[str, Any] = {
        "restart_policy": "Always",
        "dns_policy": "ClusterFirst",
        "scheduler_name": "default-scheduler",
        "termination_grace_period_seconds": 30,
        "security_context": {},
        "enable_service_links": True,
        "priority": 0,
        "preemption_policy": "PreemptLowerPriority",
    }
    for name, value in defaults.items():
        if getattr(spec, name) is None:
            update[name] = value
    tolerations = list(spec.tolerations) if isinstance(spec.tolerations, list) else []
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        if not any(_tolerates_no_execute(t, key) for t in tolerations):
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
                }
            )
    update["tolerations"] = tolerations
    new_spec = spec.model_copy(update=update)
    status = pod.status
    if status.qos_class is None:
        # The pod strategy's PrepareForCreate sets the QoS class.
        status = status.model_copy(update={"qos_class": qos_class(pod)})
    if new_spec == spec and status is pod.status:
        return pod
    return pod.model_copy(update={"spec": new_spec, "status": status})


def _tolerates_no_execute(toleration: Any, key: str) -> bool:
    if not isinstance(toleration, dict):
        return False
    return toleration.get("key") in (None, "", key) and toleration.get("effect") in (
        None,
        "",
        "NoExecute",
    )


def _default_container(container: Container) -> Container:
    update: dict[str, Any] = {}
    if container.termination_message_path is None:
        update["termination_message_path"] = "/dev/termination-log"
    if container.termination_message_policy is None:
        update["termination_message_policy"] = "File"
    if container.image_pull_policy is None:
        update["image_pull_policy"] = (
            "Always" if _image_tag(container.image) == "latest" else ("IfNotPresent")
        )
    resources = container.resources if isinstance(container.resources, dict) else {}
    limits = resources.get("limits")
    requests = resources.get("requests")
    if isinstance(limits, dict) and limits:
        # SetDefaults_Pod: a limit without a request is also the request.
        merged = {**limits, **(requests if isinstance(requests, dict) else {})}
        if merged != requests:
            resources = {**resources, "requests": merged}
    if resources != container.resources:
        update["resources"] = resources
    return container.model_copy(update=update) if update else container


def _image_tag(image: str | None) -> str:
    """The tag of an image reference as the kubelet's parser reads it:
    "latest" when neither a tag nor a digest is given, "" with a digest."""
    if not image:
        return ""
    if "@" in image:
        return ""
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"
