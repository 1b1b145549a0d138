"""Stand-in containers (netemu.net.standin, netemu.kernel.programs): which
containers the built-in test server replaces, and the ports, TLS ports and
probe paths it then serves. No root: programs are looked up in tmp_path
and in this machine's /bin."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from netemu.api.core import Container, Pod
from netemu.kernel.programs import program_problem
from netemu.net.plan import NodePlan, plan_pod
from netemu.net.standin import DEFAULT_PATH, env_path, stand_in, why_stand_in

SH = shutil.which("sh", path=DEFAULT_PATH)


def container(**fields: Any) -> Container:
    return Container.model_validate({"name": "app", "image": "example/app:1", **fields})


def script(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- can the program run? -----------------------------------------------------


def test_a_program_on_the_path_runs() -> None:
    assert SH is not None, "this machine has no sh in the default PATH"
    assert program_problem("sh", DEFAULT_PATH) is None
    assert program_problem(SH, DEFAULT_PATH) is None


def test_a_program_missing_from_the_path_does_not() -> None:
    problem = program_problem("productpage-server", "/usr/bin:/bin")
    assert problem == 'executable file not found in $PATH ("/usr/bin:/bin")'


def test_a_missing_path_does_not(tmp_path: Path) -> None:
    problem = program_problem(str(tmp_path / "app"), DEFAULT_PATH)
    assert problem == "no such file or directory"


def test_the_containers_path_is_searched(tmp_path: Path) -> None:
    script(tmp_path / "server", "#!/bin/sh\nexit 0\n")
    assert program_problem("server", DEFAULT_PATH) is not None
    assert program_problem("server", f"/nowhere:{tmp_path}") is None
    (tmp_path / "lib").mkdir()
    script(tmp_path / "lib" / "tool", "#!/no/such/sh\n")
    assert program_problem("tool", str(tmp_path / "lib")) == (
        f"{tmp_path / 'lib' / 'tool'}: interpreter /no/such/sh: no such file or directory"
    )


def test_a_relative_path_is_taken_from_the_working_directory(tmp_path: Path) -> None:
    script(tmp_path / "run.sh", "#!/bin/sh\nexit 0\n")
    assert program_problem("./run.sh", DEFAULT_PATH, str(tmp_path)) is None
    assert program_problem("./run.sh", DEFAULT_PATH, "/") is not None


def test_a_file_without_an_execute_bit_does_not_run(tmp_path: Path) -> None:
    plain = script(tmp_path / "app", "#!/bin/sh\n", mode=0o644)
    assert program_problem(str(plain), DEFAULT_PATH) == "permission denied (not executable)"
    # A directory is never a program, whatever its mode.
    assert program_problem(str(tmp_path), DEFAULT_PATH) == "not a regular file"


def test_a_script_whose_interpreter_is_missing_does_not_run(tmp_path: Path) -> None:
    py = script(tmp_path / "app.py", "#!/opt/no-such-python/bin/python3 -u\nprint(1)\n")
    assert program_problem(str(py), DEFAULT_PATH) == (
        "interpreter /opt/no-such-python/bin/python3: no such file or directory"
    )
    ok = script(tmp_path / "ok.sh", "#!/bin/sh\nexit 0\n")
    assert program_problem(str(ok), DEFAULT_PATH) is None


def test_path_comes_from_the_containers_env() -> None:
    assert env_path(()) == DEFAULT_PATH
    assert env_path((("HOME", "/root"), ("PATH", "/app/bin"))) == "/app/bin"


# -- the decision ---------------------------------------------------------------


def test_no_command_is_a_stand_in_for_the_images_entrypoint() -> None:
    reason = why_stand_in(container(args=["--port", "9080"]), (), program_problem)
    assert reason == "no command: the image's entrypoint is not on this machine"


def test_a_command_that_runs_is_not_replaced() -> None:
    app = container(command=["sh", "-c", "sleep 1000"])
    assert why_stand_in(app, (), program_problem) is None


def test_a_command_that_cannot_run_is_replaced() -> None:
    app = container(command=["/usr/local/bin/productpage", "--port", "9080"])
    assert why_stand_in(app, (), program_problem) == (
        "command '/usr/local/bin/productpage': no such file or directory"
    )


def test_the_containers_own_path_decides(tmp_path: Path) -> None:
    script(tmp_path / "server", "#!/bin/sh\nexit 0\n")
    app = container(command=["server"])
    assert why_stand_in(app, (), program_problem) is not None
    assert why_stand_in(app, (("PATH", str(tmp_path)),), program_problem) is None


def test_offline_every_command_is_taken_to_run() -> None:
    assert why_stand_in(container(command=["/no/such/app"]), (), None) is None


# -- what a stand-in serves ---------------------------------------------------------


def test_probe_ports_and_paths() -> None:
    app = container(
        ports=[
            {"name": "http", "containerPort": 9080},
            {"name": "metrics", "containerPort": 9090},
            {"containerPort": 5353, "protocol": "UDP"},
        ],
        readinessProbe={"httpGet": {"path": "/ready?full=1", "port": "http"}},
        livenessProbe={"tcpSocket": {"port": 9091}},
        startupProbe={"httpGet": {"path": "health", "port": 9092}},
    )
    served = stand_in(app, "why", taken=())
    assert served.ports == (
        (9080, "TCP"),
        (9090, "TCP"),
        (5353, "UDP"),
        (9091, "TCP"),
        (9092, "TCP"),
    )
    # The query is not part of the path; a path without "/" gets one, as the
    # kubelet's URL has it.
    assert served.probe_paths == (("/health", ("liveness",)), ("/ready", ("readiness",)))
    assert served.tls_ports == ()


def test_a_path_two_probes_share_fails_with_either_switch() -> None:
    app = container(
        ports=[{"containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/healthz", "port": 8080}},
        livenessProbe={"httpGet": {"path": "/healthz", "port": 8080}},
    )
    assert stand_in(app, "why", ()).probe_paths == (("/healthz", ("liveness", "readiness")),)


def test_tls_on_https_probes_https_names_443_and_8443() -> None:
    app = container(
        ports=[
            {"name": "https", "containerPort": 9443},
            {"name": "web", "containerPort": 8443},
            {"name": "tls", "containerPort": 443},
            {"name": "plain", "containerPort": 8080},
            {"name": "dns", "containerPort": 443, "protocol": "UDP"},
        ],
        readinessProbe={"httpGet": {"path": "/", "port": 10443, "scheme": "HTTPS"}},
    )
    served = stand_in(app, "why", ())
    assert served.tls_ports == (443, 8443, 9443, 10443)
    assert (10443, "TCP") in served.ports


def test_a_probe_port_another_container_declares_is_left_to_it() -> None:
    app = container(livenessProbe={"tcpSocket": {"port": 15021}})
    assert stand_in(app, "why", taken=[15021]).ports == ()
    assert stand_in(app, "why", taken=[]).ports == ((15021, "TCP"),)


def test_probes_of_another_host_and_unknown_port_names_open_nothing() -> None:
    app = container(
        readinessProbe={"httpGet": {"path": "/", "port": 80, "host": "10.0.0.1"}},
        livenessProbe={"tcpSocket": {"port": "nope"}},
    )
    assert stand_in(app, "why", ()).ports == ()


def test_grpc_probe_ports_serve_grpc_health() -> None:
    app = container(
        readinessProbe={"grpc": {"port": 50051}},
        livenessProbe={"grpc": {"port": 50051, "service": "liveness"}},
    )
    served = stand_in(app, "why", ())
    assert served.ports == ((50051, "TCP"),)
    assert served.grpc_ports == ((50051, ("liveness", "readiness")),)
    # A port another container declares is not the stand-in's to serve.
    assert stand_in(app, "why", taken=[50051]).grpc_ports == ()


# -- the pod's plan -----------------------------------------------------------------


@pytest.fixture
def node() -> NodePlan:
    return NodePlan(
        name="node-1",
        netns="netemu_t_node_node-1",
        underlay_ip="192.168.56.11",
        underlay_prefixlen=24,
        switch_port="n0-node-1",
        pod_cidr="10.244.0.0/24",
        bridge_ip="10.244.0.1",
        pod_prefixlen=24,
        overlay="vxlan",
        vxlan_port=8472,
        vtep_mac="02:00:00:00:00:01",
        vtep_ip="10.244.0.0",
        bridge_mac="02:00:00:00:00:02",
        pod_mtu=1450,
        peers=(),
        routes=(),
        sysctls=(),
    )


def pod(containers: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> Pod:
    return Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "annotations": annotations or {}},
            "spec": {"nodeName": "node-1", "containers": containers},
            "status": {"podIP": "10.244.0.5"},
        }
    )


def test_plan_keeps_real_commands_and_replaces_the_rest(node: NodePlan) -> None:
    planned = plan_pod(
        "t",
        node,
        pod(
            [
                {"name": "shell", "command": ["sh", "-c", "sleep 1000"]},
                {
                    "name": "app",
                    "command": ["/app/server"],
                    "args": ["-p", "9080"],
                    "ports": [{"containerPort": 9080}],
                },
                {"name": "sidecar", "image": "envoy", "ports": [{"containerPort": 15001}]},
            ]
        ),
        check_program=program_problem,
    )
    shell, app, sidecar = planned.containers
    assert shell.argv == ("sh", "-c", "sleep 1000") and shell.stand_in == ""
    assert app.argv == () and app.stand_in.startswith("command '/app/server'")
    assert app.ports == ((9080, "TCP"),)
    assert sidecar.argv == () and sidecar.stand_in.startswith("no command")


def test_plan_of_the_dns_pod_is_no_stand_in(node: NodePlan) -> None:
    planned = plan_pod(
        "t",
        node,
        pod(
            [{"name": "coredns", "ports": [{"containerPort": 53, "protocol": "UDP"}]}],
            {"netemu/builtin-server": "dns"},
        ),
        check_program=program_problem,
    )
    (dns,) = planned.containers
    assert dns.builtin == "dns" and dns.stand_in == ""


def test_two_stand_ins_probing_one_undeclared_port_open_it_once(node: NodePlan) -> None:
    probed = {"livenessProbe": {"tcpSocket": {"port": 15020}}}
    planned = plan_pod(
        "t",
        node,
        pod([{"name": "a", **probed}, {"name": "b", **probed}, {"name": "c", **probed}]),
        check_program=program_problem,
    )
    assert [c.ports for c in planned.containers] == [((15020, "TCP"),), (), ()]
