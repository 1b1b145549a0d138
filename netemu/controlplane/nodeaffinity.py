"""Which nodes a pod may run on by their labels and name: its nodeSelector and
the required part of its node affinity, as kube-scheduler's NodeAffinity
filter and the DaemonSet controller ask it
(k8s.io/component-helpers/scheduling/corev1/nodeaffinity, GetRequiredNodeAffinity).

- `spec.nodeSelector`: every key present with the same value.
- `spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`:
  its nodeSelectorTerms are ORed; within a term, every matchExpressions and
  matchFields requirement must hold. A term with neither matches no node.
- Operators on labels: In, NotIn (also true without the label), Exists,
  DoesNotExist, Gt and Lt (the label's value and the single requirement
  value read as base-10 integers; a value that is no integer, or a missing
  label, does not match). matchFields: `metadata.name` In or NotIn.
- A term that cannot be read (an unknown operator, Gt without its one value)
  matches no node, as the scheduler's lazy-error selector; validation
  (netemu.api.validate) refuses such input before it gets here.

preferredDuringSchedulingIgnoredDuringExecution only weighs nodes, which
netemu's spreading replaces (netemu.controlplane.scheduler).
"""

from __future__ import annotations

from typing import Any

from netemu.api.base import requirement_holds
from netemu.api.core import Node, PodSpec

NAME_FIELD = "metadata.name"


def required_node_selector_terms(affinity: Any) -> list[Any] | None:
    """The pod's required nodeSelectorTerms; None when it has none."""
    if not isinstance(affinity, dict):
        return None
    node_affinity = affinity.get("nodeAffinity")
    if not isinstance(node_affinity, dict):
        return None
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not isinstance(required, dict):
        return None
    terms = required.get("nodeSelectorTerms")
    return terms if isinstance(terms, list) else []


def node_fits(spec: PodSpec, node: Node) -> bool:
    """Whether the node's labels and name satisfy the pod's nodeSelector and
    required node affinity."""
    labels = node.metadata.labels
    if any(labels.get(key) != value for key, value in spec.node_selector.items()):
        return False
    terms = required_node_selector_terms(spec.affinity)
    if terms is None:
        return True
    return any(term_matches(term, labels, node.metadata.name or "") for term in terms)


def term_matches(term: Any, labels: dict[str, str], name: str) -> bool:
    if not isinstance(term, dict):
        return False
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not isinstance(expressions, list) or not isinstance(fields, list):
        return False
    if not expressions and not fields:
        return False
    return all(label_requirement_holds(r, labels) for r in expressions) and all(
        field_requirement_holds(r, name) for r in fields
    )


def _values(requirement: dict[str, Any]) -> list[str]:
    values = requirement.get("values") or []
    return [str(v) for v in values] if isinstance(values, list) else []


def label_requirement_holds(requirement: Any, labels: dict[str, str]) -> bool:
    """A matchExpressions requirement; one whose values do not fit its
    operator (In or NotIn without values, Exists or DoesNotExist with some,
    Gt or Lt without exactly one) matches nothing, as the scheduler's
    lazy-error selector."""
    if not isinstance(requirement, dict):
        return False
    key, operator = requirement.get("key"), requirement.get("operator")
    values = _values(requirement)
    if not isinstance(key, str) or not isinstance(operator, str):
        return False
    if operator in ("In", "NotIn") and not values:
        return False
    if operator in ("Exists", "DoesNotExist") and values:
        return False
    if operator in ("Gt", "Lt") and len(values) != 1:
        return False
    return requirement_holds(key, operator, values, labels)


def field_requirement_holds(requirement: Any, name: str) -> bool:
    if not isinstance(requirement, dict) or requirement.get("key") != NAME_FIELD:
        return False
    values = _values(requirement)
    if len(values) != 1:
        return False
    if requirement.get("operator") == "In":
        return name == values[0]
    if requirement.get("operator") == "NotIn":
        return name != values[0]
    return False
