"""A pod's volumes as kubelet's plugins fill them (pure), their mounts, and
the atomic-writer layout they are written in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netemu.api.core import ConfigMap, Container, Pod, Secret
from netemu.kernel.sandbox import Mount, prepare_mount_points, write_volume
from netemu.node.envvars import ConfigError, EnvSources
from netemu.node.volumes import STAND_IN_TOKEN, container_mounts, volume_files

SOURCES = EnvSources(
    config_maps={
        "cfg": ConfigMap.model_validate(
            {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "eA=="}}
        )
    },
    secrets={"s": Secret.model_validate({"metadata": {"name": "s"}, "stringData": {"pw": "x"}})},
)


def pod(volumes: list[dict[str, object]], mounts: list[dict[str, object]] | None = None) -> Pod:
    container = {"name": "app", "volumeMounts": mounts or []}
    return Pod.model_validate(
        {
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"containers": [container], "volumes": volumes},
        }
    )


def test_config_map_secret_downward_projected_and_empty_dir() -> None:
    downward = {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}
    projected = {"sources": [{"secret": {"name": "s"}}, {"serviceAccountToken": {"path": "token"}}]}
    volumes = volume_files(
        pod(
            [
                {"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o400}},
                {"name": "i", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "x/b"}]}},
                {"name": "s", "secret": {"secretName": "s"}},
                {"name": "d", "downwardAPI": downward},
                {"name": "p", "projected": projected},
                {"name": "e", "emptyDir": {}},
                {"name": "h", "hostPath": {"path": "/etc"}},
            ]
        ),
        SOURCES,
    )
    files = {v.name: dict(v.files) for v in volumes}
    assert files["c"] == {"a": (b"1", 0o400), "b": (b"2", 0o400), "c": (b"x", 0o400)}
    assert files["i"] == {"x/b": (b"2", 0o644)}
    assert files["s"] == {"pw": (b"x", 0o644)}
    assert files["d"] == {"n": (b"p", 0o644)}
    assert files["p"] == {"pw": (b"x", 0o644), "token": (STAND_IN_TOKEN.encode(), 0o644)}
    assert files["e"] == {} and files["h"] == {}
    kinds = {v.name: (v.from_api, v.emulated) for v in volumes}
    assert kinds["e"] == (False, True) and kinds["h"] == (False, False)


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"configMap": {"name": "nope"}}, 'configmap "nope" not found'),
        ({"secret": {"secretName": "nope"}}, 'secret "nope" not found'),
        (
            {"configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}},
            "configmap references non-existent config key: zz",
        ),
    ],
)
def test_a_missing_source_fails_the_mount(volume: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        volume_files(pod([{"name": "v", **volume}]), SOURCES)
    assert str(caught.value) == f'MountVolume.SetUp failed for volume "v" : {message}'
    optional = {k: {**v, "optional": True} for k, v in volume.items()}  # type: ignore[dict-item]
    assert volume_files(pod([{"name": "v", **optional}]), SOURCES)[0].files == {}


def test_mounts_with_sub_path_and_read_only() -> None:
    p = pod(
        [{"name": "c", "configMap": {"name": "cfg"}}, {"name": "e", "emptyDir": {}}],
        [
            {"name": "c", "mountPath": "/etc/a", "subPath": "a", "readOnly": False},
            {"name": "e", "mountPath": "/cache"},
            {"name": "e", "mountPath": "/ro", "readOnly": True},
        ],
    )
    volumes = {v.name: v for v in volume_files(p, SOURCES)}
    container = Container.model_validate(p.spec.containers[0].model_dump(by_alias=True))
    assert container_mounts(container, volumes, {"c": "/v/c", "e": "/v/e"}) == (
        Mount("/v/c/a", "/etc/a", True),  # API volumes are read-only whatever is asked
        Mount("/v/e", "/cache", False),
        Mount("/v/e", "/ro", True),
    )


def test_atomic_writer_layout_and_update(tmp_path: Path) -> None:
    volume = tmp_path / "v"
    write_volume(volume, {"a": (b"1", 0o600), "d/b": (b"2", 0o644), "../x": (b"no", 0o644)})
    assert os.readlink(volume / "a") == "..data/a"
    assert (volume / "a").read_bytes() == b"1"
    assert (volume / "d" / "b").read_bytes() == b"2"
    assert oct((volume / "a").stat().st_mode & 0o777) == oct(0o600)
    assert not (tmp_path / "x").exists()
    first = os.readlink(volume / "..data")
    write_volume(volume, {"d/b": (b"3", 0o644)})
    assert os.readlink(volume / "..data") != first
    assert not (volume / first).exists() and not (volume / "a").is_symlink()
    assert (volume / "d" / "b").read_bytes() == b"3"
    empty = tmp_path / "e"
    write_volume(empty, None)
    assert oct(empty.stat().st_mode & 0o7777) == oct(0o1777)


def test_mount_points_in_private_dirs_are_made_readable(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    source = tmp_path / "src"
    source.mkdir()
    prepare_mount_points(
        tmp_path, [Mount(str(source), "/var/run/secrets/sa"), Mount("/x", "/etc/y")]
    )
    for part in ("var/run", "var/run/secrets", "var/run/secrets/sa"):
        assert oct((tmp_path / part).stat().st_mode & 0o777) == oct(0o755)
    assert not (tmp_path / "etc").exists()
