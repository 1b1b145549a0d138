"""The environment kubelet starts a container with: the Service variables
(`WEB_SERVICE_HOST`, `WEB_PORT_80_TCP_ADDR`, ...) of the Services the pod
may see, merged with the container's own `env`.

Reproduces, from kubernetes/kubernetes:

- pkg/kubelet/envvars/envvars.go, `FromServices` and `makeLinkVariables`:
  which variables one Service yields, and in which order;
- pkg/kubelet/kubelet_pods.go, `getServiceEnvVarMap`: which Services a pod
  sees (the pod's namespace when enableServiceLinks is on, and the master
  Service `default/kubernetes` always), and `makeEnvironmentVariables`: the
  container's `env` wins over Service variables, and its `$(VAR)`
  references are expanded against earlier `env` entries and the Service
  variables (third_party/forked/golang/expansion/expand.go, `Expand`).

Which Services exist is the caller's business: the kubelet passes those in
the control plane when it starts the container, so a Service created later
is never in a running container's environment (kubelet_pods.go notes this
race and recommends DNS, which has no such limitation).

`make_env` adds what kubelet resolves from the API: `envFrom` and
`valueFrom` (ConfigMap and Secret keys, the downward API's fieldRef), and
`expand_argv` expands `$(VAR)` in a command and its args.

Pure: no I/O. Must not touch: the control plane, processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netemu.api.core import ConfigMap, Container, Pod, Secret, Service
from netemu.net.addresses import host_port

# kubelet_pods.go: `masterServices = sets.New[string]("kubernetes")`, looked
# for in metav1.NamespaceDefault.
MASTER_SERVICE_NAMESPACE = "default"
MASTER_SERVICES = frozenset({"kubernetes"})

EnvVars = list[tuple[str, str]]


def is_service_ip_set(service: Service) -> bool:
    """v1helper.IsServiceIPSet: a ClusterIP that is neither empty nor "None"
    (headless Services and ExternalName Services have none)."""
    ip = service.spec.cluster_ip
    return bool(ip) and ip != "None"


def visible_services(
    services: Iterable[Service], namespace: str, enable_service_links: bool
) -> list[Service]:
    """getServiceEnvVarMap's choice: Services with a ClusterIP that are the
    master Service (`default/kubernetes`, even with enableServiceLinks false)
    or in the pod's namespace (only with enableServiceLinks), by name.

    kubelet keys its map by Service name alone: a Service `kubernetes` in the
    pod's own namespace replaces `default/kubernetes` (the master branch only
    fills an empty slot; the namespace branch always writes). kubelet then
    walks the map in Go's random order, which only orders the variables;
    here they come sorted by Service name, so every start is the same.
    """
    chosen: dict[str, Service] = {}
    for service in services:
        if not is_service_ip_set(service):
            continue
        name = service.metadata.name or ""
        service_namespace = service.metadata.namespace or "default"
        if service_namespace == MASTER_SERVICE_NAMESPACE and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif service_namespace == namespace and enable_service_links:
            chosen[name] = service
    return [chosen[name] for name in sorted(chosen)]


def env_name(name: str) -> str:
    """envvars.go makeEnvVariableName: upper case, `-` to `_`."""
    return name.replace("-", "_").upper()


def from_services(services: Iterable[Service]) -> EnvVars:
    """envvars.go FromServices, for each Service in turn: `_SERVICE_HOST`,
    `_SERVICE_PORT` (the first port), `_SERVICE_PORT_<NAME>` per named port,
    then the Docker link variables."""
    result: EnvVars = []
    for service in services:
        if not is_service_ip_set(service) or not service.spec.ports:
            # kubelet reads Ports[0] unguarded: validation gives every Service
            # with a ClusterIP at least one port.
            continue
        prefix = env_name(service.metadata.name or "")
        result.append((f"{prefix}_SERVICE_HOST", str(service.spec.cluster_ip)))
        first = service.spec.ports[0]
        result.append((f"{prefix}_SERVICE_PORT", str(first.port)))
        for port in service.spec.ports:
            if port.name:
                result.append((f"{prefix}_SERVICE_PORT_{env_name(port.name)}", str(port.port)))
        result.extend(link_variables(service))
    return result


def link_variables(service: Service) -> EnvVars:
    """envvars.go makeLinkVariables: Docker's `--link` variables, `<NAME>_PORT`
    for the first port and four `<NAME>_PORT_<port>_<PROTO>*` per port."""
    prefix = env_name(service.metadata.name or "")
    ip = str(service.spec.cluster_ip)
    result: EnvVars = []
    for index, port in enumerate(service.spec.ports):
        protocol = port.protocol or "TCP"
        url = f"{protocol.lower()}://{host_port(ip, port.port)}"
        if index == 0:
            result.append((f"{prefix}_PORT", url))
        port_prefix = f"{prefix}_PORT_{port.port}_{protocol.upper()}"
        result.extend(
            [
                (port_prefix, url),
                (f"{port_prefix}_PROTO", protocol.lower()),
                (f"{port_prefix}_PORT", str(port.port)),
                (f"{port_prefix}_ADDR", ip),
            ]
        )
    return result


def service_env(services: Iterable[Service], namespace: str, enable_service_links: bool) -> EnvVars:
    """The Service variables kubelet gives a container of a pod in `namespace`
    (getServiceEnvVarMap), given the Services that exist."""
    return from_services(visible_services(services, namespace, enable_service_links))


def expand(text: str, mapping: Callable[[str], str]) -> str:
    """expansion.Expand: `$(NAME)` is replaced by mapping(NAME), `$$` is a
    literal `$`, and any other `$` (or an unclosed `$(`) is kept as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable_name(text[cursor + 1 :])
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _read_variable_name(rest: str) -> tuple[str, bool, int]:
    """expansion.tryReadVariableName: (text read, is it a name, chars consumed)."""
    first = rest[0]
    if first == "$":
        return "$", False, 1
    if first == "(":
        close = rest.find(")", 1)
        if close != -1:
            return rest[1:close], True, close + 1
        return "$(", False, 1
    return "$" + first, False, 1


