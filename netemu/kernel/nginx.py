"""An nginx (Debian's `nginx-light`) running in one network namespace with
its own prefix directory: the ingress controller's proxy.

nginx runs in the foreground (`daemon off`), a child of the caller, with
`-p <prefix>` so its pid file, logs, temporary files and certificates stay
under that directory; nothing is written elsewhere on the host. The master
runs as root so that it may bind ports 80 and 443 in the namespace; its
workers, which serve the requests, drop to nginx's default unprivileged user
(`nobody`).

A configuration is applied in two steps: it is written beside the live one
and checked with `nginx -t`; only if that passes does it replace the live
one, and the master gets SIGHUP. A reload is graceful: new workers take new
connections while the old ones finish the requests they have, then exit.
A configuration nginx refuses raises NginxConfigError and changes nothing.

Owns: the prefix directory and the nginx process it starts. Must not touch:
anything outside them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CONF = "nginx.conf"
STAGED = "nginx.conf.new"
_DIRS = ("logs", "tmp", "certs")
# What a worker logs (at notice level) when it stops accepting for a reload.
SHUTTING_DOWN = "gracefully shutting down"


class NginxConfigError(ValueError):
    """nginx -t refused a configuration; the message is nginx's."""


class Nginx:
    def __init__(self, prefix: Path, netns: str, binary: str = "nginx") -> None:
        self.prefix = prefix
        self.netns = netns
        self.binary = shutil.which(binary) or binary
        self.process: subprocess.Popen[bytes] | None = None
        self.reloads = 0

    def _args(self, conf: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", conf, "-e", "logs/error.log"]

    def apply(self, conf: str, files: dict[str, bytes]) -> None:
        """Check `conf` (with `files`, paths under the prefix) and make it live:
        start nginx if it is not running, else reload it."""
        for name in _DIRS:
            (self.prefix / name).mkdir(parents=True, exist_ok=True)
        # The workers (nobody) must reach their temporary directories.
        self.prefix.chmod(0o755)
        (self.prefix / "tmp").chmod(0o755)
        for rel, content in files.items():
            target = self.prefix / rel
            if not target.resolve().is_relative_to(self.prefix.resolve()):
                raise NginxConfigError(f"{rel}: outside nginx's prefix")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
        (self.prefix / STAGED).write_text(conf)
        checked = subprocess.run(
            [*self._args(STAGED), "-t", "-q"], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise NginxConfigError(checked.stderr.strip() or "nginx -t failed")
        os.replace(self.prefix / STAGED, self.prefix / CONF)
        if self.running():
            assert self.process is not None
            before = self._shutdowns()
            self.process.send_signal(signal.SIGHUP)
            self.reloads += 1
            self._wait_reloaded(before)
            return
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *self._args(CONF), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_started()

    def _wait_started(self, timeout: float = 5.0) -> None:
        """Until the master wrote its pid file (it has bound its ports by then)."""
        deadline = time.monotonic() + timeout
        pid_file = self.prefix / "nginx.pid"
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise NginxConfigError(f"nginx exited at start: {err.strip()}")
            if pid_file.exists() and pid_file.read_text().strip():
                return
            time.sleep(0.02)
        raise NginxConfigError("nginx did not start within 5 s")

    def _shutdowns(self) -> int:
        """How many times a worker began its graceful shutdown (error log, notice)."""
        log = self.prefix / "logs" / "error.log"
        return log.read_text(errors="replace").count(SHUTTING_DOWN) if log.exists() else 0

    def _wait_reloaded(self, before: int, timeout: float = 5.0) -> None:
        """Until the old worker stopped accepting (its graceful shutdown began,
        after the master started the new one): from then on, only workers with
        the new configuration take connections. A reload is asynchronous to
        SIGHUP; waiting makes `apply` mean "in effect"."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._shutdowns() <= before:
            time.sleep(0.01)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), as `nginx -s stop`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
