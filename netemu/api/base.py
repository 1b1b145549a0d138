"""Shared pieces of the Kubernetes-shaped resource types.

Every resource is a frozen pydantic model whose field names are the
Kubernetes JSON names (aliases) and whose unknown fields are rejected, as
`kubectl apply --validate=strict` rejects them. Fields that exist in the real
Kubernetes schema but have no effect in netemu are declared with type `Any`
so that ordinary manifests load unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class K8sModel(BaseModel):
    """Base of every API type: camelCase JSON names, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes JSON, omitting unset and empty fields as
        the API server's `omitempty` does."""
        pruned = _prune(self.model_dump(by_alias=True, exclude_none=True, mode="json"))
        assert isinstance(pruned, dict)
        return pruned


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _prune(item)
            if item in ({}, []):
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [_prune(item) for item in value]
    return value


class OwnerReference(K8sModel):
    api_version: str
    kind: str
    name: str
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(K8sModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: int | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    managed_fields: Any = None
    self_link: str | None = None


class LabelSelectorRequirement(K8sModel):
    key: str
    operator: str
    values: list[str] = Field(default_factory=list)


class LabelSelector(K8sModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label-selector semantics (an empty selector matches everything)."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True
