"""The CLI contract: commands, output shapes and exit codes scripts rely on."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netemu import cli
from netemu.cli import main
from netemu.errors import UsageError

ROOT = Path(__file__).parents[2]
DEFAULT = str(ROOT / "controlplane" / "default")
DUMP = str(ROOT / "tests" / "unit" / "data" / "rules" / "affinity-iptables-save-nft.txt")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_ok() -> None:
    code, out, _ = run("validate", "-f", DEFAULT)
    assert code == 0
    assert out.startswith("valid: 2 node(s), 4 service(s), 3 pod(s)")


def test_validate_reports_every_error_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: Bad_Name\nspec:\n"
        "  ports:\n  - port: 70000\n"
    )
    code, _, err = run("validate", "-f", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1] == "2 error(s)"
    assert any(line.startswith(f"{bad}:4: Service/Bad_Name: metadata.name: ") for line in lines)
    assert (
        f"{bad}:7: Service/Bad_Name: spec.ports[0].port: must be between 1 and 65535, "
        "inclusive" in lines
    )


PENDING_LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  podCIDR: 10.244.0.0/16
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11, maxPods: 2}
  - {name: node-2, underlayIP: 192.168.56.12, maxPods: 20, podCIDR: 10.244.9.0/29}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 14
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c}]}
"""


def test_validate_and_compile_warn_of_pods_left_without_an_address(tmp_path: Path) -> None:
    # node-1 takes 2 pods; node-2 takes 20 but its /29 has addresses for 5
    # (.2-.6): 12 are bound there, 7 of them without an address.
    path = tmp_path / "lab.yaml"
    path.write_text(PENDING_LAB)
    for command in (["validate"], ["compile", "--node", "node-1"]):
        code, _, err = run(*command, "-f", str(path))
        assert code == 0, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(
            "warning: 7 pods are Pending without an address, on node node-2, whose podCIDR "
            "10.244.9.0/29 has no free address (default/web-"
        )
        assert lines[0].endswith(" and 4 more)")
    path.write_text(PENDING_LAB.replace("maxPods: 20", "maxPods: 3").replace("/29", "/24"))
    _, _, err = run("validate", "-f", str(path))
    (line,) = err.strip().splitlines()
    prefix = (
        "warning: 9 pods are Pending without an address, not scheduled: 0/2 nodes are "
        "available: 2 Too many pods. ("
    )
    assert line.startswith(prefix) and line.endswith(" and 6 more)")
    named = line.removeprefix(prefix).removesuffix(" and 6 more)").split(", ")
    assert len(named) == 3 and all(name.startswith("default/web-") for name in named)
    _, _, err = run("validate", "-f", DEFAULT)
    assert "Pending" not in err


def test_compile_needs_a_node_when_there_are_several() -> None:
    code, _, err = run("compile", "-f", DEFAULT)
    assert code == 2
    assert "several nodes (node-1, node-2): choose one with --node" in err


def test_compile_prints_restore_input() -> None:
    code, out, _ = run("compile", "-f", DEFAULT, "--node", "node-2")
    assert code == 0
    assert out.startswith("*mangle\n")
    assert out.count("COMMIT") == 3
    assert "-A KUBE-NODEPORTS -m comment --comment default/web-nodeport:http" in out


def test_compile_write_goes_to_rules_dir(tmp_path: Path, monkeypatch: object) -> None:
    import netemu.cli_manifests

    monkeypatch.setattr(netemu.cli_manifests, "RULES_DIR", tmp_path)  # type: ignore[attr-defined]
    code, _, _ = run("compile", "-f", DEFAULT, "--write")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == [
        "node-1.iptables",
        "node-2.iptables",
    ]
    assert (tmp_path / "default" / "node-1.iptables").read_text() == run(
        "compile", "-f", DEFAULT, "--node", "node-1"
    )[1]


