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

Pure: objects from a Lab, no store access (the caller skips those that
exist). Offline commands (`netemu compile`, `get -f`, `trace --offline`) do
not add them, so the rules goldens and the offline state stay the user's own
objects; see `live_addons`.
"""

from __future__ import annotations

from collections.abc import Sequence

from netemu.api.apps import Deployment
from netemu.api.base import K8sModel
from netemu.api.config import Lab
from netemu.api.core import Service
from netemu.api.networking import Ingress, IngressClass

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
