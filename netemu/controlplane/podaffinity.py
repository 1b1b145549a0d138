"""Required inter-pod affinity and anti-affinity, as kube-scheduler's
InterPodAffinity filter applies them
(pkg/scheduler/framework/plugins/interpodaffinity/filtering.go).

A term (`spec.affinity.podAffinity` / `podAntiAffinity`,
`requiredDuringSchedulingIgnoredDuringExecution`) selects pods by labels
(`labelSelector`; none selects no pod) in namespaces (`namespaces`, plus
those whose labels match `namespaceSelector`, where `{}` is every namespace;
with neither, the pod's own), and names a `topologyKey`: the node label
whose value makes a domain (`kubernetes.io/hostname`: each node its own).
`matchLabelKeys` / `mismatchLabelKeys` add `key In` / `key NotIn` the pod's
own value of each key to the selector, as the API server merges them.

For a pod and a node, three checks in this order, each with
kube-scheduler's reason:
- affinity: the node has every term's topology label, and in each term's
  domain runs a pod that matches all the terms. Exception: when no pod in
  the cluster matches them, a pod that matches its own terms may go
  anywhere the labels exist (the first of a group);
- anti-affinity: no pod matching a term runs in that term's domain;
- existing pods' anti-affinity: no placed pod has a term that matches this
  pod, in a domain this node shares.

Placed pods are the bound pods that are not terminal, and those bound
earlier in the same pass. Preferred terms only weigh nodes, which netemu's
even spreading replaces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from netemu.api.base import LabelSelector, LabelSelectorRequirement
from netemu.api.core import Node, Pod

REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"

TopologyPair = tuple[str, str]


@dataclass(frozen=True)
class PodTerm:
    """One required PodAffinityTerm, read relative to the pod that has it."""

    topology_key: str
    selector: LabelSelector | None  # None selects no pod
    namespaces: frozenset[str]
    namespace_selector: LabelSelector | None  # None selects no namespace by labels

    def matches(self, pod: Pod, namespace_labels: Mapping[str, dict[str, str]]) -> bool:
        if self.selector is None:
            return False
        namespace = pod.metadata.namespace or "default"
        in_namespace = namespace in self.namespaces or (
            self.namespace_selector is not None
            and self.namespace_selector.matches(namespace_labels.get(namespace, {}))
        )
        return in_namespace and self.selector.matches(pod.metadata.labels)


@dataclass(frozen=True)
class PodTerms:
    affinity: tuple[PodTerm, ...]
    anti_affinity: tuple[PodTerm, ...]


NO_TERMS = PodTerms((), ())


def required_terms(pod: Pod) -> PodTerms:
    """The pod's required podAffinity and podAntiAffinity terms."""
    affinity = pod.spec.affinity
    if not isinstance(affinity, dict):
        return NO_TERMS
    found = PodTerms(
        _terms(pod, affinity.get("podAffinity")), _terms(pod, affinity.get("podAntiAffinity"))
    )
    return found if found.affinity or found.anti_affinity else NO_TERMS


def _terms(pod: Pod, section: Any) -> tuple[PodTerm, ...]:
    if not isinstance(section, dict):
        return ()
    listed = section.get(REQUIRED)
    if not isinstance(listed, list):
        return ()
    return tuple(_term(pod, raw) for raw in listed if isinstance(raw, dict))


def _term(pod: Pod, raw: dict[str, Any]) -> PodTerm:
    namespace = pod.metadata.namespace or "default"
    names = raw.get("namespaces") or []
    namespace_selector = _selector(raw.get("namespaceSelector"))
    namespaces = frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()
    if not namespaces and raw.get("namespaceSelector") is None:
        namespaces = frozenset({namespace})
    selector = _selector(raw.get("labelSelector"))
    if selector is not None:
        selector = _with_label_keys(selector, raw, pod.metadata.labels)
    return PodTerm(str(raw.get("topologyKey") or ""), selector, namespaces, namespace_selector)


def _selector(raw: Any) -> LabelSelector | None:
    if not isinstance(raw, dict):
        return None
    try:
        return LabelSelector.model_validate(raw)
    except ValidationError:
        return None  # validation reports it; an unreadable selector selects nothing


