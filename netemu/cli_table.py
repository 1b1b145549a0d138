"""The tables `netemu get` prints, as kubectl prints them, in two pure steps:
`table` turns a ClusterState into a meta.k8s.io/v1 Table (columnDefinitions
and rows of cells) and `render` lays a Table out as text.

Kubernetes prints on the server side: kubectl asks the API server for a
Table and only renders it (the `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`
request). netemu does the same for a live lab: its supervisor, which holds
the objects, builds the Table (the `table` request, netemu.supervisor), and
the CLI imports only this module, the socket client and click to show it,
not pydantic's models or the control plane. Offline `get -f` builds the
Table from the state it computes. This module therefore imports the models
only for type checking.

Columns, their order and every cell follow kubectl's printers
(pkg/printers/internalversion/printers.go): AGE as
apimachinery's duration.HumanDuration, `<none>`/`<pending>`/`<unset>` where
kubectl prints them, the wide columns after the others. `render` pads as
kubectl's tabwriter does (minimum cell width 6 including 3 spaces of
padding), and never pads the last column (nor leaves the padding before an
empty last cell, where kubectl's tabwriter would: no line ends in a space).
NAMESPACE comes first when every namespace is shown (kubectl's -A,
netemu's default), and not with -n.
Left out: init-container states in a pod's STATUS (netemu runs no init
containers) and the pod Status.Reason of evicted or node-lost pods.

`-o json|yaml` (`dump_json`, `dump_yaml`) print the List with keys sorted,
as kubectl prints objects it decoded into maps.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from netemu.net.standin import STAND_IN_ANNOTATION

if TYPE_CHECKING:
    from netemu.api.apps import (
        DaemonSet,
        Deployment,
        ReplicaSet,
        ReplicationController,
        StatefulSet,
    )
    from netemu.api.base import K8sModel, LabelSelector
    from netemu.api.batch import CronJob, Job
    from netemu.api.core import (
        ConfigMap,
        Container,
        ContainerStatus,
        Endpoints,
        EndpointSlice,
        Namespace,
        Node,
        Pod,
        Secret,
        Service,
    )
    from netemu.api.networking import Ingress, IngressClass
    from netemu.controlplane.state import ClusterState

# What `get` shows, by every name kubectl accepts for it.
RESOURCES = {
    "pods": "pods",
    "pod": "pods",
    "po": "pods",
    "services": "services",
    "service": "services",
    "svc": "services",
    "endpointslices": "endpointslices",
    "endpointslice": "endpointslices",
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
    "namespaces": "namespaces",
    "namespace": "namespaces",
    "ns": "namespaces",
    "deployments": "deployments",
    "deployment": "deployments",
    "deploy": "deployments",
    "replicasets": "replicasets",
    "replicaset": "replicasets",
    "rs": "replicasets",
    "daemonsets": "daemonsets",
    "daemonset": "daemonsets",
    "ds": "daemonsets",
    "statefulsets": "statefulsets",
    "statefulset": "statefulsets",
    "sts": "statefulsets",
    "replicationcontrollers": "replicationcontrollers",
    "replicationcontroller": "replicationcontrollers",
    "rc": "replicationcontrollers",
    "jobs": "jobs",
    "job": "jobs",
    "cronjobs": "cronjobs",
    "cronjob": "cronjobs",
    "cj": "cronjobs",
    "endpoints": "endpoints",
    "ep": "endpoints",
    "ingresses": "ingresses",
    "ingress": "ingresses",
    "ing": "ingresses",
    "ingressclasses": "ingressclasses",
    "ingressclass": "ingressclasses",
    "configmaps": "configmaps",
    "configmap": "configmaps",
    "cm": "configmaps",
    "secrets": "secrets",
    "secret": "secrets",
}
CLUSTER_SCOPED = ("nodes", "namespaces", "ingressclasses")
# kubectl's tabwriter: padding 3, minimum cell width 6 (padding included).
GAP = "   "
MIN_WIDTH = 6


def items(kind: str, state: ClusterState) -> Sequence[K8sModel]:
    """The objects of `kind`: a value of RESOURCES, or the kind name of objects
    stored but not emulated (netemu.api.generic)."""
    if kind not in _PRINTERS:
        return tuple(o for o in state.others if o.kind == kind)
    found: Sequence[K8sModel] = {
        "pods": state.pods,
        "services": state.services,
        "endpointslices": state.endpoint_slices,
        "nodes": state.nodes,
        "namespaces": state.namespaces,
        "deployments": state.deployments,
        "replicasets": state.replica_sets,
        "daemonsets": state.daemon_sets,
        "statefulsets": state.stateful_sets,
        "replicationcontrollers": state.replication_controllers,
        "jobs": state.jobs,
        "cronjobs": state.cron_jobs,
        "endpoints": state.endpoints,
        "ingresses": state.ingresses,
        "ingressclasses": state.ingress_classes,
        "configmaps": state.config_maps,
        "secrets": state.secrets,
    }[kind]
    return found


def in_namespace(state: ClusterState, namespace: str) -> ClusterState:
    """The namespaced objects of `namespace` only (Nodes and Namespaces are
    cluster-scoped and stay)."""

    def keep(objects: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(o for o in objects if (o.metadata.namespace or "default") == namespace)

    def keep_namespaced(objects: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            o
            for o in objects
            if not type(o).namespaced or (o.metadata.namespace or "default") == namespace
        )

    return replace(
        state,
        pods=keep(state.pods),
        services=keep(state.services),
        endpoint_slices=keep(state.endpoint_slices),
        deployments=keep(state.deployments),
        replica_sets=keep(state.replica_sets),
        daemon_sets=keep(state.daemon_sets),
        stateful_sets=keep(state.stateful_sets),
        others=keep_namespaced(state.others),
        replication_controllers=keep(state.replication_controllers),
        jobs=keep(state.jobs),
        cron_jobs=keep(state.cron_jobs),
        endpoints=keep(state.endpoints),
        ingresses=keep(state.ingresses),
        config_maps=keep(state.config_maps),
        secrets=keep(state.secrets),
    )


def listing(objects: Sequence[K8sModel]) -> dict[str, Any]:
    """`-o json|yaml`: the objects as a v1 List, as kubectl prints several."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [o.to_dict() for o in objects],
        "metadata": {"resourceVersion": ""},
    }


