"""netemu's pod plumbing against the real CNI plugins (Debian's
containernetworking-plugins: bridge, host-local, portmap).

A one-node lab runs a pod with hostPorts the netemu way. Next to it, in two
namespaces of its own named under the lab's prefix (never the host's), the
test runs the real plugins' ADD for a pod with the same address, container
ID and port mappings, configured as flannel's CNI plugin configures its
delegate (kube-flannel.yml: bridge with isDefaultGateway and hairpinMode,
host-local over the node's pod CIDR with the cluster CIDR as a route; then
portmap). Both must agree on every attribute the bridge and portmap
plugins set: links, flags, MTUs, hairpin, sysctls, routes, the bridge's own
MAC, and portmap's chains rule for rule. Then both DELs, and the leftovers
must agree too. The hostPort also answers real packets from the external
client, from the node's localhost and from the pod itself (hairpin).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_helpers import lab_name, lab_prefix, running_lab

from netemu.api.load import load_text
from netemu.kernel import netns
from netemu.kernel.probe import http_get
from netemu.lab import LiveLab
from netemu.net.plan import CNI_NETWORK, host_veth, sandbox_id
from netemu.pipeline import compile_rules, load_cluster, local_ips
from netemu.rules.model import parse_restore
from netemu.rules.simulate import Packet, simulate

CNI_BIN = Path("/usr/lib/cni")
HOST_PORT = 18080
HOST_PORT_UDP = 15353
CONTAINER_PORT = 8080
POD = "hp"
POD_CIDR = "10.244.0.0/16"

LAB_YAML = f"""\
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {{name: cni}}
spec:
  podCIDR: {POD_CIDR}
  overlay: vxlan
  dns: {{enabled: false}}
  nodes:
    - {{name: node-1, underlayIP: 192.168.56.11}}
  externalClients:
    - {{name: client, ip: 192.168.56.20}}
"""
POD_YAML = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {POD}, namespace: default, labels: {{app: {POD}}}}}
spec:
  containers:
    - name: web
      image: registry.k8s.io/e2e-test-images/agnhost:2.47
      ports:
        - {{containerPort: {CONTAINER_PORT}, hostPort: {HOST_PORT}}}
        - {{containerPort: 53, hostPort: {HOST_PORT_UDP}, protocol: UDP, hostIP: 192.168.56.11}}
"""

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(
        not all((CNI_BIN / p).is_file() for p in ("bridge", "host-local", "portmap")),
        reason="the real CNI plugins are not installed (Debian package "
        "containernetworking-plugins, installed by setup.sh)",
    ),
]


@dataclass(frozen=True)
class Side:
    """One plumbed pod: its node's and its own namespace, the host veth."""

    node_ns: str
    pod_ns: str
    veth: str


@dataclass
class Both:
    lab: LiveLab
    plane: Path
    ours: Side
    real: Side
    real_conf: dict[str, Any]
    portmap_conf: dict[str, Any]
    env: dict[str, str]
    node_ip: str
    client_ns: str
    pod_ip: str


def _run(netns_name: str, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns_name, *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} in {netns_name}: {done.stderr.strip()}"
    return done.stdout


