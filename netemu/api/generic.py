"""Kinds netemu stores but does not emulate: ServiceAccounts, RBAC, HPAs,
PodDisruptionBudgets, CRDs and custom resources, webhooks, NetworkPolicies,
volumes' claims, quotas and the like.

Real application bundles carry them beside the Deployments and Services
netemu emulates; they are accepted as generic objects (metadata validated,
everything else kept as written, as the API server keeps it), listed by
`get` and reported once per kind as "stored, not emulated".

Owns: the table of Kubernetes' built-in kinds that have no typed model here
(their group, served versions, scope, plural and short names, from the API
server's discovery of Kubernetes 1.31), the generic model, and the registry
of generic kinds seen in this process (each kind gets its own subclass, so
the store and clients address it by type like any typed kind).
Must not touch: files, the kernel, the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, create_model

from netemu.api.base import K8sModel, ObjectMeta


@dataclass(frozen=True)
class KindInfo:
    """What the API server's discovery says of a kind."""

    group: str
    kind: str
    versions: tuple[str, ...]  # served versions
    namespaced: bool
    plural: str
    short_names: tuple[str, ...] = ()


def _k(
    group: str, kind: str, versions: str, namespaced: bool, plural: str, *short: str
) -> KindInfo:
    return KindInfo(group, kind, tuple(versions.split()), namespaced, plural, short)


# Built-in kinds (kubectl api-resources of a v1.31 cluster) that have no typed
# model in netemu. A kind typed in netemu.api.load.KINDS takes precedence, so a
# kind that gets a model later needs no change here. Versions removed from
# Kubernetes (apps/v1beta1, extensions/v1beta1, policy/v1beta1,
# autoscaling/v2beta2, ...) are absent on purpose: the API server no longer
# serves them and `kubectl apply` fails with "no matches for kind".
BUILTIN_KINDS: tuple[KindInfo, ...] = (
    _k("", "ServiceAccount", "v1", True, "serviceaccounts", "sa"),
    _k("", "ConfigMap", "v1", True, "configmaps", "cm"),
    _k("", "Secret", "v1", True, "secrets"),
    _k("", "Endpoints", "v1", True, "endpoints", "ep"),
    _k("", "PersistentVolumeClaim", "v1", True, "persistentvolumeclaims", "pvc"),
    _k("", "PersistentVolume", "v1", False, "persistentvolumes", "pv"),
    _k("", "LimitRange", "v1", True, "limitranges", "limits"),
    _k("", "ResourceQuota", "v1", True, "resourcequotas", "quota"),
    _k("", "ReplicationController", "v1", True, "replicationcontrollers", "rc"),
    _k("", "PodTemplate", "v1", True, "podtemplates"),
    _k("", "Event", "v1", True, "events", "ev"),
    _k("apps", "ControllerRevision", "v1", True, "controllerrevisions"),
    _k("batch", "Job", "v1", True, "jobs"),
    _k("batch", "CronJob", "v1", True, "cronjobs", "cj"),
    _k("autoscaling", "HorizontalPodAutoscaler", "v1 v2", True, "horizontalpodautoscalers", "hpa"),
    _k("policy", "PodDisruptionBudget", "v1", True, "poddisruptionbudgets", "pdb"),
    _k("rbac.authorization.k8s.io", "Role", "v1", True, "roles"),
    _k("rbac.authorization.k8s.io", "RoleBinding", "v1", True, "rolebindings"),
    _k("rbac.authorization.k8s.io", "ClusterRole", "v1", False, "clusterroles"),
    _k("rbac.authorization.k8s.io", "ClusterRoleBinding", "v1", False, "clusterrolebindings"),
    _k("networking.k8s.io", "NetworkPolicy", "v1", True, "networkpolicies", "netpol"),
    _k("networking.k8s.io", "Ingress", "v1", True, "ingresses", "ing"),
    _k("networking.k8s.io", "IngressClass", "v1", False, "ingressclasses"),
    _k(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "v1",
        False,
        "customresourcedefinitions",
        "crd",
        "crds",
    ),
    _k(
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "v1",
        False,
        "mutatingwebhookconfigurations",
    ),
    _k(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "v1",
        False,
        "validatingwebhookconfigurations",
    ),
    _k(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        "v1",
        False,
        "validatingadmissionpolicies",
    ),
    _k(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "v1",
        False,
        "validatingadmissionpolicybindings",
    ),
    _k("storage.k8s.io", "StorageClass", "v1", False, "storageclasses", "sc"),
    _k("storage.k8s.io", "CSIDriver", "v1", False, "csidrivers"),
    _k("storage.k8s.io", "CSINode", "v1", False, "csinodes"),
    _k("storage.k8s.io", "CSIStorageCapacity", "v1", True, "csistoragecapacities"),
    _k("storage.k8s.io", "VolumeAttachment", "v1", False, "volumeattachments"),
    _k("scheduling.k8s.io", "PriorityClass", "v1", False, "priorityclasses", "pc"),
    _k("coordination.k8s.io", "Lease", "v1", True, "leases"),
    _k("apiregistration.k8s.io", "APIService", "v1", False, "apiservices"),
    _k("node.k8s.io", "RuntimeClass", "v1", False, "runtimeclasses"),
    _k(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "v1",
        False,
        "certificatesigningrequests",
        "csr",
    ),
    _k("events.k8s.io", "Event", "v1", True, "events", "ev"),
    _k("flowcontrol.apiserver.k8s.io", "FlowSchema", "v1 v1beta3", False, "flowschemas"),
    _k(
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        "v1 v1beta3",
        False,
        "prioritylevelconfigurations",
    ),
)

