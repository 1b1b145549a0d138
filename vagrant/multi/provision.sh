#!/usr/bin/env bash
# Provision one VM of the multi-VM lab (vagrant/multi/Vagrantfile, with
# NETEMU_MULTI_PREVIEW=1): what can be done today, which is a bench for the
# missing parts, not a lab (see vagrant/README.md, "The multi-VM design").
#
#   provision.sh NAME ROLE UNDERLAY_IP CONTROL_IP     as root; NETEMU_SRC (default /vagrant)
#
# 1. Checks the VM has its two designed addresses (a Vagrant or provider
#    mix-up shows here, not later as a silent overlay failure).
# 2. Installs netemu with the README's set-up: vagrant/provision.sh, which
#    also proves this VM's kernel runs a whole lab (namespaces, VXLAN,
#    iptables), then takes that single-machine lab down again: in the design
#    the lab spans the VMs, and the API server and per-VM agents it needs do
#    not exist yet.
# 3. Says so on login (/etc/motd).
# Idempotent, like vagrant/provision.sh.
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 NAME ROLE UNDERLAY_IP CONTROL_IP" >&2; exit 2; }
name=$1 role=$2 underlay_ip=$3 control_ip=$4
src="${NETEMU_SRC:-/vagrant}"

say() { printf '==> netemu multi %s: %s\n' "$name" "$*"; }

for ip in "$underlay_ip" "$control_ip"; do
  if ! ip -4 -o addr show | awk '{ print $4 }' | grep -qx "$ip/24"; then
    echo "==> netemu multi $name: no NIC has $ip/24 (check the Vagrantfile's private networks)" >&2
    exit 1
  fi
done
say "$role; underlay NIC $underlay_ip, control NIC $control_ip"

NETEMU_SRC="$src" "$src/vagrant/provision.sh" >/var/log/netemu-provision.log 2>&1 || {
  echo "==> netemu multi $name: installing netemu failed; the end of /var/log/netemu-provision.log:" >&2
  tail -n 30 /var/log/netemu-provision.log >&2
  exit 1
}
"$src/.venv/bin/netemu" down default >/dev/null
say "netemu installed in $src/.venv; this VM ran the default lab by itself and took it down again"

cat >/etc/motd <<EOF

netemu multi-VM lab, machine $name ($role): underlay $underlay_ip, control $control_ip.
The multi-VM lab is a design, not runnable yet (vagrant/README.md, "The
multi-VM design"). netemu is installed: sudo -i; cd $src; .venv/bin/netemu ...
runs a whole single-machine lab here too (.venv/bin/netemu up -f controlplane/default).

EOF
say "done; see /etc/motd"
