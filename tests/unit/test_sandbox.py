"""The bubblewrap command line of a container's sandbox, built from a fake
host filesystem: what is bound read-only, what is private and writable,
which user runs the command, and that nothing of the caller leaks in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from netemu.api.core import Pod
from netemu.api.load import load_paths
from netemu.controlplane import build_cluster_state
from netemu.kernel.sandbox import HostEntry, Mount, SandboxSpec, bwrap_argv
from netemu.net.plan import plan_lab, plan_pod
from netemu.node.kubelet import container_log

LAB = Path(__file__).resolve().parents[2] / "controlplane" / "default" / "lab.yaml"

HOST = {
    "/": [
        HostEntry("bin", False, "usr/bin"),
        HostEntry("dev", True),
        HostEntry("etc", True),
        HostEntry("proc", True),
        HostEntry("root", True),
        HostEntry("tmp", True),
        HostEntry("usr", True),
        HostEntry("var", True),
    ],
    "/etc": [HostEntry("hosts", False), HostEntry("ssl", True)],
    "/var": [HostEntry("lib", True), HostEntry("log", True)],
}


def lister(path: str) -> Sequence[HostEntry]:
    return HOST.get(path, [])


def ops(argv: list[str]) -> list[tuple[str, ...]]:
    """bwrap's options as (option, its arguments...), up to `--`."""
    arity = {
        "--ro-bind": 2, "--bind": 2, "--symlink": 2, "--setenv": 2, "--tmpfs": 1, "--dir": 1,
        "--proc": 1, "--dev": 1, "--remount-ro": 1, "--chdir": 1, "--hostname": 1,
        "--perms": 1, "--cap-add": 1, "--cap-drop": 1,
    }  # fmt: skip
    out, i = [], 1
    while argv[i] != "--":
        n = arity.get(argv[i], 0)
        out.append(tuple(argv[i : i + 1 + n]))
        i += 1 + n
    return out


def test_the_host_is_bound_read_only_and_tmp_var_run_are_private() -> None:
    argv = bwrap_argv(SandboxSpec(hostname="web-1"), ["sleep", "1"], lister)
    got = ops(argv)
    assert ("--symlink", "usr/bin", "/bin") in got
    for top in ("/etc", "/root", "/usr"):
        assert ("--ro-bind", top, top) in got
    assert not any(op[0] == "--bind" for op in got)  # nothing writable from the host
    for private in ("/tmp", "/var", "/run"):
        assert ("--tmpfs", private) in got
        assert ("--ro-bind", private, private) not in got
    assert ("--dir", "/var/lib") in got and ("--dir", "/var/log") in got
    assert got.index(("--remount-ro", "/")) > got.index(("--tmpfs", "/run"))
    assert ("--hostname", "web-1") in got and ("--unshare-pid",) in got
    assert ("--clearenv",) in got and ("--die-with-parent",) not in got
    assert ("--chdir", "/") in got
    # nobody by default, through setpriv (which drops every capability)
    tail = argv[argv.index("--") + 1 :]
    assert tail == [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "1",
    ]  # fmt: skip


def test_root_gets_the_runtime_default_capabilities_only() -> None:
    argv = bwrap_argv(SandboxSpec(hostname="h", uid=0, gid=0), ["id"], lister)
    assert argv[argv.index("--") + 1 :] == ["id"]
    got = ops(argv)
    assert got.index(("--cap-drop", "ALL")) < got.index(("--cap-add", "CAP_CHOWN"))
    assert ("--cap-add", "CAP_SYS_ADMIN") not in got


def test_only_the_container_env_is_set() -> None:
    spec = SandboxSpec(hostname="h", env=(("A", "1"), ("PATH", "/bin")))
    got = ops(bwrap_argv(spec, ["env"], lister))
    assert [op for op in got if op[0] in ("--setenv", "--clearenv")] == [
        ("--clearenv",),
        ("--setenv", "A", "1"),
        ("--setenv", "PATH", "/bin"),
    ]


def test_a_mount_point_missing_on_the_host_is_made_on_a_tmpfs_never_on_the_host() -> None:
    spec = SandboxSpec(
        hostname="h", workdir="/app", mounts=(Mount("/run/netemu/x/vol", "/etc/app/conf"),)
    )
    got = ops(bwrap_argv(spec, ["true"], lister))
    # /etc becomes a tmpfs holding the host's entries, read-only again after the mount.
    assert ("--ro-bind", "/etc", "/etc") not in got
    assert got.index(("--tmpfs", "/etc")) < got.index(("--ro-bind", "/etc/hosts", "/etc/hosts"))
    assert ("--ro-bind", "/etc/ssl", "/etc/ssl") in got
    mount = got.index(("--ro-bind", "/run/netemu/x/vol", "/etc/app/conf"))
    assert got.index(("--remount-ro", "/etc")) > mount
    # The working directory: a private writable tmpfs, made on the sandbox's own root.
    assert ("--tmpfs", "/app") in got and ("--chdir", "/app") in got


def test_exec_gets_a_new_session_and_dies_with_its_parent() -> None:
    spec = SandboxSpec(hostname="h", new_session=True, die_with_parent=True)
    got = ops(bwrap_argv(spec, ["sh"], lister))
    assert ("--new-session",) in got and ("--die-with-parent",) in got


def test_spec_round_trips_through_json() -> None:
    spec = SandboxSpec("h", (("A", "1"),), 1000, 0, "/w", (Mount("/s", "/t", False),))
    assert SandboxSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("bad", ["..", ".", "a/b", ""])
def test_log_paths_cannot_leave_the_log_directory(bad: str) -> None:
    with pytest.raises(ValueError, match="not a name for a log path"):
        container_log(Path("/logs"), "default", "web", bad)
    assert container_log(Path("/logs"), "default", "web", "app") == Path(
        "/logs/default/web/app.log"
    )


def test_run_as_user_and_group_the_container_over_the_pod() -> None:
    pod = Pod.model_validate(
        {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
                "containers": [
                    {"name": "a", "command": ["true"], "securityContext": {"runAsUser": 0}},
                    {"name": "b", "command": ["true"], "workingDir": "/srv"},
                    {"name": "c", "command": ["true"], "securityContext": {"runAsGroup": 5}},
                ],
            },
        }
    )
    state = build_cluster_state([item.obj for item in load_paths([LAB])] + [pod])
    node = plan_lab(state, "lab").nodes[0]
    placed = next(p for p in state.pods if p.metadata.name == "p")
    plan = plan_pod("lab", node, placed)
    got = [(c.run_as_user, c.run_as_group, c.working_dir) for c in plan.containers]
    assert got == [(0, 3000, None), (1000, 3000, "/srv"), (1000, 5, None)]


def test_a_private_root_gives_the_container_shared_directories_on_the_host() -> None:
    spec = SandboxSpec(hostname="h", workdir="/app", private_root="/run/netemu/l/containers/c")
    got = ops(bwrap_argv(spec, ["true"], lister))
    for private in ("/tmp", "/var", "/run"):
        assert ("--bind", f"/run/netemu/l/containers/c{private}", private) in got
        assert ("--tmpfs", private) not in got
    assert ("--bind", "/run/netemu/l/containers/c/work", "/app") in got