# ---------------------------------------------------------------- references


class ConfigError(Exception):
    """A container cannot be made: the message is kubelet's, `reason` the
    container's waiting reason (CreateContainerConfigError for env
    references; ContainerCreating for a volume that cannot be mounted)."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EnvSources:
    """The ConfigMaps and Secrets of the pod's namespace, by name, as the
    kubelet's configMap and secret managers would get them now."""

    config_maps: Mapping[str, ConfigMap]
    secrets: Mapping[str, Secret]


# validation.IsEnvVarName: what envFrom keys must look like to be used.
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def make_env(
    container: Container, pod: Pod, sources: EnvSources, service_vars: EnvVars
) -> tuple[EnvVars, list[str]]:
    """kubelet_pods.go makeEnvironmentVariables: the `envFrom` sources in
    order (a prefix added; invalid names skipped with a warning event), then
    each `env` entry (a value with its `$(VAR)` references expanded against
    what came before and the Service variables, or a `valueFrom` reference),
    then the Service variables not set. Returns the variables and the
    warning events; raises ConfigError with kubelet's message for a missing
    ConfigMap, Secret or key that is not optional."""
    namespace = pod.metadata.namespace or "default"
    own: dict[str, str] = {}
    events: list[str] = []
    for source in _dicts(container.env_from):
        prefix = str(source.get("prefix") or "")
        for field_name, kind in (("configMapRef", "configMap"), ("secretRef", "secret")):
            ref = source.get(field_name)
            if not isinstance(ref, dict):
                continue
            name = str(ref.get("name") or "")
            data = _source_data(kind, name, sources)
            if data is None:
                if ref.get("optional") is True:
                    continue
                raise ConfigError(f'{kind.lower()} "{name}" not found')
            invalid = []
            for key, value in data.items():
                full = prefix + key
                if not _ENV_NAME.fullmatch(full):
                    invalid.append(full)
                    continue
                own[full] = value
            if invalid:
                events.append(
                    f"InvalidEnvironmentVariableNames: Keys [{', '.join(sorted(invalid))}] "
                    f"from the EnvFrom {kind} {namespace}/{name} were skipped since they are "
                    "considered invalid environment variable names."
                )
    services = dict(service_vars)

    def lookup(name: str) -> str:
        if name in own:
            return own[name]
        if name in services:
            return services[name]
        return f"$({name})"

    for item in _dicts(container.env):
        var = str(item.get("name") or "")
        given = item.get("value")
        if isinstance(given, str) and given:
            own[var] = expand(given, lookup)
            continue
        resolved = _value_from(item.get("valueFrom"), pod, namespace, sources)
        if resolved is None:
            continue  # an optional reference that is missing: no variable
        own[var] = resolved
    return [*own.items(), *((k, v) for k, v in service_vars if k not in own)], events