def _plugin(
    side: Side, plugin: str, command: str, conf: dict[str, Any], env: dict[str, str]
) -> str:
    """Run a CNI plugin binary as a runtime does, inside the test's own node
    namespace: the command in CNI_* variables, the netconf on stdin."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_NETNS": str(netns.path(side.pod_ns)),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(CNI_BIN),
        **env,
    }
    done = subprocess.run(
        ["ip", "netns", "exec", side.node_ns, str(CNI_BIN / plugin)],
        input=json.dumps(conf),
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{plugin} {command}: {done.stdout} {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    base = tmp_path_factory.mktemp("cni")
    plane = base / "controlplane"
    plane.mkdir()
    (plane / "lab.yaml").write_text(LAB_YAML)
    (plane / "pod.yaml").write_text(POD_YAML)
    name = lab_name("cni")
    real = Side(f"{lab_prefix(name)}node_cnireal", f"{lab_prefix(name)}pod_cnireal", "")
    with running_lab([plane], name) as lab:
        info = lab.info()
        pod = info["pods"][f"default/{POD}"]
        node = info["nodes"]["node-1"]
        ours = Side(node["netns"], pod["netns"], host_veth("default", POD))
        subnet = _node_subnet(ours.node_ns)
        cid = sandbox_id("default", POD)
        conf: dict[str, Any] = {
            "cniVersion": "0.3.1",
            "name": CNI_NETWORK,
            "type": "bridge",
            "isGateway": True,
            "isDefaultGateway": True,
            "hairpinMode": True,
            "ipMasq": False,
            "mtu": int(_link(ours.node_ns, "cni0")["mtu"]),
            "ipam": {
                "type": "host-local",
                "dataDir": str(base / "ipam"),
                "ranges": [[{"subnet": subnet, "rangeStart": pod["ip"], "rangeEnd": pod["ip"]}]],
                "routes": [{"dst": POD_CIDR}],
            },
        }
        mappings = [
            {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"},
            {
                "hostPort": HOST_PORT_UDP,
                "containerPort": 53,
                "protocol": "udp",
                "hostIP": "192.168.56.11",
            },
        ]
        netns.create(real.node_ns)
        try:
            netns.create(real.pod_ns)
            env = {"CNI_CONTAINERID": cid}
            _run(real.node_ns, "ip", "link", "set", "lo", "up")
            result = json.loads(_plugin(real, "bridge", "ADD", conf, env))
            veth = next(i["name"] for i in result["interfaces"] if i["name"].startswith("veth"))
            real = Side(real.node_ns, real.pod_ns, veth)
            portmap_conf = {
                "cniVersion": "0.3.1",
                "name": CNI_NETWORK,
                "type": "portmap",
                "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": mappings},
                "prevResult": result,
            }
            _plugin(real, "portmap", "ADD", portmap_conf, env)
            yield Both(
                lab,
                plane,
                ours,
                real,
                conf,
                portmap_conf,
                env,
                node["ip"],
                info["clients"]["client"]["netns"],
                pod["ip"],
            )
        finally:
            netns.remove(real.pod_ns)
            netns.remove(real.node_ns)
            shutil.rmtree(base / "ipam", ignore_errors=True)


# -- reading one side --------------------------------------------------------------


def _node_subnet(node_ns: str) -> str:
    (link,) = json.loads(_run(node_ns, "ip", "-j", "-4", "addr", "show", "dev", "cni0"))
    info = link["addr_info"][0]
    return str(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network)


def _link(netns_name: str, dev: str) -> dict[str, Any]:
    (link,) = json.loads(_run(netns_name, "ip", "-j", "-d", "link", "show", "dev", dev))
    return dict(link)


def _sysfs(netns_name: str, dev: str, attr: str) -> str:
    # `ip netns exec` mounts a sysfs of the namespace, so /sys/class/net is its own.
    return _run(netns_name, "cat", f"/sys/class/net/{dev}/{attr}").strip()


def _sysctls(netns_name: str, keys: list[str]) -> dict[str, str]:
    return netns.read_sysctls(netns_name, keys)


def _link_facts(link: dict[str, Any]) -> dict[str, Any]:
    """What the plugins decide about a link (not its index, name or MAC)."""
    info = link.get("linkinfo", {})
    slave = info.get("info_slave_data", {})
    data = info.get("info_data", {})
    return {
        "kind": info.get("info_kind"),
        "mtu": link["mtu"],
        "flags": sorted(link["flags"]),
        "operstate": link["operstate"],
        "promiscuity": link.get("promiscuity"),
        "allmulti": link.get("allmulti"),
        # Not txqlen: the packaged plugin (v1.1.1) makes veths with
        # txqueuelen 0 (its netlink library sent a zero IFLA_TXQLEN), later
        # releases leave the kernel's 1000, as netemu does; with the noqueue
        # qdisc of both no packet can tell.
        "qdisc": link.get("qdisc"),
        "num_tx_queues": link.get("num_tx_queues"),
        "hairpin": slave.get("hairpin"),
        "learning": slave.get("learning"),
        "flood": slave.get("flood"),
        "vlan_filtering": data.get("vlan_filtering"),
        "stp_state": data.get("stp_state"),
    }


def _routes(netns_name: str) -> list[dict[str, Any]]:
    keep = ("dst", "gateway", "dev", "protocol", "scope", "prefsrc", "flags", "type")
    routes = json.loads(_run(netns_name, "ip", "-j", "-4", "route", "show", "table", "all"))
    return sorted(
        ({k: r.get(k) for k in keep} for r in routes if r.get("table") != "local"),
        key=lambda r: json.dumps(r, sort_keys=True),
    )


def _pod_facts(side: Side) -> dict[str, Any]:
    pod_keys = [
        "net.ipv4.conf.eth0.arp_notify",
        "net.ipv6.conf.eth0.accept_dad",
        "net.ipv6.conf.eth0.accept_ra",
        "net.ipv4.conf.eth0.rp_filter",
    ]
    node_keys = [
        f"net.ipv6.conf.{side.veth}.accept_ra",
        "net.ipv6.conf.cni0.accept_ra",
        "net.ipv4.conf.cni0.route_localnet",
        "net.ipv4.ip_forward",
    ]
    node_sysctls = _sysctls(side.node_ns, node_keys)
    node_sysctls["host veth accept_ra"] = node_sysctls.pop(f"net.ipv6.conf.{side.veth}.accept_ra")
    eth0 = _link(side.pod_ns, "eth0")
    veth = _link(side.node_ns, side.veth)
    return {
        "eth0": _link_facts(eth0),
        "eth0 mac": _sysfs(side.pod_ns, "eth0", "addr_assign_type"),
        "eth0 peer is the host veth": eth0.get("link_index") == veth["ifindex"],
        "host veth": _link_facts(veth),
        "host veth mac": _sysfs(side.node_ns, side.veth, "addr_assign_type"),
        "host veth master": veth.get("master"),
        "host veth name": bool(re.fullmatch(r"veth[0-9a-f]{8}", side.veth)),
        "cni0": _link_facts(_link(side.node_ns, "cni0")),
        # 3 is NET_ADDR_SET: the bridge's MAC was set, so a port leaving never changes it.
        "cni0 mac": _sysfs(side.node_ns, "cni0", "addr_assign_type"),
        "pod sysctls": _sysctls(side.pod_ns, pod_keys),
        "node sysctls": node_sysctls,
        "pod routes": _routes(side.pod_ns),
        "pod addresses": [
            (a["local"], a["prefixlen"])
            for a in json.loads(_run(side.pod_ns, "ip", "-j", "-4", "addr", "show", "dev", "eth0"))[
                0
            ]["addr_info"]
        ],
    }


def _portmap_layout(node_ns: str) -> dict[str, Any]:
    """The node's CNI- chains and their rules, and the jumps into them from
    the built-in chains with their positions, as iptables-save shows them."""
    nat = parse_restore(_run(node_ns, "iptables-save", "-t", "nat")).tables["nat"]
    chains = sorted(c for c in nat.chains if c.startswith("CNI-"))
    jumps = {}
    for builtin in ("PREROUTING", "OUTPUT", "POSTROUTING"):
        rules = nat.chain_rules(builtin)
        jumps[builtin] = [
            (i if builtin == "POSTROUTING" else None, r.args)
            for i, r in enumerate(rules)
            if " -j CNI-" in f" {r.args}"
        ]
    return {
        "chains": chains,
        "rules": {c: [r.args for r in nat.chain_rules(c)] for c in chains},
        "jumps": jumps,
    }


# -- the comparisons ----------------------------------------------------------------


def _differences(ours: dict[str, Any], real: dict[str, Any], where: str = "") -> str:
    """Each differing leaf as `path: netemu ... plugin ...`."""
    lines = []
    for key in sorted(set(ours) | set(real)):
        a, b = ours.get(key), real.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines.append(_differences(a, b, f"{where}{key}."))
        elif a != b:
            lines.append(f"{where}{key}: netemu {a!r}, plugin {b!r}")
    return "\n".join(line for line in lines if line)


def test_real_save_tool_matches_the_labs_backend(both: Both) -> None:
    # go-iptables runs `iptables`; netemu's default backend is nft. The rest of
    # the comparison reads both nodes with the same `iptables-save`.
    version = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    if "nf_tables" not in version:
        pytest.skip(f"`iptables` here is not the nft variant ({version.strip()}); the lab uses nft")


def test_pod_plumbing_agrees_with_the_bridge_plugin(both: Both) -> None:
    ours, real = _pod_facts(both.ours), _pod_facts(both.real)
    assert ours == real, _differences(ours, real)
    # The facts say what the plugin does, not only that both agree.
    assert ours["host veth"]["hairpin"] is True
    assert ours["pod sysctls"]["net.ipv4.conf.eth0.arp_notify"] == "1"
    assert ours["pod sysctls"]["net.ipv6.conf.eth0.accept_dad"] == "0"
    assert ours["node sysctls"]["host veth accept_ra"] == "0"
    assert ours["cni0 mac"] == "3"
    assert {r["dst"] for r in ours["pod routes"]} >= {"default", POD_CIDR}


def test_portmap_chains_agree_with_the_portmap_plugin(both: Both) -> None:
    ours, real = _portmap_layout(both.ours.node_ns), _portmap_layout(both.real.node_ns)
    assert ours == real, _differences(ours, real)
    assert any(c.startswith("CNI-DN-") for c in ours["chains"])
    # The masquerade jump is POSTROUTING's first rule on both nodes.
    assert ours["jumps"]["POSTROUTING"][0][0] == 0


def test_host_port_answers_the_external_client_localhost_and_the_pod_itself(
    both: Both,
) -> None:
    gateway = _node_gateway(both.ours.node_ns)
    cases = [
        # (from namespace, to address, the client address the pod sees)
        (both.client_ns, both.node_ip, "192.168.56.20"),  # DNAT only: the client's IP
        (both.ours.node_ns, "127.0.0.1", gateway),  # localhost: marked and masqueraded
        (both.ours.pod_ns, both.node_ip, gateway),  # hairpin: marked and masqueraded
    ]
    # The offline simulator predicts the same for the external client and the hairpin.
    state = load_cluster([both.plane])
    rules, local = compile_rules(state, "node-1"), local_ips(state, "node-1")
    for src, masquerade in (("192.168.56.20", False), (both.pod_ip, True)):
        sim = simulate(rules, local, Packet(src, both.node_ip, HOST_PORT))
        assert (sim.endpoints, sim.masquerade) == ([f"{both.pod_ip}:{CONTAINER_PORT}"], masquerade)
    for source, address, seen in cases:
        name = http_get(source, address, HOST_PORT, "/hostname", timeout=3.0)
        assert (name.outcome, name.body) == ("answered", POD), (source, address, name)
        client = http_get(source, address, HOST_PORT, "/clientip", timeout=3.0)
        assert client.outcome == "answered", (source, address, client)
        assert client.body.rsplit(":", 1)[0] == seen, (source, address, client.body)


def test_kube_proxy_resync_keeps_the_portmap_chains(both: Both) -> None:
    before = _portmap_layout(both.ours.node_ns)
    # A Service makes kube-proxy sync the node again.
    loaded, _ = load_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: resync, namespace: default}\n"
        f"spec: {{selector: {{app: {POD}}}, "
        f"ports: [{{port: 80, targetPort: {CONTAINER_PORT}}}]}}\n",
        "svc.yaml",
    )
    both.lab.apply([item.obj for item in loaded])
    deadline = time.monotonic() + 20
    while "KUBE-SVC-" not in _run(both.ours.node_ns, "iptables-save", "-t", "nat"):
        assert time.monotonic() < deadline, "kube-proxy never synced the new Service"
        time.sleep(0.2)
    assert _portmap_layout(both.ours.node_ns) == before


def test_del_leaves_what_the_plugins_leave(both: Both) -> None:
    _plugin(both.real, "portmap", "DEL", both.portmap_conf, both.env)
    _plugin(both.real, "bridge", "DEL", both.real_conf, both.env)
    both.lab.delete([("Pod", "default", POD)])
    deadline = time.monotonic() + 60
    while f"default/{POD}" in both.lab.info()["pods"] or netns.exists(both.ours.pod_ns):
        assert time.monotonic() < deadline, "the pod was never removed"
        time.sleep(0.2)
    # The real pod's namespace is the runtime's and outlives DEL, empty but for lo.
    assert [link["ifname"] for link in json.loads(_run(both.real.pod_ns, "ip", "-j", "link"))] == [
        "lo"
    ]
    for side in (both.ours, both.real):
        names = [link["ifname"] for link in json.loads(_run(side.node_ns, "ip", "-j", "link"))]
        assert side.veth not in names
        assert "cni0" in names  # the bridge plugin never deletes its bridge
    ours, real = _portmap_layout(both.ours.node_ns), _portmap_layout(both.real.node_ns)
    assert ours == real
    assert not [c for c in ours["chains"] if c.startswith("CNI-DN-")]
    assert ours["rules"]["CNI-HOSTPORT-DNAT"] == []
    assert _link_facts(_link(both.ours.node_ns, "cni0")) == _link_facts(
        _link(both.real.node_ns, "cni0")
    )
    answer = http_get(both.client_ns, both.node_ip, HOST_PORT, "/hostname", timeout=1.0)
    assert answer.outcome != "answered"


def _node_gateway(node_ns: str) -> str:
    (link,) = json.loads(_run(node_ns, "ip", "-j", "-4", "addr", "show", "dev", "cni0"))
    return str(link["addr_info"][0]["local"])