def test_compile_nftables_mode(tmp_path: Path, monkeypatch: object) -> None:
    import netemu.cli_manifests

    code, out, _ = run("compile", "-f", DEFAULT, "--node", "node-2", "--mode", "nftables")
    assert code == 0
    assert out.startswith('add table ip kube-proxy { comment "rules for kube-proxy" ; }\n')
    assert "COMMIT" not in out
    assert "add element ip kube-proxy service-nodeports { tcp . " in out
    monkeypatch.setattr(netemu.cli_manifests, "RULES_DIR", tmp_path)  # type: ignore[attr-defined]
    code, _, _ = run("compile", "-f", DEFAULT, "--write", "--mode", "nftables")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == ["node-1.nft", "node-2.nft"]
    assert (tmp_path / "default" / "node-2.nft").read_text() == out


def test_compile_defaults_to_the_labs_mode(tmp_path: Path) -> None:
    lab = (Path(DEFAULT) / "lab.yaml").read_text()
    assert "proxyMode: iptables" in lab
    (tmp_path / "lab.yaml").write_text(lab.replace("proxyMode: iptables", "proxyMode: nftables"))
    code, out, _ = run("compile", "-f", str(tmp_path), "--node", "node-1")
    assert code == 0
    assert out.startswith("add table ip kube-proxy")
    code, out, _ = run("compile", "-f", str(tmp_path), "--node", "node-1", "--mode", "iptables")
    assert code == 0
    assert out.startswith("*mangle\n")


