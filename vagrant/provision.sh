#!/usr/bin/env bash
# Provision a machine with netemu and leave the default lab up: the VM's
# provisioner (vagrant/Vagrantfile), and equally any Debian/Ubuntu machine.
#
#   provision.sh [SRC]     as root; SRC is the netemu source directory:
#                          the argument, else $NETEMU_SRC, else /vagrant
#
# It runs the README's own set-up, `./setup.sh demo`: system packages, the
# virtualenv SRC/.venv with netemu, then the demo, which brings the default
# lab up (taking it down first if it is up), sends requests through it and
# leaves it up. Then it checks the lab answers a request from its client.
#
# Idempotent: a second run installs nothing new and ends with the same lab,
# brought up afresh (changes made to the running lab are gone). Exit 0 when
# the lab is up and answers; non-zero, with the reason, otherwise.
set -euo pipefail

src="${1:-${NETEMU_SRC:-/vagrant}}"
lab=default
client=client
node="node-1"
nodeport=30080

say() { printf '==> netemu provision: %s\n' "$*"; }
fail() {
  printf '==> netemu provision: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs packages and builds network namespaces)"
[ -x "$src/setup.sh" ] || fail "$src/setup.sh not found: give the netemu source directory as argument or NETEMU_SRC"
src="$(cd "$src" && pwd -P)"
netemu="$src/.venv/bin/netemu"

say "installing netemu from $src and running the demo (./setup.sh demo)"
started=$SECONDS
"$src/setup.sh" demo
say "set-up and demo took $((SECONDS - started)) s"

# The demo exits 0 even when a request goes unanswered: check the end state.
cd "$src"
state="$("$netemu" labs | awk -v lab="$lab" '$1 == lab { print $2 }')"
[ "$state" = ready ] || fail "lab $lab is not ready after the demo (netemu labs says: ${state:-not up})"

node_ip="$("$netemu" get nodes --lab "$lab" -o json | "$src/.venv/bin/python" -c '
import json, sys
node = sys.argv[1]
for item in json.load(sys.stdin)["items"]:
    if item["metadata"]["name"] == node:
        print(next(a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP"))
' "$node")"
[ -n "$node_ip" ] || fail "lab $lab has no node $node"
url="http://$node_ip:$nodeport/"
if ! reply="$("$netemu" exec --lab "$lab" "$client" -- curl -sS -m 5 "$url")"; then
  fail "no answer from $url through $client (netemu exec $client -- curl $url)"
fi
say "lab $lab is up; $client → $node:$nodeport answered: $reply"

cat <<EOF

netemu is installed in $src and the lab '$lab' is up. To explore it:

  vagrant ssh          # from the host, in vagrant/ (skip this on a machine of your own)
  sudo -i
  cd $src
  .venv/bin/netemu labs
  .venv/bin/netemu get pods -o wide
  .venv/bin/netemu trace $client $node:$nodeport
  .venv/bin/netemu exec $client -- curl -s $url
  .venv/bin/netemu down $lab     # when done; 'vagrant provision' brings it back

Each trace writes its pcaps under $src/captures/$lab/ (see vagrant/README.md
for opening them on the host).
EOF