def dump_json(shown: Any) -> str:
    """kubectl's -o json: keys sorted, four spaces of indent."""
    return json.dumps(shown, indent=4, sort_keys=True) + "\n"


def dump_yaml(shown: Any) -> str:
    """kubectl's -o yaml: keys sorted, strings that need quotes in double
    quotes (`status: "True"`), long strings not folded."""
    import yaml  # only -o yaml needs PyYAML

    class KubectlDumper(yaml.SafeDumper):
        def choose_scalar_style(self) -> Any:
            style = super().choose_scalar_style()
            return '"' if style == "'" else style

    return yaml.dump(
        shown, Dumper=KubectlDumper, sort_keys=True, default_flow_style=False, width=2**31 - 1
    )


def table(
    kind: str,
    state: ClusterState,
    wide: bool,
    *,
    with_namespace: bool = True,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The objects of `kind` as a meta.k8s.io/v1 Table, with the columns
    kubectl prints for them (`-o wide` adds the wide ones; NAMESPACE first
    when `with_namespace` and the kind is namespaced). AGE is counted to
    `now` (default: the current time)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    found = items(kind, state)
    if kind in _PRINTERS:
        columns, printer = _PRINTERS[kind]
        namespaced = with_namespace and kind not in CLUSTER_SCOPED
    else:
        # Stored, not emulated: kubectl's default columns for a kind without a
        # printer of its own (NAME, AGE; a CRD without additionalPrinterColumns).
        columns, printer = [("NAME", False), ("AGE", False)], _generic
        namespaced = with_namespace and all(getattr(type(o), "namespaced", True) for o in found)
    head = [name for name, is_wide in columns if wide or not is_wide]
    rows: list[list[str]] = []
    for obj in found:
        cells = printer(obj, wide, moment)
        if namespaced:
            cells = [obj.metadata.namespace or "default", *cells]  # type: ignore[attr-defined]
        rows.append(cells)
    if namespaced:
        head = ["NAMESPACE", *head]
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "columnDefinitions": [{"name": name, "type": "string"} for name in head],
        "rows": [{"cells": row} for row in rows],
    }


