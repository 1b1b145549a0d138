"""kubelet's makeEnvironmentVariables with references: envFrom, valueFrom
(ConfigMap and Secret keys, optional ones, the downward API's fieldRef),
`$(VAR)` expansion in env and in command/args, and the CreateContainerConfigError
messages of references that do not resolve."""

from __future__ import annotations

from typing import Any

import pytest

from netemu.api.core import ConfigMap, Container, Pod, Secret
from netemu.node.envvars import ConfigError, EnvSources, expand_argv, make_env

CM = ConfigMap.model_validate(
    {"metadata": {"name": "cfg", "namespace": "shop"}, "data": {"MODE": "fast", "bad key": "x"}}
)
SECRET = Secret.model_validate(
    {"metadata": {"name": "creds", "namespace": "shop"}, "data": {"password": "czNjcmV0"}}
)
SOURCES = EnvSources(config_maps={"cfg": CM}, secrets={"creds": SECRET})
POD = Pod.model_validate(
    {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "1234",
            "labels": {"app": "web", "tier": "front"},
        },
        "spec": {"nodeName": "node-2", "containers": [{"name": "app"}]},
        "status": {"podIP": "10.244.2.5", "hostIP": "192.168.56.12"},
    }
)
SERVICES = [("WEB_SERVICE_HOST", "10.96.0.7")]


def env_of(env: Any = None, env_from: Any = None) -> dict[str, str]:
    container = Container.model_validate({"name": "app", "env": env, "envFrom": env_from})
    result, _ = make_env(container, POD, SOURCES, SERVICES)
    return dict(result)


def test_config_map_and_secret_keys_and_optional_ones() -> None:
    got = env_of(
        [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {
                "name": "GONE",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
            {
                "name": "NOKEY",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k", "optional": True}},
            },
        ]
    )
    assert got == {"MODE": "fast", "PW": "s3cret", "WEB_SERVICE_HOST": "10.96.0.7"}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found'),
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found'),
        (
            {"configMapKeyRef": {"name": "cfg", "key": "k"}},
            "couldn't find key k in ConfigMap shop/cfg",
        ),
        (
            {"secretKeyRef": {"name": "creds", "key": "k"}},
            "couldn't find key k in Secret shop/creds",
        ),
    ],
)
def test_a_missing_reference_is_kubelets_config_error(ref: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        env_of([{"name": "X", "valueFrom": ref}])
    assert str(caught.value) == message


def test_env_from_with_prefix_skips_invalid_names_with_kubelets_event() -> None:
    container = Container.model_validate(
        {
            "name": "app",
            "envFrom": [
                {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                {"secretRef": {"name": "creds"}},
                {"configMapRef": {"name": "nope", "optional": True}},
            ],
        }
    )
    result, events = make_env(container, POD, SOURCES, [])
    assert dict(result) == {"CFG_MODE": "fast", "password": "s3cret"}
    assert events == [
        "InvalidEnvironmentVariableNames: Keys [CFG_bad key] from the EnvFrom configMap "
        "shop/cfg were skipped since they are considered invalid environment variable names."
    ]
    missing = Container.model_validate({"name": "a", "envFrom": [{"secretRef": {"name": "x"}}]})
    with pytest.raises(ConfigError, match='secret "x" not found'):
        make_env(missing, POD, SOURCES, [])


def test_field_refs_give_the_pods_own_fields() -> None:
    paths = {
        "NAME": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "APP": "metadata.labels['app']",
        "LABELS": "metadata.labels",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "IP": "status.podIP",
        "HOST": "status.hostIP",
    }
    got = env_of(
        [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()]
    )
    assert {k: got[k] for k in paths} == {
        "NAME": "web-1",
        "NS": "shop",
        "UID": "1234",
        "APP": "web",
        "LABELS": 'app="web"\ntier="front"',
        "NODE": "node-2",
        "SA": "default",
        "IP": "10.244.2.5",
        "HOST": "192.168.56.12",
    }


def test_expansion_sees_env_from_earlier_entries_and_services_and_escapes() -> None:
    got = env_of(
        [
            {"name": "URL", "value": "http://$(WEB_SERVICE_HOST):$(PORT)/$(CFG_MODE)"},
            {"name": "PORT", "value": "80"},
            {"name": "AGAIN", "value": "$(PORT) $$(PORT) $(UNKNOWN)"},
        ],
        [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
    )
    # PORT comes after URL: not yet defined there, so kept as written.
    assert got["URL"] == "http://10.96.0.7:$(PORT)/fast"
    assert got["AGAIN"] == "80 $(PORT) $(UNKNOWN)"


def test_command_and_args_expand_against_the_final_environment() -> None:
    env = [("PORT", "8080"), ("MODE", "fast")]
    assert expand_argv(["serve", "--port=$(PORT)", "$$(MODE)", "$(NONE)"], env) == (
        "serve",
        "--port=8080",
        "$(MODE)",
        "$(NONE)",
    )
