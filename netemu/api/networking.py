"""networking.k8s.io/v1 Ingress and IngressClass, with the Kubernetes JSON
field names (k8s.io/api/networking/v1 types.go)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from netemu.api.base import K8sModel, ObjectMeta

PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]

# The annotation older manifests use instead of spec.ingressClassName.
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
# The annotation that makes an IngressClass the cluster's default.
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


class ServiceBackendPort(K8sModel):
    """Exactly one of name and number (validation says so)."""

    name: str | None = None
    number: int | None = None


class IngressServiceBackend(K8sModel):
    name: str
    port: ServiceBackendPort | None = None


class TypedLocalObjectReference(K8sModel):
    api_group: str | None = None
    kind: str
    name: str


class IngressBackend(K8sModel):
    """Exactly one of service and resource; netemu's controller routes to
    services only (a resource backend is kept, and answered with 503 as
    ingress-nginx does for backends it cannot serve)."""

    service: IngressServiceBackend | None = None
    resource: TypedLocalObjectReference | None = None


class HTTPIngressPath(K8sModel):
    path: str | None = None
    path_type: PathType | None = None
    backend: IngressBackend


class HTTPIngressRuleValue(K8sModel):
    paths: list[HTTPIngressPath] = Field(default_factory=list)


class IngressRule(K8sModel):
    host: str | None = None
    http: HTTPIngressRuleValue | None = None


class IngressTLS(K8sModel):
    hosts: list[str] = Field(default_factory=list)
    secret_name: str | None = None


class IngressSpec(K8sModel):
    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    tls: list[IngressTLS] = Field(default_factory=list)
    rules: list[IngressRule] = Field(default_factory=list)


class IngressPortStatus(K8sModel):
    port: int
    protocol: str
    error: str | None = None


class IngressLoadBalancerIngress(K8sModel):
    ip: str | None = None
    hostname: str | None = None
    ports: list[IngressPortStatus] = Field(default_factory=list)


class IngressLoadBalancerStatus(K8sModel):
    ingress: list[IngressLoadBalancerIngress] = Field(default_factory=list)


class IngressStatus(K8sModel):
    load_balancer: IngressLoadBalancerStatus = Field(default_factory=IngressLoadBalancerStatus)


class Ingress(K8sModel):
    api_version: Literal["networking.k8s.io/v1"] = "networking.k8s.io/v1"
    kind: Literal["Ingress"] = "Ingress"
    metadata: ObjectMeta
    spec: IngressSpec = Field(default_factory=IngressSpec)
    status: IngressStatus = Field(default_factory=IngressStatus)

    def class_name(self) -> str | None:
        """The class this Ingress asks for: spec.ingressClassName, else the
        legacy annotation (as ingress-nginx reads them)."""
        if self.spec.ingress_class_name:
            return self.spec.ingress_class_name
        return self.metadata.annotations.get(INGRESS_CLASS_ANNOTATION)


class IngressClassParametersReference(K8sModel):
    api_group: str | None = None
    kind: str
    name: str
    scope: str | None = None
    namespace: str | None = None


class IngressClassSpec(K8sModel):
    controller: str | None = None
    parameters: IngressClassParametersReference | None = None


class IngressClass(K8sModel):
    api_version: Literal["networking.k8s.io/v1"] = "networking.k8s.io/v1"
    kind: Literal["IngressClass"] = "IngressClass"
    metadata: ObjectMeta
    spec: IngressClassSpec = Field(default_factory=IngressClassSpec)
    status: Any = None

    def is_default(self) -> bool:
        return self.metadata.annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"