def render(shown: dict[str, Any]) -> str:
    """A Table as `kubectl get` prints it: a header line and a line per row,
    each column but the last padded to its widest cell plus GAP (at least
    MIN_WIDTH), the last never padded; "No resources found." without rows."""
    head = [str(c["name"]) for c in shown["columnDefinitions"]]
    rows = [[str(cell) for cell in row["cells"]] for row in shown["rows"]]
    if not rows:
        return "No resources found.\n"
    lines = [head, *rows]
    widths = [
        max(max(len(line[i]) for line in lines) + len(GAP), MIN_WIDTH) for i in range(len(head))
    ]
    out = []
    for line in lines:
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=False)]
        # An empty last cell would leave the padding of the one before it.
        out.append(("".join(padded) + line[-1]).rstrip(" "))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the printers

Printer = Callable[[Any, bool, datetime.datetime], list[str]]


def _generic(obj: Any, wide: bool, now: datetime.datetime) -> list[str]:
    return [obj.metadata.name or "", _age(obj, now)]


def _age(obj: Any, now: datetime.datetime) -> str:
    """translateTimestampSince: `<unknown>` without a creationTimestamp."""
    seconds = _seconds_between(obj.metadata.creation_timestamp, now)
    return "<unknown>" if seconds is None else human_duration(seconds)


def _containers(containers: Sequence[Container]) -> list[str]:
    """layoutContainerCells: the names and the images, each joined by commas."""
    return [",".join(c.name for c in containers), ",".join(c.image or "" for c in containers)]