def expand_argv(argv: Sequence[str], env: EnvVars) -> tuple[str, ...]:
    """ExpandContainerCommandAndArgs: `$(VAR)` in the command and args
    against the container's final environment."""
    values = dict(env)
    return tuple(expand(arg, lambda name: values.get(name, f"$({name})")) for arg in argv)


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _source_data(kind: str, name: str, sources: EnvSources) -> dict[str, str] | None:
    if kind == "configMap":
        cm = sources.config_maps.get(name)
        return None if cm is None else dict(cm.data)
    secret = sources.secrets.get(name)
    if secret is None:
        return None
    return {k: v.decode(errors="replace") for k, v in secret.files().items()}


def _value_from(source: object, pod: Pod, namespace: str, sources: EnvSources) -> str | None:
    """An env entry's valueFrom (or "" without one); None when an optional
    ConfigMap, Secret or key is missing."""
    if not isinstance(source, dict):
        return ""
    field_ref = source.get("fieldRef")
    if isinstance(field_ref, dict):
        return field_ref_value(str(field_ref.get("fieldPath") or ""), pod)
    for field_name, kind, title in (
        ("configMapKeyRef", "configMap", "ConfigMap"),
        ("secretKeyRef", "secret", "Secret"),
    ):
        ref = source.get(field_name)
        if not isinstance(ref, dict):
            continue
        name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
        optional = ref.get("optional") is True
        data = _source_data(kind, name, sources)
        if data is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        if key not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {key} in {title} {namespace}/{name}")
        return data[key]
    # resourceFieldRef is not emulated: a lab has no resource limits to show.
    return ""


_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")


def field_ref_value(path: str, pod: Pod) -> str:
    """podFieldSelectorRuntimeValue / fieldpath.ExtractFieldPathAsString:
    the pod field a downward-API env entry names."""
    meta, status = pod.metadata, pod.status
    if match := _SUBSCRIPT.fullmatch(path):
        values = meta.labels if match.group(1) == "labels" else meta.annotations
        return values.get(match.group(2), "")
    simple = {
        "metadata.name": meta.name or "",
        "metadata.namespace": meta.namespace or "default",
        "metadata.uid": meta.uid or "",
        "metadata.labels": _format_map(meta.labels),
        "metadata.annotations": _format_map(meta.annotations),
        "spec.nodeName": pod.spec.node_name or "",
        "spec.serviceAccountName": str(pod.spec.service_account_name or "default"),
        "status.hostIP": status.host_ip or "",
        "status.hostIPs": ",".join(ip.ip for ip in status.host_ips),
        "status.podIP": status.pod_ip or "",
        "status.podIPs": ",".join(ip.ip for ip in status.pod_ips),
    }
    return simple.get(path, "")


def _format_map(values: Mapping[str, str]) -> str:
    """fieldpath.FormatMap: `key="value"` lines, sorted."""
    return "\n".join(f'{k}="{values[k]}"' for k in sorted(values))