def _with_label_keys(
    selector: LabelSelector, raw: dict[str, Any], labels: dict[str, str]
) -> LabelSelector:
    """matchLabelKeys / mismatchLabelKeys merged into the selector with the
    pod's own values, keys the pod lacks skipped (the API server's merge)."""
    added: list[LabelSelectorRequirement] = []
    for field, operator in (("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")):
        keys = raw.get(field) or []
        for key in keys if isinstance(keys, list) else []:
            if isinstance(key, str) and key in labels:
                added.append(
                    LabelSelectorRequirement(key=key, operator=operator, values=[labels[key]])
                )
    if not added:
        return selector
    return selector.model_copy(update={"match_expressions": [*selector.match_expressions, *added]})


class PlacedPods:
    """The pods on nodes, as the filter reads them: their nodes' labels, and
    the required anti-affinity of those that have some."""

    def __init__(
        self,
        node_labels: Mapping[str, dict[str, str]],
        namespace_labels: Mapping[str, dict[str, str]],
    ) -> None:
        self.node_labels = node_labels
        self.namespace_labels = namespace_labels
        self.pods: list[tuple[Pod, dict[str, str]]] = []
        self.with_anti_affinity: list[tuple[tuple[PodTerm, ...], dict[str, str]]] = []

    def add(self, pod: Pod, terms: PodTerms, node_name: str) -> None:
        labels = self.node_labels.get(node_name, {})
        self.pods.append((pod, labels))
        if terms.anti_affinity:
            self.with_anti_affinity.append((terms.anti_affinity, labels))

    def filter_for(self, pod: Pod, terms: PodTerms) -> PodAffinityFilter | None:
        """The filter for one pod (PreFilter's counts); None when neither the
        pod nor any placed pod has required terms."""
        if terms is NO_TERMS and not self.with_anti_affinity:
            return None
        namespaces = self.namespace_labels
        affinity: Counter[TopologyPair] = Counter()
        anti: Counter[TopologyPair] = Counter()
        existing: Counter[TopologyPair] = Counter()
        for other, labels in self.pods:
            if terms.affinity and all(t.matches(other, namespaces) for t in terms.affinity):
                _count(affinity, terms.affinity, labels)
            _count(anti, [t for t in terms.anti_affinity if t.matches(other, namespaces)], labels)
        for other_terms, labels in self.with_anti_affinity:
            _count(existing, [t for t in other_terms if t.matches(pod, namespaces)], labels)
        matches_itself = bool(terms.affinity) and all(
            t.matches(pod, namespaces) for t in terms.affinity
        )
        return PodAffinityFilter(terms, affinity, anti, existing, matches_itself)


def _count(counts: Counter[TopologyPair], terms: Iterable[PodTerm], labels: dict[str, str]) -> None:
    for term in terms:
        if term.topology_key in labels:
            counts[(term.topology_key, labels[term.topology_key])] += 1


@dataclass(frozen=True)
class PodAffinityFilter:
    terms: PodTerms
    affinity: Counter[TopologyPair]
    anti_affinity: Counter[TopologyPair]
    existing_anti_affinity: Counter[TopologyPair]
    matches_itself: bool

    def reason(self, node: Node) -> str | None:
        """Why the pod may not run on the node, or None if it may."""
        labels = node.metadata.labels
        if self.terms.affinity:
            if any(t.topology_key not in labels for t in self.terms.affinity):
                return REASON_AFFINITY
            found = all(
                self.affinity[(t.topology_key, labels[t.topology_key])] > 0
                for t in self.terms.affinity
            )
            # The first of a group that selects itself: nothing matches anywhere yet.
            first_of_group = not self.affinity and self.matches_itself
            if not found and not first_of_group:
                return REASON_AFFINITY
        for term in self.terms.anti_affinity:
            key = term.topology_key
            if key in labels and self.anti_affinity[(key, labels[key])] > 0:
                return REASON_ANTI_AFFINITY
        if any(self.existing_anti_affinity[pair] > 0 for pair in labels.items()):
            return REASON_EXISTING_ANTI_AFFINITY
        return None
