"""One HTTP(S) request with curl from inside a lab namespace, with what curl
saw of the TLS handshake: the side effect of an ingress trace's client.

curl runs as `ip netns exec <ns> curl -v` with `--resolve host:port:address`,
so the name needs no DNS and the request goes to `address` with the URL's
host as SNI and Host header. Owns: that one process. Must not touch:
anything else.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class CurlResult:
    status: int | None  # None: no HTTP answer
    body: str
    request_line: str
    tls_protocol: str | None
    alpn: str | None
    subject: str | None
    issuer: str | None
    verified: bool | None  # None: not checked (no CA given)
    error: str


def request(
    netns: str,
    url: str,
    host: str,
    port: int,
    address: str,
    headers: dict[str, str],
    cacert: str | None,
    timeout: float,
) -> CurlResult:
    argv = ["ip", "netns", "exec", netns, "curl", "-v", "-sS", "--http1.1"]
    argv += ["--max-time", str(timeout), "--resolve", f"{host}:{port}:{address}"]
    argv += ["-o", "-", "-w", "\n%{http_code}"]
    argv += ["--cacert", cacert] if cacert else ["-k"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, check=False, timeout=timeout + 5
    )
    return parse_verbose(done.stdout, done.stderr, cacert is not None)


def parse_verbose(stdout: str, stderr: str, checked: bool) -> CurlResult:
    """curl's output: the body then the status code (`-w`), and what `-v`
    says on stderr (request line, TLS protocol, ALPN, certificate subject and
    issuer, the verification; curl 7.88's wording)."""
    body, _, code = stdout.rpartition("\n")
    status = int(code) if code.isdigit() and code != "000" else None
    found: dict[str, str] = {}
    request_line = ""
    verified: bool | None = None
    errors = []
    for line in stderr.splitlines():
        text = line[2:].strip() if line[:2] in ("* ", "> ") else line.strip()
        if line.startswith("> ") and not request_line:
            request_line = text
        elif text.startswith("SSL connection using "):
            found["protocol"] = text.removeprefix("SSL connection using ").split(" / ")[0]
        elif text.startswith("ALPN: server accepted "):
            found["alpn"] = text.removeprefix("ALPN: server accepted ")
        elif text.startswith("subject: ") and "subject" not in found:
            found["subject"] = text.removeprefix("subject: ")
        elif text.startswith("issuer: ") and "issuer" not in found:
            found["issuer"] = text.removeprefix("issuer: ")
        elif text.startswith("SSL certificate verify ok"):
            verified = True if checked else None
        elif line.startswith("curl: "):
            errors.append(line)
    if checked and verified is None and "subject" in found:
        verified = False
    return CurlResult(
        status=status,
        body=body,
        request_line=request_line,
        tls_protocol=found.get("protocol"),
        alpn=found.get("alpn"),
        subject=found.get("subject"),
        issuer=found.get("issuer"),
        verified=verified,
        error="; ".join(errors),
    )
