"""A live trace of one HTTP(S) request through the ingress controller:
`netemu trace CLIENT https://HOST/PATH`.

Two legs, joined by the request id (the trace id, sent as X-Request-ID):

1. the client → the controller's address (the Ingress's status address,
   the ingress-nginx Service's load balancer): for https the TLS
   termination as the client saw it (protocol, SNI, the certificate's
   subject and issuer, verified with --cacert when given) and the request
   line;
2. the controller pod → the backend: the request nginx sends carries the
   same X-Request-ID in clear, captured in the controller pod's namespace;
   its destination is a pod IP (the upstream from the EndpointSlices), not
   a ClusterIP, so no kube-proxy DNAT is involved on that leg. nginx's
   access log line with the id names the upstream and its status.

Each leg's frames go to a pcap (client side, controller pod side), with
trace.json (docs/trace-json.md, "Ingress traces").
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netemu.kernel import httpclient
from netemu.kernel.capture import Capture, Frame, write_pcap
from netemu.kernel.journal import run_dir
from netemu.lab import LabError, LabUsageError, LiveLab
from netemu.node.ingress import INGRESS_DIR
from netemu.trace.live import open_captures

CONTROLLER_NAMESPACE = "ingress-nginx"
LEG1_PCAP = "leg1-client.pcap"
LEG2_PCAP = "leg2-controller.pcap"
REPORT = "trace.json"


@dataclass(frozen=True)
class IngressTraceOptions:
    cacert: str | None = None
    pcap: bool = True
    captures: Path = Path("captures")
    timeout: float = 5.0


def _hosts_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def trace_url(lab: LiveLab, client: str, url: str, options: IngressTraceOptions) -> dict[str, Any]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise LabUsageError(f"{url}: no host in the URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    info = lab.info()
    if client not in info["clients"]:
        known = ", ".join(sorted(info["clients"])) or "none"
        raise LabUsageError(
            f"{client}: an HTTP(S) trace starts at an external client of the lab ({known})"
        )
    source = info["clients"][client]
    state = lab.state()
    ingresses = lab.table("ingresses", None, "json")["list"]["items"]
    ingress = next(
        (
            i
            for i in ingresses
            if any(_hosts_match(r.get("host", ""), host) for r in i["spec"].get("rules", []))
        ),
        None,
    )
    controllers = [
        p
        for p in state["pods"]
        if p["metadata"].get("namespace") == CONTROLLER_NAMESPACE
        and not p["metadata"].get("deletionTimestamp")
        and p["status"].get("podIP")
    ]
    if not controllers:
        raise LabError("no ingress controller pod runs in this lab (it has no Ingress)")
    # The matching Ingress's address; for an unknown host (the default
    # server's), the controller's, which every Ingress of the class shows.
    addresses = [
        a["ip"]
        for i in ([ingress] if ingress else ingresses)
        for a in i.get("status", {}).get("loadBalancer", {}).get("ingress", [])
        if a.get("ip")
    ]
    if not addresses:
        raise LabError(f"{host}: no Ingress of the lab has an address yet")
    address = addresses[0]
    pod_netns = {
        key: pod["netns"]
        for key, pod in info["pods"].items()
        if key.startswith(CONTROLLER_NAMESPACE + "/")
    }
    pod_ips = {
        p["status"]["podIP"]: f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in state["pods"]
        if p["status"].get("podIP")
    }
    cluster_ips = {
        ip
        for s in state["services"]
        for ip in [s["spec"].get("clusterIP"), *s["spec"].get("clusterIPs", [])]
        if ip and ip != "None"
    }
    request_id = secrets.token_hex(16)
    trace_id = f"ingress-{time.strftime('%Y%m%dT%H%M%S')}-{request_id[:6]}"
    directory = open_captures(options.captures, lab.name, trace_id) if options.pcap else None
    leg1_capture = Capture([source["netns"]])
    leg2_capture = Capture(sorted(pod_netns.values()))
    with leg1_capture, leg2_capture:
        leg1_capture.start()
        leg2_capture.start()
        answer = httpclient.request(
            source["netns"],
            url,
            host,
            port,
            address,
            {"X-Request-ID": request_id},
            options.cacert,
            options.timeout,
        )
        time.sleep(0.2)  # the last frames (the close) reach the sockets
        leg1 = leg1_capture.drain()
        leg2 = leg2_capture.drain()
    upstream, log_line = _logged(lab, request_id)
    leg2_request = _request_frame(leg2, request_id)
    report: dict[str, Any] = {
        "kind": "IngressTrace",
        "traceId": trace_id,
        "lab": lab.name,
        "url": url,
        "requestId": request_id,
        "ingress": (
            f"{ingress['metadata'].get('namespace', 'default')}/{ingress['metadata']['name']}"
            if ingress
            else None
        ),
        "legs": [
            {
                "leg": 1,
                "from": {"name": client, "ip": source.get("ip")},
                "to": {"address": address, "port": port},
                "tls": (
                    {
                        "sni": host,
                        "protocol": answer.tls_protocol,
                        "alpn": answer.alpn,
                        "subject": answer.subject,
                        "issuer": answer.issuer,
                        "verified": answer.verified,
                    }
                    if parts.scheme == "https"
                    else None
                ),
                "request": answer.request_line,
                "status": answer.status,
                "error": answer.error or None,
                "frames": len(leg1),
                "pcap": LEG1_PCAP if directory else None,
            },
            _leg2(
                leg2_request, upstream, log_line, pod_ips, cluster_ips, len(leg2), bool(directory)
            ),
        ],
    }
    if directory is not None:
        write_pcap(directory.create(LEG1_PCAP), sorted(leg1, key=lambda f: f.nanoseconds))
        write_pcap(directory.create(LEG2_PCAP), sorted(leg2, key=lambda f: f.nanoseconds))
        directory.write(REPORT, (json.dumps(report, indent=2) + "\n").encode())
        report["captures"] = str(directory.path)
    return report


def _logged(lab: LiveLab, request_id: str) -> tuple[str | None, dict[str, str] | None]:
    """nginx's access-log line for the request: upstream address and statuses."""
    for log in sorted(
        (run_dir(lab.name) / INGRESS_DIR).glob(f"{CONTROLLER_NAMESPACE}/*/logs/access.log")
    ):
        for line in reversed(log.read_text().splitlines()):
            if not line.endswith(" " + request_id):
                continue
            request = line.split('"')[1]
            status, upstream, upstream_status, _ = line.split('" ', 1)[1].split()
            return (
                None if upstream == "-" else upstream,
                {"request": request, "status": status, "upstreamStatus": upstream_status},
            )
    return None, None


