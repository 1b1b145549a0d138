"""Shared pieces of the Kubernetes-shaped resource types.

Every resource is a frozen pydantic model whose field names are the
Kubernetes JSON names (aliases) and whose unknown fields are rejected, as
`kubectl apply --validate=strict` rejects them. Fields that exist in the real
Kubernetes schema but have no effect in netemu are declared with type `Any`
so that ordinary manifests load unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo


class K8sModel(BaseModel):
    """Base of every API type: camelCase JSON names, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
    )

    # Fields serialised even when empty: Go's encoding/json omits an empty
    # slice or map only with `omitempty`, and a few Kubernetes fields have
    # none (EndpointSlice.endpoints); clients such as the official Python
    # client reject the object when such a required field is missing.
    keep_empty: ClassVar[frozenset[str]] = frozenset()
    # Booleans with `omitempty` that netemu keeps as plain bools: false is
    # left out, as the API server leaves it out (`hostNetwork`).
    omit_false: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes JSON, as the API server writes it: unset
        fields, empty lists and empty maps are omitted (`omitempty`), but a
        nested object is kept even when all its fields are empty, since
        encoding/json never omits a struct (`status: {loadBalancer: {}}`,
        `securityContext: {}`)."""
        dumped = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        pruned = _prune_model(self, dumped)
        return pruned


def _prune_model(model: K8sModel, dumped: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if key not in dumped:
            continue
        value = getattr(model, name)
        out_value = _prune_value(value, dumped[key])
        # Empty lists and typed maps are omitted. An empty object in a
        # free-form field stays: it stands for a Go struct that was set
        # (`securityContext: {}`, `resources: {}`).
        empty = out_value == [] or (out_value == {} and isinstance(value, dict) and _is_map(field))
        if empty and name not in model.keep_empty:
            continue
        if out_value is False and name in model.omit_false:
            continue
        out[key] = out_value
    return out


def _is_map(field: FieldInfo) -> bool:
    return get_origin(field.annotation) is dict or field.annotation is dict


def _prune_value(value: Any, dumped: Any) -> Any:
    if isinstance(value, K8sModel) and isinstance(dumped, dict):
        return _prune_model(value, dumped)
    if isinstance(value, list | tuple) and isinstance(dumped, list):
        return [_prune_value(v, d) for v, d in zip(value, dumped, strict=True)]
    if isinstance(value, dict) and isinstance(dumped, dict):
        if any(isinstance(v, K8sModel) for v in value.values()):
            return {k: _prune_value(value[k], d) for k, d in dumped.items()}
        # Free-form JSON (a map of strings, or a field netemu keeps as given):
        # kept as the user wrote it, as the API server stores it.
        return dumped
    return dumped


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
        return all(
            requirement_holds(req.key, req.operator, req.values, labels)
            for req in self.match_expressions
        )


def requirement_holds(key: str, operator: str, values: list[str], labels: dict[str, str]) -> bool:
    """One label requirement against a set of labels, as Go's
    labels.Requirement.Matches: In (the label present, its value listed),
    NotIn (also true without the label), Exists, DoesNotExist, and Gt/Lt
    (the label's value and the first listed value read as base-10 integers;
    a label or value that is no integer does not match). A LabelSelector
    takes only the first four (validation refuses the others); node
    selectors take all six."""
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        have, bound = _int64(labels[key]), _int64(values[0])
        if have is None or bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _int64(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 10, 64): an optional sign and decimal digits."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits.isascii() or not digits.isdigit():
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None
