"""The CLI on real bundles: kinds stored but not emulated listed by `get -f`,
notices and warnings on stderr, --create-namespaces, and `trace -n` with a
port name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netemu.cli import main

BUNDLE = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "shop:reader"}
rules: []
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: carts.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Cart, plural: carts, shortNames: [ct]}
  versions: [{name: v1, served: true, storage: true}]
---
apiVersion: example.com/v1
kind: Cart
metadata: {name: c1, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: front, namespace: shop, labels: {app: web}}
spec: {containers: [{name: web, image: x, ports: [{containerPort: 8080, name: web}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: web}, {name: metrics, port: 9090}]
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "app.yaml").write_text(BUNDLE)
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    return tmp_path


def test_validate_warns_once_per_kind_and_exits_0(bundle: Path) -> None:
    result = invoke("validate", "-f", str(bundle))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: Cart (example.com/v1, custom resource): 1 object stored, not emulated",
        "warning: ClusterRole (rbac.authorization.k8s.io/v1): 1 object stored, not emulated",
        "warning: CustomResourceDefinition (apiextensions.k8s.io/v1): 1 object stored, "
        "not emulated",
        "warning: ServiceAccount (v1): 1 object stored, not emulated",
        "notice: no Lab in the input: using the built-in lab (nodes node-1 192.168.56.11 and "
        "node-2 192.168.56.12, external client 'client' 192.168.56.20)",
    ]


def test_missing_namespace_is_an_error_unless_created(bundle: Path) -> None:
    (bundle / "ns.yaml").unlink()
    result = invoke("validate", "-f", str(bundle))
    assert result.exit_code == 2
    assert (
        f'{bundle / "app.yaml"}:3: ServiceAccount/web: metadata.namespace: namespaces "shop" '
        "not found: define the Namespace in the input, or pass --create-namespaces"
    ) in result.stderr.splitlines()
    created = invoke("validate", "--create-namespaces", "-f", str(bundle))
    assert created.exit_code == 0, created.stderr
    listed = invoke("get", "ns", "--create-namespaces", "-f", str(bundle))
    assert "shop" in listed.stdout


@pytest.mark.parametrize("word", ["serviceaccounts", "sa", "ServiceAccount"])
def test_get_lists_a_built_in_kind_by_any_of_its_names(bundle: Path, word: str) -> None:
    result = invoke("get", word, "-f", str(bundle))
    assert result.exit_code == 0, result.stderr
    head, row = result.stdout.splitlines()
    assert head.split() == ["NAMESPACE", "NAME", "AGE"]
    assert row.split()[:2] == ["shop", "web"]


def test_get_lists_custom_resources_by_their_crds_names(bundle: Path) -> None:
    for word in ("carts", "ct", "cart"):
        result = invoke("get", word, "-f", str(bundle), "-n", "shop")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.splitlines()[0].split() == ["NAME", "AGE"]
        assert result.stdout.splitlines()[1].split()[0] == "c1"
    listed = json.loads(invoke("get", "clusterroles", "-f", str(bundle), "-o", "json").stdout)
    [role] = listed["items"]
    assert role["metadata"]["name"] == "shop:reader" and role["rules"] == []
    assert "namespace" not in role["metadata"]


def test_get_an_unknown_resource_is_exit_2(bundle: Path) -> None:
    result = invoke("get", "frobnicators", "-f", str(bundle))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        'error: the server doesn\'t have a resource type "frobnicators"'
    )


def test_trace_offline_takes_a_namespace_and_port_names(bundle: Path) -> None:
    result = invoke(
        "trace", "--offline", "-f", str(bundle), "-n", "shop", "front", "web", "--port", "http"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "pod shop/front → Service shop/web port 80/TCP (ClusterIP)"
    )
    to_pod = invoke(
        "trace", "--offline", "-f", str(bundle), "-n", "shop", "node-1", "front", "--port", "web"
    )
    assert to_pod.exit_code == 0, to_pod.stderr
    assert ":8080 on node-1" in to_pod.stdout.splitlines()[1]
    wrong = invoke(
        "trace", "--offline", "-f", str(bundle), "-n", "shop", "front", "web", "--port", "nope"
    )
    assert wrong.exit_code == 2
    assert wrong.stderr.splitlines()[-1] == (
        "error: --port 'nope': Service shop/web has no TCP port of that name; its port "
        "names: http, metrics"
    )
