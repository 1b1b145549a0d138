"""The supervisor's check of raw socket requests (no lab needed): every
malformed request is a RequestError or InputError with a clear message,
and well-formed ones pass with their fields."""

from __future__ import annotations

from typing import Any

import pytest

from netemu.api.config import Lab
from netemu.api.core import Pod
from netemu.api.errors import InputError
from netemu.supervisor import MAX_REPLICAS, RequestError, _checked_request, _objects

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web"},
    "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]},
}
LAB = Lab.model_validate(
    {
        "apiVersion": "netemu/v1alpha1",
        "kind": "Lab",
        "metadata": {"name": "lab"},
        "spec": {
            "nodes": [{"name": "node-1", "underlayIP": "192.168.56.11"}],
            "nodePortRange": "30000-32767",
        },
    }
)
NODE_PORT_80: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "np"},
    "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
}
TRACE = {
    "op": "trace",
    "from": "client",
    "to": "node-1:30080",
    "proto": "tcp",
    "pcap": True,
    "captures": "captures",
    "wait": 1.0,
}
SCALE = {"op": "scale", "kind": "Deployment", "namespace": "default", "name": "web", "replicas": 2}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ([1, 2], "a request is a JSON object"),
        ("state", "a request is a JSON object"),
        ({}, "unknown request None"),
        ({"op": 5}, "unknown request 5"),
        ({"op": "explode"}, "unknown request 'explode'"),
        ({"op": "state", "extra": 1}, "unknown field 'extra'"),
        ({"op": "apply"}, "missing field 'objects'"),
        ({"op": "apply", "objects": "Pod"}, "field 'objects': expected list, got str"),
        ({"op": "apply", "objects": []}, "no objects to apply"),
        ({**SCALE, "replicas": "2"}, "field 'replicas': expected int, got str"),
        ({**SCALE, "replicas": True}, "field 'replicas': expected int, got bool"),
        ({**SCALE, "replicas": MAX_REPLICAS + 1}, f"expected 0 to {MAX_REPLICAS}"),
        ({**SCALE, "replicas": -1}, f"expected 0 to {MAX_REPLICAS}"),
        ({**SCALE, "kind": "Service"}, "expected one of Deployment, ReplicaSet, StatefulSet"),
        ({**SCALE, "name": "a\nb"}, "field 'name'"),
        ({"op": "delete", "refs": []}, "nothing to delete"),
        ({"op": "delete", "refs": ["Pod/x"]}, "refs[0]: expected an object"),
        ({"op": "delete", "refs": [{"kind": "Nope", "name": "x"}]}, "unknown kind 'Nope'"),
        ({"op": "delete", "refs": [{"kind": "Pod", "name": 5}]}, "name 5"),
        (
            {"op": "delete", "refs": [{"kind": "Pod", "name": "x", "namespace": "a.b"}]},
            "namespace 'a.b'",
        ),
        ({"op": "logs", "namespace": "default", "pod": "x", "tail": -1}, "field 'tail'"),
        ({"op": "logs", "namespace": "default"}, "missing field 'pod'"),
        ({"op": "logs", "namespace": "default", "pod": "x", "previous": 1}, "expected bool"),
        ({"op": "table"}, "missing field 'kind'"),
        ({**TRACE, "from": None}, "missing field 'from'"),
        ({**TRACE, "proto": "sctp"}, "field 'proto': expected one of tcp, udp, icmp"),
        ({**TRACE, "port": 0}, "field 'port': expected 1 to 65535"),
        ({**TRACE, "port": 65536}, "field 'port': expected 1 to 65535"),
        ({**TRACE, "wait": 61}, "field 'wait': expected 0.1 to 60 seconds"),
        ({**TRACE, "wait": True}, "field 'wait'"),
        ({**TRACE, "pcap": "yes"}, "field 'pcap': expected bool, got str"),
        (
            {"op": "table", "kind": "frobnicators"},
            "field 'kind': the server doesn't have a resource type \"frobnicators\"",
        ),
        ({"op": "table", "kind": "pods", "output": "xml"}, "field 'output': expected wide"),
        ({"op": "table", "kind": "pods", "namespace": 3}, "field 'namespace': expected str"),
    ],
)
def test_a_malformed_request_is_refused_with_a_message(request_: object, message: str) -> None:
    with pytest.raises(RequestError) as err:
        _checked_request(request_)
    assert message in str(err.value)


def test_well_formed_requests_pass_with_their_fields() -> None:
    assert _checked_request({"op": "status"}) == ("status", {})
    assert _checked_request(SCALE) == ("scale", {k: v for k, v in SCALE.items() if k != "op"})
    op, fields = _checked_request({"op": "logs", "namespace": "default", "pod": "web"})
    assert (op, fields) == (
        "logs",
        {"namespace": "default", "pod": "web", "container": None, "previous": None, "tail": None},
    )


def test_a_trace_request_passes_with_its_fields() -> None:
    op, fields = _checked_request({**TRACE, "port": 80, "wait": 2})
    assert op == "trace"
    assert fields == {k: v for k, v in TRACE.items() if k != "op"} | {"port": 80, "wait": 2}


def test_a_table_request_takes_any_namespace_as_get_n_does() -> None:
    # `get -n` lists a namespace that does not exist (nothing), as kubectl does.
    assert _checked_request({"op": "table", "kind": "pods", "namespace": "No_Such"}) == (
        "table",
        {"kind": "pods", "namespace": "No_Such", "output": None},
    )


def test_objects_are_validated_as_manifests_are() -> None:
    (obj,) = _objects([POD], LAB)
    assert isinstance(obj, Pod) and obj.metadata.name == "web"
    bad = {**POD, "metadata": {"name": "Bad_Name"}}
    with pytest.raises(InputError) as err:
        _objects([POD, bad], LAB)
    # Each object is a document of `request`; the diagnostic names its line.
    assert any(
        d.file == "request"
        and d.line > 1
        and d.obj == "Pod/Bad_Name"
        and d.field == "metadata.name"
        for d in err.value.diagnostics
    ), err.value
    with pytest.raises(RequestError, match=r"objects\[1\]: expected an object, got int"):
        _objects([POD, 1], LAB)


def test_objects_are_checked_against_the_running_labs_ranges() -> None:
    with pytest.raises(InputError) as err:
        _objects([NODE_PORT_80], LAB)
    assert any(
        d.file == "request" and d.field == "spec.ports[0].nodePort" and "30000-32767" in d.message
        for d in err.value.diagnostics
    ), err.value
