"""The Service environment variables kubelet gives a container
(netemu.node.envvars, after pkg/kubelet/envvars/envvars.go and
getServiceEnvVarMap/makeEnvironmentVariables in pkg/kubelet/kubelet_pods.go),
checked against the exact variables kubelet makes for the labs' Services,
and the kubelet passing them to a container's process when it starts."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest

from netemu.api.core import Pod, Service
from netemu.controlplane import LocalClient, Store
from netemu.controlplane.state import ClusterState
from netemu.kernel import processes
from netemu.kernel.datapath import Datapath
from netemu.kernel.journal import Journal
from netemu.kernel.sandbox import SandboxSpec
from netemu.net.plan import plan_lab, plan_pod
from netemu.node.envvars import EnvSources, EnvVars, expand, make_env, service_env
from netemu.node.kubelet import DEFAULT_PATH, Kubelet
from netemu.node.testserver import TestServers
from netemu.pipeline import load_cluster

ROOT = Path(__file__).parents[2]


@cache
def state_of(lab: str) -> ClusterState:
    return load_cluster([ROOT / "controlplane" / lab])


def services_of(lab: str) -> tuple[Service, ...]:
    return tuple(state_of(lab).services)


def service(
    name: str,
    cluster_ip: str | None,
    ports: Sequence[Mapping[str, Any]] = ({"name": "http", "port": 80},),
    namespace: str = "default",
    **spec: Any,
) -> Service:
    return Service.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "ports": list(ports), **spec},
        }
    )


def link_vars(prefix: str, ip: str, port: int, proto: str) -> list[tuple[str, str]]:
    """What makeLinkVariables writes for one port (the URL form written out)."""
    head = f"{prefix}_PORT_{port}_{proto.upper()}"
    return [
        (head, f"{proto}://{ip}:{port}"),
        (f"{head}_PROTO", proto),
        (f"{head}_PORT", str(port)),
        (f"{head}_ADDR", ip),
    ]


# -- the default lab ----------------------------------------------------------

# The ClusterIPs the allocator gives controlplane/default's Services (the
# rules/default goldens carry the same ones).
DEFAULT_IPS = {
    "empty": "10.96.236.17",
    "web": "10.96.149.150",
    "web-local": "10.96.47.198",
    "web-nodeport": "10.107.216.142",
}


def test_default_lab_services_match_their_cluster_ips() -> None:
    assert {s.metadata.name: s.spec.cluster_ip for s in services_of("default")} == DEFAULT_IPS


def test_web_service_variables_are_kubelets() -> None:
    env = service_env(services_of("default"), "default", True)
    web = [(k, v) for k, v in env if k.startswith(("WEB_SERVICE_", "WEB_PORT"))]
    assert web == [
        ("WEB_SERVICE_HOST", "10.96.149.150"),
        ("WEB_SERVICE_PORT", "80"),
        ("WEB_SERVICE_PORT_HTTP", "80"),
        ("WEB_PORT", "tcp://10.96.149.150:80"),
        ("WEB_PORT_80_TCP", "tcp://10.96.149.150:80"),
        ("WEB_PORT_80_TCP_PROTO", "tcp"),
        ("WEB_PORT_80_TCP_PORT", "80"),
        ("WEB_PORT_80_TCP_ADDR", "10.96.149.150"),
    ]


def test_default_lab_gives_every_service_in_the_namespace_by_name() -> None:
    env = service_env(services_of("default"), "default", True)
    expected: list[tuple[str, str]] = []
    for name in sorted(DEFAULT_IPS):
        ip, prefix = DEFAULT_IPS[name], name.upper().replace("-", "_")
        expected += [
            (f"{prefix}_SERVICE_HOST", ip),
            (f"{prefix}_SERVICE_PORT", "80"),
            (f"{prefix}_SERVICE_PORT_HTTP", "80"),
            (f"{prefix}_PORT", f"tcp://{ip}:80"),
            *link_vars(prefix, ip, 80, "tcp"),
        ]
    assert env == expected
    assert len(env) == 32
    # A NodePort Service's variables are its ClusterIP's: no node port in them.
    assert ("WEB_NODEPORT_SERVICE_HOST", "10.107.216.142") in env
    assert not [v for _, v in env if "30080" in v]


def test_only_the_pods_namespace() -> None:
    assert service_env(services_of("default"), "kube-system", True) == []
    assert service_env(services_of("default"), "other", True) == []


def test_enable_service_links_false_gives_nothing() -> None:
    assert service_env(services_of("default"), "default", False) == []


# -- multi-port, UDP and SCTP; unnamed ports; headless; other namespaces --------


def test_protocols_lab_multi_port_udp_first() -> None:
    ip = "10.110.23.237"
    draining = "10.109.69.154"
    assert service_env(services_of("protocols"), "default", True) == [
        ("DNS_SERVICE_HOST", ip),
        ("DNS_SERVICE_PORT", "53"),
        ("DNS_SERVICE_PORT_DNS", "53"),
        ("DNS_SERVICE_PORT_DNS_TCP", "53"),
        ("DNS_SERVICE_PORT_DNS_SCTP", "53"),
        # The first port is UDP: so is the Docker-style `_PORT` URL.
        ("DNS_PORT", f"udp://{ip}:53"),
        ("DNS_PORT_53_UDP", f"udp://{ip}:53"),
        ("DNS_PORT_53_UDP_PROTO", "udp"),
        ("DNS_PORT_53_UDP_PORT", "53"),
        ("DNS_PORT_53_UDP_ADDR", ip),
        ("DNS_PORT_53_TCP", f"tcp://{ip}:53"),
        ("DNS_PORT_53_TCP_PROTO", "tcp"),
        ("DNS_PORT_53_TCP_PORT", "53"),
        ("DNS_PORT_53_TCP_ADDR", ip),
        ("DNS_PORT_53_SCTP", f"sctp://{ip}:53"),
        ("DNS_PORT_53_SCTP_PROTO", "sctp"),
        ("DNS_PORT_53_SCTP_PORT", "53"),
        ("DNS_PORT_53_SCTP_ADDR", ip),
        # An unnamed port has no _SERVICE_PORT_<NAME>.
        ("DRAINING_SERVICE_HOST", draining),
        ("DRAINING_SERVICE_PORT", "80"),
        ("DRAINING_PORT", f"tcp://{draining}:80"),
        *link_vars("DRAINING", draining, 80, "tcp"),
    ]


def test_headless_service_has_no_variables() -> None:
    env = dict(service_env(services_of("statefulset"), "default", True))
    assert not [k for k in env if k.startswith("DB_") and not k.startswith("DB_RW_")]
    assert env["DB_RW_SERVICE_HOST"] == "10.103.237.194"
    assert env["DB_RW_SERVICE_PORT_PG"] == "5432"
    assert env["DB_RW_PORT"] == "tcp://10.103.237.194:5432"


def test_service_in_another_namespace() -> None:
    services = services_of("no-selector")
    assert service_env(services, "default", True) == []
    env = dict(service_env(services, "monitoring", True))
    assert env["NODE_EXPORTER_SERVICE_HOST"] == "10.98.253.83"
    assert env["NODE_EXPORTER_SERVICE_PORT_METRICS"] == "9100"
    assert env["NODE_EXPORTER_PORT_9100_TCP_ADDR"] == "10.98.253.83"


def test_no_cluster_ip_no_variables() -> None:
    services = [
        service("ext", None, type="ExternalName", externalName="db.example.com"),
        service("unallocated", None),
        service("headless", "None"),
    ]
    assert service_env(services, "default", True) == []


def test_ipv6_cluster_ip_is_bracketed_in_urls() -> None:
    env = dict(service_env([service("v6", "fd00:10:96::a")], "default", True))
    assert env["V6_SERVICE_HOST"] == "fd00:10:96::a"
    assert env["V6_PORT"] == "tcp://[fd00:10:96::a]:80"
    assert env["V6_PORT_80_TCP_ADDR"] == "fd00:10:96::a"


def test_port_names_with_dashes() -> None:
    svc = service("my-app", "10.96.0.50", [{"port": 8443, "name": "https-alt"}])
    assert ("MY_APP_SERVICE_PORT_HTTPS_ALT", "8443") in service_env([svc], "default", True)


# -- the master Service default/kubernetes -------------------------------------

KUBERNETES = service("kubernetes", "10.96.0.1", [{"name": "https", "port": 443}])


def test_master_service_reaches_every_namespace_even_without_service_links() -> None:
    expected = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
        *link_vars("KUBERNETES", "10.96.0.1", 443, "tcp"),
    ]
    services = [*services_of("default"), KUBERNETES]
    for namespace in ("default", "kube-system", "team-a"):
        assert service_env(services, namespace, False) == expected
    assert service_env(services, "team-a", True) == expected
    assert dict(service_env(services, "default", True))["WEB_SERVICE_HOST"] == "10.96.149.150"


def test_kubernetes_service_in_another_namespace_is_not_the_master() -> None:
    elsewhere = service("kubernetes", "10.96.0.99", namespace="team-b")
    assert service_env([elsewhere], "team-a", True) == []
    assert service_env([elsewhere], "team-b", False) == []


@pytest.mark.parametrize("master_first", [True, False])
def test_own_namespace_kubernetes_service_wins_over_the_master(master_first: bool) -> None:
    own = service("kubernetes", "10.96.0.77", [{"name": "https", "port": 443}], namespace="team")
    services = [KUBERNETES, own] if master_first else [own, KUBERNETES]
    assert dict(service_env(services, "team", True))["KUBERNETES_SERVICE_HOST"] == "10.96.0.77"
    assert dict(service_env(services, "team", False))["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


# -- merging with the container's env -----------------------------------------

SERVICE_VARS = [("WEB_SERVICE_HOST", "10.96.149.150"), ("WEB_SERVICE_PORT", "80")]


def container_env(declared: Sequence[tuple[str, str]], service_vars: EnvVars) -> EnvVars:
    """What make_env gives a container whose `env` is `declared` (plain values)."""
    pod = Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "env": [{"name": k, "value": v} for k, v in declared]}]
            },
        }
    )
    env, events = make_env(pod.spec.containers[0], pod, EnvSources({}, {}), service_vars)
    assert events == []
    return env


def test_container_env_wins_and_comes_first() -> None:
    env = container_env([("WEB_SERVICE_PORT", "8080"), ("MODE", "x")], SERVICE_VARS)
    assert env == [
        ("WEB_SERVICE_PORT", "8080"),
        ("MODE", "x"),
        ("WEB_SERVICE_HOST", "10.96.149.150"),
    ]


def test_container_env_expands_service_and_earlier_variables() -> None:
    env = dict(
        container_env(
            [
                ("URL", "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)/"),
                ("LATER", "$(AFTER)"),  # declared after: not expanded
                ("AFTER", "a"),
                ("BOTH", "$(URL)x"),
                ("ESCAPED", "$$(WEB_SERVICE_HOST)"),
                ("UNKNOWN", "$(NOPE)"),
            ],
            SERVICE_VARS,
        )
    )
    assert env["URL"] == "http://10.96.149.150:80/"
    assert env["LATER"] == "$(AFTER)"
    assert env["BOTH"] == "http://10.96.149.150:80/x"
    assert env["ESCAPED"] == "$(WEB_SERVICE_HOST)"
    assert env["UNKNOWN"] == "$(NOPE)"


def test_own_variable_shadows_a_service_variable_in_expansion() -> None:
    env = dict(
        container_env([("WEB_SERVICE_PORT", "1"), ("P", "$(WEB_SERVICE_PORT)")], SERVICE_VARS)
    )
    assert env["P"] == "1"


# third_party/forked/golang/expansion/expand_test.go, doExpansionTest's cases.
EXPAND_CONTEXT = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}
EXPAND_CASES = [
    ("$(VAR_A)", "A"),
    ("$(VAR_A)-$(VAR_A)", "A-A"),
    ("$(VAR_A)-1", "A-1"),
    ("___$(VAR_B)___", "___B___"),
    ("___$(VAR_C)", "___C"),
    ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
    ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
    ("f000-$$VAR_A", "f000-$VAR_A"),
    ("foo\\$(VAR_C)bar", "foo\\Cbar"),
    ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
    ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
    ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
    ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
    ("$(VAR_REF)", "$(VAR_A)"),
    ("%%$(VAR_REF)--$(VAR_REF)%%", "%%$(VAR_A)--$(VAR_A)%%"),
    ("foo$(VAR_EMPTY)bar", "foobar"),
    ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
    ("f00__(VAR_A)__", "f00__(VAR_A)__"),
    ("$?_boo_$!", "$?_boo_$!"),
    ("$VAR_A", "$VAR_A"),
    ("$(VAR_DNE)", "$(VAR_DNE)"),
    ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
    ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
    ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
    ("$$$$$$$(VAR_A)", "$$$A"),
    ("$VAR_A)", "$VAR_A)"),
    ("${VAR_A}", "${VAR_A}"),
    ("$(VAR_B)_______$(A", "B_______$(A"),
    ("$(VAR_C)_______$(", "C_______$("),
    ("$(VAR_A)foobarzab$", "Afoobarzab$"),
    ("foo-\\$(VAR_A", "foo-\\$(VAR_A"),
    ("--$($($($($--", "--$($($($($--"),
    ("$($($($($--foo$(", "$($($($($--foo$("),
    ("foo0--$($($($(", "foo0--$($($($("),
    ("$(foo$$var)", "$(foo$$var)"),
    ("\n", "\n"),
]


@pytest.mark.parametrize(("text", "expected"), EXPAND_CASES)
def test_expand_like_kubelet(text: str, expected: str) -> None:
    def mapping(name: str) -> str:
        return EXPAND_CONTEXT.get(name, f"$({name})")

    assert expand(text, mapping) == expected


# -- the pod plan and the kubelet -----------------------------------------------


def pod(name: str, command: list[str] | None, **spec: Any) -> Pod:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if command is not None:
        container["command"] = command
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "node-1", "hostNetwork": True, "containers": [container], **spec},
        }
    )


@pytest.mark.parametrize(("value", "expected"), [(None, True), (True, True), (False, False)])
def test_plan_pod_reads_enable_service_links(value: bool | None, expected: bool) -> None:
    node = plan_lab(state_of("default"), "default").node("node-1")
    extra = {} if value is None else {"enableServiceLinks": value}
    assert plan_pod("default", node, pod("p", ["true"], **extra)).enable_service_links is expected


class _FakeDatapath:
    def add_pod(self, *_: object) -> None:
        pass


class _FakeProcess:
    pid = 0


class _FakeJournal:
    def process(self, pid: int) -> None:
        pass

    def shared_dir(self, path: Path) -> None:
        pass

    def path(self, path: Path) -> None:
        pass


def test_kubelet_starts_a_container_with_the_services_that_exist_then(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: dict[str, dict[str, str]] = {}

    def fake_start(
        netns: str, argv: Sequence[str], *, sandbox: SandboxSpec, log: Path
    ) -> subprocess.Popen[bytes]:
        started[log.parent.name] = dict(sandbox.env)
        return cast("subprocess.Popen[bytes]", _FakeProcess())

    monkeypatch.setattr(processes, "start", fake_start)
    # The hostNetwork pods' own /etc files go under tmp_path.
    monkeypatch.setattr(processes, "ETC_NETNS", tmp_path / "etc-netns")
    state = state_of("default")
    assert state.lab is not None
    client = LocalClient(Store())
    client.create(service("web", "10.96.149.150"))
    kubelet = Kubelet(
        client=client,
        lab_name="default",
        lab=state.lab,
        node=plan_lab(state, "default").node("node-1"),
        datapath=cast(Datapath, _FakeDatapath()),
        servers=cast(TestServers, None),
        journal=cast(Journal, _FakeJournal()),
        log_dir=tmp_path,
        private_dir=tmp_path / "containers",
    )
    client.create(pod("first", ["sleep", "1"], enableServiceLinks=True))
    client.create(pod("off", ["sleep", "1"], enableServiceLinks=False))
    assert kubelet.start_new(kubelet.desired())
    client.create(service("api", "10.96.0.20"))
    client.create(pod("second", ["sleep", "1"]))
    assert kubelet.start_new(kubelet.desired())

    assert started["first"]["WEB_SERVICE_HOST"] == "10.96.149.150"
    assert started["first"]["WEB_PORT_80_TCP"] == "tcp://10.96.149.150:80"
    assert "API_SERVICE_HOST" not in started["first"]
    assert started["second"]["API_SERVICE_HOST"] == "10.96.0.20"
    assert started["second"]["WEB_SERVICE_HOST"] == "10.96.149.150"
    # Besides what the container runtime sets (a hostNetwork pod: the node's
    # hostname), nothing: no Service links.
    assert started["off"] == {"PATH": DEFAULT_PATH, "HOSTNAME": "node-1", "HOME": "/"}
    # A restart computes the environment again: the Service created since
    # the first start is there now (kubelet makes the env at every start).
    again: dict[str, str] = {}

    def fake_start_again(
        process: subprocess.Popen[bytes], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        again.update(env)
        return cast("subprocess.Popen[bytes]", _FakeProcess())

    monkeypatch.setattr(processes, "start_again", fake_start_again)
    kubelet.start_container("default/first", "c")
    assert again["API_SERVICE_HOST"] == "10.96.0.20"
    assert again["WEB_SERVICE_HOST"] == "10.96.149.150"
