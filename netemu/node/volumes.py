"""A pod's volumes as the kubelet's volume plugins fill them, and where each
container mounts them.

- configMap and secret: a file per key (or per `items` entry, at its `path`),
  with `defaultMode` (0644) or the item's `mode`; a missing object or key
  that is not `optional` fails the mount with the plugin's message;
- downwardAPI: a file per item, from the pod's fields (`fieldRef`);
- projected: configMap, secret and downwardAPI sources in one directory,
  and a serviceAccountToken source as a stand-in token file (a lab has no
  token issuer);
- emptyDir: an empty directory shared by the pod's containers;
- every other kind (persistentVolumeClaim, hostPath, ...) is not emulated:
  an empty directory too, never a path of the host, with a notice.

`volume_files` is pure; netemu.kernel.sandbox writes the files with the
kubelet's atomic-writer layout and binds them into the container.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netemu.api.core import Container, Pod
from netemu.kernel.sandbox import Mount
from netemu.node.envvars import ConfigError, EnvSources, field_ref_value

DEFAULT_MODE = 0o644
# A stand-in for a projected service account token: not a JWT any API server
# would accept, since a lab runs none that checks tokens.
STAND_IN_TOKEN = "netemu-stand-in-service-account-token"
# The kinds whose files come from the API; mounted read-only, as the kubelet
# mounts them whatever the volumeMount says.
_API_KINDS = ("configMap", "secret", "downwardAPI", "projected")
_KINDS = (*_API_KINDS, "emptyDir")


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # one of _KINDS, or the kind that is not emulated
    files: Mapping[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> data, mode

    @property
    def emulated(self) -> bool:
        return self.kind in _KINDS

    @property
    def from_api(self) -> bool:
        return self.kind in _API_KINDS


def volume_files(pod: Pod, sources: EnvSources) -> list[Volume]:
    """The pod's volumes with their files; ConfigError (the mount's
    failure, as kubelet words it) for a missing source that is not optional."""
    out = []
    for spec in _dicts(pod.spec.volumes):
        name = str(spec.get("name") or "")
        kind = next((k for k in spec if k != "name"), "")
        try:
            files = _files(kind, spec.get(kind), pod, sources)
        except ConfigError as exc:
            # kubelet leaves the pod ContainerCreating, with a FailedMount event.
            raise ConfigError(
                f'MountVolume.SetUp failed for volume "{name}" : {exc}', "ContainerCreating"
            ) from None
        out.append(Volume(name, kind, files))
    return out


def container_mounts(
    container: Container, volumes: Mapping[str, Volume], directory: Mapping[str, str]
) -> tuple[Mount, ...]:
    """A container's volumeMounts as binds of the volumes' directories
    (`directory`: volume name -> host directory), subPath within them."""
    mounts = []
    for spec in _dicts(container.volume_mounts):
        name = str(spec.get("name") or "")
        volume = volumes.get(name)
        if volume is None or name not in directory:
            continue  # validation refers every mount to a volume
        source = directory[name]
        sub_path = str(spec.get("subPath") or "")
        if sub_path.startswith("/") or ".." in sub_path.split("/"):
            continue  # the API server rejects it (ValidateVolumeMounts): never leave the volume
        if sub_path:
            source = f"{source}/{sub_path}"
        read_only = volume.from_api or spec.get("readOnly") is True
        mounts.append(Mount(source, str(spec.get("mountPath") or ""), read_only))
    return tuple(mounts)


def _files(kind: str, spec: Any, pod: Pod, sources: EnvSources) -> dict[str, tuple[bytes, int]]:
    spec = spec if isinstance(spec, dict) else {}
    mode = _mode(spec.get("defaultMode"), DEFAULT_MODE)
    if kind in ("configMap", "secret"):
        return _object_files(kind, spec, sources, mode)
    if kind == "downwardAPI":
        return _downward_files(spec, pod, mode)
    if kind == "projected":
        files: dict[str, tuple[bytes, int]] = {}
        for source in _dicts(spec.get("sources")):
            for part in ("configMap", "secret"):
                if isinstance(source.get(part), dict):
                    files.update(_object_files(part, source[part], sources, mode))
            if isinstance(source.get("downwardAPI"), dict):
                files.update(_downward_files(source["downwardAPI"], pod, mode))
            token = source.get("serviceAccountToken")
            if isinstance(token, dict):
                files[str(token.get("path") or "token")] = (STAND_IN_TOKEN.encode(), mode)
        return files
    return {}


def _object_files(
    kind: str, spec: dict[str, Any], sources: EnvSources, mode: int
) -> dict[str, tuple[bytes, int]]:
    name = str(spec.get("name") or spec.get("secretName") or "")
    optional = spec.get("optional") is True
    found = sources.config_maps.get(name) if kind == "configMap" else sources.secrets.get(name)
    if found is None:
        if optional:
            return {}
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    data = found.files()
    items = _dicts(spec.get("items"))
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if optional:
                continue
            what = "config" if kind == "configMap" else "secret"
            raise ConfigError(f"{kind.lower()} references non-existent {what} key: {key}")
        files[str(item.get("path") or key)] = (data[key], _mode(item.get("mode"), mode))
    return files


def _downward_files(spec: dict[str, Any], pod: Pod, mode: int) -> dict[str, tuple[bytes, int]]:
    files = {}
    for item in _dicts(spec.get("items")):
        ref = item.get("fieldRef")
        if isinstance(ref, dict):
            value = field_ref_value(str(ref.get("fieldPath") or ""), pod)
            files[str(item.get("path") or "")] = (value.encode(), _mode(item.get("mode"), mode))
    return files


def _mode(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
