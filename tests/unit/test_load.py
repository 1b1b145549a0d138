"""Loading manifests: typed objects, line numbers, and every structural error."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.api.config import Lab
from netemu.api.core import ConfigMap, Service
from netemu.api.errors import Diagnostic, InputError
from netemu.api.generic import GenericObject, generic_kind
from netemu.api.load import load_paths, load_text, stored_not_emulated

KINDS_READ = (
    "ConfigMap, CronJob, DaemonSet, Deployment, EndpointSlice, Endpoints, Ingress, IngressClass, "
    "Job, KubeProxyConfiguration, Lab, Namespace, Node, Pod, ReplicaSet, ReplicationController, "
    "Secret, Service, StatefulSet"
)


def problems(text: str) -> list[str]:
    """The structural diagnostics of a text, as printed; no document may load."""
    loaded, found = load_text(text, "x.yaml")
    assert loaded == []
    return [str(d) for d in found]


# ---------------------------------------------------------------- what loads


def test_documents_load_with_the_line_of_every_field() -> None:
    text = (
        "# a comment\n"  # 1
        "---\n"  # 2
        "apiVersion: v1\n"  # 3
        "kind: Service\n"  # 4
        "metadata:\n"  # 5
        "  name: web\n"  # 6
        "spec:\n"  # 7
        "  ports:\n"  # 8
        "    - name: http\n"  # 9
        "      port: 80\n"  # 10
        "---\n"  # 11
        "---\n"  # 12: an empty document is skipped
        "apiVersion: netemu/v1alpha1\n"  # 13
        "kind: Lab\n"  # 14
        "metadata: {name: lab}\n"  # 15
        "spec:\n"  # 16
        "  nodes: [{name: n1, underlayIP: 192.168.56.11}]\n"  # 17
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    assert [item.ref for item in loaded] == ["Service/web", "Lab/lab"]
    svc, lab = loaded
    assert isinstance(svc.obj, Service) and svc.obj.spec.ports[0].port == 80
    assert isinstance(lab.obj, Lab) and lab.obj.spec.nodes[0].name == "n1"
    assert svc.origin.line == 3
    assert svc.origin.line_of(("spec", "ports", 0)) == 9
    assert svc.origin.line_of(("spec", "ports", 0, "port")) == 10
    # A field that was not written: the line of its deepest written parent.
    assert svc.origin.line_of(("spec", "ports", 0, "targetPort")) == 9
    assert svc.origin.line_of(("spec", "clusterIP")) == 7
    assert lab.origin.line == 13
    assert lab.origin.line_of(("spec", "nodes", 0, "underlayIP")) == 17
    assert svc.diagnostic(("spec", "ports", 0, "port"), "bad") == Diagnostic(
        "x.yaml", 10, "Service/web", "spec.ports[0].port", "bad"
    )
    assert str(svc.diagnostic((), "whole object")) == "x.yaml:3: Service/web: whole object"


# ---------------------------------------------------------------- YAML errors


def test_yaml_syntax_error() -> None:
    text = "apiVersion: v1\nkind: Service\n  metadata: x\n"
    assert problems(text) == ["x.yaml:3: invalid YAML: mapping values are not allowed here"]


def test_yaml_tab_indentation() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n\tname: a\n"
    assert problems(text) == [
        "x.yaml:4: invalid YAML: found character '\\t' that cannot start any token"
    ]


def test_duplicate_field_is_reported_at_the_second_key() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n"
    loaded, found = load_text(text, "x.yaml")
    assert [str(d) for d in found] == ["x.yaml:5: Namespace/b: metadata.name: duplicate field"]
    assert [item.ref for item in loaded] == ["Namespace/b"]


def test_control_character_is_a_yaml_error() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\x07\n"
    assert problems(text) == [
        "x.yaml:4: invalid YAML: unacceptable character #x0007: special characters are not allowed"
    ]


def test_unknown_tag_is_a_yaml_error_and_other_documents_still_load() -> None:
    text = (
        "apiVersion: v1\nkind: Namespace\nmetadata: !secret {name: a}\n"
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n"
    )
    loaded, found = load_text(text, "x.yaml")
    assert [str(d) for d in found] == [
        "x.yaml:3: invalid YAML: could not determine a constructor for the tag '!secret'"
    ]
    assert [item.ref for item in loaded] == ["Namespace/b"]


def test_unhashable_key_is_a_yaml_error() -> None:
    text = "apiVersion: v1\nkind: Namespace\n? [a, b]\n: c\n"
    assert problems(text) == ["x.yaml:3: invalid YAML: found unhashable key"]


def test_recursive_alias_is_an_error_not_a_crash() -> None:
    # go-yaml (and so Kubernetes) refuses it too: "anchor 'm' value contains itself".
    text = "apiVersion: v1\nkind: Namespace\nmetadata: &m\n  name: a\n  labels: {x: *m}\n"
    assert problems(text) == [
        "x.yaml:5: invalid YAML: an alias refers to a node that contains it (recursive data)"
    ]


# ---------------------------------------------------------------- identity errors


def test_a_document_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["x.yaml:1: a manifest must be a mapping, got list"]


def test_kind_and_api_version_are_required() -> None:
    assert problems("apiVersion: v1\nmetadata: {name: a}\n") == [
        "x.yaml:1: <no kind>/a: kind: required field missing"
    ]
    assert problems("kind: Service\nmetadata: {name: a}\n") == [
        "x.yaml:1: Service/a: apiVersion: required field missing"
    ]


def test_unknown_api_version_of_a_known_kind() -> None:
    assert problems("apiVersion: apps/v1\nkind: Service\nmetadata: {name: a}\n") == [
        "x.yaml:1: Service/a: apiVersion: unknown apiVersion 'apps/v1' for kind Service; "
        "expected 'v1'"
    ]


def test_a_misspelt_kind_of_a_known_group_is_an_error_with_a_suggestion() -> None:
    assert problems("apiVersion: v1\nkind: Sevrice\nmetadata: {name: a}\n") == [
        'x.yaml:2: Sevrice/a: kind: no matches for kind "Sevrice" in version "v1"; '
        "did you mean Service?"
    ]
    assert problems("apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: a}\n") == [
        'x.yaml:2: Deploymnet/a: kind: no matches for kind "Deploymnet" in version "apps/v1"; '
        "did you mean Deployment?"
    ]
    assert problems(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Widget\nmetadata: {name: a}\n"
    ) == [
        'x.yaml:2: Widget/a: kind: no matches for kind "Widget" in version '
        '"rbac.authorization.k8s.io/v1"'
    ]


def test_a_version_no_longer_served_is_an_error() -> None:
    assert problems("apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: a}\n") == [
        "x.yaml:1: Deployment/a: apiVersion: unknown apiVersion 'apps/v1beta1' for kind "
        "Deployment; expected 'apps/v1'"
    ]
    assert problems(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: a}\n"
    ) == [
        'x.yaml:1: PodDisruptionBudget/a: apiVersion: no matches for kind "PodDisruptionBudget" '
        'in version "policy/v1beta1": this version is not served (removed from Kubernetes); '
        "expected 'policy/v1'"
    ]


def test_kinds_not_emulated_load_as_generic_objects_kept_as_written() -> None:
    text = (
        "apiVersion: rbac.authorization.k8s.io/v1\n"
        "kind: ClusterRole\n"
        "metadata: {name: 'system:viewer', labels: {a: b}}\n"
        "rules: [{apiGroups: [''], resources: [pods], verbs: [get]}]\n"
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    obj = loaded[0].obj
    assert isinstance(obj, GenericObject)
    assert type(obj).namespaced is False
    assert obj.to_dict() == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:viewer", "labels": {"a": "b"}},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }


def test_kustomization_and_helm_values_are_skipped_with_a_notice(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n"
    )
    (tmp_path / "values.yaml").write_text("replicaCount: 2\nimage: {tag: x}\n")
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n")
    notes: list[str] = []
    loaded = load_paths([tmp_path], notes)
    assert [item.ref for item in loaded] == ["ServiceAccount/a"]
    assert notes == [
        f"notice: {tmp_path / 'kustomization.yaml'}:1: skipped: Kustomization "
        "(kustomize.config.k8s.io/v1beta1) describes how to build manifests",
        f"notice: {tmp_path / 'values.yaml'}:1: skipped: not a Kubernetes object (no kind and "
        "no metadata)",
        "warning: ServiceAccount (v1): 1 object stored, not emulated",
    ]


def test_a_document_of_a_known_api_group_without_its_kind_is_an_error(tmp_path: Path) -> None:
    # A KubeProxyConfiguration whose kind was left out is not skipped as
    # data: its apiVersion names a group netemu reads. A Helm Chart.yaml's
    # bare apiVersion still is data.
    (tmp_path / "proxy.yaml").write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nbindAddress: '::'\n"
    )
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: chart\nversion: 1.0.0\n")
    notes: list[str] = []
    with pytest.raises(InputError) as caught:
        load_paths([tmp_path], notes)
    assert "proxy.yaml:1: <no kind>/<unnamed>: kind: required field missing" in str(caught.value)
    assert notes == [
        f"notice: {tmp_path / 'Chart.yaml'}:1: skipped: not a Kubernetes object (no kind and "
        "no metadata)"
    ]


def test_custom_resources_take_scope_and_versions_from_their_crd(tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(
        "apiVersion: apiextensions.k8s.io/v1\n"
        "kind: CustomResourceDefinition\n"
        "metadata: {name: gizmos.example.com}\n"
        "spec:\n"
        "  group: example.com\n"
        "  scope: Cluster\n"
        "  names: {kind: Gizmo, plural: gizmos, shortNames: [gz]}\n"
        "  versions: [{name: v1, served: true, storage: true}]\n"
        "---\n"
        "apiVersion: example.com/v1\n"
        "kind: Gizmo\n"
        "metadata: {name: g}\n"
        "---\n"
        "apiVersion: example.com/v2\n"
        "kind: Gizmo\n"
        "metadata: {name: h}\n"
        "---\n"
        "apiVersion: elsewhere.io/v1\n"
        "kind: Thing\n"
        "metadata: {name: t}\n"
    )
    with pytest.raises(InputError) as caught:
        load_paths([tmp_path])
    assert [str(d) for d in caught.value.diagnostics] == [
        f'{tmp_path / "crd.yaml"}:14: Gizmo/h: apiVersion: no matches for kind "Gizmo" in '
        "version \"example.com/v2\": its CustomResourceDefinition serves 'example.com/v1'"
    ]
    assert generic_kind("gz") is not None and generic_kind("gz").namespaced is False  # type: ignore[union-attr]
    assert generic_kind("things") is not None and generic_kind("things").namespaced  # type: ignore[union-attr]


def test_kind_that_is_not_a_string() -> None:
    assert problems("apiVersion: v1\nkind: [Service]\n") == [
        f"x.yaml:2: ['Service']/<unnamed>: kind: unknown kind ['Service']; netemu reads "
        f"{KINDS_READ}"
    ]


# ---------------------------------------------------------------- schema errors


def test_unknown_field() -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n"
        "    - port: 80\n      nodeport: 30080\n"
    )
    assert problems(text) == ["x.yaml:8: Service/a: spec.ports[0].nodeport: unknown field"]


def test_wrong_type() -> None:
    text = (
        'apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n    - port: "80"\n'
    )
    assert problems(text) == [
        "x.yaml:7: Service/a: spec.ports[0].port: expected an integer, got '80'"
    ]
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n"
        "    - port: 80\n      targetPort: [1]\n"
    )
    assert problems(text) == [
        "x.yaml:8: Service/a: spec.ports[0].targetPort: expected an integer or a string, got a list"
    ]


def test_label_key_read_as_a_number_points_at_its_line() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    1: b\n"
    assert problems(text) == ["x.yaml:6: Namespace/a: metadata.labels.1: expected a string, got 1"]


def test_unsupported_value() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  type: Nodeport\n"
    assert problems(text) == [
        "x.yaml:6: Service/a: spec.type: unsupported value 'Nodeport': expected 'ClusterIP', "
        "'NodePort', 'LoadBalancer' or 'ExternalName'"
    ]


def test_required_field_missing_points_at_its_parent() -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\nspec:\n  template:\n"
        "    spec:\n      containers: [{name: c}]\n"
    )
    assert problems(text) == ["x.yaml:5: Deployment/a: spec.selector: required field missing"]


def test_every_error_of_a_document_is_reported() -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  nme: b\nspec:\n  ports:\n"
        "    - port: x\n  clusterIP: 5\n"
    )
    assert problems(text) == [
        "x.yaml:5: Service/a: metadata.nme: unknown field",
        "x.yaml:8: Service/a: spec.ports[0].port: expected an integer, got 'x'",
        "x.yaml:9: Service/a: spec.clusterIP: expected a string, got 5",
    ]


# ---------------------------------------------------------------- files


def test_load_paths_reads_directories_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.yml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n"
    )
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n")
    (tmp_path / "c.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "three"}}'
    )
    (tmp_path / "notes.txt").write_text("not a manifest: {")
    loaded = load_paths([tmp_path])
    assert [item.ref for item in loaded] == ["Namespace/one", "Namespace/two", "Namespace/three"]
    assert loaded[1].origin.file == str(tmp_path / "b" / "two.yml")


def test_load_paths_collects_problems_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: Secrte\n")
    (tmp_path / "good.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00kind")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(InputError) as caught:
        load_paths([tmp_path, missing])
    assert [str(d) for d in caught.value.diagnostics] == [
        f'{tmp_path / "bad.yaml"}:2: Secrte/<unnamed>: kind: no matches for kind "Secrte" in '
        'version "v1"; did you mean Secret?',
        f"{tmp_path / 'binary.yaml'}:1: not UTF-8 text: byte 0xff at column 1 (invalid start "
        "byte); manifests are UTF-8 text",
        f"{missing}:0: no such file or directory",
    ]


def test_a_custom_resource_without_its_crd_is_kept_with_a_warning() -> None:
    loaded, found = load_text("apiVersion: other.io/v1\nkind: Gadget\nmetadata: {name: g}\n", "x")
    assert found == []
    assert stored_not_emulated(loaded) == [
        "warning: Gadget (other.io/v1, custom resource without its CustomResourceDefinition "
        "in the input): 1 object stored, not emulated"
    ]


def test_null_is_a_field_left_out_as_the_api_server_decodes_it() -> None:
    # `data: null` as kustomize renders an empty map; a required field given null is missing.
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: null}\ndata: null\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n"
        "  selector: null\n  ports: [{port: 80, targetPort: null}]\n"
    )
    loaded, found = load_text(text, "x.yaml")
    assert found == []
    config, service = (item.obj for item in loaded)
    assert isinstance(config, ConfigMap) and config.data == {}
    assert isinstance(service, Service) and service.spec.selector is None
    assert problems("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: null}\n")
