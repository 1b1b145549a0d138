"""v1 ConfigMap and Secret: loading, the API server's validation (keys,
base64, required keys of a type), storage (stringData merged, immutable)
and kubectl's `get` columns."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from netemu.api.core import ConfigMap, Secret, base64_error
from netemu.api.load import load_text
from netemu.api.validate import validate
from netemu.cli_table import render, table
from netemu.controlplane import build_cluster_state
from netemu.controlplane.client import LocalClient
from netemu.controlplane.errors import Invalid
from netemu.controlplane.store import Store

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def problems(text: str) -> list[str]:
    loaded, errors = load_text(textwrap.dedent(text), "in.yaml")
    assert not errors
    return [str(d) for d in validate(loaded)]


def test_a_valid_config_map_and_secret_load_typed() -> None:
    loaded, errors = load_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: cfg}
            data: {LOG_LEVEL: debug}
            binaryData: {blob: aGVsbG8=}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: creds}
            immutable: true
            data: {user: YWRtaW4=}
            stringData: {password: s3cret}
            """
        ),
        "in.yaml",
    )
    assert not errors
    cm, secret = (item.obj for item in loaded)
    assert isinstance(cm, ConfigMap) and isinstance(secret, Secret)
    assert cm.files() == {"LOG_LEVEL": b"debug", "blob": b"hello"}
    assert secret.files() == {"user": b"admin", "password": b"s3cret"}
    assert validate(loaded) == []


def test_invalid_keys_bad_base64_and_duplicates_point_at_their_lines() -> None:
    found = problems(
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cfg}
        data:
          ok: x
          "bad key": y
        binaryData:
          ok: eA==
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: creds}
        data:
          broken: "abc!"
          short: abc
        """
    )
    assert found == [
        'in.yaml:6: ConfigMap/cfg: data.bad key: invalid key "bad key": a valid config key '
        "must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
        "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        "in.yaml:8: ConfigMap/cfg: binaryData.ok: duplicate of key present in data",
        "in.yaml:14: Secret/creds: data.broken: illegal base64 data at input byte 3 "
        "(expected base64-encoded data)",
        "in.yaml:15: Secret/creds: data.short: illegal base64 data at input byte 0 "
        "(expected base64-encoded data)",
    ]


def test_a_tls_secret_needs_its_certificate_and_key() -> None:
    found = problems(
        """\
        apiVersion: v1
        kind: Secret
        metadata: {name: tls}
        type: kubernetes.io/tls
        stringData:
          tls.crt: CERT
        """
    )
    assert found == ["in.yaml:1: Secret/tls: data: data[tls.key]: Required value"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("aGVsbG8=", None),
        ("aGVs\nbG8=", None),  # line breaks are skipped, as Go's decoder skips them
        ("", None),
        ("aGVsbG8", "illegal base64 data at input byte 4"),
        ("aGV*bG8=", "illegal base64 data at input byte 3"),
    ],
)
def test_base64_as_go_decodes_it(text: str, error: str | None) -> None:
    assert base64_error(text) == error


def test_the_store_merges_string_data_and_defaults_the_type() -> None:
    client = LocalClient(Store())
    stored = client.create(
        Secret.model_validate(
            {
                "metadata": {"name": "s", "namespace": "default"},
                "data": {"a": "eA=="},
                "stringData": {"a": "y", "b": "z"},
            }
        )
    )
    assert stored.type == "Opaque"
    assert stored.string_data == {}
    assert stored.data == {"a": "eQ==", "b": "eg=="}  # stringData wins over data


def test_an_immutable_config_map_keeps_its_data() -> None:
    client = LocalClient(Store())
    cm = client.create(
        ConfigMap.model_validate(
            {
                "metadata": {"name": "c", "namespace": "default"},
                "data": {"k": "v"},
                "immutable": True,
            }
        )
    )
    with pytest.raises(
        Invalid, match="data: Forbidden: field is immutable when `immutable` is set"
    ):
        client.update(cm.model_copy(update={"data": {"k": "w"}}))
    relabelled = cm.metadata.model_copy(update={"labels": {"x": "y"}})
    assert client.update(cm.model_copy(update={"metadata": relabelled})).metadata.labels == {
        "x": "y"
    }


def test_get_prints_kubectl_columns() -> None:
    loaded, _ = load_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: cfg}
            data: {a: "1", b: "2"}
            binaryData: {c: eA==}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: tls}
            type: kubernetes.io/tls
            stringData: {tls.crt: C, tls.key: K}
            """
        ),
        "in.yaml",
    )
    state = build_cluster_state([item.obj for item in loaded], clock=lambda: NOW)
    assert render(table("configmaps", state, False, now=NOW)) == (
        "NAMESPACE   NAME   DATA   AGE\ndefault     cfg    3      0s\n"
    )
    assert render(table("secrets", state, False, now=NOW)) == (
        "NAMESPACE   NAME   TYPE                DATA   AGE\n"
        "default     tls    kubernetes.io/tls   2      0s\n"
    )
