"""The cluster addons a live lab adds to the user's objects, as kubeadm
installs them: the cluster DNS, a `kube-system/coredns` Deployment behind
the `kube-system/kube-dns` Service at the Lab's clusterDNS IP (10.96.0.10 by
default), with the labels, port names and image of kubeadm's manifests
(cmd/kubeadm/app/phases/addons/dns/manifests.go). Its pod runs the built-in
DNS server (netemu.node.dnsserver) instead of the test server: the pod
template carries the annotation `netemu/builtin-server: dns`, which any pod
may carry to have its containers without a command serve DNS on their ports.
(The image alone does not decide: labs use the CoreDNS image for test-server
pods too.)

The metrics port 9153 (name `metrics`, TCP) is on the Service, with
kubeadm's prometheus.io annotations, and on the container: the built-in
server answers `GET /metrics` there (netemu.node.dnsserver).

Left out of kubeadm's manifests: the liveness and readiness probes (the
built-in server serves DNS and metrics only), the ConfigMap with
the Corefile (netemu's server is configured as kubeadm's Corefile configures
CoreDNS), the second replica, tolerations and the priority class.

The `default/kubernetes` Service, as the API server keeps it: at the first
address of the service CIDR (10.96.0.1 by default), labels
component=apiserver and provider=kubernetes, port `https` 443 to 6443, no
selector, and its EndpointSlice `kubernetes` (label
kubernetes.io/service-name only, one ready endpoint per API server, port
`https` 6443), both put back when changed or deleted, as the API server's
kubernetes-service controller and endpoint reconciler do
(pkg/controlplane/controller/kubernetesservice, pkg/controlplane/reconcilers).
The endpoint is the lab's stand-in API server address: the first node's
underlay IP, the control-plane node of a kubeadm cluster, where
netemu.node.apiserver answers TLS on 6443. No Endpoints object: netemu's
API has EndpointSlices only.

Pure: objects from a Lab, no store access (the caller skips those that
exist; KubernetesServiceController reads and writes through a client).
Offline commands (`netemu compile`, `get -f`, `trace --offline`) do
not add them, so the rules goldens and the offline state stay the user's own
objects; see `live_addons`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from netemu.api.apps import Deployment
from netemu.api.base import K8sModel
from netemu.api.config import Lab
from netemu.api.core import SERVICE_NAME_LABEL, EndpointSlice, Service
from netemu.api.networking import Ingress, IngressClass
from netemu.controlplane.client import Client
from netemu.controlplane.errors import NotFound

DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_DEPLOYMENT = "coredns"
# The CoreDNS image kubeadm 1.30 installs (for the picture: the annotation
# decides what runs).
DNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.1"
DNS_LABELS = {"k8s-app": "kube-dns"}
# CoreDNS's Prometheus port in kubeadm's manifests (netemu.node.dnsserver.METRICS_PORT).
DNS_METRICS_PORT = 9153
# The pod annotation that picks the built-in server of containers without a
# command (netemu.net.plan.ContainerPlan.builtin).
BUILTIN_SERVER = "netemu/builtin-server"
BUILTIN_TEST = "test"
BUILTIN_DNS = "dns"


def dns_service(lab: Lab) -> Service:
    return Service.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": DNS_SERVICE,
                "namespace": DNS_NAMESPACE,
                "labels": {
                    **DNS_LABELS,
                    "kubernetes.io/cluster-service": "true",
                    "kubernetes.io/name": "CoreDNS",
                },
                "annotations": {
                    "prometheus.io/port": str(DNS_METRICS_PORT),
                    "prometheus.io/scrape": "true",
                },
            },
            "spec": {
                "clusterIP": lab.spec.cluster_dns,
                "selector": dict(DNS_LABELS),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {
                        "name": "metrics",
                        "port": DNS_METRICS_PORT,
                        "protocol": "TCP",
                        "targetPort": DNS_METRICS_PORT,
                    },
                ],
            },
        }
    )


def dns_deployment() -> Deployment:
    return Deployment.model_validate(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DNS_DEPLOYMENT, "namespace": DNS_NAMESPACE, "labels": DNS_LABELS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(DNS_LABELS)},
                "template": {
                    "metadata": {
                        "labels": dict(DNS_LABELS),
                        "annotations": {BUILTIN_SERVER: BUILTIN_DNS},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "coredns",
                                "image": DNS_IMAGE,
                                # CoreDNS's own flags; the built-in server ignores them.
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                    {
                                        "name": "metrics",
                                        "containerPort": DNS_METRICS_PORT,
                                        "protocol": "TCP",
                                    },
                                ],
                            }
                        ],
                    },
                },
            },
        }
    )


def live_addons(lab: Lab) -> list[K8sModel]:
    """The addons of a live lab: the cluster DNS unless spec.dns.enabled is false."""
    if not lab.spec.dns.enabled:
        return []
    return [dns_service(lab), dns_deployment()]


# The API server's own Service (pkg/controlplane/controller/kubernetesservice).
API_NAMESPACE = "default"
API_SERVICE = "kubernetes"
API_SERVICE_LABELS = {"component": "apiserver", "provider": "kubernetes"}
API_PORT_NAME = "https"
API_SERVICE_PORT = 443
# kubeadm's default --secure-port (its API server's advertise port).
API_SECURE_PORT = 6443


def api_service_ip(lab: Lab) -> str:
    """The first address of the service CIDR (the API server's
    GetAPIServerServiceIP, which the IP allocator never hands out)."""
    network = ipaddress.ip_network(lab.spec.service_cidrs[0], strict=False)
    return str(network.network_address + 1)


def api_endpoint_ip(lab: Lab) -> str:
    """The stand-in API server's address: the first node's (the control-plane node)."""
    return lab.spec.nodes[0].underlay_ips[0]


def api_service(lab: Lab) -> Service:
    return Service.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": API_SERVICE,
                "namespace": API_NAMESPACE,
                "labels": dict(API_SERVICE_LABELS),
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": api_service_ip(lab),
                "sessionAffinity": "None",
                "ports": [
                    {
                        "name": API_PORT_NAME,
                        "port": API_SERVICE_PORT,
                        "protocol": "TCP",
                        "targetPort": API_SECURE_PORT,
                    }
                ],
            },
        }
    )


def api_endpoint_slice(lab: Lab) -> EndpointSlice:
    """The slice the endpoint reconciler writes (EndpointsAdapter.updateEndpointSlice)."""
    ip = api_endpoint_ip(lab)
    return EndpointSlice.model_validate(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": API_SERVICE,
                "namespace": API_NAMESPACE,
                "labels": {SERVICE_NAME_LABEL: API_SERVICE},
            },
            "addressType": "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": API_PORT_NAME, "port": API_SECURE_PORT, "protocol": "TCP"}],
        }
    )


class KubernetesServiceController:
    """Keeps `default/kubernetes` and its EndpointSlice as the API server
    does: created when missing, the slice's endpoints, ports and labels put
    back when they differ (the Service's ports too: the API server
    reconciles them). A live lab's only: offline states stay the user's
    objects. If a user's Service holds the first service IP, the Service
    is not created (the API server would fail to allocate it and retry)."""

    name = "kubernetes-service"

    def __init__(self, client: Client, lab: Lab) -> None:
        self.client = client
        self.lab = lab

    def reconcile(self) -> bool:
        want_svc = api_service(self.lab)
        try:
            svc = self.client.get(Service, API_NAMESPACE, API_SERVICE)
        except NotFound:
            ip = api_service_ip(self.lab)
            for other in self.client.list(Service).items:
                if ip in (other.spec.cluster_ip, *other.spec.cluster_ips):
                    return False
            self.client.create(want_svc)
            return True
        changed = False
        if svc.spec.ports != want_svc.spec.ports:
            self.client.update(
                svc.model_copy(
                    update={"spec": svc.spec.model_copy(update={"ports": want_svc.spec.ports})}
                )
            )
            changed = True
        want = api_endpoint_slice(self.lab)
        try:
            eps = self.client.get(EndpointSlice, API_NAMESPACE, API_SERVICE)
        except NotFound:
            self.client.create(want)
            return True
        if (eps.endpoints, eps.ports, eps.metadata.labels, eps.address_type) != (
            want.endpoints,
            want.ports,
            want.metadata.labels,
            want.address_type,
        ):
            fixed = eps.model_copy(
                update={
                    "endpoints": want.endpoints,
                    "ports": want.ports,
                    "address_type": want.address_type,
                    "metadata": eps.metadata.model_copy(update={"labels": want.metadata.labels}),
                }
            )
            self.client.update(fixed)
            changed = True
        return changed


# ---------------------------------------------------------------- ingress-nginx

# The ingress controller addon, as ingress-nginx's published manifests for a
# cloud (deploy/static/provider/cloud/deploy.yaml) name and label it: the
# `ingress-nginx-controller` Deployment and LoadBalancer Service (which has
# node ports too) in namespace `ingress-nginx`, and the IngressClass `nginx`.
# The pod runs Debian's nginx (netemu.node.ingress) instead of the image:
# its template carries `netemu/builtin-server: ingress`.
BUILTIN_INGRESS = "ingress"
INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_CONTROLLER = "ingress-nginx-controller"
INGRESS_IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.10.1"
INGRESS_LABELS = {
    "app.kubernetes.io/component": "controller",
    "app.kubernetes.io/instance": "ingress-nginx",
    "app.kubernetes.io/name": "ingress-nginx",
}
INGRESS_CLASS = "nginx"
INGRESS_CONTROLLER_VALUE = "k8s.io/ingress-nginx"


def ingress_service() -> Service:
    return Service.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": INGRESS_CONTROLLER,
                "namespace": INGRESS_NAMESPACE,
                "labels": dict(INGRESS_LABELS),
            },
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Local",
                "selector": dict(INGRESS_LABELS),
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"},
                ],
            },
        }
    )


def ingress_deployment() -> Deployment:
    return Deployment.model_validate(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": INGRESS_CONTROLLER,
                "namespace": INGRESS_NAMESPACE,
                "labels": dict(INGRESS_LABELS),
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(INGRESS_LABELS)},
                "template": {
                    "metadata": {
                        "labels": dict(INGRESS_LABELS),
                        "annotations": {BUILTIN_SERVER: BUILTIN_INGRESS},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "controller",
                                "image": INGRESS_IMAGE,
                                # The controller's own flags; netemu's nginx ignores them.
                                "args": [
                                    "/nginx-ingress-controller",
                                    f"--publish-service=$(POD_NAMESPACE)/{INGRESS_CONTROLLER}",
                                    "--election-id=ingress-nginx-leader",
                                    f"--controller-class={INGRESS_CONTROLLER_VALUE}",
                                    f"--ingress-class={INGRESS_CLASS}",
                                ],
                                "ports": [
                                    {"name": "http", "containerPort": 80, "protocol": "TCP"},
                                    {"name": "https", "containerPort": 443, "protocol": "TCP"},
                                ],
                            }
                        ],
                    },
                },
            },
        }
    )


def ingress_class() -> IngressClass:
    return IngressClass.model_validate(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS, "labels": dict(INGRESS_LABELS)},
            "spec": {"controller": INGRESS_CONTROLLER_VALUE},
        }
    )


def wants_ingress(objects: Sequence[K8sModel]) -> bool:
    """Whether a lab gets the ingress addon: its objects have an Ingress, or
    an IngressClass of ingress-nginx's controller."""
    return any(
        isinstance(o, Ingress)
        or (isinstance(o, IngressClass) and o.spec.controller == INGRESS_CONTROLLER_VALUE)
        for o in objects
    )


def ingress_addons() -> list[K8sModel]:
    return [ingress_class(), ingress_service(), ingress_deployment()]