def _request_frame(frames: list[Frame], request_id: str) -> dict[str, Any] | None:
    """The frame nginx sent upstream with the request id: where it went."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    marker = f"X-Request-ID: {request_id}".encode()
    for frame in sorted(frames, key=lambda f: f.nanoseconds):
        if frame.direction != "out" or marker not in frame.data:
            continue
        packet = Ether(frame.data)
        if IP in packet and TCP in packet:
            payload = bytes(packet[TCP].payload)
            return {
                "src": packet[IP].src,
                "dst": packet[IP].dst,
                "dport": int(packet[TCP].dport),
                "interface": frame.interface,
                "requestLine": payload.split(b"\r\n", 1)[0].decode(errors="replace"),
            }
    return None


def _leg2(
    frame: dict[str, Any] | None,
    upstream: str | None,
    log_line: dict[str, str] | None,
    pod_ips: dict[str, str],
    cluster_ips: set[str],
    count: int,
    pcap: bool,
) -> dict[str, Any]:
    dst = frame["dst"] if frame else None
    return {
        "leg": 2,
        "from": {
            "name": pod_ips.get(frame["src"]) if frame else None,
            "ip": frame["src"] if frame else None,
        },
        "to": {
            "name": pod_ips.get(dst) if dst else None,
            "ip": dst,
            "port": frame["dport"] if frame else None,
        },
        "upstream": upstream,
        "destinationIsPodIP": dst in pod_ips if dst else None,
        "clusterIPUsed": dst in cluster_ips if dst else None,
        "request": frame["requestLine"] if frame else None,
        "log": log_line,
        "frames": count,
        "pcap": LEG2_PCAP if pcap else None,
    }


def render_text(report: dict[str, Any]) -> str:
    one, two = report["legs"]
    lines = [f"trace {report['traceId']}: {report['url']} (X-Request-ID {report['requestId']})"]
    if report.get("ingress"):
        lines.append(f"  Ingress {report['ingress']}")
    lines.append(
        f"  leg 1  {one['from']['name']} ({one['from']['ip']}) -> {one['to']['address']}:"
        f"{one['to']['port']}  {one['request']}  -> {one['status'] or one['error']}"
    )
    tls = one.get("tls")
    if tls:
        verified = {True: "verified", False: "NOT verified", None: "not checked (no --cacert)"}
        lines.append(
            f"         TLS terminated by the controller: {tls['protocol']}, SNI {tls['sni']}, "
            f"subject {tls['subject']}, issuer {tls['issuer']}, {verified[tls['verified']]}"
        )
    if two["to"]["ip"]:
        lines.append(
            f"  leg 2  {two['from']['name']} ({two['from']['ip']}) -> {two['to']['name']} "
            f"({two['to']['ip']}:{two['to']['port']})  {two['request']}"
        )
        cluster = "a ClusterIP" if two["clusterIPUsed"] else "not a ClusterIP: no kube-proxy DNAT"
        kind = "a pod IP" if two["destinationIsPodIP"] else "not a pod IP"
        lines.append(f"         destination is {kind}, {cluster}; same X-Request-ID")
    else:
        lines.append("  leg 2  no request reached a backend (answered by nginx itself)")
    if two.get("log"):
        log = two["log"]
        lines.append(
            f"         nginx log: upstream {two['upstream'] or '-'} status {log['status']}"
        )
    if report.get("captures"):
        lines.append(f"  pcaps: {report['captures']}/{LEG1_PCAP}, {LEG2_PCAP}")
    return "\n".join(lines) + "\n"
