"""Workload types: apps/v1 Deployment, ReplicaSet, DaemonSet, StatefulSet, and
the core v1 ReplicationController (the ReplicaSet's predecessor, run by the
same controller code)."""

from __future__ import annotations

from typing import Any, Literal

from netemu.api.base import K8sModel, LabelSelector, ObjectMeta
from netemu.api.core import PodTemplateSpec


class DeploymentSpec(K8sModel):
    selector: LabelSelector
    template: PodTemplateSpec
    replicas: int | None = None
    strategy: Any = None
    min_ready_seconds: Any = None
    revision_history_limit: Any = None
    progress_deadline_seconds: Any = None
    paused: Any = None


class Deployment(K8sModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: Any = None


class ReplicaSetSpec(K8sModel):
    selector: LabelSelector
    template: PodTemplateSpec
    replicas: int | None = None
    min_ready_seconds: Any = None


class ReplicaSet(K8sModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ReplicaSet"] = "ReplicaSet"
    metadata: ObjectMeta
    spec: ReplicaSetSpec
    status: Any = None


class DaemonSetSpec(K8sModel):
    selector: LabelSelector
    template: PodTemplateSpec
    update_strategy: Any = None
    min_ready_seconds: Any = None
    revision_history_limit: Any = None


class DaemonSet(K8sModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["DaemonSet"] = "DaemonSet"
    metadata: ObjectMeta
    spec: DaemonSetSpec
    status: Any = None


class StatefulSetOrdinals(K8sModel):
    start: int = 0


class StatefulSetSpec(K8sModel):
    selector: LabelSelector
    template: PodTemplateSpec
    service_name: str | None = None
    replicas: int | None = None
    pod_management_policy: Literal["OrderedReady", "Parallel"] | None = None
    ordinals: StatefulSetOrdinals | None = None
    update_strategy: Any = None
    volume_claim_templates: Any = None
    revision_history_limit: Any = None
    min_ready_seconds: Any = None
    persistent_volume_claim_retention_policy: Any = None


class StatefulSet(K8sModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["StatefulSet"] = "StatefulSet"
    metadata: ObjectMeta
    spec: StatefulSetSpec
    status: Any = None


class ReplicationControllerSpec(K8sModel):
    # A map, not a LabelSelector; empty or missing means the template's labels
    # (SetDefaults_ReplicationController).
    selector: dict[str, str] | None = None
    template: PodTemplateSpec | None = None
    replicas: int | None = None
    min_ready_seconds: Any = None

    def effective_selector(self) -> dict[str, str]:
        if self.selector:
            return self.selector
        return dict(self.template.metadata.labels) if self.template is not None else {}


class ReplicationController(K8sModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["ReplicationController"] = "ReplicationController"
    metadata: ObjectMeta
    spec: ReplicationControllerSpec
    status: Any = None


Workload = Deployment | ReplicaSet | DaemonSet | StatefulSet
