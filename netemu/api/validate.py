"""Semantic validation of loaded manifests: the checks the Kubernetes API server
(and kube-proxy's config validation) would make, plus the ones a netemu Lab needs.

Owns: turning well-typed but meaningless input (a Service port 70000, a
selector that matches nothing, a clusterIP outside the Lab's serviceCIDR, two
Services on one nodePort) into diagnostics, each at `file:line`, object and
field path, all collected in one pass. Messages follow the API server's
wording where it has a well-known one.
Must not touch: files beyond what `load` reads, the kernel, the network. It
does not default or allocate anything; that is the control plane's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netaddr import AddrFormatError, IPAddress, IPNetwork
from pydantic import ValidationError

from netemu.api.addresspool import AddressPool, AddressRange, default_pool, parse_entry, parse_pool
from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, ReplicationController, StatefulSet
from netemu.api.base import LabelSelector, ObjectMeta
from netemu.api.batch import CronJob, Job, JobSpec, schedule_error, time_zone_error
from netemu.api.config import (
    DEFAULT_LAB_NOTICE,
    DEFAULT_NODE_POD_PREFIX,
    KubeProxyConfiguration,
    KubeProxyConntrackConfiguration,
    Lab,
    split_family_list,
)
from netemu.api.config import default_lab as make_default_lab
from netemu.api.core import (
    DNS_POLICIES,
    MAX_NAMESERVERS,
    MAX_SEARCH_LIST_CHARS,
    MAX_SEARCH_PATHS,
    SECRET_TYPE_TLS,
    SERVICE_NAME_LABEL,
    ConfigMap,
    Container,
    Endpoints,
    EndpointSlice,
    Namespace,
    Node,
    Pod,
    PodSpec,
    Secret,
    Service,
    base64_error,
)
from netemu.api.duration import DurationError, parse_duration
from netemu.api.errors import Diagnostic, FieldPath, InputError, format_field_path
from netemu.api.generic import GenericObject
from netemu.api.ipfamilies import IPFamily, settle_ip_families
from netemu.api.load import Loaded, Origin, load_paths_partly
from netemu.api.networking import Ingress, IngressClass
from netemu.heap import gc_paused

__all__ = [
    "is_config_map_key",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_label_value",
    "is_port_name",
    "is_port_number",
    "is_qualified_name",
    "load_and_validate",
    "parse_cidr",
    "parse_ip",
    "validate",
]

# ---------------------------------------------------------------- formats
#
# The rules and wording of k8s.io/apimachinery/pkg/util/validation, so that a
# user sees here what `kubectl apply` would tell them.

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character"
)
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character"
)

_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(_DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_PORT_NAME_CHARSET_RE = re.compile("[-a-z0-9]+")
_HTTP_TOKEN_FMT = "[-A-Za-z0-9]+"
_HTTP_TOKEN_RE = re.compile(_HTTP_TOKEN_FMT)

LABEL_MAX = 63
SUBDOMAIN_MAX = 253
PORT_NAME_MAX = 15
# Limits of discovery.k8s.io/v1 EndpointSlice (pkg/apis/discovery/validation and
# the API reference): endpoints per slice, addresses per endpoint, ports per slice.
MAX_SLICE_ENDPOINTS = 1000
MAX_ENDPOINT_ADDRESSES = 100
MAX_SLICE_PORTS = 100
MAX_AFFINITY_TIMEOUT = 86400  # core.MaxClientIPServiceAffinitySeconds: one day
# Counts that size what netemu builds. Kubernetes itself is tested up to 5,000 nodes
# and 150,000 pods per cluster ("Considerations for large clusters") and allows any
# int32 as replicas; netemu keeps every pod in memory (and a live lab makes each a
# network namespace), so it stops far earlier, yet far beyond any lab: at kubelet's
# default of at most 110 pods per node (maxPods), 10,000 replicas fill 91 nodes.
MAX_NODES = 5000
MAX_REPLICAS = 10_000
MAX_PODS = 20_000

_PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
_IP_MSG = "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"
_CIDR_MSG = "must be a valid CIDR value (e.g. 10.9.8.0/24 or 2001:db8::/64)"


# The kube-proxy modes netemu emulates (KubeProxyConfiguration.mode; "" means
# iptables on Linux, and in netemu: the Lab's proxyMode).
PROXY_MODES = ("iptables", "nftables")


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """The API server's explanation of a failed regex (RegexError), examples included."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def is_dns1123_label(value: str) -> list[str]:
    """Problems with `value` as an RFC 1123 label (Namespace names, ...); [] if valid."""
    errs = []
    if len(value) > LABEL_MAX:
        errs.append(_max_len(LABEL_MAX))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        if _DNS1123_SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """Problems with `value` as an RFC 1123 subdomain (most object names); [] if valid."""
    errs = []
    if len(value) > SUBDOMAIN_MAX:
        errs.append(_max_len(SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """Problems with `value` as an RFC 1035 label (Service names); [] if valid."""
    errs = []
    if len(value) > LABEL_MAX:
        errs.append(_max_len(LABEL_MAX))
    if not _DNS1035_LABEL_RE.fullmatch(value):
        errs.append(_regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Problems with `value` as a label key: `[prefix/]name`; [] if valid."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > LABEL_MAX:
        errs.append("name part " + _max_len(LABEL_MAX))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_RE = re.compile(_CONFIG_KEY_FMT)
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
# core.MaxSecretSize: the API server's bound on a ConfigMap's or Secret's data.
MAX_CONFIG_BYTES = 1024 * 1024
# The keys each built-in Secret type requires (ValidateSecret).
SECRET_REQUIRED_KEYS = {
    SECRET_TYPE_TLS: ("tls.crt", "tls.key"),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def is_config_map_key(value: str) -> list[str]:
    """Problems with `value` as a ConfigMap or Secret key (IsConfigMapKey); [] if valid."""
    errs = []
    if len(value) > SUBDOMAIN_MAX:
        errs.append(_max_len(SUBDOMAIN_MAX))
    if not _CONFIG_KEY_RE.fullmatch(value):
        errs.append(
            _regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name")
        )
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_label_value(value: str) -> list[str]:
    """Problems with `value` as a label value (may be empty); [] if valid."""
    errs = []
    if len(value) > LABEL_MAX:
        errs.append(_max_len(LABEL_MAX))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def is_port_name(value: str) -> list[str]:
    """Problems with `value` as an IANA service name (container port names,
    named targetPorts); [] if valid."""
    errs = []
    if len(value) > PORT_NAME_MAX:
        errs.append(_max_len(PORT_NAME_MAX))
    if not _PORT_NAME_CHARSET_RE.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_port_number(value: int) -> list[str]:
    """Problems with `value` as a TCP/UDP/SCTP port number; [] if valid."""
    return [] if 1 <= value <= 65535 else [_PORT_RANGE_MSG]


def parse_ip(value: str) -> Any:
    """An IPv4 or IPv6 address as `netaddr.IPAddress`, or None. Strict: no
    leading zeros, no shorthand such as '10.1', no surrounding blanks."""
    try:
        return IPAddress(value)
    except (AddrFormatError, ValueError, TypeError):
        return None


_CIDR_RE = re.compile(r"([^/\s]+)/(0|[1-9][0-9]{0,2})")


def parse_cidr(value: str) -> Any:
    """`ADDRESS/PREFIX` as `netaddr.IPNetwork` (host bits kept, check `.ip != .network`),
    or None. Unlike `IPNetwork()` itself, a bare address or a netmask is refused."""
    match = _CIDR_RE.fullmatch(value)
    if match is None:
        return None
    ip = parse_ip(match[1])
    prefix = int(match[2])
    if ip is None or prefix > (32 if ip.version == 4 else 128):
        return None
    return IPNetwork(f"{ip}/{prefix}")


def _overlap(a: Any, b: Any) -> bool:
    return bool(a.version == b.version and a.first <= b.last and b.first <= a.last)


_LINK_LOCAL_MULTICAST_V4 = IPNetwork("224.0.0.0/24")  # built once: it is asked per endpoint


def _special_ip(ip: Any) -> list[str]:
    """Why an address may not be a Service externalIP or an endpoint (ValidateNonSpecialIP)."""
    errs = []
    if ip.value == 0:
        errs.append(f"may not be unspecified ({ip})")
    if ip.is_loopback():
        errs.append("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    if ip.is_link_local():
        errs.append("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    if (ip.version == 4 and ip in _LINK_LOCAL_MULTICAST_V4) or (
        ip.version == 6 and ip.words[0] & 0xFF0F == 0xFF02
    ):
        errs.append("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
    return errs


def _snake(camel: str) -> str:
    return re.sub("([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


def _join(msgs: Iterable[str]) -> str:
    return "; ".join(msgs)


def _one_of(options: Sequence[str]) -> str:
    """'A', 'B' or 'C'."""
    quoted = [f"'{option}'" for option in options]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# A LabelSelector's operators; a node selector's also Gt and Lt.
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# ---------------------------------------------------------------- entry points


def validate(
    loaded: Sequence[Loaded], context: Sequence[Loaded] = (), *, create_namespaces: bool = False
) -> list[Diagnostic]:
    """Every semantic problem in `loaded` (already structurally valid), sorted by file
    and line. Cross-object checks (duplicates, clusterIP and nodePort clashes, Lab
    ranges, node names) look at all documents together, whatever file they came from.

    `context`: objects already in place that `loaded` is checked against without being
    checked themselves: a running lab's Lab, whose serviceCIDR, nodePortRange and
    nodes bound what is applied to it (used when `loaded` has no Lab of its own),
    and its Namespaces, Services and their cluster IPs and nodePorts, which
    what is applied must not clash with (an object of `loaded` replaces its own
    namesake in `context`, as `kubectl apply` updates it).

    `create_namespaces`: namespaces used but not defined are not reported."""
    checker = _Checker(loaded, context, create_namespaces)
    checker.run()
    return sorted(checker.out)


def load_and_validate(
    paths: Iterable[str | Path],
    context: Sequence[Loaded] = (),
    *,
    notes: list[str] | None = None,
    create_namespaces: bool = False,
    default_lab: bool = False,
) -> list[Loaded]:
    """Load every manifest under `paths` and validate them together (and
    against `context`, as `validate` does).

    Raises InputError with every problem: the structural ones of documents
    that do not load and the semantic ones of those that do, as the API
    server answers each object of a `kubectl apply` on its own. `notes` gets
    the loader's notices (skipped documents, kinds stored but not emulated).
    `create_namespaces`: a namespace no Namespace object defines is created
    rather than reported (`--create-namespaces`). `default_lab`: an input
    without a Lab and without Nodes gets the built-in Lab (DEFAULT_LAB), said in
    `notes`.
    """
    with gc_paused():  # see gc_paused: millions of objects, none of them garbage
        loaded, problems = load_paths_partly(paths, notes)
        if default_lab and not problems and not any(isinstance(i.obj, Lab | Node) for i in loaded):
            loaded.append(Loaded(make_default_lab(), Origin("<built-in lab>", 0)))
            if notes is not None:
                notes.append(DEFAULT_LAB_NOTICE)
        problems += validate(loaded, context, create_namespaces=create_namespaces)
    if problems:
        raise InputError(problems)
    return loaded


# ---------------------------------------------------------------- the checker

_NAMESPACED = (
    Service,
    Pod,
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    EndpointSlice,
    ReplicationController,
    Job,
    CronJob,
    Endpoints,
    Ingress,
    ConfigMap,
    Secret,
)
# The longest CronJob name: its Jobs are named `<name>-<11 digits>` and must
# fit a 63-character label (ValidateCronJobCreate).
MAX_CRONJOB_NAME = 52
_WORKLOADS = (Deployment, ReplicaSet, DaemonSet, StatefulSet)
# The namespaces every cluster has (kubeadm's, and the API server's `default`).
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# RBAC objects' names are path segments, not DNS names (`system:aggregate-to-admin`):
# the API server checks them with path.IsValidPathSegmentName.
_RBAC_KINDS = frozenset({"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})


def _namespaced(obj: object) -> bool:
    if isinstance(obj, GenericObject):
        return type(obj).namespaced
    return isinstance(obj, _NAMESPACED)


def is_path_segment_name(value: str) -> list[str]:
    """apimachinery's path.IsValidPathSegmentName, with its wording."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


@dataclass(frozen=True)
class _NodePortUse:
    item: Loaded
    path: FieldPath
    number: int
    port: int | None  # the ServicePort's `port`; None for healthCheckNodePort
    protocol: str


@dataclass(frozen=True)
class _LabRanges:
    """The parts of the (first) Lab that other objects are checked against; a
    part is None when absent or invalid (then its own diagnostic says why)."""

    service_cidr: Any  # the primary family's
    node_ports: tuple[int, int] | None
    node_port_text: str
    # Every valid service CIDR by IP version (4, 6): one per family.
    service_cidrs: dict[int, Any] | None = None

    def families(self) -> list[IPFamily]:
        """The cluster's service IP families, primary first."""
        nets = list((self.service_cidrs or {}).values()) or (
            [self.service_cidr] if self.service_cidr is not None else []
        )
        found: list[IPFamily] = ["IPv6" if net.version == 6 else "IPv4" for net in nets]
        return found or ["IPv4"]

    def cidr_for(self, ip: Any) -> Any:
        """The service CIDR of `ip`'s family, or None."""
        return (self.service_cidrs or {}).get(ip.version)


class _Checker:
    def __init__(
        self,
        loaded: Sequence[Loaded],
        context: Sequence[Loaded] = (),
        create_namespaces: bool = False,
    ) -> None:
        self.loaded = loaded
        self.context = context
        self.create_namespaces = create_namespaces
        self.in_place = {id(item) for item in context}
        self.out: list[Diagnostic] = []
        self.node_refs: list[tuple[Loaded, FieldPath, str]] = []
        self.lab: _LabRanges | None = None

    def report(self, item: Loaded, path: FieldPath, message: str) -> None:
        if id(item) in self.in_place:
            return  # an object already in the lab: its own problems are not this input's
        self.out.append(item.diagnostic(path, message))

    def services(self) -> list[Loaded]:
        """The Services whose cluster IPs and nodePorts must not clash: those in
        place (context) that the input does not replace, then the input's."""
        mine = {
            (i.obj.metadata.namespace or "default", i.obj.metadata.name)
            for i in self.loaded
            if isinstance(i.obj, Service)
        }
        kept = [
            i
            for i in self.context
            if isinstance(i.obj, Service)
            and (i.obj.metadata.namespace or "default", i.obj.metadata.name) not in mine
        ]
        return [*kept, *(i for i in self.loaded if isinstance(i.obj, Service))]

    def where(self, item: Loaded, path: FieldPath) -> str:
        """How a message points at another object's field: `Kind/name field (file:line)`."""
        parts = [
            item.ref,
            format_field_path(path),
            f"({item.origin.file}:{item.origin.line_of(path)})",
        ]
        return " ".join(p for p in parts if p)

    def run(self) -> None:
        labs = [item for item in self.loaded if isinstance(item.obj, Lab)]
        proxies = [item for item in self.loaded if isinstance(item.obj, KubeProxyConfiguration)]
        self.check_singletons(labs, "Lab")
        self.check_singletons(proxies, "KubeProxyConfiguration")
        for lab in labs:
            ranges = self.check_lab(lab)
            if self.lab is None:
                self.lab = ranges
        context_labs = [item for item in self.context if isinstance(item.obj, Lab)]
        if not labs and context_labs:
            # The ranges of the lab in place; its own problems are not this input's.
            reported, self.out = self.out, []
            self.lab = self.check_lab(context_labs[0])
            self.out = reported
            labs = context_labs[:1]
        for item in proxies:
            self.check_proxy_config(item)
            self.check_proxy_mode(item, labs)
        self.check_duplicates()
        for item in self.loaded:
            obj = item.obj
            if isinstance(obj, Service):
                self.check_service(item, obj)
            elif isinstance(obj, Pod):
                self.check_meta(item, obj.metadata, is_dns1123_subdomain)
                self.check_pod_spec(item, ("spec",), obj.spec)
            elif isinstance(obj, _WORKLOADS):
                self.check_workload(item, obj)
            elif isinstance(obj, EndpointSlice):
                self.check_endpoint_slice(item, obj)
            elif isinstance(obj, ReplicationController):
                self.check_replication_controller(item, obj)
            elif isinstance(obj, Job):
                self.check_meta(item, obj.metadata, is_dns1123_subdomain)
                self.check_job_spec(item, ("spec",), obj.spec)
            elif isinstance(obj, CronJob):
                self.check_cronjob(item, obj)
            elif isinstance(obj, Endpoints):
                self.check_endpoints(item, obj)
            elif isinstance(obj, Node):
                self.check_node(item, obj)
            elif isinstance(obj, Namespace):
                self.check_meta(item, obj.metadata, is_dns1123_label)
            elif isinstance(obj, GenericObject):
                self.check_generic(item, obj)
            elif isinstance(obj, Ingress | IngressClass):
                # Imported here: that module builds on this one's helpers.
                from netemu.api import validate_networking

                if isinstance(obj, Ingress):
                    validate_networking.check_ingress(self, item, obj)
                else:
                    validate_networking.check_ingress_class(self, item, obj)
            elif isinstance(obj, ConfigMap):
                self.check_config_map(item, obj)
            elif isinstance(obj, Secret):
                self.check_secret(item, obj)
        self.check_namespaces()
        self.check_service_ips()
        self.check_node_ports()
        self.check_node_refs(labs)
        self.check_counts(labs)

    # ------------------------------------------------------------ whole input

    def check_singletons(self, items: list[Loaded], kind: str) -> None:
        for extra in items[1:]:
            first = items[0]
            self.report(
                extra,
                (),
                f"at most one {kind} is allowed in the input; the first is {first.ref} "
                f"({first.origin.file}:{first.origin.line})",
            )

    def check_duplicates(self) -> None:
        seen: dict[tuple[str, str, str], Loaded] = {}
        for item in self.loaded:
            meta = getattr(item.obj, "metadata", None)
            if not isinstance(meta, ObjectMeta) or not meta.name:
                continue
            if isinstance(item.obj, Lab):
                continue  # reported as "at most one Lab"
            kind = type(item.obj).__name__
            namespace = (meta.namespace or "default") if _namespaced(item.obj) else ""
            key = (kind, namespace, meta.name)
            first = seen.setdefault(key, item)
            if first is item:
                continue
            shown = f"{kind} {namespace}/{meta.name}" if namespace else f"{kind} {meta.name}"
            self.report(
                item,
                ("metadata", "name"),
                f"duplicate object: {shown} is already defined at "
                f"{first.origin.file}:{first.origin.line}",
            )

    def check_counts(self, labs: list[Loaded]) -> None:
        """Nodes and pods asked for, in total, within MAX_NODES and MAX_PODS."""
        nodes = 0
        for item in [*labs[:1], *(i for i in self.loaded if isinstance(i.obj, Node))]:
            path: FieldPath = ()
            if isinstance(item.obj, Lab):
                nodes += len(item.obj.spec.nodes)
                path = ("spec", "nodes")
            else:
                nodes += 1
            if nodes > MAX_NODES:
                self.report(
                    item,
                    path,
                    f"too many nodes: {nodes:,} with this one; netemu builds at most "
                    f"{MAX_NODES:,} (as many as Kubernetes supports in a cluster)",
                )
                break
        pods = 0
        for item in self.loaded:
            obj = item.obj
            if isinstance(obj, Pod):
                pods += 1
                path = ()
            elif isinstance(obj, Deployment | ReplicaSet | StatefulSet):
                replicas = obj.spec.replicas
                # Replicas over MAX_REPLICAS are reported by check_workload already.
                pods += 1 if replicas is None else min(max(replicas, 0), MAX_REPLICAS)
                path = ("spec", "replicas")
            elif isinstance(obj, ReplicationController):
                replicas = obj.spec.replicas
                pods += 1 if replicas is None else min(max(replicas, 0), MAX_REPLICAS)
                path = ("spec", "replicas")
            elif isinstance(obj, Job):
                parallelism = obj.spec.parallelism
                pods += 1 if parallelism is None else min(max(parallelism, 0), MAX_REPLICAS)
                path = ("spec", "parallelism")
            elif isinstance(obj, DaemonSet):
                pods += max(nodes, 1)  # a pod on every node, at most
                path = ("spec",)
            else:
                continue
            if pods > MAX_PODS:
                self.report(
                    item,
                    path,
                    f"too many pods: the input asks for {pods:,} with this {obj.kind}; "
                    f"netemu runs at most {MAX_PODS:,} pods in all",
                )
                break

    def check_node_refs(self, labs: list[Loaded]) -> None:
        """Pods and pod templates that pin a node must pin one that exists."""
        nodes: set[str] = set()
        for lab in labs:
            assert isinstance(lab.obj, Lab)
            nodes.update(n.name for n in lab.obj.spec.nodes)
        for item in self.loaded:
            if isinstance(item.obj, Node) and item.obj.metadata.name:
                nodes.add(item.obj.metadata.name)
        if not nodes:
            return  # no topology given: nothing to check against
        known = ", ".join(sorted(nodes))
        for item, path, name in self.node_refs:
            if name not in nodes:
                self.report(item, path, f'node "{name}" does not exist; defined nodes: {known}')

    def check_generic(self, item: Loaded, obj: GenericObject) -> None:
        """An object stored but not emulated: its metadata, as the API server checks
        every object's (names are DNS subdomains, RBAC's path segments)."""
        rule = is_path_segment_name if obj.kind in _RBAC_KINDS else is_dns1123_subdomain
        self.check_meta(item, obj.metadata, rule)

    def check_namespaces(self) -> None:
        """Each namespaced object's namespace exists: one of the cluster's own,
        defined in the input, or (live) in the lab; as the API server answers
        `namespaces "x" not found` otherwise."""
        if self.create_namespaces:
            return
        known = set(SYSTEM_NAMESPACES)
        for item in [*self.context, *self.loaded]:
            if isinstance(item.obj, Namespace) and item.obj.metadata.name:
                known.add(item.obj.metadata.name)
        for item in self.loaded:
            meta = getattr(item.obj, "metadata", None)
            if not isinstance(meta, ObjectMeta) or not _namespaced(item.obj):
                continue
            namespace = meta.namespace or "default"
            if namespace in known or is_dns1123_label(namespace):
                continue  # a malformed name is reported by check_meta
            self.report(
                item,
                ("metadata", "namespace"),
                f'namespaces "{namespace}" not found: define the Namespace in the input, '
                "or pass --create-namespaces",
            )

    # ------------------------------------------------------------ ConfigMap and Secret

    def check_config_keys(self, item: Loaded, field: str, data: dict[str, str]) -> None:
        for key in data:
            if errs := is_config_map_key(key):
                self.report(item, (field, key), f'invalid key "{key}": {_join(errs)}')

    def check_base64(self, item: Loaded, field: str, data: dict[str, str]) -> int:
        """Each value of `data` decodes as the API server decodes a []byte
        field; returns the decoded size (of the values that decode)."""
        size = 0
        for key, value in data.items():
            if problem := base64_error(value):
                self.report(item, (field, key), f"{problem} (expected base64-encoded data)")
            else:
                size += len(value) * 3 // 4
        return size

    def check_config_map(self, item: Loaded, cm: ConfigMap) -> None:
        """ValidateConfigMap: valid keys, none in both data and binaryData,
        binaryData base64, at most 1 MiB in all."""
        self.check_meta(item, cm.metadata, is_dns1123_subdomain)
        self.check_config_keys(item, "data", cm.data)
        self.check_config_keys(item, "binaryData", cm.binary_data)
        for key in cm.binary_data:
            if key in cm.data:
                self.report(item, ("binaryData", key), "duplicate of key present in data")
        size = sum(len(k) + len(v.encode()) for k, v in cm.data.items())
        size += self.check_base64(item, "binaryData", cm.binary_data)
        size += sum(len(k) for k in cm.binary_data)
        if size > MAX_CONFIG_BYTES:
            self.report(item, (), f"Too long: must have at most {MAX_CONFIG_BYTES} bytes")

    def check_secret(self, item: Loaded, secret: Secret) -> None:
        """ValidateSecret: valid keys, data base64, at most 1 MiB, and the
        keys (or annotation) a built-in type requires, checked on the data
        as stored (stringData merged in)."""
        self.check_meta(item, secret.metadata, is_dns1123_subdomain)
        self.check_config_keys(item, "data", secret.data)
        self.check_config_keys(item, "stringData", secret.string_data)
        size = self.check_base64(item, "data", secret.data)
        size += sum(len(v.encode()) for v in secret.string_data.values())
        if size > MAX_CONFIG_BYTES:
            self.report(item, ("data",), f"Too long: must have at most {MAX_CONFIG_BYTES} bytes")
        keys = set(secret.data) | set(secret.string_data)
        kind = secret.type or "Opaque"  # SetDefaults_Secret
        for key in SECRET_REQUIRED_KEYS.get(kind, ()):
            if key not in keys:
                self.report(item, ("data",), f"data[{key}]: Required value")
        if kind == "kubernetes.io/basic-auth" and not keys & {"username", "password"}:
            self.report(item, ("data",), "data[username]: Required value")
        if kind == "kubernetes.io/service-account-token":
            annotation = "kubernetes.io/service-account.name"
            if not secret.metadata.annotations.get(annotation):
                self.report(
                    item,
                    ("metadata", "annotations"),
                    f"metadata.annotations[{annotation}]: Required value",
                )

    # ------------------------------------------------------------ metadata and labels

    def check_meta(
        self,
        item: Loaded,
        meta: ObjectMeta,
        name_rule: Callable[[str], list[str]],
        path: FieldPath = ("metadata",),
    ) -> None:
        if meta.name:
            if errs := name_rule(meta.name):
                self.report(item, (*path, "name"), _join(errs))
        elif meta.generate_name:
            # As the API server does: a trailing '-' of a prefix is fine.
            prefix = meta.generate_name
            masked = prefix[:-1] + "a" if len(prefix) > 1 and prefix.endswith("-") else prefix
            if errs := name_rule(masked):
                self.report(item, (*path, "generateName"), _join(errs))
        else:
            self.report(item, (*path, "name"), "name or generateName is required")
        namespaced = _namespaced(item.obj)
        if meta.namespace and namespaced and (errs := is_dns1123_label(meta.namespace)):
            self.report(item, (*path, "namespace"), _join(errs))
        self.check_labels(item, (*path, "labels"), meta.labels)

    def check_labels(self, item: Loaded, path: FieldPath, labels: dict[str, str]) -> None:
        """Label maps: metadata.labels, selectors, nodeSelectors, Lab node labels."""
        for key, value in labels.items():
            if errs := is_qualified_name(key):
                self.report(item, (*path, key), f'invalid label key "{key}": {_join(errs)}')
            if errs := is_label_value(value):
                self.report(item, (*path, key), f'invalid label value "{value}": {_join(errs)}')

    def check_selector(self, item: Loaded, path: FieldPath, selector: LabelSelector) -> bool:
        """A LabelSelector; True if it is well-formed (so matching it means something)."""
        before = len(self.out)
        self.check_labels(item, (*path, "matchLabels"), selector.match_labels)
        for i, req in enumerate(selector.match_expressions):
            rpath = (*path, "matchExpressions", i)
            if errs := is_qualified_name(req.key):
                self.report(item, (*rpath, "key"), f'invalid label key "{req.key}": {_join(errs)}')
            self.check_requirement_operator(
                item, rpath, req.operator, len(req.values), SELECTOR_OPERATORS
            )
            for j, value in enumerate(req.values):
                if errs := is_label_value(value):
                    self.report(
                        item, (*rpath, "values", j), f'invalid label value "{value}": {_join(errs)}'
                    )
        return len(self.out) == before

    # ------------------------------------------------------------ pods and workloads

    def check_requirement_operator(
        self, item: Loaded, path: FieldPath, operator: Any, count: int, operators: tuple[str, ...]
    ) -> None:
        """A label requirement's operator, and how many values it takes
        (ValidateLabelSelectorRequirement, ValidateNodeSelectorRequirement)."""
        if operator not in operators:
            self.report(
                item,
                (*path, "operator"),
                f'"{operator}" is not a valid selector operator: expected {_one_of(operators)}',
            )
        elif operator in ("In", "NotIn") and not count:
            self.report(
                item, (*path, "values"), "must be specified when `operator` is 'In' or 'NotIn'"
            )
        elif operator in ("Exists", "DoesNotExist") and count:
            self.report(
                item,
                (*path, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )
        elif operator in ("Gt", "Lt") and count != 1:
            self.report(
                item,
                (*path, "values"),
                "must be specified single value when `operator` is 'Lt' or 'Gt'",
            )

    def check_node_affinity(self, item: Loaded, path: FieldPath, affinity: Any) -> None:
        """spec.affinity.nodeAffinity as the API server checks it (validateNodeAffinity):
        the scheduler places pods by its required terms (netemu.controlplane.nodeaffinity)."""
        node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
        if node_affinity is None:
            return
        if not isinstance(node_affinity, dict):
            self.report(item, path, "expected an object")
            return
        required_path = (*path, "requiredDuringSchedulingIgnoredDuringExecution")
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if required is not None:
            terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
            terms_path = (*required_path, "nodeSelectorTerms")
            if not isinstance(terms, list) or not terms:
                self.report(item, terms_path, "must have at least one node selector term")
            else:
                for i, term in enumerate(terms):
                    self.check_node_selector_term(item, (*terms_path, i), term)
        for entry_path, entry in self.weighted_terms(
            item, path, node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
        ):
            self.check_node_selector_term(
                item, (*entry_path, "preference"), entry.get("preference")
            )

    def items_at(self, item: Loaded, path: FieldPath, value: Any) -> list[Any]:
        """A list field of data kept as read: none when absent, and none, with
        a report, when it is not a list."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.report(item, path, "expected a list")
            return []
        return value

    def weighted_terms(
        self, item: Loaded, path: FieldPath, entries: Any
    ) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
        """preferredDuringSchedulingIgnoredDuringExecution's entries, each an
        object with a weight of 1-100 (reported here), for the caller to
        check their term."""
        list_path = (*path, "preferredDuringSchedulingIgnoredDuringExecution")
        for i, entry in enumerate(self.items_at(item, list_path, entries)):
            entry_path = (*list_path, i)
            if not isinstance(entry, dict):
                self.report(item, entry_path, "expected an object")
                continue
            weight = entry.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
                self.report(item, (*entry_path, "weight"), "must be in the range 1-100")
            yield entry_path, entry

    def check_pod_affinity(self, item: Loaded, path: FieldPath, affinity: Any, kind: str) -> None:
        """spec.affinity.podAffinity / podAntiAffinity as the API server checks
        them (validatePodAffinity, validatePodAntiAffinity): required terms
        place pods (netemu.controlplane.podaffinity), preferred ones only
        weigh nodes but are checked alike."""
        section = affinity.get(kind) if isinstance(affinity, dict) else None
        if section is None:
            return
        if not isinstance(section, dict):
            self.report(item, path, "expected an object")
            return
        required = section.get("requiredDuringSchedulingIgnoredDuringExecution")
        required_path = (*path, "requiredDuringSchedulingIgnoredDuringExecution")
        for i, term in enumerate(self.items_at(item, required_path, required)):
            if isinstance(term, dict):
                self.check_pod_affinity_term(item, (*required_path, i), term)
            else:
                self.report(item, (*required_path, i), "expected an object")
        for entry_path, entry in self.weighted_terms(
            item, path, section.get("preferredDuringSchedulingIgnoredDuringExecution")
        ):
            term, term_path = entry.get("podAffinityTerm"), (*entry_path, "podAffinityTerm")
            if isinstance(term, dict):
                self.check_pod_affinity_term(item, term_path, term)
            else:
                self.report(item, term_path, "Required value: a pod affinity term")

    def check_pod_affinity_term(self, item: Loaded, path: FieldPath, term: dict[str, Any]) -> None:
        """A PodAffinityTerm (validatePodAffinityTerm)."""
        selectors: dict[str, LabelSelector | None] = {}
        for field in ("labelSelector", "namespaceSelector"):
            raw = term.get(field)
            selectors[field] = None
            if raw is None:
                continue
            try:
                selector = LabelSelector.model_validate(raw)
            except ValidationError:
                self.report(
                    item,
                    (*path, field),
                    "expected a label selector (matchLabels, matchExpressions)",
                )
                continue
            selectors[field] = selector
            self.check_selector(item, (*path, field), selector)
        # A falsy value ("", 0, null) counts as no namespaces, unreported.
        names = self.items_at(item, (*path, "namespaces"), term.get("namespaces") or None)
        for j, name in enumerate(names):
            if errs := is_dns1123_label(str(name)):
                self.report(item, (*path, "namespaces", j), _join(errs))
        key = term.get("topologyKey")
        if not key:
            self.report(item, (*path, "topologyKey"), "can not be empty")
        elif errs := (is_qualified_name(key) if isinstance(key, str) else ["must be a string"]):
            self.report(item, (*path, "topologyKey"), f'invalid label key "{key}": {_join(errs)}')
        self.check_label_keys(item, path, term, selectors["labelSelector"])

    def check_label_keys(
        self, item: Loaded, path: FieldPath, term: dict[str, Any], selector: LabelSelector | None
    ) -> None:
        """matchLabelKeys and mismatchLabelKeys (validateMatchLabelKeysAndMismatchLabelKeys):
        label keys, only with a labelSelector, none in both lists or in the
        selector's own expressions."""
        seen: dict[str, str] = {}
        in_selector = {r.key for r in selector.match_expressions} if selector else set()
        for field in ("matchLabelKeys", "mismatchLabelKeys"):
            keys = self.items_at(item, (*path, field), term.get(field))
            if keys and selector is None:
                self.report(
                    item, (*path, field), "must not be specified when labelSelector is not set"
                )
                continue
            for j, key in enumerate(keys):
                kpath = (*path, field, j)
                errs = is_qualified_name(key) if isinstance(key, str) else ["must be a string"]
                if errs:
                    self.report(item, kpath, f'invalid label key "{key}": {_join(errs)}')
                elif seen.get(key, field) != field:
                    self.report(
                        item, kpath, f'"{key}" exists in both matchLabelKeys and mismatchLabelKeys'
                    )
                elif key in in_selector:
                    self.report(item, kpath, f'"{key}" exists in both {field} and labelSelector')
                else:
                    seen[key] = field

    def check_node_selector_term(self, item: Loaded, path: FieldPath, term: Any) -> None:
        """A NodeSelectorTerm (ValidateNodeSelectorTerm): label requirements
        under matchExpressions, `metadata.name` under matchFields."""
        if not isinstance(term, dict):
            self.report(item, path, "expected an object")
            return
        for which in ("matchExpressions", "matchFields"):
            for j, requirement in enumerate(self.items_at(item, (*path, which), term.get(which))):
                rpath = (*path, which, j)
                if not isinstance(requirement, dict):
                    self.report(item, rpath, "expected an object")
                elif which == "matchFields":
                    self.check_node_field_requirement(item, rpath, requirement)
                else:
                    self.check_node_label_requirement(item, rpath, requirement)

    def check_node_label_requirement(
        self, item: Loaded, path: FieldPath, requirement: dict[str, Any]
    ) -> None:
        key, operator = requirement.get("key"), requirement.get("operator")
        values = self.items_at(item, (*path, "values"), requirement.get("values") or None)
        self.check_requirement_operator(
            item, path, operator, len(values), (*SELECTOR_OPERATORS, "Gt", "Lt")
        )
        if not isinstance(key, str):
            self.report(item, (*path, "key"), "Required value: a label key")
        elif errs := is_qualified_name(key):
            self.report(item, (*path, "key"), f'invalid label key "{key}": {_join(errs)}')

    def check_node_field_requirement(
        self, item: Loaded, path: FieldPath, requirement: dict[str, Any]
    ) -> None:
        key, operator = requirement.get("key"), requirement.get("operator")
        values = requirement.get("values") or []
        if operator in ("In", "NotIn"):
            if not isinstance(values, list) or len(values) != 1:
                self.report(
                    item,
                    (*path, "values"),
                    "must be only one value when `operator` is 'In' or 'NotIn' for node field "
                    "selector",
                )
        else:
            self.report(
                item,
                (*path, "operator"),
                f'"{operator}" is not a valid selector operator: expected '
                f"{_one_of(('In', 'NotIn'))}",
            )
        if key != "metadata.name":
            self.report(
                item,
                (*path, "key"),
                f'"{key}" is not a valid field selector key: expected metadata.name',
            )
        elif isinstance(values, list):
            for j, value in enumerate(values):
                if errs := is_dns1123_subdomain(str(value)):
                    self.report(item, (*path, "values", j), _join(errs))

    def check_pod_spec(self, item: Loaded, path: FieldPath, spec: PodSpec) -> None:
        if not spec.containers:
            # The API server's words for an empty list (ValidatePodSpec).
            self.report(
                item, (*path, "containers"), "Required value: a pod needs at least one container"
            )
        self.check_labels(item, (*path, "nodeSelector"), spec.node_selector)
        self.check_node_affinity(item, (*path, "affinity", "nodeAffinity"), spec.affinity)
        for kind in ("podAffinity", "podAntiAffinity"):
            self.check_pod_affinity(item, (*path, "affinity", kind), spec.affinity, kind)
        if spec.node_name:
            if errs := is_dns1123_subdomain(spec.node_name):
                self.report(item, (*path, "nodeName"), _join(errs))
            else:
                self.node_refs.append((item, (*path, "nodeName"), spec.node_name))
        self.check_pod_dns(item, path, spec)
        # Container names: DNS-1123 labels, unique across containers and init containers
        # (the API server's validateContainers: "Duplicate value").
        container_names: dict[str, FieldPath] = {}
        for group, containers in (
            ("containers", spec.containers),
            ("initContainers", spec.init_containers),
        ):
            for c, container in enumerate(containers):
                cpath = (*path, group, c, "name")
                if errs := is_dns1123_label(container.name):
                    self.report(item, cpath, _join(errs))
                elif container.name in container_names:
                    self.report(
                        item,
                        cpath,
                        f'Duplicate value: "{container.name}": already the name of '
                        f"{format_field_path(container_names[container.name])}",
                    )
                container_names.setdefault(container.name, (*path, group, c))
        # Port names are unique across the whole pod (not only per container as in
        # Kubernetes): a Service's named targetPort must resolve to one port.
        names: dict[str, FieldPath] = {}
        # hostPorts are unique per protocol and hostIP across the containers
        # (validation.go, AccumulateUniqueHostPorts, with its key).
        host_ports: dict[str, FieldPath] = {}
        for group, containers in (
            ("containers", spec.containers),
            ("initContainers", spec.init_containers),
        ):
            for c, container in enumerate(containers):
                self.check_probes(item, (*path, group, c), container, group == "initContainers")
                self.check_lifecycle(item, (*path, group, c), container)
                for p, port in enumerate(container.ports):
                    ppath = (*path, group, c, "ports", p)
                    if errs := is_port_number(port.container_port):
                        self.report(item, (*ppath, "containerPort"), _join(errs))
                    if port.host_port and (errs := is_port_number(port.host_port)):
                        self.report(item, (*ppath, "hostPort"), _join(errs))
                    elif port.host_port and group == "containers":
                        key = f"{port.protocol}/{port.host_ip or ''}/{port.host_port}"
                        if key in host_ports:
                            self.report(
                                item,
                                (*ppath, "hostPort"),
                                f'Duplicate value: "{key}": already the hostPort of '
                                f"{format_field_path(host_ports[key])}",
                            )
                        host_ports.setdefault(key, ppath)
                    if not port.name:
                        continue
                    if errs := is_port_name(port.name):
                        self.report(
                            item,
                            (*ppath, "name"),
                            f"not a valid port name (an IANA service name): {_join(errs)}",
                        )
                    elif port.name in names:
                        self.report(
                            item,
                            (*ppath, "name"),
                            f'duplicate port name "{port.name}": already used by '
                            f"{format_field_path(names[port.name])}; port names must be unique "
                            "within a pod",
                        )
                    else:
                        names[port.name] = ppath

    def check_pod_dns(self, item: Loaded, path: FieldPath, spec: PodSpec) -> None:
        """hostname, subdomain, hostAliases, dnsPolicy and dnsConfig, with the
        API server's messages (pkg/apis/core/validation: ValidatePodSpec,
        validateHostAliases, validateDNSPolicy, validatePodDNSConfig)."""
        for name, value in (("hostname", spec.hostname), ("subdomain", spec.subdomain)):
            if value and (errs := is_dns1123_label(value)):
                self.report(item, (*path, name), f'Invalid value: "{value}": {_join(errs)}')
        self.check_host_aliases(item, (*path, "hostAliases"), spec.host_aliases)
        policy = spec.dns_policy
        if policy is not None and policy not in DNS_POLICIES:
            if policy == "":
                self.report(item, (*path, "dnsPolicy"), "Required value")
            else:
                supported = ", ".join(f'"{v}"' for v in DNS_POLICIES)
                self.report(
                    item,
                    (*path, "dnsPolicy"),
                    f"Unsupported value: {json.dumps(policy)}: supported values: {supported}",
                )
        where = (*path, "dnsConfig")
        config = spec.dns_config
        if policy == "None":
            if not isinstance(config, dict):
                self.report(
                    item, where, "Required value: must provide `dnsConfig` when `dnsPolicy` is None"
                )
                return
            if not config.get("nameservers"):
                self.report(
                    item,
                    (*where, "nameservers"),
                    "Required value: must provide at least one DNS nameserver when `dnsPolicy` "
                    "is None",
                )
                return
        if config is None:
            return
        if not isinstance(config, dict):
            self.report(item, where, "expected an object with nameservers, searches and options")
            return
        if unknown := sorted(set(config) - {"nameservers", "searches", "options"}):
            self.report(
                item,
                (*where, unknown[0]),
                "unknown field: expected nameservers, searches or options",
            )
        nameservers = self.string_list(item, (*where, "nameservers"), config.get("nameservers"))
        if len(nameservers) > MAX_NAMESERVERS:
            self.report(
                item,
                (*where, "nameservers"),
                f"Invalid value: {_go_list(nameservers)}: must not have more than "
                f"{MAX_NAMESERVERS} nameservers",
            )
        for i, ns in enumerate(nameservers):
            if parse_ip(ns) is None:
                self.report(
                    item,
                    (*where, "nameservers", i),
                    f'Invalid value: "{ns}": {_IP_MSG}',
                )
        searches = self.string_list(item, (*where, "searches"), config.get("searches"))
        if len(searches) > MAX_SEARCH_PATHS:
            self.report(
                item,
                (*where, "searches"),
                f"Invalid value: {_go_list(searches)}: must not have more than "
                f"{MAX_SEARCH_PATHS} search paths",
            )
        if len(" ".join(searches)) > MAX_SEARCH_LIST_CHARS:
            self.report(
                item,
                (*where, "searches"),
                f"Invalid value: {_go_list(searches)}: must not have more than "
                f"{MAX_SEARCH_LIST_CHARS} characters (including spaces) in the search list",
            )
        for i, search in enumerate(searches):
            # A trailing dot is fine (an absolute name).
            trimmed = search.removesuffix(".")
            if errs := is_dns1123_subdomain(trimmed):
                self.report(
                    item, (*where, "searches", i), f'Invalid value: "{trimmed}": {_join(errs)}'
                )
        options = config.get("options")
        if options is not None and not isinstance(options, list):
            self.report(item, (*where, "options"), "expected a list of {name, value}")
            return
        for i, option in enumerate(options or []):
            entry = option if isinstance(option, dict) else {}
            opt_name, opt_value = entry.get("name"), entry.get("value")
            if not isinstance(opt_name, str) or not opt_name:
                self.report(
                    item,
                    (*where, "options", i),
                    "Required value: Option.Name must not be empty",
                )
            elif opt_value is not None and not isinstance(opt_value, str):
                self.report(item, (*where, "options", i, "value"), "expected a string")

    def check_host_aliases(self, item: Loaded, path: FieldPath, aliases: Any) -> None:
        if aliases is None:
            return
        if not isinstance(aliases, list):
            self.report(item, path, "expected a list of {ip, hostnames}")
            return
        for i, alias in enumerate(aliases):
            if not isinstance(alias, dict):
                self.report(item, (*path, i), "expected an object with ip and hostnames")
                continue
            ip = alias.get("ip")
            if not isinstance(ip, str) or not ip:
                self.report(item, (*path, i, "ip"), "Required value")
            elif parse_ip(ip) is None:
                self.report(
                    item,
                    (*path, i, "ip"),
                    f'Invalid value: "{ip}": {_IP_MSG}',
                )
            names = self.string_list(item, (*path, i, "hostnames"), alias.get("hostnames"))
            for j, name in enumerate(names):
                if errs := is_dns1123_subdomain(name):
                    self.report(
                        item, (*path, i, "hostnames", j), f'Invalid value: "{name}": {_join(errs)}'
                    )

    def string_list(self, item: Loaded, path: FieldPath, value: Any) -> list[str]:
        """`value` as a list of strings ([] when absent); wrong types are reported."""
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.report(item, path, "expected a list of strings")
            return []
        return value

    def check_lifecycle(self, item: Loaded, path: FieldPath, container: Container) -> None:
        """The shape of a container's lifecycle hooks (validateLifecycle and
        validateHandler in pkg/apis/core/validation): each hook one handler,
        an object; a sleep's seconds an integer of at least 0. The field is
        kept as data (netemu.node.termination reads it)."""
        lifecycle = container.lifecycle
        if lifecycle is None:
            return
        lpath = (*path, "lifecycle")
        if not isinstance(lifecycle, dict):
            self.report(item, lpath, "must be an object")
            return
        for hook in ("postStart", "preStop"):
            handler = lifecycle.get(hook)
            if handler is None:
                continue
            hpath = (*lpath, hook)
            if not isinstance(handler, dict):
                self.report(item, hpath, "must be an object")
                continue
            kinds = [k for k in ("exec", "httpGet", "tcpSocket", "sleep") if k in handler]
            if not kinds:
                self.report(item, hpath, "must specify a handler type")
            for extra in kinds[1:]:
                self.report(item, (*hpath, extra), "may not specify more than 1 handler type")
            for kind in kinds:
                if not isinstance(handler[kind], dict):
                    self.report(item, (*hpath, kind), "must be an object")
            sleep = handler.get("sleep")
            if isinstance(sleep, dict):
                seconds = sleep.get("seconds")
                if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
                    self.report(
                        item, (*hpath, "sleep", "seconds"), "must be an integer of at least 0"
                    )

    def check_probes(self, item: Loaded, path: FieldPath, container: Container, init: bool) -> None:
        """validateProbe and the container checks around it
        (pkg/apis/core/validation), plus one of netemu's own: a named probe
        port must name one of the container's ports (the kubelet would
        otherwise fail to resolve it at every probe)."""
        probes = (
            ("livenessProbe", container.liveness_probe),
            ("readinessProbe", container.readiness_probe),
            ("startupProbe", container.startup_probe),
        )
        ports = {p.name for p in container.ports if p.name}
        for field, probe in probes:
            if probe is None:
                continue
            ppath = (*path, field)
            if init and container.restart_policy != "Always":
                self.report(
                    item, ppath, "may not be set for init containers without restartPolicy=Always"
                )
                continue
            handlers = probe.handlers()
            if not handlers:
                self.report(item, ppath, "must specify a handler type")
            for extra in handlers[1:]:
                self.report(item, (*ppath, extra), "may not specify more than 1 handler type")
            for name in (
                "initialDelaySeconds",
                "timeoutSeconds",
                "periodSeconds",
                "successThreshold",
                "failureThreshold",
            ):
                value = getattr(probe, _snake(name))
                if value is not None and value < 0:
                    self.report(item, (*ppath, name), "must be greater than or equal to 0")
            grace = probe.termination_grace_period_seconds
            if grace is not None and grace <= 0:
                self.report(
                    item, (*ppath, "terminationGracePeriodSeconds"), "must be greater than 0"
                )
            if field != "readinessProbe" and probe.success_threshold not in (None, 0, 1):
                # 0 is defaulted to 1 before validation.
                self.report(item, (*ppath, "successThreshold"), "must be 1")
            if probe.exec is not None and not probe.exec.command:
                self.report(item, (*ppath, "exec", "command"), "Required value")
            for handler, port in (
                ("httpGet", probe.http_get.port if probe.http_get else None),
                ("tcpSocket", probe.tcp_socket.port if probe.tcp_socket else None),
                ("grpc", probe.grpc.port if probe.grpc else None),
            ):
                if port is None:
                    continue
                where = (*ppath, handler, "port")
                if isinstance(port, int):
                    if errs := is_port_number(port):
                        self.report(item, where, _join(errs))
                elif errs := is_port_name(port):
                    self.report(item, where, _join(errs))
                elif port not in ports:
                    known = ", ".join(sorted(ports)) or "none"
                    self.report(
                        item,
                        where,
                        f'no port named "{port}" in this container (its named ports: {known})',
                    )
            if probe.http_get is not None:
                for h, header in enumerate(probe.http_get.http_headers):
                    if not _HTTP_TOKEN_RE.fullmatch(header.name):
                        self.report(
                            item,
                            (*ppath, "httpGet", "httpHeaders", h, "name"),
                            f'invalid HTTP header name "{header.name}": '
                            + _regex_error(
                                "a valid HTTP header must consist of alphanumeric characters "
                                "or '-'",
                                _HTTP_TOKEN_FMT,
                                "X-Header-Name",
                            ),
                        )

    def check_workload(
        self, item: Loaded, obj: Deployment | ReplicaSet | DaemonSet | StatefulSet
    ) -> None:
        self.check_meta(item, obj.metadata, is_dns1123_subdomain)
        spec = obj.spec
        replicas = getattr(spec, "replicas", None)
        if replicas is not None and replicas < 0:
            self.report(item, ("spec", "replicas"), "must be greater than or equal to 0")
        elif replicas is not None and replicas > MAX_REPLICAS:
            self.report(
                item,
                ("spec", "replicas"),
                f"must be no more than {MAX_REPLICAS:,}: each replica is a pod (in a live lab a "
                "network namespace), and no lab needs so many",
            )
        template = spec.template
        self.check_labels(
            item, ("spec", "template", "metadata", "labels"), template.metadata.labels
        )
        self.check_pod_spec(item, ("spec", "template", "spec"), template.spec)
        selector = spec.selector
        well_formed = self.check_selector(item, ("spec", "selector"), selector)
        if not selector.match_labels and not selector.match_expressions:
            self.report(
                item,
                ("spec", "selector"),
                f"empty selector is invalid for {obj.kind.lower()}: set `matchLabels` "
                "(or `matchExpressions`) that select the template's labels",
            )
        elif well_formed and not selector.matches(template.metadata.labels):
            self.report(
                item,
                ("spec", "template", "metadata", "labels"),
                "`selector` does not match template `labels` (selector: "
                f"{_selector_text(selector)}; template labels: "
                f"{_labels_text(template.metadata.labels)})",
            )

    # ------------------------------------------------------------ v1 and batch workloads

    def check_replication_controller(self, item: Loaded, rc: ReplicationController) -> None:
        """ValidateReplicationControllerSpec: a template is required, its
        selector (defaulted to the template's labels) must select them."""
        self.check_meta(item, rc.metadata, is_dns1123_subdomain)
        spec = rc.spec
        self.check_replicas(item, ("spec", "replicas"), spec.replicas)
        if spec.selector:
            self.check_labels(item, ("spec", "selector"), spec.selector)
        if spec.template is None:
            self.report(item, ("spec", "template"), "Required value")
            return
        labels = spec.template.metadata.labels
        self.check_labels(item, ("spec", "template", "metadata", "labels"), labels)
        self.check_pod_spec(item, ("spec", "template", "spec"), spec.template.spec)
        selector = spec.effective_selector()
        if not selector:
            self.report(item, ("spec", "selector"), "Required value")
        elif not selector.items() <= labels.items():
            self.report(
                item,
                ("spec", "template", "metadata", "labels"),
                f"Invalid value: {_labels_text(labels)}: `selector` does not match template "
                f"`labels` (selector: {_labels_text(selector)})",
            )
        restart = spec.template.spec.restart_policy
        if restart not in (None, "Always"):
            self.report(
                item,
                ("spec", "template", "spec", "restartPolicy"),
                f'Unsupported value: "{restart}": supported values: "Always"',
            )

    def check_replicas(self, item: Loaded, path: FieldPath, value: int | None) -> None:
        if value is not None and value < 0:
            self.report(item, path, "must be greater than or equal to 0")
        elif value is not None and value > MAX_REPLICAS:
            self.report(
                item,
                path,
                f"must be no more than {MAX_REPLICAS:,}: each replica is a pod (in a live lab a "
                "network namespace), and no lab needs so many",
            )

    def check_job_spec(self, item: Loaded, path: FieldPath, spec: JobSpec) -> None:
        """ValidateJobSpec (pkg/apis/batch/validation)."""
        for field, value in (
            ("parallelism", spec.parallelism),
            ("completions", spec.completions),
            ("activeDeadlineSeconds", spec.active_deadline_seconds),
            ("backoffLimit", spec.backoff_limit),
            ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
        ):
            if value is not None and value < 0:
                self.report(item, (*path, field), "must be greater than or equal to 0")
        if spec.parallelism is not None and spec.parallelism > MAX_REPLICAS:
            self.check_replicas(item, (*path, "parallelism"), spec.parallelism)
        if spec.completion_mode == "Indexed" and spec.completions is None:
            self.report(
                item, (*path, "completions"), "Required value: when completion mode is Indexed"
            )
        template = spec.template
        self.check_labels(item, (*path, "template", "metadata", "labels"), template.metadata.labels)
        self.check_pod_spec(item, (*path, "template", "spec"), template.spec)
        restart = template.spec.restart_policy or "Always"
        if restart not in ("OnFailure", "Never"):
            self.report(
                item,
                (*path, "template", "spec", "restartPolicy"),
                f'Unsupported value: "{restart}": supported values: "OnFailure", "Never"',
            )
        if spec.manual_selector:
            if spec.selector is None:
                self.report(item, (*path, "selector"), "Required value")
            elif self.check_selector(item, (*path, "selector"), spec.selector) and (
                not spec.selector.matches(template.metadata.labels)
            ):
                self.report(
                    item,
                    (*path, "template", "metadata", "labels"),
                    f"Invalid value: {_labels_text(template.metadata.labels)}: `selector` does "
                    "not match template `labels`",
                )
        elif spec.selector is not None:
            # The API server generates the selector itself (manualSelector unset).
            self.report(
                item,
                (*path, "selector"),
                "Invalid value: `selector` not auto-generated: set `manualSelector: true` to "
                "give your own, or leave `selector` out",
            )

    def check_cronjob(self, item: Loaded, cj: CronJob) -> None:
        """ValidateCronJobCreate: name, schedule, timeZone and the job template."""
        self.check_meta(item, cj.metadata, is_dns1123_subdomain)
        name = cj.metadata.name or ""
        if len(name) > MAX_CRONJOB_NAME:
            self.report(
                item,
                ("metadata", "name"),
                f'Invalid value: "{name}": must be no more than {MAX_CRONJOB_NAME} characters',
            )
        spec = cj.spec
        if why := schedule_error(spec.schedule):
            self.report(item, ("spec", "schedule"), f'Invalid value: "{spec.schedule}": {why}')
        if spec.time_zone is not None and (why := time_zone_error(spec.time_zone)):
            self.report(item, ("spec", "timeZone"), f'Invalid value: "{spec.time_zone}": {why}')
        for field, value in (
            ("startingDeadlineSeconds", spec.starting_deadline_seconds),
            ("successfulJobsHistoryLimit", spec.successful_jobs_history_limit),
            ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
        ):
            if value is not None and value < 0:
                self.report(item, ("spec", field), "must be greater than or equal to 0")
        self.check_job_spec(item, ("spec", "jobTemplate", "spec"), spec.job_template.spec)

    def check_endpoints(self, item: Loaded, endpoints: Endpoints) -> None:
        """ValidateEndpoints: addresses are IPs, ports in range, port names
        DNS labels and required when a subset has several ports."""
        self.check_meta(item, endpoints.metadata, is_dns1123_subdomain)
        for s, subset in enumerate(endpoints.subsets):
            for group, addresses in (
                ("addresses", subset.addresses),
                ("notReadyAddresses", subset.not_ready_addresses),
            ):
                for a, address in enumerate(addresses):
                    if parse_ip(address.ip) is None:
                        self.report(
                            item,
                            ("subsets", s, group, a, "ip"),
                            f'Invalid value: "{address.ip}": must be a valid IP address',
                        )
            for p, port in enumerate(subset.ports):
                ppath: FieldPath = ("subsets", s, "ports", p)
                if errs := is_port_number(port.port):
                    self.report(item, (*ppath, "port"), _join(errs))
                if port.name:
                    if errs := is_dns1123_label(port.name):
                        self.report(item, (*ppath, "name"), _join(errs))
                elif len(subset.ports) > 1:
                    self.report(item, (*ppath, "name"), "Required value")

    # ------------------------------------------------------------ Services

    def check_service(self, item: Loaded, svc: Service) -> None:
        self.check_meta(item, svc.metadata, is_dns1035_label)
        spec = svc.spec
        svc_type = spec.type or "ClusterIP"
        headless = spec.cluster_ip == "None"
        if spec.selector:
            self.check_labels(item, ("spec", "selector"), spec.selector)
        self.check_service_ports(item, svc, svc_type)
        self.check_ip_families(item, svc)

        if spec.cluster_ip not in (None, "", "None") and parse_ip(spec.cluster_ip) is None:
            self.report(item, ("spec", "clusterIP"), "must be empty, 'None', or a valid IP address")
        for i, value in enumerate(spec.cluster_ips):
            if (value != "None" or i > 0) and parse_ip(value) is None:
                self.report(item, ("spec", "clusterIPs", i), _IP_MSG)
        if spec.cluster_ip and spec.cluster_ips and spec.cluster_ips[0] != spec.cluster_ip:
            self.report(
                item,
                ("spec", "clusterIPs", 0),
                f"must be the same as `clusterIP` ({spec.cluster_ip}): the first of `clusterIPs` "
                "is the Service's primary cluster IP",
            )
        if headless and svc_type in ("NodePort", "LoadBalancer"):
            self.report(
                item, ("spec", "clusterIP"), f"may not be set to 'None' for {svc_type} services"
            )
        if svc_type == "ExternalName":
            if spec.cluster_ip:
                self.report(item, ("spec", "clusterIP"), "may not be set for ExternalName services")
            # The value (a CNAME) may end in a dot to mark it fully qualified.
            cname = (spec.external_name or "").removesuffix(".")
            if not cname:
                self.report(
                    item, ("spec", "externalName"), "required when `type` is 'ExternalName'"
                )
            elif errs := is_dns1123_subdomain(cname):
                self.report(item, ("spec", "externalName"), _join(errs))
        elif not spec.ports and not headless:
            self.report(
                item,
                ("spec", "ports"),
                "a Service needs at least one port, unless it is headless (`clusterIP: None`) "
                "or of `type` 'ExternalName'",
            )

        if spec.external_traffic_policy is not None:
            if svc_type == "ExternalName":
                self.report(
                    item,
                    ("spec", "externalTrafficPolicy"),
                    "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
                )
            elif svc_type == "ClusterIP" and not spec.external_ips:
                # Kubernetes (and kube-proxy) also honour it for a ClusterIP
                # Service's externalIPs.
                self.report(
                    item,
                    ("spec", "externalTrafficPolicy"),
                    "may only be set when `type` is 'NodePort' or 'LoadBalancer' "
                    "(or on a ClusterIP Service with `externalIPs`)",
                )
        if spec.health_check_node_port:
            if svc_type != "LoadBalancer" or spec.external_traffic_policy != "Local":
                self.report(
                    item,
                    ("spec", "healthCheckNodePort"),
                    "may only be set when `type` is 'LoadBalancer' and "
                    "`externalTrafficPolicy` is 'Local'",
                )
            elif errs := is_port_number(spec.health_check_node_port):
                self.report(item, ("spec", "healthCheckNodePort"), _join(errs))

        for i, value in enumerate(spec.external_ips):
            ip = parse_ip(value)
            errs = [_IP_MSG] if ip is None else _special_ip(ip)
            if errs:
                self.report(item, ("spec", "externalIPs", i), _join(errs))
        if spec.load_balancer_source_ranges and svc_type != "LoadBalancer":
            self.report(
                item,
                ("spec", "loadBalancerSourceRanges"),
                "may only be used when `type` is 'LoadBalancer'",
            )
        for i, value in enumerate(spec.load_balancer_source_ranges):
            # As the API server does: blanks around a range are ignored, host bits allowed.
            if parse_cidr(value.strip()) is None:
                self.report(item, ("spec", "loadBalancerSourceRanges", i), _CIDR_MSG)
        for i, ingress in enumerate(svc.status.load_balancer.ingress):
            if ingress.ip is not None and parse_ip(ingress.ip) is None:
                self.report(item, ("status", "loadBalancer", "ingress", i, "ip"), _IP_MSG)

        config = spec.session_affinity_config
        if config is not None:
            if spec.session_affinity != "ClientIP":
                self.report(
                    item,
                    ("spec", "sessionAffinityConfig"),
                    "may only be set when `sessionAffinity` is 'ClientIP' (it is "
                    f"'{spec.session_affinity or 'None'}')",
                )
            timeout = config.client_ip.timeout_seconds if config.client_ip else None
            if timeout is not None and not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
                self.report(
                    item,
                    ("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"),
                    f"must be between 1 and {MAX_AFFINITY_TIMEOUT}, inclusive",
                )

    def check_ip_families(self, item: Loaded, svc: Service) -> None:
        """ipFamilies, ipFamilyPolicy and clusterIPs against each other and
        against the lab's service IP families (its serviceCIDR, one or a
        dual-stack pair; IPv4 without a Lab), as the API server refuses them on
        create: ValidateServiceClusterIPsRelatedFields and initIPFamilyFields
        (pkg/registry/core/service/storage/alloc.go), netemu.api.ipfamilies."""
        spec = svc.spec
        if (spec.type or "ClusterIP") == "ExternalName":
            return
        cluster: list[IPFamily] = self.lab.families() if self.lab is not None else ["IPv4"]
        settled = settle_ip_families(
            cluster_ip=spec.cluster_ip,
            cluster_ips=spec.cluster_ips,
            families=spec.ip_families,
            policy=spec.ip_family_policy,
            has_selector=bool(spec.selector),
            cluster=cluster,
        )
        for path, message in settled.errors:
            self.report(item, path, message)

    def check_service_ports(self, item: Loaded, svc: Service, svc_type: str) -> None:
        ports = svc.spec.ports
        names: dict[str, int] = {}
        pairs: dict[tuple[int, str], int] = {}
        for i, port in enumerate(ports):
            path: FieldPath = ("spec", "ports", i)
            if port.name:
                if errs := is_dns1123_label(port.name):
                    self.report(item, (*path, "name"), _join(errs))
                if port.name in names:
                    self.report(
                        item,
                        (*path, "name"),
                        f'duplicate port name "{port.name}": already used by '
                        f"spec.ports[{names[port.name]}]",
                    )
                names.setdefault(port.name, i)
            elif len(ports) > 1:
                self.report(
                    item, (*path, "name"), "required when the Service has more than one port"
                )
            if errs := is_port_number(port.port):
                self.report(item, (*path, "port"), _join(errs))
            key = (port.port, port.protocol)
            if key in pairs:
                self.report(
                    item,
                    (*path, "port"),
                    f"duplicate port {port.port}/{port.protocol}: already used by "
                    f"spec.ports[{pairs[key]}]",
                )
            pairs.setdefault(key, i)
            target = port.target_port
            if isinstance(target, int) and target != 0:
                if errs := is_port_number(target):
                    self.report(item, (*path, "targetPort"), _join(errs))
            elif isinstance(target, str) and target and (errs := is_port_name(target)):
                hint = " (write a port number without quotes)" if target.isdigit() else ""
                self.report(
                    item,
                    (*path, "targetPort"),
                    "must be a port number or the name of a container port (an IANA "
                    f"service name): {_join(errs)}{hint}",
                )
            if port.node_port:
                if svc_type not in ("NodePort", "LoadBalancer"):
                    self.report(
                        item, (*path, "nodePort"), f"may not be used when `type` is '{svc_type}'"
                    )
                elif errs := is_port_number(port.node_port):
                    self.report(item, (*path, "nodePort"), _join(errs))

    def service_ips(self, svc: Service) -> list[tuple[FieldPath, Any]]:
        """The valid cluster IPs a Service asks for, each with its field."""
        spec = svc.spec
        out: list[tuple[FieldPath, Any]] = []
        if spec.type == "ExternalName":
            return out
        if spec.cluster_ip and spec.cluster_ip != "None":
            ip = parse_ip(spec.cluster_ip)
            if ip is not None:
                out.append((("spec", "clusterIP"), ip))
        for i, value in enumerate(spec.cluster_ips):
            ip = parse_ip(value)
            if ip is not None and all(ip != seen for _, seen in out):
                out.append((("spec", "clusterIPs", i), ip))
        return out

    def check_service_ips(self) -> None:
        """clusterIPs are unique and, with a Lab, inside its serviceCIDR of their
        family (a family the lab lacks is check_ip_families' to report)."""
        owners: dict[Any, tuple[Loaded, FieldPath]] = {}
        for item in self.services():
            assert isinstance(item.obj, Service)
            for path, ip in self.service_ips(item.obj):
                cidr = self.lab.cidr_for(ip) if self.lab else None
                if cidr is not None:
                    if ip not in cidr:
                        self.report(item, path, f"must be inside the Lab's serviceCIDR {cidr}")
                    elif reserved := _reserved_address(ip, cidr):
                        self.report(
                            item,
                            path,
                            f"{ip} is the {reserved} address of the Lab's serviceCIDR {cidr}; "
                            "a cluster IP must be a host address inside it",
                        )
                owner = owners.setdefault(ip, (item, path))
                if owner[0] is not item:
                    self.report(
                        item,
                        path,
                        f"{ip} is already the cluster IP of {self.where(*owner)}",
                    )

    def check_node_ports(self) -> None:
        """nodePorts (and healthCheckNodePorts) are unique on the nodes and, with a
        Lab, inside its nodePortRange."""
        uses: dict[int, list[_NodePortUse]] = {}
        for item in self.services():
            svc = item.obj
            assert isinstance(svc, Service)
            svc_type = svc.spec.type or "ClusterIP"
            if svc_type not in ("NodePort", "LoadBalancer"):
                continue  # nodePorts there are already reported as not allowed
            wanted = [
                _NodePortUse(
                    item, ("spec", "ports", i, "nodePort"), p.node_port, p.port, p.protocol
                )
                for i, p in enumerate(svc.spec.ports)
                if p.node_port and not is_port_number(p.node_port)
            ]
            hc = svc.spec.health_check_node_port
            if (
                hc
                and not is_port_number(hc)
                and svc_type == "LoadBalancer"
                and svc.spec.external_traffic_policy == "Local"
            ):
                wanted.append(_NodePortUse(item, ("spec", "healthCheckNodePort"), hc, None, "TCP"))
            for use in wanted:
                self.check_node_port_range(use)
                earlier = uses.setdefault(use.number, [])
                clash = next((e for e in earlier if not _may_share(e, use)), None)
                earlier.append(use)
                if clash is None:
                    continue
                if clash.item is item:
                    self.report(
                        item,
                        use.path,
                        f"{use.number} is already used by {format_field_path(clash.path)}; one "
                        "Service may reuse a nodePort only for the same `port` with another "
                        "protocol",
                    )
                else:
                    self.report(
                        item,
                        use.path,
                        f"{use.number} is already used by {self.where(clash.item, clash.path)}",
                    )

    def check_node_port_range(self, use: _NodePortUse) -> None:
        if self.lab is None or self.lab.node_ports is None:
            return
        low, high = self.lab.node_ports
        if not low <= use.number <= high:
            self.report(
                use.item,
                use.path,
                f"must be inside the Lab's nodePortRange {self.lab.node_port_text}",
            )

    # ------------------------------------------------------------ EndpointSlices and Nodes

    def check_endpoint_slice(self, item: Loaded, es: EndpointSlice) -> None:
        self.check_meta(item, es.metadata, is_dns1123_subdomain)
        if not es.metadata.labels.get(SERVICE_NAME_LABEL):
            self.report(
                item,
                ("metadata", "labels"),
                f"label `{SERVICE_NAME_LABEL}` is required: netemu finds the Service an "
                "EndpointSlice belongs to by this label",
            )
        if len(es.endpoints) > MAX_SLICE_ENDPOINTS:
            self.report(
                item,
                ("endpoints",),
                f"too many endpoints: {len(es.endpoints)}; an EndpointSlice may have at most "
                f"{MAX_SLICE_ENDPOINTS}",
            )
        for i, endpoint in enumerate(es.endpoints):
            path: FieldPath = ("endpoints", i, "addresses")
            if not endpoint.addresses:
                self.report(item, path, "must contain at least 1 address")
            elif len(endpoint.addresses) > MAX_ENDPOINT_ADDRESSES:
                self.report(
                    item,
                    path,
                    f"too many addresses: {len(endpoint.addresses)}; an endpoint may have at "
                    f"most {MAX_ENDPOINT_ADDRESSES}",
                )
            if es.address_type != "FQDN":
                version = 4 if es.address_type == "IPv4" else 6
                for j, value in enumerate(endpoint.addresses):
                    ip = parse_ip(value)
                    if ip is None or ip.version != version:
                        errs = [
                            f"must be a valid {es.address_type} address "
                            f"(the slice's addressType is {es.address_type})"
                        ]
                    else:
                        errs = _special_ip(ip)
                    if errs:
                        self.report(item, (*path, j), _join(errs))
            if endpoint.node_name and (errs := is_dns1123_subdomain(endpoint.node_name)):
                self.report(item, ("endpoints", i, "nodeName"), _join(errs))
        if len(es.ports) > MAX_SLICE_PORTS:
            self.report(
                item,
                ("ports",),
                f"too many ports: {len(es.ports)}; an EndpointSlice may have at most "
                f"{MAX_SLICE_PORTS}",
            )
        names: dict[str, int] = {}
        for i, port in enumerate(es.ports):
            name = port.name or ""
            if name and (errs := is_dns1123_label(name)):
                self.report(item, ("ports", i, "name"), _join(errs))
            if name in names:
                shown = f'duplicate port name "{name}"' if name else "duplicate unnamed port"
                self.report(
                    item,
                    ("ports", i, "name") if name else ("ports", i),
                    f"{shown}: ports[{names[name]}] has the same name; each port of an "
                    "EndpointSlice needs a unique name",
                )
            names.setdefault(name, i)
            if port.port is not None and (errs := is_port_number(port.port)):
                self.report(item, ("ports", i, "port"), _join(errs))

    def check_node(self, item: Loaded, node: Node) -> None:
        self.check_meta(item, node.metadata, is_dns1123_subdomain)
        if node.spec.pod_cidr:
            self.check_network(item, ("spec", "podCIDR"), node.spec.pod_cidr)
        for i, value in enumerate(node.spec.pod_cidrs):
            self.check_network(item, ("spec", "podCIDRs", i), value)
        for i, address in enumerate(node.status.addresses):
            if address.type in ("InternalIP", "ExternalIP") and parse_ip(address.address) is None:
                self.report(item, ("status", "addresses", i, "address"), _IP_MSG)

    # ------------------------------------------------------------ configuration kinds

    def check_network(self, item: Loaded, path: FieldPath, value: str) -> Any:
        """A CIDR that names a network (no host bits); the IPNetwork, or None after a report."""
        net = parse_cidr(value)
        if net is None:
            self.report(item, path, _CIDR_MSG)
            return None
        if net.ip != net.network:
            self.report(item, path, f"{value} has host bits set; the network address is {net.cidr}")
            return None
        return net

    def check_proxy_config(self, item: Loaded) -> None:
        cfg = item.obj
        assert isinstance(cfg, KubeProxyConfiguration)
        if cfg.cluster_cidr:
            # kube-proxy's own rules: one CIDR, or two of different IP families.
            cidrs = [parse_cidr(c) for c in cfg.cluster_cidr.split(",")]
            if len(cidrs) > 2:
                msg = (
                    "only one CIDR allowed or a valid DualStack CIDR "
                    "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"
                )
            elif len(cidrs) == 2 and (None in cidrs or cidrs[0].version == cidrs[1].version):
                msg = "must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"
            elif len(cidrs) == 1 and cidrs[0] is None:
                msg = "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
            else:
                msg = ""
            if msg:
                self.report(item, ("clusterCIDR",), msg)
        addresses = cfg.node_port_addresses
        for i, value in enumerate(addresses):
            if value == "primary":
                if len(addresses) != 1:
                    self.report(
                        item,
                        ("nodePortAddresses", i),
                        "can't use both 'primary' and CIDRs: 'primary' must be the only entry",
                    )
            elif parse_cidr(value) is None:
                self.report(
                    item,
                    ("nodePortAddresses", i),
                    "must be a valid CIDR (e.g. 192.168.56.0/24) or 'primary'",
                )
        for section, bit in (
            ("iptables", cfg.iptables.masquerade_bit),
            ("nftables", cfg.nftables.masquerade_bit),
        ):
            if bit is not None and not 0 <= bit <= 31:
                self.report(item, (section, "masqueradeBit"), "must be between 0 and 31, inclusive")
        for section, periods in (("iptables", cfg.iptables), ("nftables", cfg.nftables)):
            self.check_sync_periods(item, section, periods.sync_period, periods.min_sync_period)
        bind = cfg.bind_address
        if bind not in (None, "") and (not isinstance(bind, str) or parse_ip(bind) is None):
            # kube-proxy's validation: BindAddress must be an IP address.
            self.report(item, ("bindAddress",), 'must be an IP address (e.g. "0.0.0.0" or "::")')
        for name, value in (
            ("healthzBindAddress", cfg.healthz_bind_address),
            ("metricsBindAddress", cfg.metrics_bind_address),
        ):
            if value not in (None, "") and not _is_bind_address(value):
                self.report(
                    item, (name,), 'must be "IP" or "IP:PORT" (e.g. "0.0.0.0:10256"), PORT 1-65535'
                )
        self.check_conntrack(item, ("conntrack",), cfg.conntrack)
        if cfg.linux is not None and cfg.linux.conntrack is not None:
            self.check_conntrack(item, ("linux", "conntrack"), cfg.linux.conntrack)

    def check_proxy_mode(self, item: Loaded, labs: list[Loaded]) -> None:
        """The KubeProxyConfiguration's mode must be one netemu emulates, and
        agree with the Lab's proxyMode when both are given (see
        netemu.pipeline.proxy_mode for which one counts)."""
        cfg = item.obj
        assert isinstance(cfg, KubeProxyConfiguration)
        if not cfg.mode:
            return
        if cfg.mode not in PROXY_MODES:
            self.report(
                item,
                ("mode",),
                f"unsupported proxy mode {cfg.mode!r}: netemu emulates kube-proxy's "
                "'iptables' and 'nftables' modes",
            )
            return
        for lab_item in labs:
            lab = lab_item.obj
            assert isinstance(lab, Lab)
            if "proxy_mode" in lab.spec.model_fields_set and lab.spec.proxy_mode != cfg.mode:
                self.report(
                    item,
                    ("mode",),
                    f"{cfg.mode!r} disagrees with the Lab's spec.proxyMode "
                    f"{lab.spec.proxy_mode!r} ({lab_item.origin.file}:"
                    f"{lab_item.origin.line_of(('spec', 'proxyMode'))}): "
                    "set one, or the same in both",
                )

    def check_sync_periods(
        self, item: Loaded, section: str, sync: object, min_sync: object
    ) -> None:
        """kube-proxy's validateKubeProxyIPTablesConfiguration: syncPeriod > 0,
        minSyncPeriod >= 0 and not above syncPeriod; Go duration strings."""
        periods: dict[str, float] = {}
        for name, value, least in (("syncPeriod", sync, 0.0), ("minSyncPeriod", min_sync, None)):
            if value is None:
                continue
            try:
                seconds = parse_duration(value)
            except DurationError as exc:
                self.report(item, (section, name), str(exc))
                continue
            if least is not None and seconds <= least:
                self.report(item, (section, name), "must be greater than 0")
            elif seconds < 0:
                self.report(item, (section, name), "must be greater than or equal to 0")
            else:
                periods[name] = seconds
        if "syncPeriod" in periods and periods.get("minSyncPeriod", 0.0) > periods["syncPeriod"]:
            self.report(
                item,
                (section, "syncPeriod"),
                f"must be greater than or equal to {section}.minSyncPeriod",
            )

    def check_conntrack(
        self, item: Loaded, path: FieldPath, ct: KubeProxyConntrackConfiguration
    ) -> None:
        """kube-proxy's conntrack settings (its validateKubeProxyConntrackConfiguration):
        counts are int32 >= 0, timeouts Go durations >= 0."""
        for name, count in (("maxPerCore", ct.max_per_core), ("min", ct.min)):
            if count is None:
                continue
            if isinstance(count, bool) or not isinstance(count, int):
                self.report(item, (*path, name), f"must be an integer, got {count!r}")
            elif not 0 <= count <= 2**31 - 1:
                self.report(item, (*path, name), "must be greater than or equal to 0")
        for name, value in (
            ("tcpEstablishedTimeout", ct.tcp_established_timeout),
            ("tcpCloseWaitTimeout", ct.tcp_close_wait_timeout),
            ("udpTimeout", ct.udp_timeout),
            ("udpStreamTimeout", ct.udp_stream_timeout),
        ):
            if value is None:
                continue
            try:
                seconds = parse_duration(value)
            except DurationError as exc:
                self.report(item, (*path, name), str(exc))
                continue
            if seconds < 0:
                self.report(item, (*path, name), "must be greater than or equal to 0")

    def check_lab(self, item: Loaded) -> _LabRanges:
        lab = item.obj
        assert isinstance(lab, Lab)
        self.check_meta(item, lab.metadata, is_dns1123_label)
        spec = lab.spec
        families = {
            "podCIDR": self.check_networks(item, ("spec", "podCIDR"), spec.pod_cidr),
            "serviceCIDR": self.check_networks(item, ("spec", "serviceCIDR"), spec.service_cidr),
            "underlayCIDR": self.check_networks(item, ("spec", "underlayCIDR"), spec.underlay_cidr),
        }
        names = list(families)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                for a in families[first].values():
                    for b in families[second].values():
                        if _overlap(a, b):
                            self.report(
                                item,
                                ("spec", second),
                                f"{second} {b} overlaps {first} {a}: the pod, service and "
                                "underlay CIDRs must not overlap",
                            )
        pod_cidrs, service_cidrs, underlays = (
            families["podCIDR"],
            families["serviceCIDR"],
            families["underlayCIDR"],
        )
        service_cidr = next(iter(service_cidrs.values()), None)
        # The load balancer's pool and address are IPv4 (netemu.node.cloudlb).
        underlay = underlays.get(4)

        node_ports = _parse_port_range(spec.node_port_range)
        if node_ports is None:
            self.report(
                item,
                ("spec", "nodePortRange"),
                'must be "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535 (e.g. "30000-32767")',
            )

        if not 1 <= spec.vxlan_port <= 65535:
            self.report(
                item,
                ("spec", "vxlanPort"),
                f"{spec.vxlan_port} is not a UDP port: must be 1-65535 (flannel's default is 8472)",
            )

        dns = parse_ip(spec.cluster_dns)
        if dns is None:
            self.report(item, ("spec", "clusterDNS"), _IP_MSG)
        elif service_cidr is not None:
            if dns.version in service_cidrs:
                service_cidr = service_cidrs[dns.version]  # the DNS Service's family
            if dns not in service_cidr:
                self.report(
                    item, ("spec", "clusterDNS"), f"must be inside serviceCIDR {service_cidr}"
                )
            elif reserved := _reserved_address(dns, service_cidr):
                self.report(
                    item,
                    ("spec", "clusterDNS"),
                    f"{dns} is the {reserved} address of serviceCIDR {service_cidr}; the DNS "
                    "Service needs a host address inside it",
                )

        if not spec.nodes:
            self.report(item, ("spec", "nodes"), "a Lab needs at least one node")
        for i, lab_node in enumerate(spec.nodes):
            if lab_node.max_pods < 0:
                # The kubelet's own check of its configuration (ValidateKubeletConfiguration).
                self.report(
                    item,
                    ("spec", "nodes", i, "maxPods"),
                    f"maxPods (--max-pods) {lab_node.max_pods} must not be a negative number",
                )
        self.check_lab_hosts(item, lab, underlays)
        self.check_lab_load_balancer(item, lab, underlays)
        self.check_lab_load_balancer_host(item, lab, underlay)
        self.check_lab_pod_cidrs(item, lab, pod_cidrs)
        primary = next(iter(service_cidrs.values()), None)
        return _LabRanges(primary, node_ports, spec.node_port_range, service_cidrs)

    def check_networks(self, item: Loaded, path: FieldPath, value: str) -> dict[int, Any]:
        """One CIDR, or a dual-stack pair "A,B" (kube-apiserver's
        --service-cluster-ip-range, kube-controller-manager's --cluster-cidr):
        at most two, of different IP families. The valid ones by IP version,
        the primary first."""
        parts = split_family_list(value)
        found: dict[int, Any] = {}
        if not parts:
            self.report(item, path, _CIDR_MSG)
            return found
        if len(parts) > 2:
            self.report(
                item,
                path,
                f'"{value}" lists {len(parts)} CIDRs: expected one, or two of different IP '
                'families (a dual-stack pair such as "10.96.0.0/12,fd00:10:96::/112")',
            )
            return found
        for part in parts:
            net = self.check_network(item, path, part)
            if net is None:
                continue
            if net.version in found:
                self.report(
                    item,
                    path,
                    f'"{value}": a dual-stack pair needs one IPv4 and one IPv6 CIDR, '
                    f"not two IPv{net.version}",
                )
                continue
            found[net.version] = net
        return found

    def check_lab_hosts(self, item: Loaded, lab: Lab, underlays: dict[int, Any]) -> None:
        """Node and external-client names and underlay addresses (one, or one
        per family as the kubelet's --node-ip takes them)."""
        hosts: list[tuple[FieldPath, str, FieldPath, str]] = []
        for i, node in enumerate(lab.spec.nodes):
            path: FieldPath = ("spec", "nodes", i)
            hosts.append((path, node.name, (*path, "underlayIP"), node.underlay_ip))
        for i, client in enumerate(lab.spec.external_clients):
            path = ("spec", "externalClients", i)
            hosts.append((path, client.name, (*path, "ip"), client.ip))
        names: dict[str, FieldPath] = {}
        addresses: dict[Any, FieldPath] = {}
        for path, name, ip_path, value in hosts:
            if errs := is_dns1123_label(name):
                self.report(item, (*path, "name"), _join(errs))
            elif name in names:
                self.report(
                    item,
                    (*path, "name"),
                    f'duplicate name "{name}": already used by {format_field_path(names[name])}; '
                    "node and external client names must be unique",
                )
            names.setdefault(name, path)
            for ip in self.check_host_ips(item, ip_path, value):
                self.check_host_ip(item, ip_path, ip, underlays, addresses)
        for i, node in enumerate(lab.spec.nodes):
            self.check_labels(item, ("spec", "nodes", i, "labels"), node.labels)

    def check_host_ips(self, item: Loaded, path: FieldPath, value: str) -> list[Any]:
        """The valid addresses of a dual-stack address list ("IPv4,IPv6")."""
        parts = split_family_list(value)
        if not parts:
            self.report(item, path, _IP_MSG)
            return []
        if len(parts) > 2:
            self.report(
                item, path, f'"{value}": expected one address, or one IPv4 and one IPv6 address'
            )
            return []
        out: list[Any] = []
        for part in parts:
            ip = parse_ip(part)
            if ip is None:
                self.report(item, path, _IP_MSG)
            elif any(ip.version == seen.version for seen in out):
                self.report(
                    item,
                    path,
                    f'"{value}": a dual-stack pair needs one IPv4 and one IPv6 address, '
                    f"not two IPv{ip.version}",
                )
            else:
                out.append(ip)
        return out

    def check_host_ip(
        self,
        item: Loaded,
        ip_path: FieldPath,
        ip: Any,
        underlays: dict[int, Any],
        addresses: dict[Any, FieldPath],
    ) -> None:
        underlay = underlays.get(ip.version)
        if underlays and underlay is None:
            self.report(
                item,
                ip_path,
                f"{ip} is IPv{ip.version}, but underlayCIDR has no IPv{ip.version} CIDR: "
                "give underlayCIDR one CIDR per family of the addresses (a dual-stack pair "
                '"IPv4CIDR,IPv6CIDR")',
            )
            return
        if underlay is not None:
            if ip not in underlay:
                self.report(item, ip_path, f"must be inside underlayCIDR {underlay}")
            elif reserved := _reserved_address(ip, underlay):
                self.report(
                    item,
                    ip_path,
                    f"{ip} is the {reserved} address of underlayCIDR {underlay}; use a host "
                    "address inside it",
                )
        if ip in addresses:
            self.report(
                item,
                ip_path,
                f"{ip} is already used by {format_field_path(addresses[ip])}; underlay "
                "addresses must be unique",
            )
        addresses.setdefault(ip, ip_path)

    def check_lab_load_balancer(self, item: Loaded, lab: Lab, underlays: dict[int, Any]) -> None:
        """The load-balancer pool: ranges "A-B" or CIDRs of IPv4 or IPv6
        addresses, each inside the underlay CIDR of its family, apart from the
        nodes, the clients and each other."""
        hosts = {ip: f"node {node.name}" for node in lab.spec.nodes for ip in node.underlay_ips} | {
            ip: f"external client {client.name}"
            for client in lab.spec.external_clients
            for ip in client.ips
        }
        seen: list[tuple[AddressRange, int]] = []
        for i, entry in enumerate(lab.spec.load_balancer.addresses):
            path: FieldPath = ("spec", "loadBalancer", "addresses", i)
            try:
                addresses = parse_entry(entry)
            except ValueError as exc:
                self.report(
                    item,
                    path,
                    f'{exc}: expected a range "A-B" (e.g. "192.168.56.200-192.168.56.239" or '
                    '"fd00:56::c8-fd00:56::ef") or a CIDR (e.g. "192.168.56.192/27")',
                )
                continue
            underlay = underlays.get(addresses.version)
            first, last = addresses[0], addresses[-1]
            if underlays and underlay is None:
                self.report(
                    item,
                    path,
                    f"{entry.strip()} is IPv{addresses.version}, but underlayCIDR has no "
                    f"IPv{addresses.version} CIDR",
                )
                continue
            outside = [ip for ip in (first, last) if underlay is not None and ip not in underlay]
            if outside:
                self.report(item, path, f"{outside[0]} is outside underlayCIDR {underlay}")
                continue
            owner = next(
                (f"{ip} is the address of {who}" for ip, who in hosts.items() if ip in addresses),
                None,
            )
            if owner is not None:
                self.report(item, path, owner)
                continue
            if underlay is not None and (reserved := _reserved_in(addresses, underlay)):
                self.report(item, path, f"{reserved} address of underlayCIDR")
                continue
            clash = next(
                ((other, index) for other, index in seen if _overlap(other, addresses)), None
            )
            if clash is not None:
                other, index = clash
                self.report(
                    item,
                    path,
                    f"{max(other[0], addresses[0])} is already in "
                    f"spec.loadBalancer.addresses[{index}]; the pool's entries must not overlap",
                )
                continue
            seen.append((addresses, i))

    def check_lab_load_balancer_host(self, item: Loaded, lab: Lab, underlay: Any) -> None:
        """The load balancer's own underlay address and its health check."""
        spec = lab.spec.load_balancer
        base: FieldPath = ("spec", "loadBalancer")
        if spec.ip is not None:
            ip_path: FieldPath = (*base, "ip")
            ip = parse_ip(spec.ip)
            used = {parse_ip(a): f"node {n.name}" for n in lab.spec.nodes for a in n.underlay_ips}
            used.update(
                {
                    parse_ip(a): f"external client {c.name}"
                    for c in lab.spec.external_clients
                    for a in c.ips
                }
            )
            if ip is None:
                self.report(item, ip_path, _IP_MSG)
            elif underlay is not None and ip not in underlay:
                self.report(item, ip_path, f"must be inside underlayCIDR {underlay}")
            elif underlay is not None and (reserved := _reserved_address(ip, underlay)):
                self.report(
                    item,
                    ip_path,
                    f"{ip} is the {reserved} address of underlayCIDR {underlay}; use a host "
                    "address inside it",
                )
            elif ip in used:
                self.report(
                    item,
                    ip_path,
                    f"{ip} is already used by {used[ip]}; underlay addresses must be unique",
                )
            elif ip in _lab_pool(lab):
                self.report(
                    item,
                    ip_path,
                    f"{ip} is in the load-balancer pool ({_pool_text(lab)}), whose addresses "
                    "go to Services; the load balancer's own address must be outside it",
                )
        check = spec.health_check
        hc: FieldPath = (*base, "healthCheck")
        if not check.interval_seconds > 0:
            self.report(item, (*hc, "intervalSeconds"), "must be greater than 0")
        if not check.timeout_seconds > 0:
            self.report(item, (*hc, "timeoutSeconds"), "must be greater than 0")
        elif check.timeout_seconds > check.interval_seconds > 0:
            # As a cloud health check: a probe ends before the next one starts.
            self.report(item, (*hc, "timeoutSeconds"), "must not be greater than intervalSeconds")
        for name, value in (
            ("healthyThreshold", check.healthy_threshold),
            ("unhealthyThreshold", check.unhealthy_threshold),
        ):
            if value < 1:
                self.report(item, (*hc, name), "must be at least 1")

    def check_lab_pod_cidrs(self, item: Loaded, lab: Lab, pod_cidrs: dict[int, Any]) -> None:
        """Explicit node podCIDRs (one per family of the Lab's podCIDR) fit the
        Lab's podCIDR of their family; the rest can be allocated."""
        explicit: list[tuple[int, Any]] = []
        for i, node in enumerate(lab.spec.nodes):
            if node.pod_cidr is None:
                continue
            path: FieldPath = ("spec", "nodes", i, "podCIDR")
            nets = self.check_networks(item, path, node.pod_cidr)
            if pod_cidrs and len(nets) == len(node.pod_cidrs) and set(nets) != set(pod_cidrs):
                self.report(
                    item,
                    path,
                    f"needs one CIDR per family of the Lab's podCIDR "
                    f"({', '.join(str(n) for n in pod_cidrs.values())})",
                )
                continue
            for net in nets.values():
                pod_cidr = pod_cidrs.get(net.version)
                if pod_cidr is not None and net not in pod_cidr:
                    self.report(item, path, f"must be inside the Lab's podCIDR {pod_cidr}")
                    continue
                for j, other in explicit:
                    if _overlap(net, other):
                        self.report(
                            item,
                            path,
                            f"overlaps {other}, the podCIDR of node {lab.spec.nodes[j].name} "
                            f"(spec.nodes[{j}].podCIDR); node podCIDRs must not overlap",
                        )
                        break
                else:
                    explicit.append((i, net))
        waiting = [n.name for n in lab.spec.nodes if n.pod_cidr is None]
        if not waiting:
            return
        for pod_cidr in pod_cidrs.values():
            # kube-controller-manager's defaults: a /24 per node (IPv4), a /64 (IPv6).
            size = DEFAULT_NODE_POD_PREFIX if pod_cidr.version == 4 else 64
            total = 1 << (size - pod_cidr.prefixlen) if pod_cidr.prefixlen <= size else 0
            taken = [net for _, net in explicit if net.version == pod_cidr.version]
            used = _subnets_taken(pod_cidr, size, taken)
            free = max(total - used, 0)
            if free < len(waiting):
                wanted = size - (used + len(waiting) - 1).bit_length()
                self.report(
                    item,
                    ("spec", "podCIDR"),
                    f"{pod_cidr} has room for {free} more /{size} node subnet(s), but "
                    f"{len(waiting)} node(s) have no explicit podCIDR ({', '.join(waiting)}): "
                    f"use a podCIDR of at least /{wanted} "
                    "or give nodes explicit podCIDRs",
                )


# ---------------------------------------------------------------- helpers


def _go_list(values: Sequence[str]) -> str:
    """A list of strings as the API server prints it in an error ([a b c])."""
    return "[" + " ".join(values) + "]"


def _selector_text(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in selector.match_labels.items()]
    for req in selector.match_expressions:
        values = ",".join(req.values)
        parts.append(
            {
                "In": f"{req.key} in ({values})",
                "NotIn": f"{req.key} notin ({values})",
                "Exists": req.key,
                "DoesNotExist": f"!{req.key}",
            }.get(req.operator, req.key)
        )
    return ",".join(parts)


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "none"


_PORT_RANGE_RE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")


def _parse_port_range(text: str) -> tuple[int, int] | None:
    match = _PORT_RANGE_RE.fullmatch(text)
    if match is None:
        return None
    low, high = int(match[1]), int(match[2])
    if not 1 <= low <= high <= 65535:
        return None
    return low, high


def _lab_pool(lab: Lab) -> AddressPool:
    """The Lab's load-balancer pool (given, or each underlay CIDR's default);
    empty if it does not parse (check_lab_load_balancer reports that)."""
    try:
        if lab.spec.load_balancer.addresses:
            return parse_pool(lab.spec.load_balancer.addresses)
        return default_pool(lab.spec.underlay_cidrs)
    except ValueError:
        return AddressPool()


def _pool_text(lab: Lab) -> str:
    given = lab.spec.load_balancer.addresses
    return ", ".join(given) if given else "the default pool"


def _reserved_in(addresses: AddressRange, net: Any) -> str:
    """ "A is the network" or "B is the broadcast" if the range holds one of
    those addresses of `net` (IPv4, /30 and wider), else ""."""
    for ip in (net.network, net.broadcast):
        if ip is not None and (kind := _reserved_address(ip, net)) and str(ip) in addresses:
            return f"{ip} is the {kind}"
    return ""


def _reserved_address(ip: Any, net: Any) -> str:
    """'network' or 'broadcast' if `ip` is one of those of `net` (IPv4, /30 and wider)."""
    if net.version != 4 or net.prefixlen > 30:
        return ""
    if ip == net.network:
        return "network"
    if ip == net.broadcast:
        return "broadcast"
    return ""


def _subnets_taken(cidr: Any, size: int, taken: list[Any]) -> int:
    """How many /size-aligned blocks of `cidr` the networks in `taken` touch."""
    shift = (32 if cidr.version == 4 else 128) - size
    spans = sorted(
        ((net.first - cidr.first) >> shift, (net.last - cidr.first) >> shift) for net in taken
    )
    used = 0
    end = -1
    for start, stop in spans:
        start = max(start, end + 1)
        if stop >= start:
            used += stop - start + 1
            end = stop
    return int(used)


def _may_share(earlier: _NodePortUse, later: _NodePortUse) -> bool:
    """Two uses of one nodePort are fine only within one Service, for the same
    `port` with different protocols (as the API server's allocator allows)."""
    return (
        earlier.item is later.item
        and earlier.port is not None
        and earlier.port == later.port
        and earlier.protocol != later.protocol
    )


def _is_bind_address(value: object) -> bool:
    """An IP, or IP:PORT with PORT 1-65535 (kube-proxy's bind addresses)."""
    if not isinstance(value, str):
        return False
    host, sep, port = value.rpartition(":") if value.count(":") == 1 else ("", "", "")
    if not sep:
        host, port = value, "1"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return False
    return parse_ip(host) is not None
