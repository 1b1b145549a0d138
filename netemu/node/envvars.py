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

Pure: no I/O. Must not touch: the control plane, processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from netemu.api.core import Service
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


def container_env(declared: Sequence[tuple[str, str]], service_vars: EnvVars) -> EnvVars:
    """makeEnvironmentVariables: the container's `env` entries in their order,
    each non-empty value with its `$(VAR)` references expanded (an earlier
    entry first, then a Service variable; an unknown reference stays as it
    is), then the Service variables the container does not set itself."""
    services = dict(service_vars)
    own: dict[str, str] = {}

    def lookup(name: str) -> str:
        if name in own:
            return own[name]
        if name in services:
            return services[name]
        return f"$({name})"

    for name, value in declared:
        own[name] = expand(value, lookup) if value else value
    return [*own.items(), *((k, v) for k, v in service_vars if k not in own)]


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
