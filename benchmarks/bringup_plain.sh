#!/usr/bin/env bash
# The plain-iproute2 baseline of benchmarks/bringup.py: the network a netemu
# lab builds (underlay switch namespace with br0; per node a namespace with
# eth0 on the switch, the pod bridge cni0, the VXLAN device flannel.1 with a
# neighbour and an FDB entry per peer, a default route and a route per peer
# pod CIDR; per pod a namespace with a veth pair into cni0, hairpin on, its
# address and default route; per external client a namespace on the switch),
# written as a person would: one `ip` (or `bridge`) command per action.
# No iptables rules, no servers: only namespaces, links, addresses, routes.
#
# Usage (as root):
#   benchmarks/bringup_plain.sh up PREFIX NODES PODS [CLIENTS]
#   benchmarks/bringup_plain.sh down PREFIX
# PREFIX names every namespace (e.g. nebench_plain_); `down` deletes every
# namespace whose name starts with it. PODS is the total, spread round-robin
# over the nodes as netemu's scheduler spreads a Deployment.
set -euo pipefail

usage() {
    echo "usage: $0 up PREFIX NODES PODS [CLIENTS] | $0 down PREFIX" >&2
    exit 2
}

MTU=1450

up() {
    local prefix=$1 nodes=$2 pods=$3 clients=${4:-0}
    local sw=${prefix}underlay
    local gw=192.168.56.1

    # The underlay switch (a bridge with a fixed MAC).
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 address 02:00:00:00:01:00 type bridge
    ip -n "$sw" addr add "$gw/24" dev br0
    ip -n "$sw" link set br0 up

    local i j
    for ((i = 0; i < nodes; i++)); do
        local ns=${prefix}node_$i
        local ip=192.168.56.$((11 + i))
        local mac
        mac=$(printf '02:00:00:00:00:%02x' $((i + 1)))
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 \
            net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.rp_filter=0 \
            net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.route_localnet=1
        # eth0 on the underlay switch.
        ip -n "$sw" link add "n$i" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "n$i" master br0 up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        # The pod bridge, with a fixed MAC as netemu gives it.
        ip -n "$ns" link add cni0 address "$(printf '02:00:00:00:02:%02x' $((i + 1)))" mtu $MTU \
            type bridge
        ip -n "$ns" addr add "10.244.$i.1/24" dev cni0
        ip -n "$ns" link set cni0 up
        # flannel.1 and every peer's neighbour, FDB entry and pod CIDR route.
        ip -n "$ns" link add flannel.1 address "$mac" mtu $MTU type vxlan id 1 \
            local "$ip" dev eth0 dstport 4789 nolearning
        ip -n "$ns" addr add "10.244.$i.0/32" dev flannel.1
        ip -n "$ns" link set flannel.1 up
        ip -n "$ns" route add default via "$gw"
        for ((j = 0; j < nodes; j++)); do
            ((j == i)) && continue
            local peer_mac
            peer_mac=$(printf '02:00:00:00:00:%02x' $((j + 1)))
            ip -n "$ns" neigh add "10.244.$j.0" lladdr "$peer_mac" dev flannel.1 nud permanent
            bridge -n "$ns" fdb append "$peer_mac" dev flannel.1 \
                dst "192.168.56.$((11 + j))" self permanent
            ip -n "$ns" route add "10.244.$j.0/24" via "10.244.$j.0" dev flannel.1 onlink
        done
    done

    for ((i = 0; i < clients; i++)); do
        local ns=${prefix}ext_$i
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$sw" link add "c$i" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "c$i" master br0 up
        ip -n "$ns" addr add "192.168.56.$((20 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
    done

    local p
    for ((p = 0; p < pods; p++)); do
        local node=$((p % nodes)) slot=$((p / nodes))
        local host=${prefix}node_$node pod=${prefix}pod_$p
        local veth
        veth=$(printf 'veth%08x' "$p")
        ip netns add "$pod"
        ip -n "$pod" link set lo up
        ip -n "$host" link add "$veth" mtu $MTU type veth peer name eth0 mtu $MTU netns "$pod"
        ip -n "$host" link set "$veth" master cni0 up
        ip -n "$host" link set "$veth" type bridge_slave hairpin on
        ip -n "$pod" addr add "10.244.$node.$((slot + 2))/24" dev eth0
        ip -n "$pod" link set eth0 up
        ip -n "$pod" route add default via "10.244.$node.1"
    done
}

down() {
    local prefix=$1 name
    for name in $(ip netns list | awk -v p="$prefix" 'index($1, p) == 1 { print $1 }'); do
        ip netns del "$name"
    done
}

[[ $# -ge 1 ]] || usage
case $1 in
up)
    [[ $# -ge 4 && $# -le 5 ]] || usage
    up "${@:2}"
    ;;
down)
    [[ $# -eq 2 ]] || usage
    down "$2"
    ;;
*) usage ;;
esac