def format_labels(labels: Mapping[str, str]) -> str:
    """labels.FormatLabels: sorted `k=v` joined by commas, `<none>` when empty."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels)) or "<none>"


def selector_string(selector: LabelSelector) -> str:
    """labels.Selector.String() of a LabelSelector: requirements sorted by key
    (`k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`)."""
    parts: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in selector.match_labels.items()]
    for req in selector.match_expressions:
        values = ",".join(sorted(req.values))
        text = {
            "In": f"{req.key} in ({values})",
            "NotIn": f"{req.key} notin ({values})",
            "Exists": req.key,
            "DoesNotExist": f"!{req.key}",
        }.get(req.operator, req.key)
        parts.append((req.key, text))
    return ",".join(text for _, text in sorted(parts, key=lambda p: p[0]))


def _status(obj: Any) -> dict[str, Any]:
    return obj.status if isinstance(obj.status, dict) else {}


def _count(status: Mapping[str, Any], field: str) -> int:
    value = status.get(field, 0)
    return value if isinstance(value, int) else 0


def _pod(pod: Pod, wide: bool, now: datetime.datetime) -> list[str]:
    total = len(pod.spec.containers)
    ready = sum(
        1
        for s in pod.status.container_statuses
        if s.ready and s.state is not None and s.state.running is not None
    )
    row = [
        pod.metadata.name or "",
        f"{ready}/{total}",
        _pod_status(pod),
        _restarts(pod, now),
        _age(pod, now),
    ]
    if wide:
        ip = pod.status.pod_ips[0].ip if pod.status.pod_ips else (pod.status.pod_ip or "")
        gates = pod.spec.readiness_gates if isinstance(pod.spec.readiness_gates, list) else []
        shown_gates = "<none>"
        if gates:
            true = sum(
                1
                for gate in gates
                if isinstance(gate, dict)
                and pod.status.condition(str(gate.get("conditionType"))) == "True"
            )
            shown_gates = f"{true}/{len(gates)}"
        row += [
            ip or "<none>",
            pod.spec.node_name or "<none>",
            str(pod.status.nominated_node_name or "") or "<none>",
            shown_gates,
            # netemu's own column, after kubectl's: the containers the
            # built-in server stands in for (netemu.net.standin).
            pod.metadata.annotations.get(STAND_IN_ANNOTATION) or "<none>",
        ]
    return row


def _service(svc: Service, wide: bool, now: datetime.datetime) -> list[str]:
    spec = svc.spec
    svc_type = spec.type or "ClusterIP"
    ports = ",".join(
        f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}"
        for p in spec.ports
    )
    row = [
        svc.metadata.name or "",
        svc_type,
        spec.cluster_ip or "<none>",
        _external_ip(svc, wide),
        ports,
        _age(svc, now),
    ]
    if wide:
        row.append(format_labels(spec.selector or {}))
    return row


def _external_ip(svc: Service, wide: bool) -> str:
    """getServiceExternalIP."""
    spec = svc.spec
    svc_type = spec.type or "ClusterIP"
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(spec.external_ips) or "<none>"
    if svc_type == "ExternalName":
        return spec.external_name or ""
    ingress = ",".join(
        i.ip or i.hostname or "" for i in svc.status.load_balancer.ingress if i.ip or i.hostname
    )
    if not wide and len(ingress) > 16:
        # loadBalancerStatusStringer shortens a long list unless -o wide.
        ingress = ingress[:13] + "..."
    if spec.external_ips:
        return ",".join([*(ingress.split(",") if ingress else []), *spec.external_ips])
    return ingress or "<pending>"


def _more(shown: list[str], count: int, limit: int = 3) -> str:
    """listWithMoreString."""
    text = ",".join(shown)
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or "<unset>"


def _endpoint_slice(eps: EndpointSlice, wide: bool, now: datetime.datetime) -> list[str]:
    ports = [str(p.port) if p.port is not None else (p.name or "*") for p in eps.ports]
    addresses = [a for ep in eps.endpoints for a in ep.addresses]
    return [
        eps.metadata.name or "",
        eps.address_type,
        _more(ports[:3], len(ports)),
        _more(addresses[:3], len(addresses)),
        _age(eps, now),
    ]


def _node(node: Node, wide: bool, now: datetime.datetime) -> list[str]:
    conditions = node.status.conditions if isinstance(node.status.conditions, list) else []
    status = [
        "Ready" if c.get("status") == "True" else "NotReady"
        for c in conditions
        if isinstance(c, dict) and c.get("type") == "Ready"
    ][:1] or ["Unknown"]
    if node.spec.unschedulable:
        status.append("SchedulingDisabled")
    roles = set()
    for key, value in node.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/") and key.partition("/")[2]:
            roles.add(key.partition("/")[2])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = node.status.node_info if isinstance(node.status.node_info, dict) else {}
    row = [
        node.metadata.name or "",
        ",".join(status),
        ",".join(sorted(roles)) or "<none>",
        _age(node, now),
        str(info.get("kubeletVersion", "")),
    ]
    if wide:

        def address(kind: str) -> str:
            found = [a.address for a in node.status.addresses if a.type == kind]
            return found[0] if found else "<none>"

        row += [
            address("InternalIP"),
            address("ExternalIP"),
            str(info.get("osImage") or "<unknown>"),
            str(info.get("kernelVersion") or "<unknown>"),
            str(info.get("containerRuntimeVersion") or "<unknown>"),
        ]
    return row


def _namespace(ns: Namespace, wide: bool, now: datetime.datetime) -> list[str]:
    phase = ns.status.get("phase", "") if isinstance(ns.status, dict) else ""
    return [ns.metadata.name or "", str(phase), _age(ns, now)]


def _replicas(spec_replicas: int | None) -> int:
    return 1 if spec_replicas is None else spec_replicas


def _deployment(deploy: Deployment, wide: bool, now: datetime.datetime) -> list[str]:
    status = _status(deploy)
    row = [
        deploy.metadata.name or "",
        f"{_count(status, 'readyReplicas')}/{_replicas(deploy.spec.replicas)}",
        str(_count(status, "updatedReplicas")),
        str(_count(status, "availableReplicas")),
        _age(deploy, now),
    ]
    if wide:
        row += [*_containers(deploy.spec.template.spec.containers)]
        row.append(selector_string(deploy.spec.selector))
    return row


def _replica_set(rs: ReplicaSet, wide: bool, now: datetime.datetime) -> list[str]:
    status = _status(rs)
    row = [
        rs.metadata.name or "",
        str(_replicas(rs.spec.replicas)),
        str(_count(status, "replicas")),
        str(_count(status, "readyReplicas")),
        _age(rs, now),
    ]
    if wide:
        row += [*_containers(rs.spec.template.spec.containers)]
        row.append(selector_string(rs.spec.selector) or "<none>")
    return row


def _daemon_set(ds: DaemonSet, wide: bool, now: datetime.datetime) -> list[str]:
    status = _status(ds)
    row = [
        ds.metadata.name or "",
        *(
            str(_count(status, field))
            for field in (
                "desiredNumberScheduled",
                "currentNumberScheduled",
                "numberReady",
                "updatedNumberScheduled",
                "numberAvailable",
            )
        ),
        format_labels(ds.spec.template.spec.node_selector),
        _age(ds, now),
    ]
    if wide:
        row += [*_containers(ds.spec.template.spec.containers)]
        row.append(selector_string(ds.spec.selector) or "<none>")
    return row


def _stateful_set(sts: StatefulSet, wide: bool, now: datetime.datetime) -> list[str]:
    status = _status(sts)
    row = [
        sts.metadata.name or "",
        f"{_count(status, 'readyReplicas')}/{_replicas(sts.spec.replicas)}",
        _age(sts, now),
    ]
    if wide:
        row += _containers(sts.spec.template.spec.containers)
    return row


def _replication_controller(
    rc: ReplicationController, wide: bool, now: datetime.datetime
) -> list[str]:
    status = _status(rc)
    row = [
        rc.metadata.name or "",
        str(_replicas(rc.spec.replicas)),
        str(_count(status, "replicas")),
        str(_count(status, "readyReplicas")),
        _age(rc, now),
    ]
    if wide:
        containers = rc.spec.template.spec.containers if rc.spec.template is not None else []
        row += _containers(containers)
        row.append(format_labels(rc.spec.effective_selector()))
    return row


def _has_condition(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _job(job: Job, wide: bool, now: datetime.datetime) -> list[str]:
    """printJob (kubectl 1.31): STATUS from the conditions, COMPLETIONS
    succeeded/completions (`n/1 of P` for a work queue), DURATION from
    startTime to completionTime (or now)."""
    status = _status(job)
    if _has_condition(status, "Complete"):
        state = "Complete"
    elif _has_condition(status, "Failed"):
        state = "Failed"
    elif job.metadata.deletion_timestamp is not None:
        state = "Terminating"
    elif _has_condition(status, "Suspended"):
        state = "Suspended"
    elif _has_condition(status, "FailureTarget"):
        state = "FailureTarget"
    elif _has_condition(status, "SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    succeeded = _count(status, "succeeded")
    spec = job.spec
    if spec.completions is not None:
        completions = f"{succeeded}/{spec.completions}"
    elif spec.parallelism is not None and spec.parallelism > 1:
        completions = f"{succeeded}/1 of {spec.parallelism}"
    else:
        completions = f"{succeeded}/1"
    started = _seconds_between(status.get("startTime"), now)
    duration = ""
    if started is not None:
        ended = _seconds_between(status.get("completionTime"), now)
        duration = human_duration(started - (ended or 0))
    row = [job.metadata.name or "", state, completions, duration, _age(job, now)]
    if wide:
        row += _containers(spec.template.spec.containers)
        row.append(selector_string(spec.selector) if spec.selector is not None else "<none>")
    return row


def _cron_job(cj: CronJob, wide: bool, now: datetime.datetime) -> list[str]:
    status = _status(cj)
    last = _seconds_between(status.get("lastScheduleTime"), now)
    suspend = cj.spec.suspend
    row = [
        cj.metadata.name or "",
        cj.spec.schedule,
        cj.spec.time_zone or "<none>",
        "<unset>" if suspend is None else str(suspend),
        str(len(status.get("active") or [])),
        "<none>" if last is None else human_duration(last),
        _age(cj, now),
    ]
    if wide:
        spec = cj.spec.job_template.spec
        row += _containers(spec.template.spec.containers)
        row.append(selector_string(spec.selector) if spec.selector is not None else "<none>")
    return row


def _endpoints(ep: Endpoints, wide: bool, now: datetime.datetime) -> list[str]:
    return [ep.metadata.name or "", format_endpoints(ep), _age(ep, now)]


def format_endpoints(ep: Endpoints, shown: int = 3) -> str:
    """formatEndpoints: the first three ready `ip:port` (or ip for a subset
    without ports), then ` + N more...`; `<none>` without subsets."""
    if not ep.subsets:
        return "<none>"
    listed: list[str] = []
    count = 0
    for subset in ep.subsets:
        ips = [a.ip for a in subset.addresses]
        if not subset.ports:
            entries = ips
        else:
            entries = [
                f"[{ip}]:{port.port}" if ":" in ip else f"{ip}:{port.port}"
                for port in subset.ports
                for ip in ips
            ]
        count += len(entries)
        listed += entries[: max(shown - len(listed), 0)]
    text = ",".join(listed)
    if count > shown:
        return f"{text} + {count - shown} more..."
    return text


def _config_map(cm: ConfigMap, wide: bool, now: datetime.datetime) -> list[str]:
    """printConfigMap: DATA counts the keys of data and binaryData."""
    return [cm.metadata.name or "", str(len(cm.data) + len(cm.binary_data)), _age(cm, now)]


def _secret(secret: Secret, wide: bool, now: datetime.datetime) -> list[str]:
    """printSecret: TYPE as stored, DATA the keys of data."""
    stored = secret.with_string_data_merged()
    return [stored.metadata.name or "", stored.type or "", str(len(stored.data)), _age(secret, now)]


_WORKLOAD_WIDE = [("CONTAINERS", True), ("IMAGES", True), ("SELECTOR", True)]
# Per kind: the columns (name, wide only?) and the printer of a row.
# kubectl's loadBalancerWidth: an ADDRESS longer than this is cut (not with -o wide).
LB_WIDTH = 16
# formatHosts lists at most three hosts.
MAX_HOSTS = 3


def _ingress(ing: Ingress, wide: bool, now: datetime.datetime) -> list[str]:
    """printIngress: NAME CLASS HOSTS ADDRESS PORTS AGE."""
    hosts: list[str] = []
    more = False
    for rule in ing.spec.rules:
        if len(hosts) == MAX_HOSTS:
            more = True
        if not more and rule.host:
            hosts.append(rule.host)
    shown = ",".join(hosts) or "*"
    if more:
        shown += f" + {len(ing.spec.rules) - MAX_HOSTS} more..."
    lb = ing.status.load_balancer.ingress
    address = ",".join(x for entry in lb for x in (entry.ip, entry.hostname) if x)
    if not wide and len(address) > LB_WIDTH:
        address = address[: LB_WIDTH - 3] + "..."
    return [
        ing.metadata.name or "",
        ing.spec.ingress_class_name or "<none>",
        shown,
        address,
        "80, 443" if ing.spec.tls else "80",
        _age(ing, now),
    ]


def _ingress_class(cls: IngressClass, wide: bool, now: datetime.datetime) -> list[str]:
    """printIngressClass: NAME CONTROLLER PARAMETERS AGE."""
    params = cls.spec.parameters
    shown = "<none>"
    if params is not None:
        shown = params.kind + (f".{params.api_group}" if params.api_group else "")
        shown += f"/{params.name}"
    return [cls.metadata.name or "", cls.spec.controller or "", shown, _age(cls, now)]


_PRINTERS: dict[str, tuple[list[tuple[str, bool]], Printer]] = {
    "ingresses": (
        [
            ("NAME", False),
            ("CLASS", False),
            ("HOSTS", False),
            ("ADDRESS", False),
            ("PORTS", False),
            ("AGE", False),
        ],
        _ingress,
    ),
    "ingressclasses": (
        [("NAME", False), ("CONTROLLER", False), ("PARAMETERS", False), ("AGE", False)],
        _ingress_class,
    ),
    "pods": (
        [
            ("NAME", False),
            ("READY", False),
            ("STATUS", False),
            ("RESTARTS", False),
            ("AGE", False),
            ("IP", True),
            ("NODE", True),
            ("NOMINATED NODE", True),
            ("READINESS GATES", True),
            ("STAND-INS", True),
        ],
        _pod,
    ),
    "services": (
        [
            ("NAME", False),
            ("TYPE", False),
            ("CLUSTER-IP", False),
            ("EXTERNAL-IP", False),
            ("PORT(S)", False),
            ("AGE", False),
            ("SELECTOR", True),
        ],
        _service,
    ),
    "endpointslices": (
        [
            ("NAME", False),
            ("ADDRESSTYPE", False),
            ("PORTS", False),
            ("ENDPOINTS", False),
            ("AGE", False),
        ],
        _endpoint_slice,
    ),
    "nodes": (
        [
            ("NAME", False),
            ("STATUS", False),
            ("ROLES", False),
            ("AGE", False),
            ("VERSION", False),
            ("INTERNAL-IP", True),
            ("EXTERNAL-IP", True),
            ("OS-IMAGE", True),
            ("KERNEL-VERSION", True),
            ("CONTAINER-RUNTIME", True),
        ],
        _node,
    ),
    "namespaces": ([("NAME", False), ("STATUS", False), ("AGE", False)], _namespace),
    "deployments": (
        [
            ("NAME", False),
            ("READY", False),
            ("UP-TO-DATE", False),
            ("AVAILABLE", False),
            ("AGE", False),
            *_WORKLOAD_WIDE,
        ],
        _deployment,
    ),
    "replicasets": (
        [
            ("NAME", False),
            ("DESIRED", False),
            ("CURRENT", False),
            ("READY", False),
            ("AGE", False),
            *_WORKLOAD_WIDE,
        ],
        _replica_set,
    ),
    "daemonsets": (
        [
            ("NAME", False),
            ("DESIRED", False),
            ("CURRENT", False),
            ("READY", False),
            ("UP-TO-DATE", False),
            ("AVAILABLE", False),
            ("NODE SELECTOR", False),
            ("AGE", False),
            *_WORKLOAD_WIDE,
        ],
        _daemon_set,
    ),
    "statefulsets": (
        [("NAME", False), ("READY", False), ("AGE", False), ("CONTAINERS", True), ("IMAGES", True)],
        _stateful_set,
    ),
    "replicationcontrollers": (
        [
            ("NAME", False),
            ("DESIRED", False),
            ("CURRENT", False),
            ("READY", False),
            ("AGE", False),
            *_WORKLOAD_WIDE,
        ],
        _replication_controller,
    ),
    "jobs": (
        [
            ("NAME", False),
            ("STATUS", False),
            ("COMPLETIONS", False),
            ("DURATION", False),
            ("AGE", False),
            *_WORKLOAD_WIDE,
        ],
        _job,
    ),
    "cronjobs": (
        [
            ("NAME", False),
            ("SCHEDULE", False),
            ("TIMEZONE", False),
            ("SUSPEND", False),
            ("ACTIVE", False),
            ("LAST SCHEDULE", False),
            ("AGE", False),
            *_WORKLOAD_WIDE,
        ],
        _cron_job,
    ),
    "endpoints": ([("NAME", False), ("ENDPOINTS", False), ("AGE", False)], _endpoints),
    "configmaps": ([("NAME", False), ("DATA", False), ("AGE", False)], _config_map),
    "secrets": ([("NAME", False), ("TYPE", False), ("DATA", False), ("AGE", False)], _secret),
}


def _pod_status(pod: Pod) -> str:
    """kubectl's STATUS: the pod's reason or phase, overridden by a
    container's waiting or terminated reason (CrashLoopBackOff, Error,
    Signal:N, ExitCode:N); Completed with a container still running is
    Running or NotReady; a pod being deleted is Terminating."""
    reason = pod.status.phase or "Pending"
    if pod.status.reason:
        reason = str(pod.status.reason)
    initializing, reason = _init_reason(pod, reason)
    has_running = False
    shown = pod.status.container_statuses
    if initializing and pod.status.condition("Initialized") != "True":
        shown = []  # the init containers' reason stands
    for status in reversed(shown):
        state = status.state
        if state is None:
            continue
        if state.waiting is not None and state.waiting.reason:
            reason = state.waiting.reason
        elif state.terminated is not None:
            terminated = state.terminated
            reason = terminated.reason or (
                f"Signal:{terminated.signal}"
                if terminated.signal
                else f"ExitCode:{terminated.exit_code}"
            )
        elif status.ready and state.running is not None:
            has_running = True
    if reason == "Completed" and has_running:
        reason = "Running" if pod.status.condition("Ready") == "True" else "NotReady"
    if pod.metadata.deletion_timestamp is not None:
        if pod.status.reason == "NodeLost":
            reason = "Unknown"
        elif pod.status.phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason


def init_statuses(pod: Pod) -> list[ContainerStatus]:
    """status.initContainerStatuses (kept as written: a manifest's or the
    kubelet's), as ContainerStatus objects; unreadable entries are left out."""
    from netemu.api.core import ContainerStatus  # the CLI imports no models up front

    raw = pod.status.init_container_statuses
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if isinstance(item, ContainerStatus):
            out.append(item)
        elif isinstance(item, dict):
            try:
                out.append(ContainerStatus.model_validate(item))
            except ValueError:
                continue
    return out


def _init_reason(pod: Pod, reason: str) -> tuple[bool, str]:
    """kubectl's printPod for init containers: the first that has not
    completed decides: Init:<reason> for one that failed or waits for a
    reason of its own (CrashLoopBackOff), else Init:N/M. A sidecar that has
    started counts as done."""
    sidecars = {c.name for c in pod.spec.init_containers if c.restart_policy == "Always"}
    total = len(pod.spec.init_containers)
    for index, status in enumerate(init_statuses(pod)):
        state = status.state
        terminated = state.terminated if state is not None else None
        waiting = state.waiting if state is not None else None
        if terminated is not None and terminated.exit_code == 0:
            continue
        if status.name in sidecars and status.started:
            continue
        if terminated is not None:
            if terminated.reason:
                return True, f"Init:{terminated.reason}"
            if terminated.signal:
                return True, f"Init:Signal:{terminated.signal}"
            return True, f"Init:ExitCode:{terminated.exit_code}"
        if waiting is not None and waiting.reason and waiting.reason != "PodInitializing":
            return True, f"Init:{waiting.reason}"
        return True, f"Init:{index}/{total}"
    return False, reason


def _restarts(pod: Pod, now: datetime.datetime) -> str:
    """kubectl's RESTARTS: the containers' restarts, with how long ago the
    last one ended when one has (`2 (5s ago)`)."""
    # Init containers' restarts count too, as kubectl adds them up.
    statuses = [*init_statuses(pod), *pod.status.container_statuses]
    count = sum(s.restart_count for s in statuses)
    ages = [
        _seconds_between(s.last_state.terminated.finished_at, now)
        for s in statuses
        if s.last_state is not None and s.last_state.terminated is not None
    ]
    known = [a for a in ages if a is not None]
    if count and known:
        return f"{count} ({human_duration(min(known))} ago)"
    return str(count)


def _seconds_between(timestamp: Any, now: datetime.datetime) -> int | None:
    if not timestamp:
        return None
    try:
        when = datetime.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return int((now - when).total_seconds())


def human_duration(seconds: int) -> str:
    """An age as kubectl prints it (apimachinery's duration.HumanDuration):
    up to 2 s in the future counts as now, further is `<invalid>`."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours = seconds // 60, seconds // 3600
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


# -- the emulated cloud load balancer's view (live labs only) -----------------


def lb_health_text(nodes: dict[str, Any]) -> str:
    """A Service's health per node as one cell without spaces (a column of
    its own): `node-1:healthy,node-2:unhealthy(503)`, the reason short."""
    return ",".join(
        f"{name}:healthy" if h["healthy"] else f"{name}:unhealthy({_short_reason(h['reason'])})"
        for name, h in nodes.items()
    )


def _short_reason(reason: str) -> str:
    """`HTTP 503` → `503`, `connection refused` → `connection-refused`."""
    return reason.removeprefix("HTTP ").replace(" ", "-")


def with_lb_health(
    shown: dict[str, Any], balancer: dict[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    """A services Table with an LB-HEALTH column added (the load balancer's
    `loadbalancer` status, netemu.node.cloudlb): each LoadBalancer Service
    it serves shows its nodes' health; others show <none>. The rows' first
    two cells are NAMESPACE and NAME, or only NAME when the table is of one
    `namespace`."""
    services = balancer.get("services", {})
    rows = []
    for row in shown["rows"]:
        cells = row["cells"]
        key = f"{cells[0]}/{cells[1]}" if namespace is None else f"{namespace}/{cells[0]}"
        entry = services.get(key)
        rows.append({"cells": [*cells, lb_health_text(entry["nodes"]) if entry else "<none>"]})
    return {
        **shown,
        "columnDefinitions": [*shown["columnDefinitions"], {"name": "LB-HEALTH", "type": "string"}],
        "rows": rows,
    }
