"""Validation as the API server does it for real bundles: kinds stored but not
emulated, namespaces that must exist, single-stack IP families, every problem
of every document at once, the built-in Lab, and checks against a running lab's
objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.api.config import DEFAULT_LAB_NOTICE, Lab
from netemu.api.core import Namespace, Service
from netemu.api.errors import InputError
from netemu.api.load import Loaded, Origin, load_text
from netemu.api.validate import load_and_validate, validate


def errors(tmp_path: Path, text: str, *, default_lab: bool = False) -> list[str]:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(InputError) as caught:
        load_and_validate([tmp_path / "x.yaml"], default_lab=default_lab)
    prefix = f"{tmp_path}/"
    return [str(d).removeprefix(prefix) for d in caught.value.diagnostics]


SERVICE_IN_SHOP = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: shop
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
"""


def test_a_namespace_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    assert errors(tmp_path, SERVICE_IN_SHOP) == [
        'x.yaml:5: ServiceAccount/web: metadata.namespace: namespaces "shop" not found: '
        "define the Namespace in the input, or pass --create-namespaces",
        'x.yaml:9: Service/web: metadata.namespace: namespaces "shop" not found: '
        "define the Namespace in the input, or pass --create-namespaces",
    ]


def test_a_namespace_in_the_input_or_created_on_request_is_fine(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(SERVICE_IN_SHOP)
    assert len(load_and_validate([tmp_path / "x.yaml"], create_namespaces=True)) == 2
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    assert len(load_and_validate([tmp_path])) == 3


def test_system_namespaces_always_exist(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "".join(
            f"---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: a, namespace: {ns}}}\n"
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease")
        )
    )
    assert len(load_and_validate([tmp_path / "x.yaml"])) == 4


def test_ipv6_and_dual_stack_services_are_refused_in_an_ipv4_lab(tmp_path: Path) -> None:
    text = """\
apiVersion: v1
kind: Service
metadata: {name: six}
spec:
  ipFamilies: [IPv6]
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: dual}
spec:
  ipFamilyPolicy: RequireDualStack
  ports: [{port: 80}]
"""
    # The API server's words (initIPFamilyFields, pkg/registry/core/service/storage/alloc.go).
    assert errors(tmp_path, text, default_lab=True) == [
        'x.yaml:5: Service/six: spec.ipFamilies[0]: Invalid value: "IPv6": not configured on '
        "this cluster",
        'x.yaml:12: Service/dual: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this '
        "cluster is not configured for dual-stack services",
    ]


def test_a_schema_error_does_not_hide_other_documents_errors(tmp_path: Path) -> None:
    text = """\
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{port: 80, bogus: 1}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {ports: [{port: 70000}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: a/b}
"""
    assert errors(tmp_path, text) == [
        "x.yaml:4: Service/a: spec.ports[0].bogus: unknown field",
        "x.yaml:9: Service/b: spec.ports[0].port: must be between 1 and 65535, inclusive",
        "x.yaml:13: Role/a/b: metadata.name: may not contain '/'",
    ]


def test_generic_objects_names_are_checked(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: Web_1}\n"
    [message] = errors(tmp_path, text)
    assert message.startswith(
        "x.yaml:3: ServiceAccount/Web_1: metadata.name: a lowercase RFC 1123 subdomain"
    )


def test_without_a_lab_the_built_in_lab_is_used_and_said(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n"
    )
    notes: list[str] = []
    loaded = load_and_validate([tmp_path / "x.yaml"], notes=notes, default_lab=True)
    labs = [item.obj for item in loaded if isinstance(item.obj, Lab)]
    assert [n.name for n in labs[0].spec.nodes] == ["node-1", "node-2"]
    assert [c.name for c in labs[0].spec.external_clients] == ["client"]
    assert notes == [DEFAULT_LAB_NOTICE]
    # With Nodes of its own, the input keeps them and gets no Lab.
    (tmp_path / "n.yaml").write_text("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n")
    loaded = load_and_validate([tmp_path], default_lab=True)
    assert not any(isinstance(item.obj, Lab) for item in loaded)


def test_applied_objects_are_checked_against_the_running_labs_services() -> None:
    lab = Lab.model_validate(
        {
            "apiVersion": "netemu/v1alpha1",
            "kind": "Lab",
            "metadata": {"name": "t"},
            "spec": {"nodes": [{"name": "n1", "underlayIP": "192.168.56.11"}]},
        }
    )
    running = Service.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "old", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.50",
                "ports": [{"port": 80, "nodePort": 30080}],
            },
        }
    )
    shop = Namespace.model_validate(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    )
    where = Origin("lab t", 0)
    context = [Loaded(lab, where), Loaded(running, where), Loaded(shop, where)]
    text = """\
apiVersion: v1
kind: Service
metadata: {name: new, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.50
  ports: [{port: 80, nodePort: 30080}]
"""
    loaded, problems = load_text(text, "new.yaml")
    assert problems == []
    assert [str(d) for d in validate(loaded, context)] == [
        "new.yaml:6: Service/new: spec.clusterIP: 10.96.0.50 is already the cluster IP of "
        "Service/old spec.clusterIP (lab t:0)",
        "new.yaml:7: Service/new: spec.ports[0].nodePort: 30080 is already used by "
        "Service/old spec.ports[0].nodePort (lab t:0)",
    ]
    # Re-applying the running Service itself (same namespace and name) is no clash.
    again = text.replace("name: new, namespace: shop", "name: old")
    loaded, _ = load_text(again, "old.yaml")
    assert validate(loaded, context) == []
