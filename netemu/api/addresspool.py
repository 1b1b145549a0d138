"""Address pools of the Lab's load balancer (spec.loadBalancer.addresses):
ranges "A-B" and CIDRs, and the default pool at the top of the underlay.
Pure: used by validation and by netemu.controlplane.loadbalancer."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# The default pool, as a fraction of the underlay: from 200/256 of the way up,
# 40/256 of it (.200-.239 of a /24), below the broadcast address.
_DEFAULT_START, _DEFAULT_SIZE = 200, 40


def parse_pool(entries: Iterable[str]) -> list[ipaddress.IPv4Address]:
    """The addresses of ranges "A-B" and CIDRs, in order, without duplicates.
    A CIDR gives all its addresses but its network and broadcast addresses
    when it has more than two. Raises ValueError on a bad entry."""
    out: dict[ipaddress.IPv4Address, None] = {}
    for entry in entries:
        text = entry.strip()
        if "-" in text:
            first, last = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
            if last < first:
                raise ValueError(f"range {text} ends before it starts")
            for value in range(int(first), int(last) + 1):
                out[ipaddress.IPv4Address(value)] = None
        else:
            net = ipaddress.IPv4Network(text, strict=True)
            hosts = net.hosts() if net.num_addresses > 2 else iter(net)
            for ip in hosts:
                out[ip] = None
    return list(out)


def default_pool(underlay_cidr: str) -> list[ipaddress.IPv4Address]:
    """.200-.239 of a /24 underlay, and the same share of any other size."""
    net = ipaddress.IPv4Network(underlay_cidr, strict=False)
    size = net.num_addresses
    start = size * _DEFAULT_START // 256
    count = size * _DEFAULT_SIZE // 256
    base = int(net.network_address)
    return [
        ipaddress.IPv4Address(base + i) for i in range(start, min(start + count, size - 1)) if i > 0
    ]
