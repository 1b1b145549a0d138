"""`netemu get ingress` and `get ingressclass`, as kubectl's printIngress and
printIngressClass print them."""

from __future__ import annotations

import datetime

from netemu.api.networking import Ingress, IngressClass
from netemu.cli_table import render, table
from netemu.controlplane.state import ClusterState

NOW = datetime.datetime(2024, 1, 1, 1, 0, tzinfo=datetime.UTC)
BACKEND = {"service": {"name": "a", "port": {"number": 80}}}


def ingress(name: str, spec: dict[str, object], status: dict[str, object] | None = None) -> Ingress:
    return Ingress.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "shop",
                "creationTimestamp": "2024-01-01T00:00:00Z",
            },
            "spec": spec,
            "status": status or {},
        }
    )


def test_ingress_columns_hosts_address_and_ports() -> None:
    rules = [{"host": f"h{i}.example.com"} for i in range(5)]
    state = ClusterState(
        ingresses=(
            ingress("catch-all", {"defaultBackend": BACKEND}),
            ingress(
                "many",
                {
                    "ingressClassName": "nginx",
                    "rules": rules,
                    "tls": [{"hosts": ["h0.example.com"]}],
                },
                {"loadBalancer": {"ingress": [{"ip": "192.168.56.200"}, {"ip": "10.0.0.1"}]}},
            ),
        )
    )
    assert render(table("ingresses", state, wide=False, now=NOW)) == (
        "NAMESPACE   NAME        CLASS    HOSTS"
        + " " * 54
        + "ADDRESS            PORTS     AGE\n"
        + "shop        catch-all   <none>   *"
        + " " * 77
        + "80        60m\n"
        + "shop        many        nginx    h0.example.com,h1.example.com,h2.example.com"
        + " + 2 more...   192.168.56.20...   80, 443   60m\n"
    )
    wide = table("ingresses", state, wide=True, with_namespace=False, now=NOW)
    assert wide["rows"][1]["cells"][3] == "192.168.56.200,10.0.0.1"


def test_ingress_class_parameters() -> None:
    cls = IngressClass.model_validate(
        {
            "metadata": {"name": "nginx", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {
                "controller": "k8s.io/ingress-nginx",
                "parameters": {"apiGroup": "k8s.example.com", "kind": "P", "name": "lb"},
            },
        }
    )
    shown = table("ingressclasses", ClusterState(ingress_classes=(cls,)), wide=False, now=NOW)
    assert [c["name"] for c in shown["columnDefinitions"]] == [
        "NAME",
        "CONTROLLER",
        "PARAMETERS",
        "AGE",
    ]
    assert shown["rows"][0]["cells"] == [
        "nginx",
        "k8s.io/ingress-nginx",
        "P.k8s.example.com/lb",
        "60m",
    ]
