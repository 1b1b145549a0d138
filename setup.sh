#!/usr/bin/env bash
# netemu's one entry point on a fresh Debian/Ubuntu machine, as root:
#   ./setup.sh demo   install everything, then run the default lab's walkthrough
#   ./setup.sh test   install everything, then run lint, type checks and every test
set -euo pipefail
cd "$(dirname "$0")"

job="${1:-}"
case "$job" in
  demo|test) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "netemu's set-up installs system packages and builds network namespaces: run it as root" >&2
  exit 2
fi

# System packages: the kernel-facing tools netemu drives, and Python;
# containernetworking-plugins (bridge, host-local, portmap in /usr/lib/cni)
# for the differential tests that compare netemu's pod plumbing with them;
# openssl for test certificates; bubblewrap (bwrap) sandboxes container
# commands, exec probes and `netemu exec`.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python3-pip \
  iproute2 iptables nftables conntrack nfacct tcpdump kmod ca-certificates \
  util-linux procps iputils-ping curl tshark graphviz vagrant vagrant-libvirt \
  containernetworking-plugins openssl bubblewrap >/dev/null

# nginx for the ingress controller, which runs it only inside lab namespaces.
# Debian starts a newly installed nginx on the host's port 80: when it is not
# installed yet, it is installed with service starts forbidden (policy-rc.d
# exit 101), so the host gains no listening daemon. nginx-light where the
# release still has it, else nginx.
if ! command -v nginx >/dev/null 2>&1; then
  nginx_pkg=nginx
  if apt-cache show nginx-light >/dev/null 2>&1; then nginx_pkg=nginx-light; fi
  placed_policy=no
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    placed_policy=yes
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "$nginx_pkg" >/dev/null
  if [ "$placed_policy" = yes ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi

# The Python environment, with the project installed in it.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'

case "$job" in
  demo)
    exec .venv/bin/python -m netemu.demo
    ;;
  test)
    .venv/bin/ruff check netemu tests benchmarks examples
    .venv/bin/ruff format --check netemu tests benchmarks examples
    .venv/bin/mypy
    # examples/ is a suite users copy, with its own conftest.py: checked on its own.
    .venv/bin/mypy examples
    exec .venv/bin/pytest
    ;;
esac