def test_get_json_is_a_kubernetes_list() -> None:
    code, out, _ = run("get", "pods", "-f", DEFAULT, "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["apiVersion"] == "v1" and data["kind"] == "List"
    assert len(data["items"]) == 3
    for pod in data["items"]:
        assert pod["kind"] == "Pod"
        assert pod["spec"]["nodeName"] in ("node-1", "node-2")
        assert pod["status"]["podIP"].startswith("10.244.")


def test_get_yaml_services_and_nodes() -> None:
    code, out, _ = run("get", "services", "-f", DEFAULT, "-o", "yaml")
    assert code == 0
    services = {s["metadata"]["name"]: s for s in yaml.safe_load(out)["items"]}
    assert services["web-nodeport"]["spec"]["ports"][0]["nodePort"] == 30080
    assert services["web"]["spec"]["clusterIP"].startswith("10.")
    code, out, _ = run("get", "nodes", "-f", DEFAULT, "-o", "json")
    nodes = json.loads(out)["items"]
    assert nodes[0]["status"]["addresses"][0] == {"type": "InternalIP", "address": "192.168.56.11"}
    assert nodes[0]["spec"]["podCIDR"] == "10.244.0.0/24"


def test_get_table_has_kubectl_columns() -> None:
    code, out, _ = run("get", "services", "-f", DEFAULT)
    assert code == 0
    assert out.split()[:6] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    assert "80:30081/TCP" in out


def test_trace_offline_json_contract() -> None:
    code, out, _ = run(
        "trace",
        "--offline",
        "-f",
        DEFAULT,
        "--node",
        "node-1",
        "--src",
        "192.168.56.20",
        "--dst",
        "192.168.56.11",
        "--dport",
        "30080",
        "-o",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["verdict"] == "DNAT"
    assert len(data["endpoints"]) == 3
    assert data["masquerade"] is True
    assert {"table", "chain", "rule"} <= set(data["rules"][0])
    assert any(r["chain"] == "KUBE-NODEPORTS" for r in data["rules"])
    assert data["assumptions"]


def test_trace_offline_local_policy_on_a_node_without_endpoints() -> None:
    # In the loadbalancer lab every shop pod runs on node-1.
    lab = str(ROOT / "controlplane" / "loadbalancer")
    verdicts = {}
    for node, ip in (("node-1", "192.168.56.11"), ("node-2", "192.168.56.12")):
        code, out, _ = run(
            "trace",
            "--offline",
            "-f",
            lab,
            "--node",
            node,
            "--src",
            "192.168.56.20",
            "--dst",
            ip,
            "--dport",
            "31082",
            "-o",
            "json",
        )
        assert code == 0
        data = json.loads(out)
        verdicts[node] = (data["verdict"], data["masquerade"])
        if node == "node-2":
            assert "default/shop-local:http has no local endpoints" in data["rules"][-1]["rule"]
    assert verdicts == {"node-1": ("DNAT", False), "node-2": ("DROP", False)}


def test_trace_offline_from_a_real_dump() -> None:
    code, out, _ = run(
        "trace",
        "--offline",
        "--rules",
        DUMP,
        "--local-ip",
        "192.168.0.2",
        "--src",
        "10.1.1.1",
        "--dst",
        "172.30.0.42",
        "--dport",
        "80",
        "-o",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["verdict"] == "REJECT"
    assert data["endpoints"] == []
    assert data["rules"][-1]["rule"].endswith("-j REJECT --reject-with icmp-port-unreachable")


def test_trace_text_output() -> None:
    code, out, _ = run(
        "trace",
        "--offline",
        "--rules",
        DUMP,
        "--local-ip",
        "192.168.0.2",
        "--src",
        "10.1.1.1",
        "--dst",
        "172.30.0.41",
        "--dport",
        "80",
    )
    assert code == 0
    assert out.splitlines()[0] == "tcp 10.1.1.1 → 172.30.0.41:80 (from outside the node): DNAT"
    assert "endpoints: 10.180.0.1:80, 10.180.0.2:80, 10.180.0.3:80" in out


def test_trace_bad_input_exits_2() -> None:
    code, _, err = run(
        "trace",
        "--offline",
        "--rules",
        DUMP,
        "--src",
        "10.1.1.1",
        "--dst",
        "172.30.0.41",
        "--dport",
        "80",
    )
    assert code == 2 and "--local-ip" in err
    code, _, err = run(
        "trace",
        "--offline",
        "-f",
        DEFAULT,
        "--node",
        "node-1",
        "--src",
        "nope",
        "--dst",
        "172.30.0.41",
        "--dport",
        "80",
    )
    assert code == 2 and "'nope' is not an IPv4 or IPv6 address" in err
    code, _, err = run(
        "trace", "-f", DEFAULT, "--src", "10.1.1.1", "--dst", "172.30.0.41", "--dport", "80"
    )
    assert code == 2 and "add --offline" in err


def test_get_namespace_filters_and_all_namespaces_is_the_default() -> None:
    lab = str(Path(__file__).parents[2] / "controlplane" / "no-selector")
    code, out, _ = run("get", "services", "-f", lab, "-n", "monitoring")
    assert code == 0
    # One namespace: no NAMESPACE column, as kubectl -n.
    assert out.split()[0] == "NAME"
    code, everything, _ = run("get", "services", "-f", lab)
    rows = [line.split() for line in everything.splitlines()[1:]]
    names = {row[1] for row in rows if row[0] == "monitoring"}
    assert names and names == {line.split()[0] for line in out.splitlines()[1:]}
    code, everything, _ = run("get", "services", "-f", lab)
    code_a, with_a, _ = run("get", "services", "-f", lab, "-A")

    def without_age(text: str) -> list[list[str]]:  # AGE (last) may tick between runs
        return [line.split()[:-1] for line in text.splitlines()]

    assert code == code_a == 0 and without_age(everything) == without_age(with_a)
    code, other, _ = run("get", "services", "-f", lab, "-n", "default")
    assert code == 0 and other.strip() == "No resources found."
    code, _, err = run("get", "services", "-f", lab, "-n", "monitoring", "-A")
    assert code == 2 and "-n and -A cannot be used together" in err


def nftables_lab(tmp_path: Path) -> str:
    """The default lab with proxyMode nftables."""
    lab = tmp_path / "lab"
    lab.mkdir()
    for name in ("lab.yaml", "web.yaml"):
        text = (Path(DEFAULT) / name).read_text()
        (lab / name).write_text(text.replace("proxyMode: iptables", "proxyMode: nftables"))
    return str(lab)


def test_trace_offline_walks_the_nftables_rules_of_a_lab_in_nftables_mode(tmp_path: Path) -> None:
    code, out, _ = run(
        "trace",
        "--offline",
        "-f",
        nftables_lab(tmp_path),
        "--node",
        "node-1",
        "--src",
        "192.168.56.20",
        "--dst",
        "192.168.56.11",
        "--dport",
        "30080",
        "-o",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["verdict"] == "DNAT"
    assert len(data["endpoints"]) == 3
    assert data["masquerade"] is True
    chains = [(r["table"], r["chain"]) for r in data["rules"]]
    assert ("ip kube-proxy", "services") in chains
    assert ("ip kube-proxy", "masquerading") in chains
    # flanneld's iptables chains are walked too, in their place.
    assert ("nat", "FLANNEL-POSTRTG") in chains
    assert not any(chain.startswith("KUBE-") for _, chain in chains)


def test_trace_offline_reads_nft_list_ruleset_output() -> None:
    listed = str(ROOT / "tests" / "unit" / "data" / "nftables" / "kube-proxy-overall.listed")
    code, out, _ = run(
        "trace", "--offline", "--rules", listed, "--local-ip", "192.168.0.2",
        "--src", "203.0.113.130", "--dst", "5.6.7.8", "--dport", "80", "-o", "json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["verdict"] == "DROP"
    assert data["rules"][-1] == {
        "table": "ip kube-proxy",
        "chain": "firewall-HVFWP5L3-ns5/svc5/tcp/p80",
        "rule": "ip saddr != 203.0.113.0/25 drop",
    }


def test_trace_offline_names_the_nft_file_and_line_it_cannot_walk(tmp_path: Path) -> None:
    rules = tmp_path / "node.nft"
    rules.write_text("add table ip t\nadd chain ip t c\nadd rule ip t c jump nowhere\n")
    code, _, err = run(
        "trace", "--offline", "--rules", str(rules), "--local-ip", "192.168.0.2",
        "--src", "10.0.0.1", "--dst", "10.0.0.2", "--dport", "80",
    )  # fmt: skip
    assert code == 2
    assert f"{rules}:3: " in err and "no chain 'nowhere'" in err


def test_trace_offline_in_nftables_mode_takes_the_nftables_section(tmp_path: Path) -> None:
    """kube-proxy reads masqueradeAll from the section of its mode: in
    nftables mode `nftables.masqueradeAll` masquerades a pod's ClusterIP
    connection, and `iptables.masqueradeAll` does not."""
    lab = Path(nftables_lab(tmp_path))
    masquerade = {}
    for section in ("iptables", "nftables"):
        (lab / "proxy.yaml").write_text(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
            f"{section}:\n  masqueradeAll: true\n"
        )
        code, out, _ = run(
            "trace", "--offline", "-f", str(lab), "--node", "node-1",
            "--src", "10.244.0.9", "--dst", "10.96.149.150", "--dport", "80", "-o", "json",
        )  # fmt: skip
        assert code == 0, out
        data = json.loads(out)
        assert data["verdict"] == "DNAT"
        masquerade[section] = data["masquerade"]
    assert masquerade == {"iptables": False, "nftables": True}


def test_trace_offline_from_to_in_nftables_mode(tmp_path: Path) -> None:
    code, out, _ = run(
        "trace", "--offline", "-f", nftables_lab(tmp_path), "client", "node-1:30080", "-o", "json"
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["node"] == "node-1"
    assert (data["verdict"], len(data["endpoints"]), data["masquerade"]) == ("DNAT", 3, True)
    assert any(r["rule"].startswith("meta l4proto tcp dnat to ") for r in data["rules"])


def test_a_command_runs_without_the_cyclic_collector_and_restores_it() -> None:
    """cli.run keeps the collector off while a command's body runs (see its
    docstring) and turns it back on after, also when the body fails."""
    seen: list[bool] = []

    def body() -> None:
        seen.append(gc.isenabled())

    def failing() -> None:
        seen.append(gc.isenabled())
        raise UsageError("bad")

    assert gc.isenabled()
    cli.run(body)
    assert gc.isenabled()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(failing)
    assert exit_info.value.code == 2
    assert gc.isenabled()
    assert seen == [False, False]