# API groups Kubernetes itself serves (or once served: `extensions`), and
# netemu's own: a kind of these groups that is not known is a typing mistake
# (`apps/v1 Deploymnet`), never a custom resource.
BUILTIN_GROUPS = frozenset(
    {info.group for info in BUILTIN_KINDS}
    | {"discovery.k8s.io", "extensions", "kubeproxy.config.k8s.io", "netemu"}
)

# Groups of files that describe how to build manifests rather than objects
# for the API server: skipped with a notice.
NOT_OBJECT_GROUPS = frozenset({"kustomize.config.k8s.io", "config.kubernetes.io"})


def split_api_version(api_version: str) -> tuple[str, str]:
    """`apps/v1` → ("apps", "v1"); `v1` → ("", "v1")."""
    group, _, version = api_version.rpartition("/")
    return group, version


def builtin_kind(group: str, kind: str) -> KindInfo | None:
    return next((i for i in BUILTIN_KINDS if i.group == group and i.kind == kind), None)


class GenericObject(K8sModel):
    """An object netemu keeps as written: apiVersion, kind and a validated
    ObjectMeta; every other top-level field (spec, data, rules, subjects, ...)
    is stored as given. Each kind is a subclass (see `generic_model`)."""

    model_config = ConfigDict(extra="allow")

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    namespaced: ClassVar[bool] = True
    plural: ClassVar[str] = ""
    short_names: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": self.metadata.to_dict(),
        }
        out.update(self.model_extra or {})
        return out


# kind → its subclass. One class per kind name, as the store keys objects by
# kind: two custom resources of one kind name in different groups share it.
_REGISTRY: dict[str, type[GenericObject]] = {}
_CLUSTER_SCOPED: set[str] = set()


def generic_model(
    kind: str, namespaced: bool, plural: str = "", short_names: tuple[str, ...] = ()
) -> type[GenericObject]:
    """The model of a generic kind, made on first use and registered so that
    the store's scope (netemu.controlplane.objects.is_namespaced), `get` and
    `delete` know it. A later call may change the scope (a CRD's `scope`)."""
    cls = _REGISTRY.get(kind)
    if cls is None:
        cls = create_model(kind, __base__=GenericObject, kind=(str, kind))
        _REGISTRY[kind] = cls
    cls.namespaced = namespaced
    if namespaced:
        _CLUSTER_SCOPED.discard(kind)
    else:
        _CLUSTER_SCOPED.add(kind)
    cls.plural = plural or cls.plural or default_plural(kind)
    cls.short_names = short_names or cls.short_names
    return cls


def generic_kinds() -> tuple[type[GenericObject], ...]:
    """Every generic kind registered in this process."""
    return tuple(_REGISTRY[k] for k in sorted(_REGISTRY))


def generic_kind(name: str) -> type[GenericObject] | None:
    """The registered generic kind `name` names, as kubectl resolves a
    resource: its plural, kind (any case), or a short name."""
    word = name.lower()
    for cls in generic_kinds():
        kind = cls.model_fields["kind"].default
        if word in (cls.plural, str(kind).lower(), *cls.short_names):
            return cls
    return None


def resource_kind(name: str) -> str | None:
    """The kind of stored objects `name` names (a registered kind, or a built-in
    one), or None."""
    cls = generic_kind(name) or builtin_generic_kind(name)
    return None if cls is None else str(cls.model_fields["kind"].default)


def is_cluster_scoped_generic(kind: str) -> bool:
    return kind in _CLUSTER_SCOPED


def builtin_generic_kind(name: str) -> type[GenericObject] | None:
    """The built-in untyped kind `name` names (plural, kind or short name), registered."""
    word = name.lower()
    for info in BUILTIN_KINDS:
        if word in (info.plural, info.kind.lower(), *info.short_names):
            return generic_model(info.kind, info.namespaced, info.plural, info.short_names)
    return None


def default_plural(kind: str) -> str:
    """The plural a CRD without one would most likely use (lowercase, English)."""
    word = kind.lower()
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"
